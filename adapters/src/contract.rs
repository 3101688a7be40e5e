//! What an adapter implements, split by role: [`Sender`] for outbound messages and
//! [`WebhookHandler`] for what a provider posts back (receipts and inbound messages).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{Content, ErrorCode, Media, MessageStatus, ProviderError};

/// One message to hand to a provider. The adapter's account config supplies the sender.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The gateway's id, for logs and for providers that echo a client reference.
    pub message_id: String,
    pub to: String,
    pub content: Content,
    /// Where the provider should post delivery receipts, when it takes a per-message URL.
    pub status_callback: Option<String>,
    /// How long the message may still wait at the provider before it is pointless.
    pub remaining_ttl: Option<Duration>,
    /// The provider's id of the message this one replies to (quotes).
    pub reply_to: Option<String>,
    /// A channel-specific message tag (Messenger `HUMAN_AGENT`).
    pub tag: Option<String>,
    /// The conversation so far, for channels that thread by reference (email); filled
    /// only when [`Sender::threads_by_reference`] asks for it.
    pub thread: Thread,
}

/// Earlier messages of a conversation, as email threading needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thread {
    /// The subject of the conversation's latest email, empty when none had one.
    pub subject: String,
    /// Provider ids (Message-IDs) of the conversation's earlier emails, oldest first.
    pub references: Vec<String>,
    /// The conversation's id, which a plus-addressed `Reply-To` carries.
    pub conversation_id: String,
}

impl Outbound {
    pub fn new(message_id: impl Into<String>, to: impl Into<String>, content: Content) -> Self {
        Outbound {
            message_id: message_id.into(),
            to: to.into(),
            content,
            status_callback: None,
            remaining_ttl: None,
            reply_to: None,
            tag: None,
            thread: Thread::default(),
        }
    }
}

/// The provider took the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub provider_message_id: String,
    /// The provider's own word for where the message is ("queued").
    pub provider_status: String,
}

/// How the dispatcher should treat a failed send. The adapter classifies; the dispatcher
/// alone decides when to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Try again later (network error, timeout, provider 5xx).
    Retryable { retry_after: Option<Duration> },
    /// The provider throttled this route: slow the whole route down, then try again.
    RateLimited { retry_after: Option<Duration> },
    /// The request may have reached the provider and only its answer was lost (a timeout
    /// after sending). Retry, but first ask the provider whether it has the message
    /// ([`Sender::find_sent`]): most providers take no idempotency key, so a blind retry
    /// could send twice.
    Unsure,
    /// Retrying cannot help.
    Permanent,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct SendFailure {
    pub class: FailureClass,
    #[source]
    pub error: ProviderError,
}

impl SendFailure {
    pub fn permanent(error: ProviderError) -> Self {
        SendFailure {
            class: FailureClass::Permanent,
            error: ProviderError { retryable: false, ..error },
        }
    }

    pub fn retryable(error: ProviderError, retry_after: Option<Duration>) -> Self {
        SendFailure {
            class: FailureClass::Retryable { retry_after },
            error: ProviderError { retryable: true, ..error },
        }
    }

    pub fn unsure(error: ProviderError) -> Self {
        SendFailure {
            class: FailureClass::Unsure,
            error: ProviderError { retryable: true, ..error },
        }
    }

    pub fn rate_limited(error: ProviderError, retry_after: Option<Duration>) -> Self {
        SendFailure {
            class: FailureClass::RateLimited { retry_after },
            error: ProviderError { retryable: true, ..error },
        }
    }
}

/// Sends canonical messages through one configured provider account.
#[async_trait]
pub trait Sender: Send + Sync {
    /// The route key within the account (the sender number, a messaging service): each
    /// route has its own rate limit.
    fn route(&self) -> &str;

    async fn send(&self, message: &Outbound) -> Result<Accepted, SendFailure>;

    /// What the provider holds that could be `message` from an attempt that started at
    /// `since` and ended [`FailureClass::Unsure`]; empty when it holds none or
    /// cannot be asked (then a retry sends blindly). A candidate may be another message
    /// alike (same recipient, content and time): the caller rules out those it knows.
    async fn find_sent(
        &self,
        _message: &Outbound,
        _since: SystemTime,
    ) -> Result<Vec<Accepted>, SendFailure> {
        Ok(Vec::new())
    }

    /// How long a retry of a send whose answer was lost waits first, for a provider that
    /// tells of such sends only by the receipts it posts (which echo our id) rather than
    /// answering [`Sender::find_sent`].
    fn unsure_wait(&self) -> Option<Duration> {
        None
    }

    /// How many of its route's rate-limit tokens sending `content` spends: one, unless the
    /// provider paces something smaller than a message (Twilio: SMS segments).
    fn rate_cost(&self, _content: &Content) -> NonZeroU32 {
        NonZeroU32::MIN
    }

    /// Whether this account can carry the message at all (content kind, sizes), checked
    /// without sending; lets the gateway pick a channel that can.
    fn check(&self, _message: &Outbound) -> Result<(), ProviderError> {
        Ok(())
    }

    /// How long after the person's last message this content may still be sent (Meta's
    /// customer-service windows); `None`: at any time.
    fn service_window(&self, _content: &Content, _tag: Option<&str>) -> Option<Duration> {
        None
    }

    /// Whether replies thread by referring to earlier messages (email's `References`),
    /// so the gateway must fill [`Outbound::thread`].
    fn threads_by_reference(&self) -> bool {
        false
    }

    /// Tells the person who sent `provider_message_id` from `peer` that it was read
    /// (WhatsApp's blue ticks, Messenger's and Instagram's "seen"), and with `typing` that an
    /// answer is being written, as an agent desk shows its customers.
    async fn mark_read(
        &self,
        _provider_message_id: &str,
        _peer: &str,
        _typing: bool,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::gateway(
            ErrorCode::InvalidContent,
            "this channel carries no read receipts from us to the person",
        ))
    }

    /// A page of the message templates this account may send (WhatsApp), up to `limit`,
    /// after the page token `after` (empty: the first), those named `name` only when given.
    async fn templates(
        &self,
        _name: &str,
        _limit: u32,
        _after: &str,
    ) -> Result<TemplatePage, ProviderError> {
        Err(ProviderError::gateway(
            ErrorCode::InvalidContent,
            "this channel has no message templates",
        ))
    }

    /// Deletes what the provider keeps of `media` a person sent (their data, when they are
    /// forgotten); media already gone counts as deleted. By default there is nothing the
    /// gateway can delete (Messenger's attachment URLs, mail in a mailbox).
    async fn delete_media(&self, _media: &Media) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Fetches item `index` of `media` that a person sent to this account, from the
    /// provider that keeps it, with the account's credentials: a product team holds no
    /// provider credentials, and a WhatsApp media id means nothing without them.
    async fn fetch_media(
        &self,
        _media: &Media,
        _index: usize,
    ) -> Result<MediaDownload, ProviderError> {
        Err(ProviderError::gateway(
            ErrorCode::InvalidContent,
            "this account's provider keeps no media to fetch",
        ))
    }
}

/// Message templates as the provider holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplatePage {
    pub templates: Vec<TemplateInfo>,
    /// Where the next page starts; empty on the last.
    pub after: String,
}

/// One template in one language.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateInfo {
    pub id: String,
    pub name: String,
    pub language: String,
    /// `MARKETING`, `UTILITY`, `AUTHENTICATION`.
    pub category: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`...: only an approved one can be sent.
    pub status: String,
    /// The text of its body component, with its `{{n}}` parameters.
    pub body: String,
    /// All its components (header, body, footer, buttons), as the provider's JSON.
    pub components_json: String,
}

/// Media as its provider serves it, read as it arrives.
pub struct MediaDownload {
    /// What the provider says it is (its `Content-Type`, or the media lookup's).
    pub mime_type: String,
    /// The length the provider announced, when it did.
    pub size: Option<u64>,
    pub body: Box<dyn MediaBody>,
}

impl MediaDownload {
    /// Bytes already at hand, in one piece.
    pub fn whole(mime_type: String, bytes: Bytes) -> Self {
        let size = Some(bytes.len() as u64);
        MediaDownload { mime_type, size, body: Box::new(Whole(Some(bytes))) }
    }
}

struct Whole(Option<Bytes>);

#[async_trait]
impl MediaBody for Whole {
    async fn chunk(&mut self) -> Result<Option<Bytes>, ProviderError> {
        Ok(self.0.take())
    }
}

/// The bytes of a [`MediaDownload`].
#[async_trait]
pub trait MediaBody: Send {
    /// The next piece, or `None` at the end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, ProviderError>;
}

/// A provider's HTTP request to the gateway, as received.
#[derive(Clone, Debug)]
pub struct WebhookRequest {
    /// The public URL the provider called (scheme, host, port, path, query): signatures
    /// cover what the provider saw, not what a proxy rewrote.
    pub public_url: String,
    /// Which of the adapter's hooks was called ("status", "inbound").
    pub hook: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What a webhook meant, in canonical terms.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookEvent {
    Status(StatusReport),
    Inbound(InboundMessage),
    /// A message a person sent that the canonical model has no kind for (a WhatsApp
    /// contact card): reported, not dropped, so that the product can answer them.
    Unreadable {
        provider_message_id: String,
        from: String,
        reason: String,
    },
    /// Every message we sent to `peer` up to `up_to_ms` reached `status` (Messenger's
    /// delivery and read watermarks).
    Watermark {
        peer: String,
        status: MessageStatus,
        up_to_ms: i64,
    },
}

/// A receipt for a message we sent.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusReport {
    pub provider_message_id: String,
    pub status: MessageStatus,
    pub provider_status: String,
    pub error: Option<ProviderError>,
    /// Our id of the message, when the provider echoes it (WhatsApp's
    /// `biz_opaque_callback_data`): what ties a receipt to a send whose answer was lost.
    pub message_id: Option<String>,
}

/// A message a person sent to one of our addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundMessage {
    pub provider_message_id: String,
    pub from: String,
    pub to: String,
    pub content: Content,
    /// The provider's id of the message this one replies to.
    pub reply_to: Option<String>,
    /// Further provider ids this message refers to, newest last (email's `References`);
    /// any of them finds the conversation.
    pub references: Vec<String>,
    /// What the message says of the person's consent to get more from this sender.
    pub consent: Option<Consent>,
    /// The conversation the message names itself, when it names one (the token of a
    /// plus-addressed email reply): tried after `reply_to` and `references`.
    pub conversation: Option<String>,
}

/// A person's word on getting messages from a sender: an SMS `STOP` bars the sender until
/// a `START`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    OptedOut,
    OptedIn,
}

/// The body the provider expects back on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAck {
    pub content_type: &'static str,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature: answered with 403.
    #[error("signature check failed: {0}")]
    Signature(&'static str),
    /// A body we cannot understand: answered with 400 and this text.
    #[error("malformed webhook: {0}")]
    Malformed(String),
    #[error("no such webhook hook: {0}")]
    UnknownHook(String),
}

/// A verified webhook, in canonical terms.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<WebhookEvent>,
    pub ack: WebhookAck,
    /// Parts skipped as unknown or malformed; the rest of the batch still counts.
    pub ignored: usize,
}

/// Verifies and parses one provider account's webhooks.
pub trait WebhookHandler: Send + Sync {
    fn handle(&self, request: &WebhookRequest) -> Result<Parsed, WebhookError>;

    /// Answers a subscription handshake (a GET with a query string) with the body to echo.
    fn verify_subscription(&self, _hook: &str, _query: &str) -> Result<String, WebhookError> {
        Err(WebhookError::UnknownHook("subscription handshake".into()))
    }
}
