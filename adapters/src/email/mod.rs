//! Email: SMTP submission out (lettre), IMAP in (async-imap), MIME parsing (mail-parser).
//!
//! Email has no webhooks: replies and bounces come back to a mailbox. The adapter turns
//! each fetched mail into canonical terms ([`parse::Incoming`]); the gateway owns the
//! mailbox cursor (UIDVALIDITY and last UID) so a restart neither loses nor repeats mail.
//!
//! # Layout
//! - [`config`]: one email account (address, SMTP, IMAP, limits).
//! - `tls`: rustls client settings shared by SMTP and IMAP (system roots plus a CA file).
//! - [`render`]: canonical content to MIME, with Message-ID and threading headers.
//! - [`plus`]: reply addresses that name their conversation (`shop+cnv_…@…`).
//! - [`smtp`]: the [`Sender`](crate::Sender): pooled submission and reply-code mapping.
//! - [`parse`]: MIME to an inbound message, a delivery report or a complaint; its parts
//!   are [`dsn`] (RFC 3464 reports), [`bounce`] (free-text bounces), [`feedback`] (ARF
//!   spam complaints) and [`quote`] (quoted-reply trimming).
//! - [`imap`]: the mailbox client: select, UID fetch, IDLE.
//! - [`unsubscribe`]: signed one-click unsubscribe links (RFC 8058).
//! - `sandbox`: an in-process SMTP listener for demos and benchmarks (feature `sandbox`).

pub mod bounce;
pub mod config;
mod connections;
pub mod dsn;
pub mod feedback;
pub mod imap;
pub mod parse;
pub mod plus;
mod public_only;
pub mod quote;
pub mod render;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod smtp;
pub mod unsubscribe;

pub use config::{EmailAccount, ImapConfig, Security, SmtpConfig};
pub use imap::{Fetched, ImapError, ImapUrl, Mailbox, Selected, Session};
pub use parse::{Incoming, MailError};
pub use smtp::EmailSender;
#[cfg(test)]
mod tests;
