//! One tracing subscriber for logs and traces. The log level filters only the logs: the
//! gateway's spans reach the collector whatever it is, so quiet logs cost no traces, and
//! without a collector no span is made at all.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{ConfigError, LogConfig, TelemetryConfig};

/// Holds the trace exporter; `shutdown` sends what is still batched.
#[must_use = "spans batched at exit are lost unless shut down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The flush blocks until the exporter, a task on this runtime, has answered.
        let error = match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error, "spans batched at exit were not exported");
    }
}

/// Installs the subscriber: logs on stderr (`RUST_LOG` wins over `log.level`), and spans to
/// `telemetry.otlp_endpoint` when set. Runs inside the runtime that will carry the exports.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<Telemetry, ConfigError> {
    let provider = match telemetry.otlp_endpoint.as_str() {
        "" => None,
        _ => Some(tracer_provider(telemetry)?),
    };
    // A second init (tests, `demo` after `serve`) keeps the first subscriber.
    let _ = subscriber(log, provider.as_ref()).try_init();
    Ok(Telemetry { provider })
}

fn subscriber(
    log: &LogConfig,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let json = log.format == "json";
    let text = (!json).then(|| fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| fmt::layer().json().with_writer(std::io::stderr));
    // Log lines carry their own fields; spans are for the collector alone, so without one
    // they are never even created.
    let logs = Layer::and_then(text, json).with_filter(level.and(filter_fn(|m| m.is_event())));
    let logged = tracing_subscriber::registry().with(logs);
    // Not an `Option` layer: an absent layer counts as one that wants every span.
    match provider {
        None => Box::new(logged),
        Some(p) => Box::new(
            logged.with(
                tracing_opentelemetry::layer()
                    .with_tracer(p.tracer("omnigate"))
                    .with_filter(Targets::new().with_target("omnigate", LevelFilter::INFO)),
            ),
        ),
    }
}

fn tracer_provider(telemetry: &TelemetryConfig) -> Result<SdkTracerProvider, ConfigError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&telemetry.otlp_endpoint);
    if telemetry.otlp_endpoint.starts_with("https:") {
        exporter =
            exporter.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
    }
    let exporter = exporter
        .build()
        .map_err(|e| ConfigError::invalid("telemetry.otlp_endpoint", e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            telemetry.sample_ratio,
        ))))
        .with_resource(
            Resource::builder().with_service_name(telemetry.service_name.clone()).build(),
        )
        .build())
}

/// A span for each call to the gateway's API, in the caller's trace when its request
/// carries W3C `traceparent`. Health checks and reflection are probes, not work: no span.
pub fn grpc_span(request: &axum::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let Some(("omnigate.v1.Gateway", method)) = path.trim_start_matches('/').split_once('/') else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "grpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "omnigate.v1.Gateway",
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    continue_callers_trace(&span, request.headers());
    span
}

/// Middleware giving each provider webhook a span, with the HTTP status it was answered.
pub async fn trace_webhook(request: Request, next: Next) -> Response {
    let mut parts = request.uri().path().trim_start_matches("/webhooks/").split('/');
    let (provider, account) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let span = tracing::info_span!(
        "webhook",
        otel.name = format!("{} /webhooks/{provider}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        omnigate.provider = provider,
        omnigate.account = account,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    continue_callers_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

fn continue_callers_trace(span: &tracing::Span, headers: &HeaderMap) {
    if headers.contains_key("traceparent") {
        let _ = span.set_parent(TraceContextPropagator::new().extract(&Headers(headers)));
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{SdkTracerProvider, subscriber};
    use crate::config::LogConfig;

    /// Spans cost nothing without a collector, and reach one whatever the log level.
    #[test]
    fn spans_exist_only_for_a_collector_and_regardless_of_the_log_level() {
        let verbose = LogConfig { level: "trace".into(), ..LogConfig::default() };
        tracing::subscriber::with_default(subscriber(&verbose, None), || {
            assert!(tracing::info_span!("send").is_disabled(), "a span without a collector");
            assert!(tracing::event_enabled!(tracing::Level::INFO), "logs still flow");
        });
        let provider = SdkTracerProvider::builder().build();
        let quiet = LogConfig { level: "error".into(), ..LogConfig::default() };
        tracing::subscriber::with_default(subscriber(&quiet, Some(&provider)), || {
            assert!(!tracing::info_span!("send").is_disabled(), "quiet logs dropped a span");
        });
    }
}
