//! Operability: HTTP health, readiness and metrics; gRPC health and reflection.

use omnigate_proto::v1 as pb;

use crate::send::{metric, reqwest_get};
use crate::support;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let mut t = support::gateway().start().await;
    assert_eq!(reqwest_get(&t.url("/healthz")).await, "ok");
    assert_eq!(reqwest_get(&t.url("/readyz")).await, "ready");
    let m = t.send("+14155550501", "count me").await;
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let text = reqwest_get(&t.url("/metrics")).await;
    assert!(text.contains(r#"omnigate_messages_accepted_total{channel="sms"} 1"#), "{text}");
    assert!(
        text.contains(r#"omnigate_send_attempts_total{account="sms",outcome="sent"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"omnigate_webhooks_total{account="sms",result="ok"}"#), "{text}");
    assert!(metric(&text, "omnigate_store_commits_total") >= 1.0);
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    let t = support::gateway().start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", t.gw().grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest { service: "omnigate.v1.Gateway".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.expect("answer").expect("one").message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"omnigate.v1.Gateway".to_string()), "{names:?}");
}

/// `omnigate demo` on the default config, as the README tells a new user to run it.
fn demo(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("demo")
        .args(args)
        .output()
        .expect("omnigate demo runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_demo_shows_sms_delivered_and_email_sent_or_bounced_on_the_sandboxes() {
    let (code, out) = demo(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MESSAGE_STATUS_DELIVERED"), "{out}");
    let (code, out) = demo(&["--channel", "email"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MESSAGE_STATUS_SENT"), "{out}");
    // The SMTP sandbox refuses this recipient with 550 5.1.1 (config/omnigate.toml).
    let (code, out) = demo(&["--channel", "email", "--to", "bounce@example.com"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("MESSAGE_STATUS_FAILED (smtp 550 5.1.1"), "{out}");
}
