//! Hands accepted messages to their providers: in memory, fed by the acceptor right after
//! commit (the store is read only at start-up, to recover), one queue and one rate limit per
//! route, a bounded number of sends in flight, and retries with backoff.
//!
//! # Layout
//! - [`backoff`]: the one retry delay policy.
//! - [`route`]: per-route queues, limits and pauses.
//! - [`dispatcher`]: the loop that times retries and routes due work, and the send itself.
//! - [`unsure`]: what a retry asks first when the last attempt's answer was lost.

pub mod backoff;
pub mod cancel;
pub mod dispatcher;
pub mod route;
pub mod unsure;

pub use backoff::Backoff;
pub use dispatcher::{Dispatcher, Outlet};
