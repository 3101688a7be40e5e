//! Each call to the Gateway API, counted by method and gRPC status and timed, as a tower
//! layer around the gRPC server; the call's span gets the status too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{Request, Response};
use omnigate_proto::GATEWAY_METHODS;
use tonic::Code;

use super::Metrics;

#[derive(Clone)]
pub struct CallsLayer {
    metrics: Arc<Metrics>,
}

impl CallsLayer {
    pub fn new(metrics: Arc<Metrics>) -> CallsLayer {
        CallsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower_service::Service<Request<B>> for Calls<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Observed<S::Future> {
        let call = gateway_method(request.uri().path()).map(|method| Call {
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
            span: None,
        });
        Observed { inner: self.inner.call(request), call }
    }
}

/// The method's name among the Gateway's, so that a label never comes from what a caller
/// made up; health checks and reflection are probes and are not counted.
fn gateway_method(path: &str) -> Option<&'static str> {
    let method = path.strip_prefix("/omnigate.v1.Gateway/")?;
    GATEWAY_METHODS.iter().find(|known| **known == method).copied()
}

struct Call {
    method: &'static str,
    started: Instant,
    metrics: Arc<Metrics>,
    /// The call's span, entered while the call is polled (not while it is dropped), so
    /// taken at the first poll.
    span: Option<tracing::Span>,
}

pin_project_lite::pin_project! {
    pub struct Observed<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for Observed<F> {
        // Dropped unanswered: the client went away or its deadline passed first.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.end(Code::Cancelled);
            }
        }
    }
}

impl Call {
    fn end(self, code: Code) {
        self.metrics.grpc_call(self.method, code_name(code), self.started.elapsed());
        if let Some(span) = self.span {
            span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                span.record("otel.status_code", "error");
            }
        }
    }
}

impl<F, R, E> Future for Observed<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(call) = this.call.as_mut() {
            call.span.get_or_insert_with(tracing::Span::current);
        }
        let out = ready!(this.inner.poll(cx));
        if let Some(call) = this.call.take() {
            // A handler's error comes back as a trailers-only response, its status in the
            // headers; a unary success carries OK in trailers the body sends later.
            let code = match &out {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .map_or(Code::Ok, |status| Code::from_bytes(status.as_bytes())),
                Err(_) => Code::Unknown,
            };
            call.end(code);
        }
        Poll::Ready(out)
    }
}

/// The status codes OpenTelemetry's RPC conventions count as the server's fault.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The status's name as gRPC's status code list spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateways_own_methods_become_labels() {
        assert_eq!(gateway_method("/omnigate.v1.Gateway/SendMessage"), Some("SendMessage"));
        assert_eq!(gateway_method("/omnigate.v1.Gateway/StreamEvents"), Some("StreamEvents"));
        assert_eq!(gateway_method("/omnigate.v1.Gateway/MadeUp"), None);
        assert_eq!(gateway_method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(gateway_method("/omnigate.v1.Gateway/SendMessage/x"), None);
    }

    /// OpenTelemetry's RPC conventions mark a server span as an error only for the codes
    /// that are the server's fault, not a caller's bad request.
    #[test]
    fn server_faults_alone_mark_a_span_as_an_error() {
        let faults: Vec<&str> =
            (0..=16).map(Code::from_i32).filter(|c| is_server_error(*c)).map(code_name).collect();
        assert_eq!(
            faults,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        let names: std::collections::HashSet<&str> =
            (0..=16).map(Code::from_i32).map(code_name).collect();
        assert_eq!(names.len(), 17, "one label a code");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    }
}
