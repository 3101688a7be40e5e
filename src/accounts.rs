//! The configured provider accounts, built once at start-up: for each, its channel, its
//! sender (the adapter), its webhook handler, and which account is each channel's default.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use omnigate_adapters::twilio::config::TwilioSenderId;
use omnigate_adapters::twilio::{TwilioAccount, TwilioSender, TwilioWebhooks};
use omnigate_adapters::{Channel, Sender, WebhookHandler};

use crate::config::{AccountConfig, Config, ConfigError, RateLimit};

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
        sandbox_base: Option<&str>,
    ) -> Result<Accounts, ConfigError> {
        let mut by_id = HashMap::new();
        let mut per_channel: HashMap<Channel, Vec<Arc<Account>>> = HashMap::new();
        for (i, account) in config.accounts.iter().enumerate() {
            let built = Arc::new(build_one(i, account, public_url, sandbox_base)?);
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

fn build_one(
    i: usize,
    account: &AccountConfig,
    public_url: &str,
    sandbox_base: Option<&str>,
) -> Result<Account, ConfigError> {
    let key = |field: &str| format!("accounts[{i}].{field}");
    match account {
        AccountConfig::Twilio(t) => {
            let api_base = if t.api_base == "sandbox" {
                sandbox_base
                    .ok_or_else(|| {
                        ConfigError::invalid(key("api_base"), "the Twilio sandbox is not running")
                    })?
                    .to_string()
            } else {
                t.api_base.clone()
            };
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
            })
        }
    }
}
