//! The adapter contract of omnigate and the adapters themselves.
//!
//! Adapters translate and transport; the gateway owns durability, ordering, rate limits,
//! retries, identity and events. An adapter never sees the store, the dispatcher or the
//! generated gRPC types: it gets a canonical [`Outbound`] message and answers with an
//! [`Accepted`] provider id or a classified [`SendFailure`]; it turns a provider's webhook
//! request into canonical [`WebhookEvent`]s.
//!
//! # Layout
//! - [`model`]: the canonical message model (channels, content, statuses, errors).
//! - [`contract`]: the traits an adapter implements, split by role (send, webhook).
//! - [`http`]: the shared outbound HTTP client (rustls) and Retry-After parsing.
//! - [`tls`]: trust roots for outbound TLS, the system's read once per process.
//! - `sandbox_rules`: fault rules every sandbox shares (feature `sandbox`).
//! - `sandbox_media`: people's media the sandboxes keep, and the CDN serving it.
//! - [`twilio`]: Twilio Programmable Messaging (SMS/MMS), with its sandbox.
//! - [`meta`]: WhatsApp, Messenger and Instagram over the Graph API, with its sandbox.
//! - [`email`]: SMTP out, IMAP in, MIME both ways, with an SMTP sandbox.

pub mod contract;
pub mod model;
#[cfg(feature = "sandbox")]
pub mod sandbox_media;
#[cfg(feature = "sandbox")]
pub mod sandbox_rules;

#[cfg(feature = "email")]
pub mod email;
#[cfg(any(feature = "twilio", feature = "meta", feature = "email"))]
pub mod http;
#[cfg(feature = "meta")]
pub mod meta;
#[cfg(any(feature = "twilio", feature = "meta", feature = "email"))]
pub mod tls;
#[cfg(feature = "twilio")]
pub mod twilio;

pub use contract::{
    Accepted, Consent, FailureClass, InboundMessage, MediaBody, MediaDownload, Outbound, Parsed,
    SendFailure, Sender, StatusReport, TemplateInfo, TemplatePage, Thread, WebhookAck,
    WebhookError, WebhookEvent, WebhookHandler, WebhookRequest,
};
pub use model::{
    Attachment, Channel, Choice, Content, Email, ErrorCode, Interactive, InteractiveAction,
    Location, Media, MediaKind, MessageStatus, ProviderError, RESERVED_EMAIL_HEADERS, Reaction,
    Section, Template, TemplateComponent, TemplateParameter, Text,
};
