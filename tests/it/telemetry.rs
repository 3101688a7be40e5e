//! Traces over OTLP, from the real binary to a real OTLP/gRPC receiver: the caller's trace
//! continues through acceptance and every send, what a failure was is on its span, the
//! spans batched at SIGTERM still leave, and no address or body is ever in them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use omnigate_adapters::twilio::sandbox::{Fault, Rule};
use omnigate_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};

use crate::process::{Binary, status_of, terminate, twilio_sandbox_with};
use crate::support::text_request;

/// What an OTLP collector received: each span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = text(&attributes, "service.name").unwrap_or_default().to_string();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, url)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().expect("spans").clone()
    }
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match value(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_for(
    client: &mut omnigate_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    id: &str,
    status: pb::MessageStatus,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while status_of(client, id).await != status {
        assert!(tokio::time::Instant::now() < deadline, "{id} never reached {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_callers_trace_to_the_provider_and_carry_no_personal_data() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    const DELIVERED_TO: &str = "+14155550123";
    const REJECTED_TO: &str = "+14155559999";
    const BODY: &str = "your code is 424242";
    let (collector, endpoint) = Collector::start().await;
    let rule =
        Rule { to_prefix: REJECTED_TO.into(), fault: Fault::Reject { code: 21211 }, times: None };
    let sandbox = twilio_sandbox_with(0, vec![rule]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"omnigate-under-test\"\n"
    );
    let binary = Binary::new(dir.path(), &sandbox, 4, &telemetry);
    let (mut child, mut client) = binary.spawn().await;

    let mut traced = tonic::Request::new(text_request(DELIVERED_TO, BODY));
    let traceparent = format!("00-{TRACE}-{CALLER}-01");
    traced.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    let delivered = client.send_message(traced).await.expect("accepted").into_inner();
    let delivered = delivered.message.expect("message").id;
    let rejected = client.send_message(text_request(REJECTED_TO, BODY)).await.expect("accepted");
    let rejected = rejected.into_inner().message.expect("message").id;
    // A malformed traceparent is ignored: the call is served, in a trace of its own.
    let mut garbled = tonic::Request::new(text_request(DELIVERED_TO, BODY));
    garbled.metadata_mut().insert("traceparent", "00-not-a-trace-01".parse().expect("ascii"));
    client.send_message(garbled).await.expect("a bad traceparent does not fail the call");
    wait_for(&mut client, &delivered, pb::MessageStatus::Delivered).await;
    wait_for(&mut client, &rejected, pb::MessageStatus::Failed).await;
    let missing = pb::GetMessageRequest { id: "msg_none".into() };
    client.get_message(missing).await.expect_err("no such message");
    // The batch exporter waits 5 s between exports: these spans leave only if the drain
    // flushes them.
    assert_eq!(terminate(&mut child), Some(0));

    let spans = collector.spans();
    assert!(spans.iter().all(|(service, _)| service == "omnigate-under-test"), "service.name");
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    let calls: Vec<&Span> =
        spans.iter().filter(|s| s.name == "/omnigate.v1.Gateway/SendMessage").collect();
    assert_eq!(calls.len(), 3, "one span per SendMessage: {:#?}", spans);
    let untraced = calls.iter().filter(|s| hex(&s.trace_id) != TRACE);
    assert!(untraced.clone().all(|s| s.parent_span_id.is_empty()), "roots of their own");
    assert_eq!(untraced.count(), 2);
    let call = calls.iter().find(|s| hex(&s.trace_id) == TRACE).expect("the caller's trace");
    assert_eq!(hex(&call.parent_span_id), CALLER, "the call is a child of the caller's span");
    assert_eq!(call.kind, span::SpanKind::Server as i32);
    assert_eq!(value(&call.attributes, "rpc.grpc.status_code"), Some(&Value::IntValue(0)));
    let not_found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "/omnigate.v1.Gateway/GetMessage")
        .filter(|s| value(&s.attributes, "rpc.grpc.status_code") == Some(&Value::IntValue(5)))
        .collect();
    assert_eq!(not_found.len(), 1, "the failed look-up's span has its status: {spans:#?}");
    let accept =
        spans.iter().find(|s| s.name == "store.accept" && s.parent_span_id == call.span_id);
    assert!(accept.is_some(), "the wait for the commit is a child of the call");

    let sends: Vec<&Span> = spans.iter().filter(|s| s.name == "send").collect();
    let sent = sends
        .iter()
        .find(|s| text(&s.attributes, "omnigate.message_id") == Some(delivered.as_str()))
        .expect("the delivered message's send");
    assert_eq!(sent.trace_id, call.trace_id, "the send continues the caller's trace");
    assert_eq!(sent.parent_span_id, call.span_id);
    assert_eq!(sent.kind, span::SpanKind::Client as i32);
    assert_eq!(text(&sent.attributes, "omnigate.outcome"), Some("sent"));
    assert_eq!(text(&sent.attributes, "omnigate.account"), Some("sms"));

    let failed = sends
        .iter()
        .find(|s| text(&s.attributes, "omnigate.message_id") == Some(rejected.as_str()))
        .expect("the rejected message's send");
    assert_ne!(hex(&failed.trace_id), TRACE, "an untraced call starts its own trace");
    assert_eq!(text(&failed.attributes, "omnigate.outcome"), Some("failed"));
    assert_eq!(text(&failed.attributes, "omnigate.provider_code"), Some("21211"));
    let failed_status = failed.status.as_ref().map(|s| s.code);
    assert_eq!(failed_status, Some(status::StatusCode::Error as i32));

    let receipt = spans
        .iter()
        .find(|s| s.name == "POST /webhooks/twilio")
        .expect("a span for the status callback");
    assert_eq!(
        value(&receipt.attributes, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );

    // Nothing personal: neither address nor body in any attribute or span event.
    let everything = format!("{spans:?}");
    for secret in [DELIVERED_TO, REJECTED_TO, BODY, &DELIVERED_TO[1..], &REJECTED_TO[1..]] {
        assert!(!everything.contains(secret), "{secret} leaked into a span");
    }
}
