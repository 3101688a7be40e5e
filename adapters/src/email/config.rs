//! One email account: our address, how to submit mail and where replies arrive.

use std::path::PathBuf;
use std::time::Duration;

use super::unsubscribe::OneClick;

/// How a connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP upgraded with STARTTLS before authenticating (submission on 587, IMAP 143).
    StartTls,
    /// TLS from the first byte (SMTPS on 465, IMAPS on 993).
    Tls,
    /// No TLS: only for a loopback sandbox.
    None,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Empty: no AUTH.
    pub username: String,
    pub password: String,
    /// Connections kept open per account.
    pub pool_size: u32,
    pub timeout: Duration,
    /// Ask for delivery status notifications (RFC 3461: NOTIFY=SUCCESS,FAILURE,DELAY with
    /// RET=HDRS), so a positive report can mark the message DELIVERED.
    pub request_delivery_reports: bool,
}

#[derive(Clone, Debug)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: String,
    pub mailbox: String,
    /// How often to look for new mail where the server has no IDLE, and at most how long
    /// one IDLE lasts before it is renewed.
    pub poll_interval: Duration,
    /// Larger mail is not downloaded; it is reported as rejected.
    pub max_message_bytes: u64,
    /// Attachments up to this size are stored with the message; larger ones are kept as a
    /// reference to the mail on the server.
    pub max_inline_attachment_bytes: u64,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct EmailAccount {
    /// Our address: the From of what we send and the mailbox replies come to.
    pub address: String,
    pub display_name: String,
    pub smtp: SmtpConfig,
    /// Extra trust roots (PEM) beside the system's, for servers with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Attachments of one outbound message, in all.
    pub max_attachment_bytes: u64,
    /// Fetch attachment URLs on private, loopback and link-local addresses too. Off by
    /// default: a URL from an API client must not reach internal services.
    pub fetch_private_urls: bool,
    /// Give every email a one-click unsubscribe link (RFC 8058).
    pub one_click_unsubscribe: Option<OneClick>,
    /// Give every email a `Reply-To` of our address plus its conversation's id, so that
    /// replies thread even when the person's client drops In-Reply-To and References.
    pub plus_address_replies: bool,
}

impl EmailAccount {
    /// The domain part of our address, used in the Message-IDs we generate.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("omnigate.invalid")
    }
}
