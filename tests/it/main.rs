//! Integration tests: the real gateway, on loopback, against the provider sandboxes.

mod api;
mod cancel;
mod consent;
mod crash;
mod email;
mod events;
mod fleet;
mod media;
mod meta;
mod omnichannel;
mod pg;
mod process;
mod receipts;
mod retention;
mod retries;
mod schedule;
mod send;
mod store;
mod support;
mod telemetry;
mod webhooks;
