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

/// With `server.api_tokens`, every Gateway RPC needs `authorization: Bearer TOKEN`, from
/// any client and from `omnigate send`; gRPC health stays open for probes.
#[tokio::test]
async fn api_tokens_guard_the_gateway_but_not_its_health() {
    const TOKEN: &str = "test-token-0123456789abcdef0123456789";
    let t = support::gateway().api_token(TOKEN).start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let with = |value: &'static str| {
        pb::gateway_client::GatewayClient::with_interceptor(
            channel.clone(),
            move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", value.parse().expect("ascii"));
                Ok(r)
            },
        )
    };
    let request = || support::text_request("+14155550505", "guarded");
    let anonymous = pb::gateway_client::GatewayClient::new(channel.clone())
        .send_message(request())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    assert!(anonymous.message().contains("Bearer"), "{}", anonymous.message());
    let wrong = with("Bearer not-the-token-0123456789abcdef0123456")
        .send_message(request())
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let sent = with("Bearer test-token-0123456789abcdef0123456789")
        .send_message(request())
        .await
        .expect("the configured token")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(sent.status, pb::MessageStatus::Accepted as i32);

    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let cli = |token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"));
        command.args(["send", "--addr", &addr, "--to", "+14155550506", "--text", "cli"]);
        command.env_remove("OMNIGATE_API_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.output()
    };
    let refused = cli(None).await.expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Bearer"), "{refused:?}");
    let ok = cli(Some(TOKEN)).await.expect("runs");
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("MESSAGE_STATUS_ACCEPTED"), "{ok:?}");
}
