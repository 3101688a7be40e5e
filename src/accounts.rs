//! The configured provider accounts, built once at start-up: for each, its channel, its
//! sender (the adapter), its webhook handler, and which account is each channel's default.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use omnigate_adapters::meta::{MetaAccount, MetaSender, MetaWebhooks};
use omnigate_adapters::twilio::config::TwilioSenderId;
use omnigate_adapters::twilio::{TwilioAccount, TwilioSender, TwilioWebhooks};
use std::path::PathBuf;

use omnigate_adapters::email::unsubscribe::OneClick;
use omnigate_adapters::email::{
    EmailAccount, EmailSender, ImapConfig, Mailbox, Security, SmtpConfig,
};
use omnigate_adapters::{Channel, Parsed, Sender, WebhookError, WebhookHandler, WebhookRequest};

use crate::config::{AccountConfig, Config, ConfigError, EmailAccountConfig, RateLimit};
use crate::mailbox::Inbox;

pub struct Account {
    pub id: String,
    pub channel: Channel,
    /// The provider family, as it appears in webhook paths (`/webhooks/twilio/...`).
    pub provider: &'static str,
    /// Our address on this account, as it appears in `Message.from`.
    pub from: String,
    pub sender: Arc<dyn Sender>,
    pub webhooks: Arc<dyn WebhookHandler>,
    pub status_callback: Option<String>,
    pub rate: RateLimit,
    pub pair_rate: Option<RateLimit>,
    /// For a Meta account on the sandbox: its endpoint id and the webhook URL the sandbox
    /// must post to.
    pub sandbox_webhook: Option<(String, String)>,
    /// For an email account that reads replies: its IMAP mailbox.
    pub inbox: Option<Inbox>,
    /// For an email account with one-click unsubscribe: what checks its links.
    pub one_click: Option<OneClick>,
}

/// The base URLs of the in-process sandboxes that are running.
#[derive(Clone, Debug, Default)]
pub struct SandboxBases {
    pub twilio: Option<String>,
    pub meta: Option<String>,
    /// The SMTP sandbox's address.
    pub email: Option<std::net::SocketAddr>,
}

pub struct Accounts {
    by_id: HashMap<String, Arc<Account>>,
    defaults: HashMap<Channel, Arc<Account>>,
}

impl Accounts {
    /// `sandbox_base` is the address of the in-process Twilio sandbox, when one runs.
    pub fn build(
        config: &Config,
        public_url: &str,
        sandboxes: &SandboxBases,
    ) -> Result<Accounts, ConfigError> {
        let mut by_id = HashMap::new();
        let mut per_channel: HashMap<Channel, Vec<Arc<Account>>> = HashMap::new();
        for (i, account) in config.accounts.iter().enumerate() {
            let built = Arc::new(build_one(i, account, public_url, sandboxes)?);
            per_channel.entry(built.channel).or_default().push(built.clone());
            by_id.insert(built.id.clone(), built);
        }
        let mut defaults = HashMap::new();
        for (channel, accounts) in per_channel {
            // The flagged default, else the only account of the channel.
            let default = accounts
                .iter()
                .find(|a| config.accounts.iter().any(|c| c.id() == a.id && c.is_default()))
                .or(if accounts.len() == 1 { accounts.first() } else { None });
            if let Some(default) = default {
                defaults.insert(channel, default.clone());
            }
        }
        Ok(Accounts { by_id, defaults })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Account>> {
        self.by_id.get(id)
    }

    pub fn default_for(&self, channel: Channel) -> Option<&Arc<Account>> {
        self.defaults.get(&channel)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_id.values()
    }
}

fn resolve_base(
    configured: &str,
    sandbox: Option<&String>,
    key: String,
) -> Result<String, ConfigError> {
    if configured != "sandbox" {
        return Ok(configured.to_string());
    }
    sandbox.cloned().ok_or_else(|| ConfigError::invalid(key, "the sandbox is not running"))
}

fn build_one(
    i: usize,
    account: &AccountConfig,
    public_url: &str,
    sandboxes: &SandboxBases,
) -> Result<Account, ConfigError> {
    let key = |field: &str| format!("accounts[{i}].{field}");
    match account {
        AccountConfig::Whatsapp(m) | AccountConfig::Messenger(m) | AccountConfig::Instagram(m) => {
            let channel = account.channel();
            let meta = MetaAccount {
                channel,
                api_base: resolve_base(&m.api_base, sandboxes.meta.as_ref(), key("api_base"))?,
                version: m.version.clone(),
                endpoint_id: m.endpoint_id.clone(),
                access_token: m.access_token.resolve(&key("access_token"))?,
                app_secret: m.app_secret.resolve(&key("app_secret"))?,
                verify_token: m.verify_token.resolve(&key("verify_token"))?,
                request_timeout: Duration::from_millis(m.request_timeout_ms),
                lost_send_wait: Duration::from_millis(m.lost_send_wait_ms),
                waba_id: m.waba_id.clone(),
            };
            let webhook_url = format!("{public_url}/webhooks/meta/{}/events", m.id);
            Ok(Account {
                id: m.id.clone(),
                channel,
                provider: "meta",
                from: m.endpoint_id.clone(),
                webhooks: Arc::new(MetaWebhooks::new(&meta)),
                sender: Arc::new(MetaSender::new(meta)),
                status_callback: None,
                rate: account.rate_limit(),
                pair_rate: account.pair_rate_limit(),
                sandbox_webhook: (m.api_base == "sandbox")
                    .then(|| (m.endpoint_id.clone(), webhook_url)),
                inbox: None,
                one_click: None,
            })
        }
        AccountConfig::Twilio(t) => {
            let api_base = resolve_base(&t.api_base, sandboxes.twilio.as_ref(), key("api_base"))?;
            let auth_token = t.auth_token.resolve(&key("auth_token"))?;
            let api_key = match (&t.api_key_sid, &t.api_key_secret) {
                (Some(sid), Some(secret)) => {
                    Some((sid.clone(), secret.resolve(&key("api_key_secret"))?))
                }
                _ => None,
            };
            let sender = match (&t.from, &t.messaging_service_sid) {
                (Some(from), _) => TwilioSenderId::From(from.clone()),
                (None, Some(sid)) => TwilioSenderId::MessagingService(sid.clone()),
                (None, None) => {
                    return Err(ConfigError::invalid(
                        key("from"),
                        "set from or messaging_service_sid",
                    ));
                }
            };
            let from = sender.as_str().to_string();
            let twilio = TwilioAccount {
                api_base,
                account_sid: t.account_sid.clone(),
                auth_token: auth_token.clone(),
                api_key,
                sender,
                request_timeout: Duration::from_millis(t.request_timeout_ms),
            };
            Ok(Account {
                id: t.id.clone(),
                channel: Channel::Sms,
                provider: "twilio",
                from,
                sender: Arc::new(TwilioSender::new(twilio)),
                webhooks: Arc::new(TwilioWebhooks::new(auth_token)),
                status_callback: Some(format!("{public_url}/webhooks/twilio/{}/status", t.id)),
                rate: t.rate_limit,
                pair_rate: None,
                sandbox_webhook: None,
                inbox: None,
                one_click: None,
            })
        }
        AccountConfig::Email(e) => build_email(e, &key, public_url, sandboxes),
    }
}

fn build_email(
    e: &EmailAccountConfig,
    key: &dyn Fn(&str) -> String,
    public_url: &str,
    sandboxes: &SandboxBases,
) -> Result<Account, ConfigError> {
    let (host, port, security) = if e.smtp.host == "sandbox" {
        let addr = sandboxes
            .email
            .ok_or_else(|| ConfigError::invalid(key("smtp.host"), "the sandbox is not running"))?;
        (addr.ip().to_string(), addr.port(), Security::None)
    } else {
        (e.smtp.host.clone(), e.smtp.port(), e.smtp.security.adapter())
    };
    let password = match &e.smtp.password {
        Some(p) => p.resolve(&key("smtp.password"))?,
        None => String::new(),
    };
    let imap = match &e.imap {
        Some(i) => Some(ImapConfig {
            host: i.host.clone(),
            port: i.port(),
            security: i.security.adapter(),
            username: i.username.clone(),
            password: i.password.resolve(&key("imap.password"))?,
            mailbox: i.mailbox.clone(),
            poll_interval: Duration::from_secs(i.poll_interval_secs),
            max_message_bytes: i.max_message_bytes,
            max_inline_attachment_bytes: e.max_inline_attachment_bytes,
            timeout: Duration::from_millis(i.timeout_ms),
        }),
        None => None,
    };
    let address = e.address.trim().to_ascii_lowercase();
    let account = EmailAccount {
        address: address.clone(),
        display_name: e.display_name.clone(),
        smtp: SmtpConfig {
            host,
            port,
            security,
            username: e.smtp.username.clone(),
            password,
            pool_size: e.smtp.pool_size,
            timeout: Duration::from_millis(e.smtp.timeout_ms),
            request_delivery_reports: e.smtp.request_delivery_reports,
        },
        ca_file: e.ca_file.as_ref().map(PathBuf::from),
        max_attachment_bytes: e.max_attachment_bytes,
        fetch_private_urls: e.fetch_private_urls,
        one_click_unsubscribe: match &e.unsubscribe_secret {
            Some(secret) => Some(one_click(e, secret, key, public_url)?),
            None => None,
        },
        plus_address_replies: e.plus_address_replies,
    };
    let inbox = match imap {
        Some(imap) => Some(Inbox {
            mailbox: Mailbox::new(imap, account.ca_file.as_deref())
                .map_err(|reason| ConfigError::invalid(key("ca_file"), reason))?,
            initial: e.imap.as_ref().map(|i| i.initial_sync).unwrap_or_default(),
        }),
        None => None,
    };
    let one_click = account.one_click_unsubscribe.clone();
    let sender =
        EmailSender::new(account).map_err(|reason| ConfigError::invalid(key("smtp"), reason))?;
    Ok(Account {
        id: e.id.clone(),
        channel: Channel::Email,
        provider: "email",
        from: address,
        sender: Arc::new(sender),
        webhooks: Arc::new(NoWebhooks),
        status_callback: None,
        rate: e.rate_limit,
        pair_rate: None,
        sandbox_webhook: None,
        inbox,
        one_click,
    })
}

/// What an email account's unsubscribe links need: a secret long enough that they cannot
/// be guessed, and the public URL they point at.
fn one_click(
    e: &EmailAccountConfig,
    secret: &crate::config::Secret,
    key: &dyn Fn(&str) -> String,
    public_url: &str,
) -> Result<OneClick, ConfigError> {
    let secret = secret.resolve(&key("unsubscribe_secret"))?;
    if secret.len() < MIN_UNSUBSCRIBE_SECRET {
        return Err(ConfigError::invalid(
            key("unsubscribe_secret"),
            format!("must be at least {MIN_UNSUBSCRIBE_SECRET} characters"),
        ));
    }
    let base_url = format!("{public_url}/unsubscribe/{}", e.id);
    if !base_url.starts_with("https://") {
        // RFC 8058 section 3.1: mail clients offer one-click only for an HTTPS link.
        tracing::warn!(account = %e.id, %base_url, "unsubscribe links are not HTTPS (server.public_url); mail clients will not offer one click");
    }
    Ok(OneClick { base_url, secret })
}

const MIN_UNSUBSCRIBE_SECRET: usize = 16;

/// Email has no webhooks: replies and bounces arrive in the mailbox.
struct NoWebhooks;

impl WebhookHandler for NoWebhooks {
    fn handle(&self, request: &WebhookRequest) -> Result<Parsed, WebhookError> {
        Err(WebhookError::UnknownHook(format!(
            "{}: email accounts read replies from their mailbox, not webhooks",
            request.hook
        )))
    }
}
