//! The real binary, killed and restarted: nothing accepted is lost; SIGTERM drains.

use std::time::Duration;

use crate::process::{Binary, terminate, twilio_sandbox, until_sent};
use crate::support::text_request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_accepted_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(200).await;
    let max_in_flight = 4;
    let binary = Binary::new(dir.path(), &sandbox, max_in_flight, "");
    let (mut child, mut client) = binary.spawn().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let m = client
            .send_message(text_request(&format!("+1415558{i:04}"), "survive"))
            .await
            .expect("accepted");
        ids.push(m.into_inner().message.expect("message").id);
    }
    // Some sends are in flight, most are queued behind them: kill without warning.
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    let before = sandbox.sent_count();
    assert!(before < 40, "the kill came before everything was sent ({before})");

    let (child, mut client) = binary.spawn().await;
    // The provider has every message again: SENT at least. (A receipt Twilio posted while
    // the gateway was down is lost, as it would be with Twilio, which does not retry status
    // callbacks; such a message stays SENT.)
    until_sent(&mut client, &ids, Duration::from_secs(60)).await;
    let sent = sandbox.sent();
    let mut recipients: Vec<&str> = sent.iter().filter_map(|s| s.field("To")).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40, "every accepted message reached the provider");
    // At least once: only what was in flight at the kill may have gone twice.
    assert!(sent.len() <= 40 + max_in_flight, "{} sends for 40 messages", sent.len());
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_sends_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(1500).await;
    let binary = Binary::new(dir.path(), &sandbox, 16, "");
    let (mut child, mut client) = binary.spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = client
            .send_message(text_request(&format!("+1415559{i:04}"), "drain"))
            .await
            .expect("accepted");
        ids.push(m.into_inner().message.expect("message").id);
    }
    while sandbox.request_count() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(terminate(&mut child), Some(0), "a drained exit is a clean exit");
    assert_eq!(sandbox.sent_count(), 5, "the in-flight sends were finished, not abandoned");

    // Their outcome was recorded before exit: reopen the store the process left.
    let store = omnigate::store::sqlite::open(
        dir.path().join("omnigate.db").to_str().expect("utf-8"),
        omnigate::store::sql::Settings {
            owner: "inspector".into(),
            lease: Duration::from_secs(60),
            max_batch: 8,
            metrics: Default::default(),
        },
    )
    .expect("reopen");
    for id in &ids {
        let m =
            omnigate::store::Store::get_message(&store, id).await.expect("read").expect("exists");
        assert_ne!(m.status, omnigate_adapters::MessageStatus::Accepted, "{id} outcome recorded");
        assert!(m.provider_message_id.is_some());
    }
}
