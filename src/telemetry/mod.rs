//! What the gateway tells its operators: Prometheus metrics on `/metrics`, logs on stderr
//! and traces over OTLP. Logs are tracing events with fields first and a short sentence
//! last; spans carry ids, channels, accounts and outcomes. Message bodies and addresses
//! are never logged nor traced.

mod calls;
mod metrics;
mod traces;

pub use calls::CallsLayer;
pub use metrics::*;
pub use traces::{Telemetry, grpc_span, init, trace_webhook};
