//! The edges: the gRPC API and the HTTP ingress.
//!
//! # Layout
//! - [`auth`]: bearer tokens on the gRPC API.
//! - [`convert`]: the one place where proto types and the model convert.
//! - [`validate`]: request checks that answer INVALID_ARGUMENT with a reason.
//! - [`grpc`]: the `omnigate.v1.Gateway` service.
//! - [`http`]: provider webhooks, health, readiness and metrics.
//! - [`media`]: `GetMedia`, people's media fetched from their provider.
//! - [`people`]: the contact and conversation RPCs.
//! - [`routing`]: which channel, account and address a message goes to, and its fallbacks.
//! - [`webhooks`]: the webhook subscription RPCs.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod media;
pub mod people;
pub mod routing;
pub mod validate;
pub mod webhooks;
