//! Meta's Graph API channels: WhatsApp Cloud API, Messenger and Instagram messaging, over one
//! shared Graph client.
//!
//! # Layout
//! - [`config`]: one Meta account (a WhatsApp phone number, a Page, an Instagram account).
//! - [`graph`]: the shared Graph API client and its error object.
//! - [`errors`]: Graph error codes to canonical classes.
//! - [`signature`]: the `X-Hub-Signature-256` webhook signature.
//! - [`whatsapp`]: the WhatsApp wire format, both directions.
//! - [`messenger`]: the Messenger and Instagram Send API and webhooks.
//! - [`client`]: the [`Sender`](crate::Sender) for all three.
//! - [`webhook`]: the subscription handshake and signed webhook batches.
//! - `sandbox`: a local Graph API with signed webhooks (feature `sandbox`).

pub mod client;
pub mod config;
pub mod errors;
pub mod graph;
pub mod messenger;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod signature;
#[cfg(all(test, feature = "sandbox"))]
mod tests;
pub mod webhook;
pub mod whatsapp;

pub use client::MetaSender;
pub use config::MetaAccount;
pub use webhook::MetaWebhooks;

/// The provider name on errors.
pub const PROVIDER: &str = "meta";
