//! Twilio Programmable Messaging (SMS and MMS) over the 2010-04-01 REST API.
//!
//! # Layout
//! - [`config`]: one Twilio account as the gateway configures it.
//! - [`wire`]: the form fields, JSON bodies and status words Twilio speaks.
//! - [`errors`]: Twilio error codes to canonical classes.
//! - [`signature`]: the `X-Twilio-Signature` algorithm.
//! - [`client`]: the [`Sender`](crate::Sender).
//! - [`segments`]: how many SMS segments a body takes; Twilio paces senders by them.
//! - [`webhook`]: status callbacks and inbound messages, verified and parsed.
//! - `sandbox`: a local server speaking Twilio's wire protocol (feature `sandbox`).

pub mod client;
pub mod config;
pub mod errors;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod segments;
pub mod signature;
#[cfg(all(test, feature = "sandbox"))]
mod tests;
#[cfg(test)]
mod tests_spec;
pub mod webhook;
pub mod wire;

pub use client::TwilioSender;
pub use config::TwilioAccount;
pub use webhook::TwilioWebhooks;

/// The provider name on errors.
pub const PROVIDER: &str = "twilio";
