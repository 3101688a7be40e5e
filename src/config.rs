//! Configuration: built-in defaults, then the TOML file, then `OMNIGATE_` environment
//! variables (`OMNIGATE_STORE__URL` sets `store.url`), then validation with errors that name
//! the key. Secrets are written as `env:NAME`, `file:PATH` or a literal, and never logged.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use omnigate_adapters::Channel;
use omnigate_adapters::email::sandbox::SmtpSandboxConfig;
use omnigate_adapters::meta::sandbox::SandboxConfig as MetaSandboxConfig;
use omnigate_adapters::twilio::sandbox::SandboxConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub dispatch: DispatchConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub retention: RetentionConfig,
    pub conversations: ConversationsConfig,
    pub webhooks: WebhooksConfig,
    /// Provider accounts; each has an `id`, a `type` and that provider's fields.
    pub accounts: Vec<AccountConfig>,
    /// Local provider sandboxes, started in-process. Accounts reach them with
    /// `api_base = "sandbox"`.
    pub sandbox: SandboxSection,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where provider webhooks, /healthz, /readyz and /metrics are served.
    pub http_addr: SocketAddr,
    /// The base URL providers use to reach `http_addr` (behind a proxy, the public one):
    /// status callbacks point there and webhook signatures are checked against it. Empty
    /// means `http://{http_addr}`.
    pub public_url: String,
    /// This replica's name on leases; empty means host name and process id.
    pub node_id: String,
    /// How long SIGTERM waits for in-flight sends before exiting anyway.
    pub drain_timeout_secs: u64,
    /// Bearer tokens the gRPC API accepts (`authorization: Bearer TOKEN`); empty: the API
    /// is open, for a sidecar on loopback.
    pub api_tokens: Vec<Secret>,
    /// PEM certificate chain and private key: the gRPC API is served over TLS.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA certificates: gRPC clients must present a certificate one of them signed.
    pub tls_client_ca_file: Option<std::path::PathBuf>,
    /// How long an HTTP client may take to send its request headers.
    pub http_header_timeout_ms: u64,
    /// SendMessage calls that may wait for the store at once; more are answered UNAVAILABLE
    /// at once rather than queueing without bound.
    pub max_pending_sends: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            node_id: String::new(),
            drain_timeout_secs: 30,
            api_tokens: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            http_header_timeout_ms: 10_000,
            max_pending_sends: 10_000,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing; WAL mode), or `postgres://user:pass@host/db`
    /// for a fleet of replicas sharing one database.
    pub url: String,
    /// The most writes one transaction (one fsync) carries.
    pub group_commit_max: usize,
    /// How long a replica holds claimed work and routes without renewing them before
    /// another may take them over (renewed every third of it).
    pub lease_secs: u64,
    /// Apply schema migrations at start-up; off when `omnigate migrate` runs them instead.
    pub migrate_on_start: bool,
    /// PEM CA certificates trusted for the PostgreSQL server's certificate (with
    /// `sslmode=require` in the URL), beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://omnigate.db".into(),
            group_commit_max: 1024,
            lease_secs: 60,
            migrate_on_start: true,
            ca_file: None,
        }
    }
}

/// Printed configs (`check-config`) must not show a database password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_password(&self.url))
            .field("group_commit_max", &self.group_commit_max)
            .field("lease_secs", &self.lease_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `scheme://user:secret@host...` with the secret replaced.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_string(),
    }
}

/// Which database `store.url` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend<'a> {
    /// A file path.
    Sqlite(&'a str),
    /// A PostgreSQL connection URL.
    Postgres(&'a str),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Sends in flight at once, across all routes.
    pub max_in_flight: usize,
    /// Attempts per message, the first included, before it FAILS.
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Random spread of each delay, as a fraction (0.2 = plus or minus 20%).
    pub backoff_jitter: f64,
    /// Time-to-live of a message whose request names none.
    pub default_ttl_secs: u64,
    /// A message with fallbacks that is not DELIVERED this long after SENT moves to its next
    /// channel; 0 waits for a failure only.
    pub fallback_after_secs: f64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_in_flight: 512,
            max_attempts: 10,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            backoff_jitter: 0.2,
            default_ttl_secs: 86_400,
            fallback_after_secs: 0.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Delays before each retry after the first attempt (seconds); the default is the
    /// Standard Webhooks reference schedule, about 28 hours in all.
    pub retry_schedule_secs: Vec<f64>,
    /// Per delivery attempt.
    pub timeout_ms: u64,
    /// Subscriptions created at start-up when no subscription has their URL yet.
    pub subscriptions: Vec<WebhookSubscription>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_schedule_secs: crate::webhooks::DEFAULT_SCHEDULE_SECS.to_vec(),
            timeout_ms: 15_000,
            subscriptions: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSubscription {
    pub url: String,
    /// `whsec_` + base64; `env:`/`file:` as for every secret.
    pub secret: Secret,
    /// Event kinds; empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Each event on its own, a failed one retried while later ones go on; default: in
    /// order, one at a time.
    #[serde(default)]
    pub independent: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsConfig {
    /// A contact's open conversation that has been quiet this long is closed when they
    /// (or we) write again, and a new one opens.
    pub inactivity_timeout_secs: u64,
}

impl Default for ConversationsConfig {
    fn default() -> Self {
        ConversationsConfig { inactivity_timeout_secs: 7 * 86_400 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `omnigate=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

/// How long what the store keeps is kept; 0 keeps it for ever.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The event log (StreamEvents, webhooks, replays), which holds a copy of every
    /// message at each status it reached.
    pub events_days: f64,
    /// Messages, counted from their creation; one still waiting for its provider stays.
    pub messages_days: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { events_days: 30.0, messages_days: 0.0 }
    }
}

/// Traces over OTLP. The usual `OTEL_*` variables (headers, timeouts, batching) apply on
/// top of these keys.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector (`http://collector:4317`, or https); empty: no traces leave.
    pub otlp_endpoint: String,
    /// `service.name` on every span.
    pub service_name: String,
    /// The share of traces started here that are kept; a caller's sampling decision
    /// (its `traceparent`) always wins.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: "omnigate".into(),
            sample_ratio: 1.0,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    pub twilio: Option<SandboxConfig>,
    /// One Graph API sandbox for the WhatsApp, Messenger and Instagram accounts.
    pub meta: Option<MetaSandboxConfig>,
    /// An SMTP listener for email accounts with `smtp.host = "sandbox"`.
    pub email: Option<SmtpSandboxConfig>,
}

/// Sends per second and burst of one route (account + sender), in the units its provider
/// paces by (Twilio: SMS segments).
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateLimit {
    /// The time between two tokens; zero for rates too high to space.
    pub fn period(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.per_second).unwrap_or(Duration::ZERO)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountConfig {
    Twilio(TwilioAccountConfig),
    Whatsapp(MetaAccountConfig),
    Messenger(MetaAccountConfig),
    Instagram(MetaAccountConfig),
    Email(EmailAccountConfig),
}

impl AccountConfig {
    pub fn id(&self) -> &str {
        match self {
            AccountConfig::Twilio(a) => &a.id,
            AccountConfig::Whatsapp(a)
            | AccountConfig::Messenger(a)
            | AccountConfig::Instagram(a) => &a.id,
            AccountConfig::Email(a) => &a.id,
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            AccountConfig::Twilio(_) => Channel::Sms,
            AccountConfig::Whatsapp(_) => Channel::Whatsapp,
            AccountConfig::Messenger(_) => Channel::Messenger,
            AccountConfig::Instagram(_) => Channel::Instagram,
            AccountConfig::Email(_) => Channel::Email,
        }
    }

    pub fn is_default(&self) -> bool {
        match self {
            AccountConfig::Twilio(a) => a.default,
            AccountConfig::Whatsapp(a)
            | AccountConfig::Messenger(a)
            | AccountConfig::Instagram(a) => a.default,
            AccountConfig::Email(a) => a.default,
        }
    }

    pub fn rate_limit(&self) -> RateLimit {
        match self {
            AccountConfig::Twilio(a) => a.rate_limit,
            AccountConfig::Whatsapp(a) => {
                a.rate_limit.unwrap_or(RateLimit { per_second: 80.0, burst: 80 })
            }
            AccountConfig::Messenger(a) | AccountConfig::Instagram(a) => {
                a.rate_limit.unwrap_or(RateLimit { per_second: 300.0, burst: 300 })
            }
            AccountConfig::Email(a) => a.rate_limit,
        }
    }

    /// The per-recipient pace: WhatsApp's pair rate limit, about one message per 6 s.
    pub fn pair_rate_limit(&self) -> Option<RateLimit> {
        match self {
            AccountConfig::Whatsapp(a) => {
                Some(a.pair_rate_limit.unwrap_or(RateLimit { per_second: 1.0 / 6.0, burst: 1 }))
            }
            _ => None,
        }
    }
}

/// A WhatsApp phone number (`type = "whatsapp"`), Facebook Page (`"messenger"`) or
/// Instagram professional account (`"instagram"`) on Meta's Graph API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetaAccountConfig {
    pub id: String,
    #[serde(default)]
    pub default: bool,
    /// `https://graph.facebook.com` (Instagram Login: `https://graph.instagram.com`), or
    /// `sandbox`.
    #[serde(default = "graph_api_base")]
    pub api_base: String,
    #[serde(default = "graph_version")]
    pub version: String,
    /// WhatsApp: the phone number id; Messenger: the Page id; Instagram: the account id.
    pub endpoint_id: String,
    /// The system user token (WhatsApp) or Page token (Messenger, Instagram).
    pub access_token: Secret,
    /// Verifies `X-Hub-Signature-256` on webhooks.
    pub app_secret: Secret,
    /// What the webhook subscription handshake must present.
    pub verify_token: Secret,
    /// Default: 80/s for WhatsApp (Meta's default throughput), 300/s for Messenger and
    /// Instagram text.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// WhatsApp only; default one message per 6 s to the same person.
    #[serde(default)]
    pub pair_rate_limit: Option<RateLimit>,
    #[serde(default = "ten_thousand")]
    pub request_timeout_ms: u64,
    /// WhatsApp and Messenger: how long a send whose answer was lost waits for Meta's
    /// webhooks that echo its id before it goes again.
    #[serde(default = "sixty_thousand")]
    pub lost_send_wait_ms: u64,
    /// WhatsApp: the WhatsApp Business Account id that owns the number's message
    /// templates, for `ListTemplates`.
    #[serde(default)]
    pub waba_id: String,
}

fn graph_api_base() -> String {
    "https://graph.facebook.com".into()
}

fn graph_version() -> String {
    "v23.0".into()
}

/// A Twilio Programmable Messaging account (channel `sms`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioAccountConfig {
    /// The name clients use in `SendMessageRequest.account`.
    pub id: String,
    /// The account used when a request names none for this channel.
    #[serde(default)]
    pub default: bool,
    /// `https://api.twilio.com`, or `sandbox` for the in-process sandbox.
    #[serde(default = "twilio_api_base")]
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// Authenticate REST calls with an API key (`SK…`) instead of the auth token.
    #[serde(default)]
    pub api_key_sid: Option<String>,
    #[serde(default)]
    pub api_key_secret: Option<Secret>,
    /// The sender number, short code or alphanumeric id; or set `messaging_service_sid`.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Twilio queues what exceeds a sender's throughput for up to 10 h; the default of one
    /// send per second matches a US long code.
    #[serde(default = "long_code_rate")]
    pub rate_limit: RateLimit,
    #[serde(default = "ten_thousand")]
    pub request_timeout_ms: u64,
}

/// An email account (channel `email`): SMTP submission out, an IMAP mailbox in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailAccountConfig {
    pub id: String,
    #[serde(default)]
    pub default: bool,
    /// Our address: the From of what we send, where replies and bounces come back.
    pub address: String,
    #[serde(default)]
    pub display_name: String,
    pub smtp: SmtpSection,
    /// Unset: send only; replies and bounces are not read.
    #[serde(default)]
    pub imap: Option<ImapSection>,
    /// PEM trust roots added to the system's, for servers with a private CA.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Attachments of one outbound message, in all (default 10 MiB).
    #[serde(default = "ten_mib")]
    pub max_attachment_bytes: u64,
    /// Inbound attachments up to this size are stored with the message (default 256 KiB);
    /// larger ones keep an IMAP URL.
    #[serde(default = "quarter_mib")]
    pub max_inline_attachment_bytes: u64,
    /// Default: 5 per second, what most submission servers take from one login.
    #[serde(default = "email_rate")]
    pub rate_limit: RateLimit,
    /// Let attachment URLs reach private, loopback and link-local addresses (off: public
    /// hosts only, so API input cannot reach internal services).
    #[serde(default)]
    pub fetch_private_urls: bool,
    /// Set: every email carries a one-click unsubscribe link (RFC 8058) signed with it,
    /// which bars the account's mail to that person when clicked.
    #[serde(default)]
    pub unsubscribe_secret: Option<Secret>,
    /// Every email gets a `Reply-To` of the address plus its conversation's id
    /// (`shop+cnv_…@example.com`), so replies thread even from clients that drop
    /// In-Reply-To and References. Needs a server that delivers plus addresses to the
    /// mailbox (RFC 5233 subaddressing).
    #[serde(default)]
    pub plus_address_replies: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailSecurity {
    /// STARTTLS before authenticating (SMTP 587, IMAP 143).
    #[default]
    Starttls,
    /// Implicit TLS (SMTP 465, IMAP 993).
    Tls,
    /// No TLS; only for loopback servers.
    None,
}

impl MailSecurity {
    pub fn adapter(self) -> omnigate_adapters::email::Security {
        use omnigate_adapters::email::Security;
        match self {
            MailSecurity::Starttls => Security::StartTls,
            MailSecurity::Tls => Security::Tls,
            MailSecurity::None => Security::None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// The submission server, or `sandbox` for the in-process SMTP sandbox.
    pub host: String,
    /// Default: 587 for starttls, 465 for tls, 25 for none.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: MailSecurity,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "four")]
    pub pool_size: u32,
    #[serde(default = "thirty_thousand")]
    pub timeout_ms: u64,
    /// Ask the server for delivery status notifications (RFC 3461), so a positive report
    /// in the mailbox marks the message DELIVERED.
    #[serde(default)]
    pub request_delivery_reports: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSection {
    pub host: String,
    /// Default: 143 for starttls, 993 for tls and none.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "imap_security")]
    pub security: MailSecurity,
    pub username: String,
    pub password: Secret,
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// Where a new account starts: `new` (mail arriving from now on) or `all`.
    #[serde(default)]
    pub initial_sync: crate::mailbox::InitialSync,
    /// The longest IDLE before it is renewed, and the poll interval on servers without
    /// IDLE.
    #[serde(default = "sixty")]
    pub poll_interval_secs: u64,
    /// Larger mail is not downloaded; it becomes an `inbound_rejected` event.
    #[serde(default = "twenty_five_mib")]
    pub max_message_bytes: u64,
    #[serde(default = "thirty_thousand")]
    pub timeout_ms: u64,
}

impl SmtpSection {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            MailSecurity::Starttls => 587,
            MailSecurity::Tls => 465,
            MailSecurity::None => 25,
        })
    }
}

impl ImapSection {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            MailSecurity::Starttls => 143,
            MailSecurity::Tls | MailSecurity::None => 993,
        })
    }
}

fn ten_mib() -> u64 {
    10 << 20
}

fn quarter_mib() -> u64 {
    256 << 10
}

fn twenty_five_mib() -> u64 {
    25 << 20
}

fn email_rate() -> RateLimit {
    RateLimit { per_second: 5.0, burst: 5 }
}

fn four() -> u32 {
    4
}

fn sixty() -> u64 {
    60
}

fn thirty_thousand() -> u64 {
    30_000
}

fn imap_security() -> MailSecurity {
    MailSecurity::Tls
}

fn inbox() -> String {
    "INBOX".into()
}

fn twilio_api_base() -> String {
    "https://api.twilio.com".into()
}

fn long_code_rate() -> RateLimit {
    RateLimit { per_second: 1.0, burst: 1 }
}

fn ten_thousand() -> u64 {
    10_000
}

fn sixty_thousand() -> u64 {
    60_000
}

/// A secret as written in the config: `env:NAME`, `file:PATH`, or the value itself.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name).map_err(|_| {
                ConfigError::invalid(key, format!("environment variable {name} is not set"))
            })
        } else if let Some(path) = self.0.strip_prefix("file:") {
            read_secret_file(path)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| ConfigError::invalid(key, format!("cannot read {path}: {e}")))
        } else {
            Ok(self.0.clone())
        }
    }
}

/// Secrets are short; a path to a device or a large file by mistake (`file:/dev/zero`) is an
/// error rather than a start-up that never ends.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret_file(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_SECRET_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "longer than {MAX_SECRET_FILE_BYTES} bytes, which no secret is"
        )));
    }
    Ok(text)
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not the error's source too: figment's message already has every detail, and a
    /// printed chain would repeat it.
    #[error("config: {0}")]
    Load(Box<figment::Error>),
    #[error("config key {key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

/// Shorter tokens can be guessed; `openssl rand -hex 32` makes a good one.
const MIN_API_TOKEN_CHARS: usize = 32;
const HOUR: f64 = 3_600.0;
const DAY: f64 = 24.0 * HOUR;
/// The longest wait on a peer (a provider, a mail server, a webhook receiver, a client).
const HOUR_MS: f64 = HOUR * 1000.0;
/// The longest time-to-live a message may have, requested or configured.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
const MAX_TTL_SECS: f64 = MAX_TTL.as_secs() as f64;

fn retention(days: f64) -> Option<Duration> {
    (days > 0.0).then(|| Duration::from_secs_f64(days * DAY))
}

/// A time or count setting, in its key's unit, checked against what the gateway can use:
/// beyond it a value is a slip (days written as milliseconds) that, added to a clock, would
/// overflow; NaN is outside every range.
fn within(key: &str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let range =
        if max == f64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
    Err(ConfigError::invalid(key, format!("must be {range}, not {value}")))
}

/// A provider's API base: `sandbox` when that sandbox is configured, else an http(s) URL,
/// checked here so that a typo fails at start rather than on every send.
fn api_base(key: String, base: &str, sandbox: &str, sandbox_on: bool) -> Result<(), ConfigError> {
    if base == "sandbox" {
        if sandbox_on {
            return Ok(());
        }
        return Err(ConfigError::invalid(
            key,
            format!("is \"sandbox\" but {sandbox} is not configured"),
        ));
    }
    if is_http_url(base) {
        return Ok(());
    }
    Err(ConfigError::invalid(key, format!("{base:?} is neither \"sandbox\" nor an http(s) URL")))
}

fn is_http_url(s: &str) -> bool {
    reqwest::Url::parse(s)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }
}

impl Config {
    /// Defaults, then `path` (if given), then `OMNIGATE_*` variables; validated.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("{} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config =
            figment.merge(Env::prefixed("OMNIGATE_").split("__")).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string with no environment layered on top; for tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backend().is_none() {
            return Err(ConfigError::invalid(
                "store.url",
                "expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE",
            ));
        }
        within("server.drain_timeout_secs", self.server.drain_timeout_secs as f64, 0.0, DAY)?;
        let header_timeout = self.server.http_header_timeout_ms as f64;
        within("server.http_header_timeout_ms", header_timeout, 1.0, HOUR_MS)?;
        let s = &self.server;
        within("server.max_pending_sends", s.max_pending_sends as f64, 1.0, 1e6)?;
        if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "server.tls_cert_file",
                "and server.tls_key_file go together",
            ));
        }
        if s.tls_client_ca_file.is_some() && s.tls_cert_file.is_none() {
            return Err(ConfigError::invalid(
                "server.tls_client_ca_file",
                "needs server.tls_cert_file and server.tls_key_file: client certificates are asked for over TLS",
            ));
        }
        self.api_tokens()?;
        within("store.lease_secs", self.store.lease_secs as f64, 1.0, DAY)?;
        if self.store.group_commit_max == 0 {
            return Err(ConfigError::invalid("store.group_commit_max", "must be at least 1"));
        }
        if !self.server.public_url.is_empty() && !self.server.public_url.starts_with("http") {
            return Err(ConfigError::invalid("server.public_url", "must be an http(s) URL"));
        }
        let d = &self.dispatch;
        if d.max_attempts == 0 {
            return Err(ConfigError::invalid("dispatch.max_attempts", "must be at least 1"));
        }
        within("dispatch.fallback_after_secs", d.fallback_after_secs, 0.0, MAX_TTL_SECS)?;
        within("dispatch.default_ttl_secs", d.default_ttl_secs as f64, 1.0, MAX_TTL_SECS)?;
        if d.max_in_flight == 0 {
            return Err(ConfigError::invalid("dispatch.max_in_flight", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&d.backoff_jitter) {
            return Err(ConfigError::invalid("dispatch.backoff_jitter", "must be in [0, 1)"));
        }
        within("dispatch.backoff_max_ms", d.backoff_max_ms as f64, 1.0, DAY * 1000.0)?;
        if d.backoff_initial_ms == 0 || d.backoff_max_ms < d.backoff_initial_ms {
            return Err(ConfigError::invalid(
                "dispatch.backoff_initial_ms",
                "must be positive and at most dispatch.backoff_max_ms",
            ));
        }
        for (i, delay) in self.webhooks.retry_schedule_secs.iter().enumerate() {
            within(&format!("webhooks.retry_schedule_secs[{i}]"), *delay, 0.0, MAX_TTL_SECS)?;
        }
        within("webhooks.timeout_ms", self.webhooks.timeout_ms as f64, 1.0, HOUR_MS)?;
        for (i, sub) in self.webhooks.subscriptions.iter().enumerate() {
            let secret = sub.secret.resolve(&format!("webhooks.subscriptions[{i}].secret"))?;
            crate::webhooks::sign::key(&secret).map_err(|e| {
                ConfigError::invalid(format!("webhooks.subscriptions[{i}].secret"), e)
            })?;
        }
        within(
            "conversations.inactivity_timeout_secs",
            self.conversations.inactivity_timeout_secs as f64,
            1.0,
            10.0 * 365.0 * DAY,
        )?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid("log.format", "expected text or json"));
        }
        let telemetry = &self.telemetry;
        if !telemetry.otlp_endpoint.is_empty() && !is_http_url(&telemetry.otlp_endpoint) {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                format!("{:?} is not an http(s) URL", telemetry.otlp_endpoint),
            ));
        }
        if telemetry.service_name.is_empty() {
            return Err(ConfigError::invalid("telemetry.service_name", "must be set"));
        }
        within("telemetry.sample_ratio", telemetry.sample_ratio, 0.0, 1.0)?;
        within("retention.events_days", self.retention.events_days, 0.0, 100.0 * 365.0)?;
        within("retention.messages_days", self.retention.messages_days, 0.0, 100.0 * 365.0)?;
        let mut ids = HashSet::new();
        let mut defaults = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let key = |field: &str| format!("accounts[{i}].{field}");
            if account.id().is_empty() || !ids.insert(account.id()) {
                return Err(ConfigError::invalid(key("id"), "must be set and unique"));
            }
            if account.is_default() && !defaults.insert(account.channel()) {
                return Err(ConfigError::invalid(
                    key("default"),
                    format!("another account is already the default for {}", account.channel()),
                ));
            }
            let rates = [
                ("rate_limit", Some(account.rate_limit())),
                ("pair_rate_limit", account.pair_rate_limit()),
            ];
            for (field, rate) in rates {
                if let Some(rate) = rate {
                    // Slower than one a day is a slip, and its token period would not fit.
                    if !(1.0 / DAY..=f64::MAX).contains(&rate.per_second) || rate.burst == 0 {
                        return Err(ConfigError::invalid(
                            key(field),
                            "per_second must be at least one a day (1/86400) and finite, burst at least 1",
                        ));
                    }
                }
            }
            match account {
                AccountConfig::Twilio(t) => {
                    if t.from.is_some() == t.messaging_service_sid.is_some() {
                        return Err(ConfigError::invalid(
                            key("from"),
                            "set exactly one of from and messaging_service_sid",
                        ));
                    }
                    let sandbox = self.sandbox.twilio.is_some();
                    api_base(key("api_base"), &t.api_base, "[sandbox.twilio]", sandbox)?;
                    if t.api_key_sid.is_some() != t.api_key_secret.is_some() {
                        return Err(ConfigError::invalid(
                            key("api_key_sid"),
                            "api_key_sid and api_key_secret go together",
                        ));
                    }
                    t.auth_token.resolve(&key("auth_token"))?;
                    within(&key("request_timeout_ms"), t.request_timeout_ms as f64, 1.0, HOUR_MS)?;
                }
                AccountConfig::Whatsapp(m)
                | AccountConfig::Messenger(m)
                | AccountConfig::Instagram(m) => {
                    if m.endpoint_id.is_empty() {
                        return Err(ConfigError::invalid(key("endpoint_id"), "is required"));
                    }
                    let sandbox = self.sandbox.meta.is_some();
                    api_base(key("api_base"), &m.api_base, "[sandbox.meta]", sandbox)?;
                    m.access_token.resolve(&key("access_token"))?;
                    m.app_secret.resolve(&key("app_secret"))?;
                    m.verify_token.resolve(&key("verify_token"))?;
                    within(&key("request_timeout_ms"), m.request_timeout_ms as f64, 1.0, HOUR_MS)?;
                    within(&key("lost_send_wait_ms"), m.lost_send_wait_ms as f64, 1.0, HOUR_MS)?;
                }
                AccountConfig::Email(e) => {
                    if crate::contacts::normalize(Channel::Email, &e.address).is_err() {
                        return Err(ConfigError::invalid(
                            key("address"),
                            "is not an email address",
                        ));
                    }
                    if e.smtp.host == "sandbox" && self.sandbox.email.is_none() {
                        return Err(ConfigError::invalid(
                            key("smtp.host"),
                            "is \"sandbox\" but [sandbox.email] is not configured",
                        ));
                    }
                    if e.smtp.host.is_empty() {
                        return Err(ConfigError::invalid(key("smtp.host"), "is required"));
                    }
                    if let Some(p) = &e.smtp.password {
                        p.resolve(&key("smtp.password"))?;
                    }
                    within(&key("smtp.timeout_ms"), e.smtp.timeout_ms as f64, 1.0, HOUR_MS)?;
                    if let Some(imap) = &e.imap {
                        imap.password.resolve(&key("imap.password"))?;
                        let poll = imap.poll_interval_secs as f64;
                        within(&key("imap.poll_interval_secs"), poll, 1.0, DAY)?;
                        within(&key("imap.timeout_ms"), imap.timeout_ms as f64, 1.0, HOUR_MS)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{}", self.server.http_addr)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    /// The database `store.url` names; `None` when it names none (refused by validation).
    pub fn backend(&self) -> Option<Backend<'_>> {
        let url = self.store.url.as_str();
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Some(Backend::Sqlite(path));
        }
        (url.starts_with("postgres://") || url.starts_with("postgresql://"))
            .then_some(Backend::Postgres(url))
    }

    /// `server.api_tokens`, resolved, each long and plain enough to serve as a token.
    pub fn api_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let tokens = self.server.api_tokens.iter().enumerate();
        tokens
            .map(|(i, token)| {
                let key = format!("server.api_tokens[{i}]");
                let token = token.resolve(&key)?;
                if token.len() < MIN_API_TOKEN_CHARS
                    || !token.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "must be at least {MIN_API_TOKEN_CHARS} printable ASCII characters without spaces"
                        ),
                    ));
                }
                Ok(token)
            })
            .collect()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.store.lease_secs)
    }

    /// How long after SENT an undelivered message with fallbacks moves on; `None`: only on
    /// failure.
    /// How long events are kept, if not for ever.
    pub fn events_retention(&self) -> Option<Duration> {
        retention(self.retention.events_days)
    }

    /// How long messages are kept, if not for ever.
    pub fn messages_retention(&self) -> Option<Duration> {
        retention(self.retention.messages_days)
    }

    pub fn fallback_after(&self) -> Option<Duration> {
        let secs = self.dispatch.fallback_after_secs;
        (secs > 0.0).then(|| Duration::try_from_secs_f64(secs).unwrap_or(MAX_TTL))
    }

    pub fn webhook_retry_schedule(&self) -> Vec<Duration> {
        let delays = self.webhooks.retry_schedule_secs.iter();
        delays.map(|s| Duration::try_from_secs_f64(*s).unwrap_or(MAX_TTL)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml(
            r#"
            [[accounts]]
            type = "twilio"
            id = "a"
            account_sid = "AC1"
            auth_token = "t"
            from = "+15005550006"
            rate_limit = { per_second = 0 }
            "#,
        )
        .expect_err("zero rate");
        assert!(err.to_string().contains("accounts[0].rate_limit"), "{err}");
        let err = Config::from_toml("[store]\nurll = 'x'").expect_err("unknown key");
        assert!(err.to_string().contains("urll"), "{err}");
    }

    /// Each of these parsed, then panicked at start-up (a float of seconds too large for a
    /// `Duration`, a token period of 1e300 s), overflowed a deadline in milliseconds, or
    /// (an API base that is no URL) failed every send.
    #[test]
    fn settings_that_would_fail_later_are_refused_at_start_by_key() {
        let twilio = |rate: &str| {
            format!(
                "[[accounts]]\ntype = \"twilio\"\nid = \"a\"\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\n{rate}"
            )
        };
        let cases = [
            ("[dispatch]\nfallback_after_secs = 1e300".to_string(), "dispatch.fallback_after_secs"),
            ("[dispatch]\nfallback_after_secs = nan".into(), "dispatch.fallback_after_secs"),
            (
                "[dispatch]\ndefault_ttl_secs = 9223372036854775807".into(),
                "dispatch.default_ttl_secs",
            ),
            ("[dispatch]\nbackoff_max_ms = 9223372036854775807".into(), "dispatch.backoff_max_ms"),
            (
                "[webhooks]\nretry_schedule_secs = [5, 1e300]".into(),
                "webhooks.retry_schedule_secs[1]",
            ),
            ("[webhooks]\ntimeout_ms = 0".into(), "webhooks.timeout_ms"),
            ("[store]\nlease_secs = 9223372036854775807".into(), "store.lease_secs"),
            (
                "[server]\ndrain_timeout_secs = 9223372036854775807".into(),
                "server.drain_timeout_secs",
            ),
            (
                "[conversations]\ninactivity_timeout_secs = 0".into(),
                "conversations.inactivity_timeout_secs",
            ),
            (twilio("rate_limit = { per_second = 1e-300 }"), "accounts[0].rate_limit"),
            (twilio("rate_limit = { per_second = inf }"), "accounts[0].rate_limit"),
            (twilio("request_timeout_ms = 0"), "accounts[0].request_timeout_ms"),
            (twilio("api_base = \"htps//api.twilio.com\""), "accounts[0].api_base"),
            ("[server]\ntls_cert_file = \"/etc/omnigate/tls.pem\"".into(), "server.tls_cert_file"),
            ("[server]\ntls_client_ca_file = \"/etc/ca.pem\"".into(), "server.tls_client_ca_file"),
            ("[telemetry]\notlp_endpoint = \"collector:4317\"".into(), "telemetry.otlp_endpoint"),
            ("[telemetry]\nsample_ratio = 1.5".into(), "telemetry.sample_ratio"),
            ("[telemetry]\nservice_name = \"\"".into(), "telemetry.service_name"),
        ];
        for (toml, key) in cases {
            let err = Config::from_toml(&toml).expect_err(&toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        // The edges themselves are fine.
        let edges = "[dispatch]\nfallback_after_secs = 2592000\ndefault_ttl_secs = 2592000\n[store]\nlease_secs = 86400";
        Config::from_toml(&format!("{edges}\n{}", twilio("rate_limit = { per_second = 1e300 }")))
            .expect("the largest accepted values");
    }

    #[test]
    fn api_tokens_must_be_long_enough_not_to_be_guessed() {
        let err = Config::from_toml("[server]\napi_tokens = [\"0123456789abcdef\"]")
            .expect_err("16 characters");
        assert!(err.to_string().contains("server.api_tokens[0]"), "{err}");
        let err = Config::from_toml(&format!("[server]\napi_tokens = [\"{}\"]", "x y".repeat(12)))
            .expect_err("spaces");
        assert!(err.to_string().contains("without spaces"), "{err}");
        let config =
            Config::from_toml(&format!("[server]\napi_tokens = [\"{}\"]", "ab".repeat(16)))
                .expect("32 characters");
        assert!(!format!("{config:?}").contains(&"ab".repeat(16)), "tokens never print");
    }

    #[test]
    fn a_secret_file_that_never_ends_is_an_error_not_a_hang() {
        let err = Secret("file:/dev/zero".into()).resolve("k").expect_err("endless");
        assert!(err.to_string().contains("longer than 65536 bytes"), "{err}");
    }

    #[test]
    fn email_accounts_are_checked_key_by_key() {
        let account = |extra: &str| {
            format!(
                "[[accounts]]\ntype = \"email\"\nid = \"e\"\naddress = \"shop@example.com\"\n{extra}"
            )
        };
        let cases = [
            (account("smtp = { host = \"sandbox\" }"), "accounts[0].smtp.host"),
            (
                account("smtp = { host = \"smtp.example.com\" }")
                    .replace("shop@example.com", "shop"),
                "accounts[0].address",
            ),
            (account("smtp = { host = \"h\", security = \"ssl\" }"), "found `ssl`, expected"),
            (
                account(
                    "smtp = { host = \"h\" }\nimap = { host = \"h\", username = \"u\", password = \"env:OMNIGATE_TEST_SURELY_UNSET\" }",
                ),
                "accounts[0].imap.password",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text).expect_err(key);
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        let ok = Config::from_toml(&account(
            "smtp = { host = \"smtp.example.com\", security = \"tls\" }",
        ))
        .expect("valid");
        let AccountConfig::Email(e) = &ok.accounts[0] else { panic!("not email") };
        assert_eq!((e.smtp.port(), e.max_attachment_bytes), (465, 10 << 20));
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let secret = Secret(format!("file:{}", path.display()));
        assert_eq!(secret.resolve("k").expect("readable"), "s3cret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let store =
            StoreConfig { url: "postgres://og:hunter2@db:5432/og".into(), ..Default::default() };
        let printed = format!("{store:?}");
        assert!(printed.contains("postgres://og:<redacted>@db:5432/og"), "{printed}");
        assert!(!printed.contains("hunter2"));
        assert!(Secret("env:OMNIGATE_TEST_SURELY_UNSET".into()).resolve("k").is_err());
    }

    fn toml_shape(text: &str) -> Result<Config, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../config/omnigate.toml");
        let config = Config::from_toml(text).expect("config/omnigate.toml");
        assert!(config.accounts.iter().any(|a| a.is_default() && a.channel() == Channel::Sms));
        for channel in [Channel::Whatsapp, Channel::Messenger, Channel::Instagram, Channel::Email] {
            assert!(config.accounts.iter().any(|a| a.channel() == channel), "{channel}");
        }
        for example in [
            include_str!("../config/twilio.example.toml"),
            include_str!("../config/meta.example.toml"),
            include_str!("../config/email.example.toml"),
            include_str!("../config/fleet.example.toml"),
        ] {
            // Secrets come from the environment there; only the shape is checked here.
            let parsed: Result<Config, _> = toml_shape(example);
            assert!(parsed.is_ok(), "{parsed:?}");
        }
    }
}

#[cfg(test)]
mod documented {
    use super::Config;
    use figment::providers::Format;

    /// Each key as the README names it: `section.key`, or within an account `key` and
    /// `smtp.key`; keys of inline tables (a rate limit, a sandbox rule) by their own name.
    fn names(
        value: &serde_json::Value,
        path: &[&str],
        out: &mut std::collections::BTreeSet<String>,
    ) {
        let items: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let serde_json::Value::Object(map) = item else { continue };
            for (key, inner) in map {
                let name = match path {
                    [] | ["accounts"] => key.clone(),
                    [section] => format!("{section}.{key}"),
                    ["accounts", table] => format!("{table}.{key}"),
                    _ => key.clone(),
                };
                out.insert(name);
                let below: Vec<&str> = path.iter().copied().chain([key.as_str()]).collect();
                names(inner, &below, out);
            }
        }
    }

    #[test]
    fn the_readme_documents_every_config_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
        let spans: Vec<&str> = readme.split('`').skip(1).step_by(2).collect();
        // Every key the shipped configs write (secrets from the environment need none
        // here), and every key the default config has, defaults included.
        let mut all = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(root.join("config")).expect("config/") {
            let path = entry.expect("entry").path();
            let raw: serde_json::Value =
                figment::Figment::from(figment::providers::Toml::file(&path))
                    .extract()
                    .unwrap_or_else(|e| panic!("{path:?}: {e}"));
            names(&raw, &[], &mut all);
        }
        let text = std::fs::read_to_string(root.join("config/omnigate.toml")).expect("default");
        let config = Config::from_toml(&text).expect("the default config");
        names(&serde_json::to_value(&config).expect("serializes"), &[], &mut all);
        let missing: Vec<&String> =
            all.iter().filter(|k| !spans.iter().any(|s| s.contains(k.as_str()))).collect();
        assert!(missing.is_empty(), "config keys the README does not name: {missing:?}");
    }
}
