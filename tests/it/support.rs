//! Builders for a real gateway on loopback with the Twilio sandbox, and a gRPC client.

use std::time::Duration;

use omnigate::{Config, Gateway};
use omnigate_adapters::twilio::sandbox::SandboxHandle;
use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

pub const SID: &str = "AC00000000000000000000000000000000";
pub const TOKEN: &str = "test-auth-token";
pub const FROM: &str = "+15005550006";

/// A gateway under test: its own temp store, free ports, a fast retry policy.
pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub client: GatewayClient<Channel>,
    /// Holds the store's directory for the test's life.
    pub _dir: tempfile::TempDir,
    pub config: Config,
}

pub const WA_NUMBER_ID: &str = "106540352242922";
pub const PAGE_ID: &str = "112233445566778";
pub const IG_ID: &str = "17841400000000000";
pub const META_SECRET: &str = "test-app-secret";
/// The address of the email account on the SMTP sandbox.
pub const EMAIL_FROM: &str = "shop@omnigate.test";

pub struct Builder {
    inactivity_secs: u64,
    meta_rules: String,
    pair_rate: String,
    rules: String,
    rate: String,
    dispatch: String,
    callback_delay_ms: u64,
    extra: String,
    server: String,
    /// `store.url`; a fresh SQLite file in the test's directory when empty.
    store_url: String,
    /// `webhooks.retry_schedule_secs`.
    webhook_retries: String,
}

pub fn gateway() -> Builder {
    Builder {
        inactivity_secs: 3600,
        meta_rules: String::new(),
        pair_rate: "{ per_second = 100, burst = 100 }".into(),
        rules: String::new(),
        rate: "{ per_second = 1000, burst = 1000 }".into(),
        dispatch:
            "max_attempts = 5\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\nbackoff_jitter = 0.1"
                .into(),
        callback_delay_ms: 10,
        extra: String::new(),
        server: String::new(),
        store_url: String::new(),
        webhook_retries: "[0.05, 0.05, 0.05]".into(),
    }
}

impl Builder {
    /// A sandbox rule as TOML inline table text.
    pub fn rule(mut self, rule: &str) -> Self {
        self.rules.push_str(rule);
        self.rules.push_str(",\n");
        self
    }

    /// A Meta sandbox rule as TOML inline table text.
    pub fn meta_rule(mut self, rule: &str) -> Self {
        self.meta_rules.push_str(rule);
        self.meta_rules.push_str(",\n");
        self
    }

    pub fn inactivity_secs(mut self, secs: u64) -> Self {
        self.inactivity_secs = secs;
        self
    }

    pub fn pair_rate(mut self, per_second: f64) -> Self {
        self.pair_rate = format!("{{ per_second = {per_second}, burst = 1 }}");
        self
    }

    pub fn rate(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = format!("{{ per_second = {per_second}, burst = {burst} }}");
        self
    }

    /// Fall back when a message is not delivered this long after it was sent.
    pub fn fallback_after_secs(mut self, secs: f64) -> Self {
        self.dispatch.push_str(&format!("\nfallback_after_secs = {secs}"));
        self
    }

    /// More config, appended as TOML (accounts, sandboxes).
    /// The CRM webhooks' retry schedule, a TOML array of seconds.
    pub fn webhook_retries(mut self, schedule: &str) -> Self {
        self.webhook_retries = schedule.into();
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.dispatch = self.dispatch.replace("max_attempts = 5", &format!("max_attempts = {n}"));
        self
    }

    /// Require this bearer token on the gRPC API.
    pub fn api_token(self, token: &str) -> Self {
        self.server(&format!("api_tokens = [\"{token}\"]"))
    }

    /// More `[server]` keys, as TOML lines.
    pub fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }

    /// Runs on this store rather than a fresh SQLite file.
    pub fn store_url(mut self, url: &str) -> Self {
        self.store_url = url.to_string();
        self
    }

    pub fn callback_delay_ms(mut self, ms: u64) -> Self {
        self.callback_delay_ms = ms;
        self
    }

    pub fn config(&self, dir: &std::path::Path) -> Config {
        let text = format!(
            r#"
[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
drain_timeout_secs = 10
{server}

[store]
url = "{store}"

[dispatch]
{dispatch}

[conversations]
inactivity_timeout_secs = {inactivity}

[webhooks]
retry_schedule_secs = {webhook_retries}
timeout_ms = 2000

[sandbox.twilio]
account_sid = "{SID}"
auth_token = "{TOKEN}"
callback_delay_ms = {delay}
rules = [
{rules}]

[[accounts]]
type = "twilio"
id = "sms"
default = true
api_base = "sandbox"
account_sid = "{SID}"
auth_token = "{TOKEN}"
from = "{FROM}"
rate_limit = {rate}
request_timeout_ms = 2000

[sandbox.meta]
access_token = "meta-token"
app_secret = "{META_SECRET}"
callback_delay_ms = {delay}
rules = [
{meta_rules}]

[[accounts]]
type = "whatsapp"
id = "wa"
api_base = "sandbox"
endpoint_id = "{WA_NUMBER_ID}"
waba_id = "102290129340398"
access_token = "meta-token"
app_secret = "{META_SECRET}"
verify_token = "verify-me"
pair_rate_limit = {pair_rate}
request_timeout_ms = 2000
lost_send_wait_ms = 1000

[[accounts]]
type = "messenger"
id = "fb"
api_base = "sandbox"
endpoint_id = "{PAGE_ID}"
access_token = "meta-token"
app_secret = "{META_SECRET}"
verify_token = "verify-me"
request_timeout_ms = 2000
lost_send_wait_ms = 1000

[[accounts]]
type = "instagram"
id = "ig"
api_base = "sandbox"
endpoint_id = "{IG_ID}"
access_token = "meta-token"
app_secret = "{META_SECRET}"
verify_token = "verify-me"

[sandbox.email]
rules = [
    {{ to_prefix = "bounce@", fault = "550 5.1.1 No such user" }},
    {{ to_prefix = "lost-once@", fault = {{ kind = "lost_answer" }}, times = 1 }},
]

[[accounts]]
type = "email"
id = "email"
address = "{EMAIL_FROM}"
display_name = "Omnigate Shop"
smtp = {{ host = "sandbox" }}

{extra}
"#,
            extra = self.extra,
            store = match self.store_url.as_str() {
                "" => format!("sqlite://{}", dir.join("omnigate.db").display()),
                url => url.to_string(),
            },
            dispatch = self.dispatch,
            delay = self.callback_delay_ms,
            rules = self.rules,
            rate = self.rate,
            meta_rules = self.meta_rules,
            inactivity = self.inactivity_secs,
            pair_rate = self.pair_rate,
            server = self.server,
            webhook_retries = self.webhook_retries,
        );
        Config::from_toml(&text).expect("test config is valid")
    }

    pub async fn start(self) -> TestGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = self.config(dir.path());
        let gateway = Gateway::start(config.clone()).await.expect("gateway starts");
        let client =
            GatewayClient::connect(format!("http://{}", gateway.grpc_addr)).await.expect("connect");
        TestGateway { gateway: Some(gateway), client, _dir: dir, config }
    }
}

impl TestGateway {
    /// Shuts the gateway down (draining) and starts it again on the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let gateway = Gateway::start(self.config.clone()).await.expect("gateway restarts");
        self.client =
            GatewayClient::connect(format!("http://{}", gateway.grpc_addr)).await.expect("connect");
        self.gateway = Some(gateway);
    }

    pub async fn stop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("shutdown");
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    pub fn sandbox(&self) -> &SandboxHandle {
        self.gw().twilio_sandbox.as_ref().expect("sandbox configured")
    }

    /// The messages the Twilio sandbox took for `to`, in order.
    pub fn sent_to(&self, to: &str) -> Vec<omnigate_adapters::twilio::sandbox::RecordedSend> {
        self.sandbox().sent().into_iter().filter(|s| s.field("To") == Some(to)).collect()
    }

    /// A conversation's first page of messages (up to 100), oldest first.
    pub async fn history(&mut self, conversation_id: &str) -> Vec<pb::Message> {
        let request = pb::ListMessagesRequest {
            conversation_id: conversation_id.into(),
            ..Default::default()
        };
        self.client.list_messages(request).await.expect("list").into_inner().messages
    }

    /// Follows the event stream until the inbound message with this provider id arrives.
    pub async fn received(&mut self, provider_id: &str) -> pb::Message {
        let request = pb::StreamEventsRequest {
            from_sequence: 0,
            kinds: vec!["message_received".into()],
            ..Default::default()
        };
        let mut events = self.client.stream_events(request).await.expect("stream").into_inner();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), events.message()).await;
            let event = next.expect("in time").expect("stream ok").expect("stream open");
            let Some(pb::event::Kind::MessageReceived(r)) = event.kind else {
                panic!("the filter lets only message_received through")
            };
            let m = r.message.expect("message");
            if m.provider_message_id == provider_id {
                return m;
            }
        }
    }

    pub fn smtp(&self) -> &omnigate_adapters::email::sandbox::SmtpSandbox {
        self.gw().email_sandbox.as_ref().expect("smtp sandbox configured")
    }

    pub fn meta(&self) -> &omnigate_adapters::meta::sandbox::SandboxHandle {
        self.gw().meta_sandbox.as_ref().expect("meta sandbox configured")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw().public_url, path)
    }

    pub async fn send(&mut self, to: &str, body: &str) -> pb::Message {
        self.send_request(text_request(to, body)).await.expect("accepted")
    }

    pub async fn send_request(
        &mut self,
        request: pb::SendMessageRequest,
    ) -> Result<pb::Message, tonic::Status> {
        Ok(self.client.send_message(request).await?.into_inner().message.expect("message"))
    }

    /// The `To` of every send the Twilio sandbox took, in order.
    pub fn recipients(&self) -> Vec<String> {
        self.sandbox().sent().iter().filter_map(|s| s.field("To").map(str::to_string)).collect()
    }

    /// A CRM webhook subscription to `url`, for every event from the start of the log.
    pub async fn subscribe(&self, url: String) -> pb::Webhook {
        let request = pb::CreateWebhookRequest { url, ..Default::default() };
        self.client.clone().create_webhook(request).await.expect("webhook").into_inner()
    }

    pub async fn get(&mut self, id: &str) -> pb::Message {
        self.client
            .get_message(pb::GetMessageRequest { id: id.into() })
            .await
            .expect("get")
            .into_inner()
            .message
            .expect("message")
    }

    /// Polls until the message has reached `status` (it may have moved on since); fails with
    /// its last state after 15 s.
    pub async fn wait_for(&mut self, id: &str, status: pb::MessageStatus) -> pb::Message {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = self.get(id).await;
            if m.status == status as i32
                || m.status_history.iter().any(|c| c.status == status as i32)
            {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("message {id} never reached {status:?}; last: {m:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn text_request(to: &str, body: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        channel: pb::Channel::Sms as i32,
        to: to.into(),
        content: Some(pb::Content {
            kind: Some(pb::content::Kind::Text(pb::Text { body: body.into(), preview_url: false })),
        }),
        ..Default::default()
    }
}

pub fn request(channel: pb::Channel, to: &str, kind: pb::content::Kind) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        channel: channel as i32,
        to: to.into(),
        content: Some(pb::Content { kind: Some(kind) }),
        ..Default::default()
    }
}

pub fn text(body: &str) -> pb::content::Kind {
    pb::content::Kind::Text(pb::Text { body: body.into(), preview_url: false })
}

pub fn statuses(m: &pb::Message) -> Vec<pb::MessageStatus> {
    m.status_history
        .iter()
        .map(|c| pb::MessageStatus::try_from(c.status).expect("known status"))
        .collect()
}

/// Posts a form to the gateway signed as Twilio would sign it with `token`.
pub async fn post_signed(url: &str, params: &[(&str, &str)], token: &str) -> (u16, String) {
    let owned: Vec<(String, String)> =
        params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = omnigate_adapters::twilio::signature::sign(token, url, &owned);
    let response = omnigate_adapters::http::client(Duration::from_secs(10))
        .post(url)
        .header("X-Twilio-Signature", signature)
        .form(&owned)
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
