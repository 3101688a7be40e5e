//! A local server that speaks Twilio's Messages API: it authenticates like Twilio, validates
//! requests like Twilio, answers with Twilio-shaped resources and errors, and posts signed
//! status callbacks. Rules keyed by a `To` prefix inject throttling, server errors, slow
//! answers, rejections and failed deliveries, so that the gateway can be tried, tested and
//! benchmarked with no Twilio account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::signature;
use super::wire::{ErrorBody, MAX_BODY_CHARS, MAX_MEDIA_URLS};
use crate::sandbox_media::Shelf;
use crate::sandbox_rules::RuleSet;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Where the sandbox listens; port 0 picks a free one.
    #[serde(default = "crate::sandbox_rules::loopback_any")]
    pub addr: SocketAddr,
    /// The account the sandbox accepts (Basic auth user and path segment).
    pub account_sid: String,
    /// Basic auth password and the key that signs callbacks.
    pub auth_token: String,
    /// Delay before each status callback.
    #[serde(default = "crate::sandbox_rules::default_callback_delay_ms")]
    pub callback_delay_ms: u64,
    /// Delay before answering every send.
    #[serde(default)]
    pub latency_ms: u64,
    /// Faults, matched by `To` prefix in order; the first that still applies wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A fault rule of this sandbox.
pub type Rule = crate::sandbox_rules::Rule<Fault>;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Fault {
    /// HTTP 429, error 20429, with an optional `Retry-After`.
    Throttle { retry_after_secs: Option<u64> },
    /// HTTP 500.
    ServerError,
    /// Answer only after this long (longer than the client's timeout, it is a timeout).
    Slow { delay_ms: u64 },
    /// Take the message (and report on it) at once, but answer only after this long: a
    /// timeout that loses the answer to a send Twilio made. With `list_status`, listing
    /// that recipient's messages fails with that HTTP status (403: never allowed; 503:
    /// not now), whatever `times` says.
    Lost {
        delay_ms: u64,
        #[serde(default)]
        list_status: Option<u16>,
    },
    /// HTTP 400 with this Twilio error code (21211, 21610, 21614...).
    Reject { code: u32 },
    /// Accept, then report `undelivered` with this code (30003, 30005...).
    Undelivered { code: u32 },
}

/// One request the sandbox accepted (201).
#[derive(Clone, Debug)]
pub struct RecordedSend {
    pub sid: String,
    /// The form fields as sent, in order.
    pub form: Vec<(String, String)>,
    pub at: Instant,
    /// The Message resource as created, which the list answers; as JSON text, a third of
    /// the memory of a parsed value in a load test that keeps every send.
    pub resource: String,
}

impl RecordedSend {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

struct Sandbox {
    config: SandboxConfig,
    auth_header: String,
    rules: RuleSet<Fault>,
    sent: std::sync::Mutex<Vec<RecordedSend>>,
    requests: AtomicU64,
    lookups: AtomicU64,
    next_sid: AtomicU64,
    http: reqwest::Client,
    /// Media of inbound MMS by Media SID (ME...): its message's SID and its shelf token.
    media: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
    shelf: Shelf,
}

/// A running sandbox. It stops with the runtime that started it.
#[derive(Clone)]
pub struct SandboxHandle {
    pub addr: SocketAddr,
    inner: Arc<Sandbox>,
}

impl SandboxHandle {
    /// The `api_base` to configure a Twilio account with.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every accepted send so far, in arrival order.
    pub fn sent(&self) -> Vec<RecordedSend> {
        self.inner.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn sent_count(&self) -> usize {
        self.inner.sent.lock().map(|s| s.len()).unwrap_or_default()
    }

    /// Every send request, accepted or not.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// How many media items of inbound MMS the sandbox still keeps.
    pub fn media_kept(&self) -> usize {
        self.inner.shelf.len()
    }

    /// Every list request, answered or not.
    pub fn lookup_count(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    /// Posts a signed inbound SMS webhook to `url`, as Twilio would when a person texts `to`.
    pub async fn deliver_inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> reqwest::Result<u16> {
        self.deliver_inbound_mms(url, from, to, body, &[]).await.map(|(status, _)| status)
    }

    /// As [`SandboxHandle::deliver_inbound`], with media items (MIME type, bytes): an MMS
    /// whose `MediaUrl{N}` are Media resources of this sandbox, which need the account's
    /// credentials and redirect to the bytes on the media CDN. Answers the HTTP status and
    /// the message's SID.
    pub async fn deliver_inbound_mms(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
        media: &[(&str, &[u8])],
    ) -> reqwest::Result<(u16, String)> {
        let sid = self.inner.new_sid(if media.is_empty() { "SM" } else { "MM" });
        let account_sid = self.inner.config.account_sid.clone();
        let mut params = vec![
            ("MessageSid".to_string(), sid.clone()),
            ("SmsSid".to_string(), sid.clone()),
            ("SmsMessageSid".to_string(), sid.clone()),
            ("AccountSid".to_string(), account_sid.clone()),
            ("From".to_string(), from.to_string()),
            ("To".to_string(), to.to_string()),
            ("Body".to_string(), body.to_string()),
            ("NumMedia".to_string(), media.len().to_string()),
            ("NumSegments".to_string(), "1".to_string()),
            ("ApiVersion".to_string(), "2010-04-01".to_string()),
        ];
        for (n, (mime_type, bytes)) in media.iter().enumerate() {
            let media_sid = self.inner.new_sid("ME");
            let token = self.inner.shelf.put(mime_type, bytes.to_vec());
            if let Ok(mut kept) = self.inner.media.lock() {
                kept.insert(media_sid.clone(), (sid.clone(), token));
            }
            let media_url = format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media/{media_sid}",
                self.api_base()
            );
            params.push((format!("MediaUrl{n}"), media_url));
            params.push((format!("MediaContentType{n}"), mime_type.to_string()));
        }
        Ok((self.inner.post_signed(url, &params).await?, sid))
    }
}

/// Binds `config.addr` and serves until the runtime stops.
pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
    let addr = config.addr;
    let shelf = Shelf::start(addr.ip()).await?;
    let auth_header = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", config.account_sid, config.auth_token))
    );
    let inner = Arc::new(Sandbox {
        rules: RuleSet::new(config.rules.clone()),
        auth_header,
        config,
        sent: std::sync::Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        next_sid: AtomicU64::new(1),
        http: crate::http::client(Duration::from_secs(15)),
        media: std::sync::Mutex::new(std::collections::HashMap::new()),
        shelf,
    });
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(create_message).get(list_messages),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}",
            get(fetch_media).delete(delete_media),
        )
        .with_state(inner.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // As a provider's servers answer: without Nagle's algorithm.
        if let Err(e) = axum::serve(listener.tap_io(crate::http::no_nagle), app).await {
            tracing::error!(error = %e, "Twilio sandbox stopped");
        }
    });
    Ok(SandboxHandle { addr, inner })
}

impl Sandbox {
    /// Twilio's answer to a wrong credential or another account's path, if either.
    fn refusal(&self, headers: &HeaderMap, account_sid: &str) -> Option<Response> {
        let authorized = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == self.auth_header.as_bytes());
        if !authorized {
            return Some(twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"));
        }
        (account_sid != self.config.account_sid).then(not_found)
    }

    /// The shelf token of Media resource `media_sid` of message `message_sid`, if kept.
    fn media_token(&self, message_sid: &str, media_sid: &str) -> Option<String> {
        let kept = self.media.lock().ok()?;
        kept.get(media_sid).filter(|(parent, _)| parent == message_sid).map(|(_, t)| t.clone())
    }

    fn new_sid(&self, prefix: &str) -> String {
        let n = self.next_sid.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        format!("{prefix}{nanos:016x}{n:016x}")
    }

    async fn post_signed(&self, url: &str, params: &[(String, String)]) -> reqwest::Result<u16> {
        let signature = signature::sign(&self.config.auth_token, url, params);
        let response =
            self.http.post(url).header("X-Twilio-Signature", signature).form(params).send().await?;
        Ok(response.status().as_u16())
    }

    async fn report(
        self: Arc<Self>,
        callback: String,
        resource: serde_json::Value,
        end: Result<(), u32>,
    ) {
        let field = |name: &str| resource[name].as_str().unwrap_or_default().to_string();
        let sid = field("sid");
        let mut steps = vec![("sent", None)];
        steps.push(match end {
            Ok(()) => ("delivered", None),
            Err(code) => ("undelivered", Some(code)),
        });
        for (status, code) in steps {
            tokio::time::sleep(Duration::from_millis(self.config.callback_delay_ms)).await;
            let mut params = vec![
                ("AccountSid".to_string(), self.config.account_sid.clone()),
                ("ApiVersion".to_string(), "2010-04-01".to_string()),
                ("From".to_string(), field("from")),
                ("MessageSid".to_string(), sid.clone()),
                ("MessageStatus".to_string(), status.to_string()),
                ("SmsSid".to_string(), sid.clone()),
                ("SmsStatus".to_string(), status.to_string()),
                ("To".to_string(), field("to")),
            ];
            if let Some(code) = code {
                params.push(("ErrorCode".to_string(), code.to_string()));
            }
            if let Err(e) = self.post_signed(&callback, &params).await {
                tracing::warn!(error = %e, sid, status, "sandbox status callback failed");
            }
        }
    }
}

/// `GET .../Messages.json`: the account's messages, newest first, filtered by `To` and
/// `From`, one page of `PageSize` (50 by default, at most 1000).
async fn list_messages(
    State(sandbox): State<Arc<Sandbox>>,
    Path(account_sid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    sandbox.lookups.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = sandbox.refusal(&headers, &account_sid) {
        return refused;
    }
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let refused = sandbox.rules.all_for(get("To").unwrap_or_default()).find_map(|f| match f {
        Fault::Lost { list_status: Some(status), .. } => StatusCode::from_u16(*status).ok(),
        _ => None,
    });
    if let Some(status) = refused {
        let code = 20_000 + u32::from(status.as_u16());
        return twilio_error(status, code, "Listing messages failed by sandbox rule");
    }
    let page_size =
        get("PageSize").and_then(|n| n.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
    // The filters read the form each send was made with, which names `To` and `From` as
    // the resource does; only the page's resources are parsed back.
    let matches = |send: &RecordedSend, field: &str| {
        get(field).is_none_or(|want| send.field(field) == Some(want))
    };
    let messages: Vec<serde_json::Value> = sandbox
        .sent
        .lock()
        .map(|sent| {
            sent.iter()
                .rev()
                .filter(|s| matches(s, "To") && matches(s, "From"))
                .take(page_size)
                .filter_map(|s| serde_json::from_str(&s.resource).ok())
                .collect()
        })
        .unwrap_or_default();
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages.json?PageSize={page_size}");
    let page = json!({
        "end": messages.len().saturating_sub(1),
        "first_page_uri": format!("{uri}&Page=0"),
        "messages": messages,
        "next_page_uri": null,
        "page": 0,
        "page_size": page_size,
        "previous_page_uri": null,
        "start": 0,
        "uri": uri,
    });
    (StatusCode::OK, axum::Json(page)).into_response()
}

/// A Media resource without an extension: the media itself, here (as with HTTP auth on media)
/// a redirect to a short-lived URL on the CDN (support.twilio.com article 223183748).
async fn fetch_media(
    State(sandbox): State<Arc<Sandbox>>,
    Path((account_sid, message_sid, media_sid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers, &account_sid) {
        return refusal;
    }
    let token = sandbox.media_token(&message_sid, &media_sid);
    match token {
        Some(token) => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, sandbox.shelf.cdn_url(&token))])
                .into_response()
        }
        None => not_found(),
    }
}

/// `DELETE .../Media/{Sid}.json` (OpenAPI `DeleteMedia`): 204, and the media is gone.
async fn delete_media(
    State(sandbox): State<Arc<Sandbox>>,
    Path((account_sid, message_sid, media_sid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers, &account_sid) {
        return refusal;
    }
    let sid = media_sid.strip_suffix(".json").unwrap_or_default();
    match sandbox.media_token(&message_sid, sid) {
        Some(token) => {
            if let Ok(mut kept) = sandbox.media.lock() {
                kept.remove(sid);
            }
            sandbox.shelf.remove(&token);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(),
    }
}

/// Twilio's answer for a resource that is not there (another account's, or gone).
fn not_found() -> Response {
    twilio_error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found")
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = ErrorBody {
        code: Some(code),
        message: Some(message.to_string()),
        more_info: Some(format!("https://www.twilio.com/docs/errors/{code}")),
        status: Some(status.as_u16()),
    };
    (status, axum::Json(body)).into_response()
}

fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

async fn create_message(
    State(sandbox): State<Arc<Sandbox>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sandbox.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = sandbox.refusal(&headers, &account_sid) {
        return refused;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return twilio_error(StatusCode::BAD_REQUEST, 21601, "Malformed form body");
    };
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let media: Vec<&str> =
        form.iter().filter(|(k, _)| k == "MediaUrl").map(|(_, v)| v.as_str()).collect();
    let Some(to) = get("To") else {
        return twilio_error(StatusCode::BAD_REQUEST, 21604, "A 'To' phone number is required.");
    };
    let from = get("From");
    let service = get("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return twilio_error(StatusCode::BAD_REQUEST, 21603, "A 'From' phone number is required.");
    }
    let text = get("Body").unwrap_or_default();
    if text.is_empty() && media.is_empty() && get("ContentSid").is_none() {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    }
    if text.chars().count() > MAX_BODY_CHARS {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if media.len() > MAX_MEDIA_URLS {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21623,
            "Number of media files exceeds allowed limit.",
        );
    }
    if !is_e164(to) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if sandbox.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sandbox.config.latency_ms)).await;
    }
    let mut end = Ok(());
    let fault = sandbox.rules.fault_for(to);
    match fault {
        Some(Fault::Throttle { retry_after_secs }) => {
            let mut response =
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            if let Some(secs) = retry_after_secs {
                response.headers_mut().insert(header::RETRY_AFTER, (*secs).into());
            }
            return response;
        }
        Some(Fault::ServerError) => {
            return twilio_error(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error");
        }
        Some(Fault::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await
        }
        Some(Fault::Reject { code }) => {
            return twilio_error(StatusCode::BAD_REQUEST, *code, "Rejected by sandbox rule");
        }
        Some(Fault::Undelivered { code }) => end = Err(*code),
        Some(Fault::Lost { .. }) | None => {}
    }
    let sid = sandbox.new_sid(if media.is_empty() { "SM" } else { "MM" });
    let now = httpdate::fmt_http_date(SystemTime::now()).replace("GMT", "+0000");
    let segments = super::segments::segments(text);
    let resource = json!({
        "account_sid": sandbox.config.account_sid,
        "api_version": "2010-04-01",
        "body": text,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": media.len().to_string(),
        "num_segments": if service.is_some() { "0".to_string() } else { segments.to_string() },
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": if service.is_some() { "accepted" } else { "queued" },
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json")
        },
        "to": to,
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
    });
    if let Ok(mut sent) = sandbox.sent.lock() {
        let resource = resource.to_string();
        sent.push(RecordedSend {
            sid: sid.clone(),
            form: form.clone(),
            at: Instant::now(),
            resource,
        });
    }
    if let Some(callback) = get("StatusCallback") {
        tokio::spawn(sandbox.clone().report(callback.to_string(), resource.clone(), end));
    }
    if let Some(Fault::Lost { delay_ms, .. }) = fault {
        tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
    }
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}
