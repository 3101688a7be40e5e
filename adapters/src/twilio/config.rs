//! One Twilio account as the gateway uses it.

use std::time::Duration;

/// Credentials and sender of one Twilio account. Secrets are resolved before this point.
#[derive(Clone)]
pub struct TwilioAccount {
    /// `https://api.twilio.com`, or a sandbox.
    pub api_base: String,
    pub account_sid: String,
    /// Signs webhooks and, unless an API key is set, authenticates REST calls.
    pub auth_token: String,
    /// `(SK…, secret)`: REST authentication with an API key instead of the auth token.
    pub api_key: Option<(String, String)>,
    pub sender: TwilioSenderId,
    pub request_timeout: Duration,
}

/// Who the message comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwilioSenderId {
    /// An E.164 number, short code or alphanumeric sender id (`From`).
    From(String),
    /// A Messaging Service (`MG…`) that picks the number from its pool.
    MessagingService(String),
}

impl TwilioSenderId {
    pub fn as_str(&self) -> &str {
        match self {
            TwilioSenderId::From(s) | TwilioSenderId::MessagingService(s) => s,
        }
    }
}

impl std::fmt::Debug for TwilioAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioAccount")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}
