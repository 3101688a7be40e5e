//! The edges: the gRPC API and the HTTP ingress.
//!
//! # Layout
//! - [`auth`]: bearer tokens on the gRPC API.
//! - [`convert`]: the one place where proto types and the model convert.
//! - [`validate`]: request checks that answer INVALID_ARGUMENT with a reason.
//! - [`grpc`]: the `omnigate.v1.Gateway` service.
//! - [`http`]: provider webhooks, health, readiness and metrics.
//! - [`people`]: the contact and conversation RPCs.
//! - [`routing`]: which channel, account and address a message goes to, and its fallbacks.
//! - [`webhooks`]: the webhook subscription RPCs.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod people;
pub mod routing;
pub mod validate;
pub mod webhooks;

/// An accepted connection with Nagle's algorithm off. Answers go out in several writes
/// (HTTP/2 headers, data and trailers; a streamed event after the last): with Nagle on, a
/// write waits for the client's delayed acknowledgement of the one before, up to 40 ms.
/// Failing to set it only costs that latency, so the connection is served regardless.
pub fn without_nagle(stream: tokio::net::TcpStream) -> tokio::net::TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
    }
    stream
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_lose_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("option"), "Nagle is on by default");
        assert!(super::without_nagle(accepted).nodelay().expect("option"));
    }
}
