//! Operability: HTTP health, readiness and metrics; gRPC health and reflection.

use omnigate_proto::v1 as pb;
use serde_json::Value;

use crate::send::{metric, reqwest_get, until_metric};
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

/// A replica cut off from its database is not ready, says why, and is ready again once
/// the database lets it back in.
#[tokio::test]
async fn readiness_follows_the_store() {
    let db = crate::pg::TestDb::create();
    let t = support::gateway().store_url(&db.url).start().await;
    let ready = || async {
        let client = omnigate_adapters::http::client(std::time::Duration::from_secs(5));
        let response = client.get(t.url("/readyz")).send().await.expect("reachable");
        (response.status().as_u16(), response.text().await.expect("body"))
    };
    assert_eq!(ready().await, (200, "ready".to_string()));

    // As a failover or a firewall would: no session of this database, no new one either.
    let name = db.name.clone();
    let allow = move |allowed: bool| {
        let name = name.clone();
        crate::pg::with_admin(move |c| {
            c.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allowed}"))
                .expect("alter database");
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .expect("terminate");
        })
    };
    allow(false);
    let mut answer = ready().await;
    for _ in 0..100 {
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        answer = ready().await;
    }
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(answer.1.starts_with("store unavailable"), "{answer:?}");

    allow(true);
    for _ in 0..100 {
        answer = ready().await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answer, (200, "ready".to_string()));
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

async fn channel(addr: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(addr.to_string()).expect("uri");
    endpoint.connect().await.expect("connect")
}

/// The gRPC health status of `service` (empty: the server as a whole).
async fn health(channel: tonic::transport::Channel, service: &str) -> i32 {
    let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client.check(request).await.expect("health").into_inner().status
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    let t = support::gateway().start().await;
    let channel = channel(&format!("http://{}", t.gw().grpc_addr)).await;
    assert_eq!(health(channel.clone(), "omnigate.v1.Gateway").await, SERVING);

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

/// Each stored status change is counted by channel and status, so that delivery rates
/// (delivered or failed over sent) can be watched.
#[tokio::test]
async fn message_statuses_are_counted_by_channel() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550543", fault = { kind = "reject", code = 21211 } }"#)
        .start()
        .await;
    let ok = t.send("+14155550544", "counted").await;
    t.wait_for(&ok.id, pb::MessageStatus::Delivered).await;
    let refused = t.send("+14155550543", "refused").await;
    t.wait_for(&refused.id, pb::MessageStatus::Failed).await;
    let url = t.url("/metrics");
    let count = |status: &str| {
        format!(r#"omnigate_message_statuses_total{{channel="sms",status="{status}"}}"#)
    };
    until_metric(&url, &count("failed"), 1.0).await;
    let text = reqwest_get(&url).await;
    for (status, want) in [("accepted", 2.0), ("sent", 1.0), ("delivered", 1.0), ("failed", 1.0)] {
        assert_eq!(metric(&text, &count(status)), want, "{status}: {text}");
    }
}

/// Every Gateway call is counted by method and gRPC status, and timed by method; health
/// probes are not calls to count.
#[tokio::test]
async fn gateway_calls_are_counted_by_method_and_status() {
    let mut t = support::gateway().start().await;
    t.send("+14155550502", "counted").await;
    t.send("+14155550503", "counted").await;
    let missing = t
        .client
        .get_message(pb::GetMessageRequest { id: "msg_none".into() })
        .await
        .expect_err("no such message");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid =
        t.client.send_message(support::text_request("", "nobody")).await.expect_err("no recipient");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let channel = channel(&format!("http://{}", t.gw().grpc_addr)).await;
    assert_eq!(health(channel, "").await, SERVING);

    let text = reqwest_get(&t.url("/metrics")).await;
    let calls = |labels: &str| metric(&text, &format!("omnigate_grpc_requests_total{{{labels}}}"));
    assert_eq!(calls(r#"method="SendMessage",code="OK""#), 2.0, "{text}");
    assert_eq!(calls(r#"method="SendMessage",code="INVALID_ARGUMENT""#), 1.0, "{text}");
    assert_eq!(calls(r#"method="GetMessage",code="NOT_FOUND""#), 1.0, "{text}");
    assert_eq!(
        metric(&text, r#"omnigate_grpc_request_duration_seconds_count{method="SendMessage"}"#),
        3.0,
        "{text}"
    );
    assert!(!text.contains("Health"), "probes are not counted: {text}");

    // A call dropped unanswered (here its deadline passes while another connection holds
    // the database's write lock) counts as CANCELLED.
    let lock = rusqlite::Connection::open(t._dir.path().join("omnigate.db")).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("write lock");
    let mut hurried = tonic::Request::new(support::text_request("+14155550504", "hurried"));
    hurried.set_timeout(std::time::Duration::from_millis(200));
    t.client.send_message(hurried).await.expect_err("the deadline passes first");
    // Held until the server has given up too: its deadline timer started after the
    // client's, and a write let through first would answer OK.
    let cancelled = r#"omnigate_grpc_requests_total{method="SendMessage",code="CANCELLED"}"#;
    until_metric(&t.url("/metrics"), cancelled, 1.0).await;
    lock.execute_batch("COMMIT").expect("release");
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
fn the_demo_shows_sms_and_whatsapp_delivered_and_email_sent_or_bounced_on_the_sandboxes() {
    let (code, out) = demo(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MESSAGE_STATUS_DELIVERED"), "{out}");
    let (code, out) = demo(&["--channel", "whatsapp"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MESSAGE_STATUS_DELIVERED"), "{out}");
    let (code, out) = demo(&["--channel", "messenger"]);
    assert_ne!(code, Some(0), "{out}");
    let (code, out) = demo(&["--channel", "email"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MESSAGE_STATUS_SENT"), "{out}");
    // The SMTP sandbox refuses this recipient with 550 5.1.1 (config/omnigate.toml).
    let (code, out) = demo(&["--channel", "email", "--to", "bounce@example.com"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("MESSAGE_STATUS_FAILED (smtp 550 5.1.1"), "{out}");
}

/// Runs `omnigate ARGS` as a client of the gateway at `addr`.
fn cli(
    addr: &str,
    args: &[&str],
) -> impl Future<Output = std::io::Result<std::process::Output>> + use<> {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(args)
        .args(["--addr", addr])
        .output()
}

/// `omnigate send --after-secs` schedules a message and `omnigate cancel` stops it; a
/// cancellation the gateway refuses fails the command with the gateway's reason.
#[tokio::test]
async fn the_cli_schedules_and_cancels() {
    let mut t = support::gateway().start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = |args: &[&str]| cli(&addr, args);
    let out = cli(&["send", "--to", "+14155550521", "--text", "later", "--after-secs", "600"])
        .await
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout.split_whitespace().next().expect("an id").to_string();
    assert!(stdout.contains("MESSAGE_STATUS_ACCEPTED"), "{stdout}");
    let scheduled = t.get(&id).await;
    let send_at = scheduled.send_at.as_ref().map(omnigate::api::convert::millis).expect("send_at");
    assert!(send_at > omnigate::model::now_ms() + 500_000, "about ten minutes ahead: {send_at}");

    let out = cli(&["cancel", &id]).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("MESSAGE_STATUS_CANCELED"), "{out:?}");
    assert_eq!(t.get(&id).await.status, pb::MessageStatus::Canceled as i32);

    let out = cli(&["cancel", "msg_unknown"]).await.expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{out:?}");
}

/// `send --subject` sends an email with that subject, and `--metadata` sets entries.
#[tokio::test]
async fn the_cli_sends_email_with_a_subject_and_metadata() {
    let mut t = support::gateway().start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let args = ["send", "--channel", "email", "--to", "ann@example.com", "--text", "shipped"];
    let more = ["--subject", "Your order", "--metadata", "order=42", "--metadata", "a=b=c"];
    let out = cli(&addr, &[&args[..], &more[..], &["--wait"]].concat()).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    let id =
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
    let sent = t.get(&id).await;
    let Some(pb::content::Kind::Email(email)) = sent.content.and_then(|c| c.kind) else {
        panic!("not an email: {id}");
    };
    assert_eq!((email.subject.as_str(), email.text.as_str()), ("Your order", "shipped"));
    assert_eq!(sent.metadata.get("order").map(String::as_str), Some("42"));
    assert_eq!(sent.metadata.get("a").map(String::as_str), Some("b=c"));

    let out = cli(&addr, &["send", "--to", "+14155550542", "--text", "x", "--metadata", "novalue"])
        .await
        .expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"), "{out:?}");
}

/// `omnigate webhooks` adds (showing the secret once), lists, replays, rotates the secret
/// of, updates and deletes CRM subscriptions.
#[tokio::test]
async fn the_cli_manages_webhooks() {
    let t = support::gateway().start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    // The gateway runs on this test's runtime: the client must not block it.
    let run = async |args: &[&str]| {
        let out = cli(&addr, args).await.expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let added = [
        "webhooks",
        "add",
        "http://127.0.0.1:9/crm",
        "--kind",
        "message_received",
        "--independent",
    ];
    let (ok, out, err) = run(&added).await;
    assert!(ok, "{err}");
    let hook: Value = serde_json::from_str(&out).expect("JSON");
    let id = hook["id"].as_str().expect("id").to_string();
    assert!(hook["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{hook}");
    assert_eq!(hook["kinds"], serde_json::json!(["message_received"]));
    assert_eq!(hook["delivery"], "WEBHOOK_DELIVERY_INDEPENDENT");

    let (ok, out, err) = run(&["webhooks", "list"]).await;
    assert!(ok, "{err}");
    let listed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("secret").is_none(), "the secret shows once: {out}");

    let (ok, out, err) = run(&["webhooks", "replay", &id, "--from", "0"]).await;
    assert!(ok, "{err}");
    let replayed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(replayed["id"], id.as_str());
    let (ok, _, err) = run(&["webhooks", "replay", &id, "--from", "1000000"]).await;
    assert!(!ok && err.contains("past the last event"), "{err}");

    let (ok, out, err) = run(&["webhooks", "dead-letters", &id]).await;
    assert!(ok && out.trim().is_empty(), "none yet: {out}{err}");
    let (ok, _, err) = run(&["webhooks", "dead-letters", "whk_none"]).await;
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, err) = run(&["webhooks", "rotate", &id, "--grace-hours", "2"]).await;
    assert!(ok, "{err}");
    let rotated: Value = serde_json::from_str(&out).expect("JSON");
    let secret = rotated["secret"].as_str().expect("the new secret shows once");
    assert!(secret.starts_with("whsec_") && secret != hook["secret"], "{rotated}");
    let until = rotated["previousSecretExpiresAt"].as_str().expect("grace end");
    let hours = |rfc3339: &str| rfc3339[11..13].parse::<i64>().expect("hour");
    // Two hours after the rotation, which may have been in the hour before this one.
    let now_hour = (omnigate::model::now_ms() / 3_600_000) % 24;
    assert!([(now_hour + 1) % 24, (now_hour + 2) % 24].contains(&hours(until)), "{until}");
    let (ok, _, err) = run(&["webhooks", "rotate", &id, "--grace-hours", "169"]).await;
    assert!(!ok && err.contains("at most 7 days"), "{err}");

    let update = ["webhooks", "update", &id, "--url", "http://127.0.0.1:9/moved", "--all-kinds"];
    let (ok, out, err) = run(&update).await;
    assert!(ok, "{err}");
    let updated: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(updated["url"], "http://127.0.0.1:9/moved");
    assert!(updated.get("kinds").is_none(), "every kind now: {updated}");
    assert_eq!(updated["delivery"], "WEBHOOK_DELIVERY_INDEPENDENT", "untouched: {updated}");
    let (ok, out, err) =
        run(&["webhooks", "update", &id, "--pause", "--delivery", "in-order"]).await;
    assert!(ok, "{err}");
    let paused: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(paused["state"], "WEBHOOK_STATE_DISABLED");
    assert_eq!(paused["delivery"], "WEBHOOK_DELIVERY_IN_ORDER");
    let (ok, _, err) = run(&["webhooks", "update", &id]).await;
    assert!(!ok && err.contains("nothing to change"), "{err}");
    let (ok, _, err) = run(&["webhooks", "update", &id, "--url", "ftp://crm"]).await;
    assert!(!ok && err.contains("http(s)"), "{err}");

    let (ok, out, err) = run(&["webhooks", "delete", &id]).await;
    assert!(ok && out.contains("deleted"), "{err}");
    let (ok, out, err) = run(&["webhooks", "list"]).await;
    assert!(ok && out.trim().is_empty(), "{out}{err}");
}

/// `send --wait` ends with the reason and exit code 3 when the message fails, so that a
/// script can tell; the reason shows as well when the gateway refused it at acceptance.
#[tokio::test]
async fn the_cli_says_why_a_watched_send_failed_and_exits_3() {
    let t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550541", fault = { kind = "reject", code = 21211 } }"#)
        .start()
        .await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = |args: &[&str]| cli(&addr, args);
    let out =
        cli(&["send", "--to", "+14155550541", "--text", "doomed", "--wait"]).await.expect("runs");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MESSAGE_STATUS_FAILED (twilio 21211: "), "{stdout}");
    // Barred now (21211 is a dead number): refused at acceptance, with the gateway's reason.
    let out =
        cli(&["send", "--to", "+14155550541", "--text", "again", "--wait"]).await.expect("runs");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MESSAGE_STATUS_FAILED (ERROR_CODE_INVALID_RECIPIENT: "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "failed at once: {stdout}");
}

/// `omnigate get` prints a message and `omnigate events` the event log, as proto3 JSON;
/// `send --wait` shows each status once.
#[tokio::test]
async fn the_cli_prints_messages_and_events_as_json() {
    let mut t = support::gateway().start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = |args: &[&str]| cli(&addr, args);
    let out =
        cli(&["send", "--to", "+14155550531", "--text", "watched", "--wait"]).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    let shown: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        shown,
        ["MESSAGE_STATUS_ACCEPTED", "MESSAGE_STATUS_SENT", "MESSAGE_STATUS_DELIVERED"],
        "{out:?}"
    );
    let id =
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();

    let out = cli(&["get", &id]).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    let message: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["status"], "MESSAGE_STATUS_DELIVERED");
    assert_eq!(message["statusHistory"].as_array().map(Vec::len), Some(3), "{message}");

    // `history` lists the conversation, oldest first.
    let second = t.send("+14155550531", "and again").await;
    let conversation = message["conversationId"].as_str().expect("conversation");
    assert_eq!(second.conversation_id, conversation);
    let out = cli(&["history", conversation]).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["id"].to_string())
        .collect();
    assert_eq!(ids, [format!("{id:?}"), format!("{:?}", second.id)]);

    let out = cli(&["events", "--from", "0", "--kind", "message_status_changed", "--count", "3"])
        .await
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["messageStatusChanged"]["message"]["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses,
        ["MESSAGE_STATUS_ACCEPTED", "MESSAGE_STATUS_SENT", "MESSAGE_STATUS_DELIVERED"]
    );

    // Without --from, only what happens once it is connected: no replay of the first
    // message's four events (its conversation opened, three statuses).
    let tail = tokio::spawn(cli(&["events", "--count", "1"]));
    while !tail.is_finished() {
        t.send("+14155550532", "next").await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = tail.await.expect("task").expect("runs");
    let first: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let sequence: u64 = first["sequence"].as_str().and_then(|s| s.parse().ok()).expect("sequence");
    assert!(sequence > 4, "{first}");
}

/// With `server.api_tokens`, every Gateway RPC needs `authorization: Bearer TOKEN`, from
/// any client and from `omnigate send`; gRPC health stays open for probes.
#[tokio::test]
async fn api_tokens_guard_the_gateway_but_not_its_health() {
    const TOKEN: &str = "test-token-0123456789abcdef0123456789";
    let t = support::gateway().api_token(TOKEN).start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let channel = channel(&addr).await;
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

    assert_eq!(health(channel, "").await, SERVING, "health needs no token");

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
    let text = reqwest_get(&t.url("/metrics")).await;
    let refused = r#"omnigate_grpc_requests_total{method="SendMessage",code="UNAUTHENTICATED"}"#;
    assert_eq!(metric(&text, refused), 3.0, "{text}");
}

/// Certificates from `scripts/test-certs.sh` (a CA, a server certificate for localhost, a
/// client certificate), made fresh in `dir`.
fn certificates(dir: &std::path::Path) -> std::path::PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-certs.sh");
    let status = std::process::Command::new("bash")
        .args([script, &dir.display().to_string()])
        .status()
        .expect("bash runs");
    assert!(status.success(), "scripts/test-certs.sh needs openssl");
    dir.to_path_buf()
}

/// With a certificate and a client CA, the gRPC API speaks TLS only and lets in only
/// clients with a certificate that CA signed, `omnigate send` among them.
#[tokio::test]
async fn the_grpc_api_serves_mutual_tls() {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certificates(dir.path());
    let file = |name: &str| certs.join(name).display().to_string();
    let config = support::gateway()
        .server(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        ))
        .config(dir.path());
    let gateway = omnigate::Gateway::start(config).await.expect("starts with TLS");
    let port = gateway.grpc_addr.port();
    let read = |name: &str| std::fs::read(certs.join(name)).expect("pem");
    let ca = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem")));
    let send = |channel: Channel| async move {
        pb::gateway_client::GatewayClient::new(channel)
            .send_message(support::text_request("+14155550507", "over tls"))
            .await
    };

    let plain =
        Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect().await;
    let plain_refused = match plain {
        Ok(channel) => send(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(plain_refused, "plaintext gRPC is not served");

    let https = format!("https://localhost:{port}");
    let anonymous =
        Channel::from_shared(https.clone()).expect("uri").tls_config(ca()).expect("tls");
    let anonymous_refused = match anonymous.connect().await {
        Ok(channel) => send(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(anonymous_refused, "a client without a certificate is refused");

    let identity = Identity::from_pem(read("client.pem"), read("client.key"));
    let channel = Channel::from_shared(https.clone())
        .expect("uri")
        .tls_config(ca().identity(identity))
        .expect("tls")
        .connect()
        .await
        .expect("mutual TLS handshake");
    let sent =
        send(channel).await.expect("accepted over TLS").into_inner().message.expect("message");
    assert_eq!(sent.status, pb::MessageStatus::Accepted as i32);

    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["send", "--addr", &https, "--to", "+14155550508", "--text", "cli over tls"])
        .args(["--ca-file", &file("ca.pem"), "--cert-file", &file("client.pem")])
        .args(["--key-file", &file("client.key")])
        .output()
        .await
        .expect("runs");
    assert!(cli.status.success(), "{cli:?}");
    assert!(String::from_utf8_lossy(&cli.stdout).contains("MESSAGE_STATUS_ACCEPTED"), "{cli:?}");
    gateway.shutdown().await.expect("shutdown");

    let unusable = support::gateway()
        .server(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            file("ca.pem"),
            file("ca.pem")
        ))
        .config(dir.path());
    let err = omnigate::Gateway::start(unusable).await.err().expect("a certificate as the key");
    assert!(format!("{err:#}").contains("server.tls_cert_file"), "{err:#}");
}

/// The ingress faces the internet: a client that never finishes its request headers is cut
/// off (after `server.http_header_timeout_ms`) rather than holding a connection for good,
/// while complete requests are served as before.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = support::gateway().server("http_header_timeout_ms = 200").start().await;
    let mut slow = tokio::net::TcpStream::connect(t.gw().http_addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: omnigate\r\n").await.expect("partial headers");
    assert_eq!(reqwest_get(&t.url("/healthz")).await, "ok", "others are still served");
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the connection is closed by the server: {closed:?}");
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// `omnigate check-config` validates and prints a config with every secret left out: auth
/// tokens, API tokens and the database password; a bad config fails naming its key.
#[test]
fn check_config_prints_no_secret_and_names_a_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("omnigate.toml");
    let check = |toml: &str| {
        std::fs::write(&path, toml).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("runs")
    };
    let out = check(
        r#"
[server]
api_tokens = ["api-token-0123456789abcdef0123456789abcdef"]

[store]
url = "postgres://omnigate:db-password-42@db.internal:5432/omnigate"

[[accounts]]
type = "twilio"
id = "sms"
account_sid = "AC00000000000000000000000000000000"
auth_token = "twilio-auth-token-42"
from = "+15005550006"
"#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("config OK: 1 account(s)"), "{stdout}");
    for secret in ["api-token-0123456789", "db-password-42", "twilio-auth-token-42"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(stdout.contains("db.internal"), "the rest of the URL stays: {stdout}");

    let out = check("[dispatch]\nmax_attempts = \"ten\"\n");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_attempts"), "{out:?}");
    assert_eq!(stderr.matches("max_attempts").count(), 1, "said once: {stderr}");

    // A mistyped path is an error, not a gateway on the built-in defaults (the sandbox).
    let missing = dir.path().join("omnigate.tmol");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("omnigate.tmol does not exist"),
        "{out:?}"
    );
}

/// `omnigate consent` records an opt-out or an opt-in and says whether it changed anything.
#[tokio::test]
async fn the_cli_records_and_shows_consent() {
    let mut t = support::gateway().start().await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = |args: &[&str]| cli(&addr, args);
    let said = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let out = said(
        cli(&["consent", "+1 415 555 0530", "--out", "--reason", "web form"]).await.expect("runs"),
    );
    assert!(out.starts_with("ctc_") && out.ends_with(" now opted out"), "{out}");
    let refused = t.send("+14155550530", "offer").await;
    let error = refused.error.expect("refused");
    assert!(error.message.contains("web form"), "{}", error.message);
    let out = said(cli(&["consent", "+14155550530", "--out"]).await.expect("runs"));
    assert!(out.ends_with(" already opted out"), "{out}");
    let json = |out: String| serde_json::from_str::<serde_json::Value>(&out).expect("JSON");
    let by_address = json(said(cli(&["contact", "+1 415 555 0530"]).await.expect("runs")));
    let opt_outs = &by_address["optOuts"];
    assert_eq!(
        (opt_outs[0]["account"].as_str(), opt_outs[0]["reason"].as_str()),
        (Some("sms"), Some("web form")),
        "{by_address}"
    );
    let id = by_address["id"].as_str().expect("an id");
    let by_id = json(said(cli(&["contact", id]).await.expect("runs")));
    assert_eq!(by_id, by_address);
    let unknown = cli(&["contact", "+14155550539"]).await.expect("runs");
    assert!(!unknown.status.success(), "an unknown address is an error");
    let out = said(cli(&["consent", "+14155550530", "--in"]).await.expect("runs"));
    assert!(out.ends_with(" now opted in"), "{out}");
    let back = json(said(cli(&["contact", "+14155550530"]).await.expect("runs")));
    assert_eq!(back.get("optOuts"), None, "{back}");
    let neither = cli(&["consent", "+14155550530"]).await.expect("runs");
    assert!(!neither.status.success(), "--out or --in is required");
    let marketing = ["consent", "+14155550530", "--channel", "whatsapp", "--marketing-only"];
    let out = said(cli(&[&marketing[..], &["--out"]].concat()).await.expect("runs"));
    assert!(out.ends_with(" now opted out"), "{out}");
    let listed = json(said(cli(&["contact", "+14155550530"]).await.expect("runs")));
    let listed = &listed["optOuts"][0];
    assert_eq!(
        (listed["account"].as_str(), listed["marketingOnly"].as_bool()),
        (Some("wa"), Some(true)),
        "{listed}"
    );
    let mixed = cli(&[&marketing[..], &["--in"]].concat()).await.expect("runs");
    assert!(!mixed.status.success(), "--marketing-only goes with --out");
    // The suppression list, one JSON object per line, more than a page of it.
    for i in 0..60 {
        let address = format!("+1415555{:04}", 1000 + i);
        said(cli(&["consent", &address, "--out"]).await.expect("runs"));
    }
    let lines = said(cli(&["opt-outs", "--account", "sms"]).await.expect("runs"));
    let listed: Vec<_> = lines.lines().map(|l| json(l.to_string())).collect();
    assert_eq!(listed.len(), 60, "{lines}");
    assert_eq!(listed[0]["address"].as_str(), Some("+14155551000"));
    assert_eq!(listed[59]["address"].as_str(), Some("+14155551059"));
    let every = said(cli(&["opt-outs"]).await.expect("runs"));
    assert_eq!(every.lines().count(), 61, "the marketing opt-out on wa too");
}
