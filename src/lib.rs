//! omnigate: a headless omnichannel messaging gateway. One gRPC API and one canonical
//! schema; adapters translate to and from each provider; the gateway keeps every accepted
//! message durable until its provider has it, paces each route, retries what can be
//! retried, turns receipts into statuses and publishes every change as an event.
//!
//! # Layout
//! - [`config`]: TOML + environment configuration, validated with errors that name the key.
//! - [`model`]: stored messages, contacts, conversations, events.
//! - [`contacts`]: identity normalisation (E.164, email, Meta ids).
//! - [`store`]: the durable state (trait + SQLite), with group commit.
//! - [`accounts`]: configured provider accounts and each channel's default.
//! - [`dispatch`]: in-memory dispatch, per-route rate limits, retries and backoff.
//! - [`api`]: the gRPC service and the HTTP ingress (webhooks, health, metrics).
//! - [`inbound`]: provider reports (receipts, inbound messages) applied to the store.
//! - [`mailbox`]: each email account's IMAP reader, with its durable cursor.
//! - [`app`]: start-up, recovery and draining shutdown.
//! - [`webhooks`]: CRM webhooks (Standard Webhooks), per-subscription ordered delivery.
//! - [`telemetry`]: metrics and logs.

pub mod accounts;
pub mod api;
pub mod app;
pub mod config;
pub mod contacts;
pub mod dispatch;
pub mod fleet;
pub mod inbound;
pub mod mailbox;
pub mod model;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use app::Gateway;
pub use config::Config;

/// Memory is allocated on request threads and freed on the store's writer thread (and the
/// reverse) on every message; glibc's malloc serialises those cross-thread frees on arena
/// locks, mimalloc frees them without one. Here rather than in `main` so that the tests and
/// the load generator run on the allocator the gateway ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
