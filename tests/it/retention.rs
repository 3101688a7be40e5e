//! Retention through the running gateway: old messages and events go, and every reader
//! behind what went is told so (StreamEvents and ReplayWebhook refuse with OUT_OF_RANGE, a
//! webhook subscription counts what it missed) instead of silently jumping ahead.

use std::time::Duration;

use omnigate_proto::v1 as pb;

use crate::send::{metric, reqwest_get};
use crate::support;
use crate::webhooks::{receiver, until};

/// About 2.6 s: long enough to deliver a message, short enough to watch it go.
const RETENTION: &str = "[retention]\nevents_days = 0.00003\nmessages_days = 0.00003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_messages_and_events_and_tells_readers_behind_it() {
    let (crm, url) = receiver().await;
    let held = crm.gate.write().await;
    let mut t = support::gateway().extra(RETENTION).start().await;
    let hook = t.subscribe(url).await;
    // More events than the subscription reads in one page (100), so that it has to come
    // back to the log for the rest after they were deleted.
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(t.send(&format!("+1415556{i:04}"), "old news").await);
    }
    for m in &sent {
        t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    }
    until("the first event held at the CRM", || !crm.got.lock().expect("lock").is_empty()).await;
    let m = sent.last().expect("sent");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = t.client.get_message(pb::GetMessageRequest { id: m.id.clone() }).await;
        match found {
            Err(status) if status.code() == tonic::Code::NotFound => break,
            Ok(_) => {}
            Err(status) => panic!("unexpected {status:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the message outlived its retention");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest_get(&t.url("/metrics")).await;
    let deleted = |kind: &str| {
        metric(&metrics, &format!("omnigate_retention_deleted_total{{kind=\"{kind}\"}}"))
    };
    assert_eq!(deleted("messages"), 30.0, "{metrics}");
    assert!(deleted("events") >= 100.0, "{metrics}");

    // Readers behind the deleted events are refused, with the oldest kept named.
    let request = pb::StreamEventsRequest { from_sequence: 1, kinds: vec![], ..Default::default() };
    let refused = t.client.stream_events(request).await.expect_err("a cursor behind retention");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("retention.events_days"), "{}", refused.message());
    let request = pb::StreamEventsRequest { from_sequence: 0, kinds: vec![], ..Default::default() };
    let mut stream = t.client.stream_events(request).await.expect("stream").into_inner();
    let oldest = stream.message().await.expect("from the oldest kept").expect("an event");
    let replay = pb::ReplayWebhookRequest { id: hook.id.clone(), from_sequence: 1 };
    let refused = t.client.replay_webhook(replay).await.expect_err("replay behind retention");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");

    // The subscription, held on event 1 of its first page meanwhile, delivers that page,
    // then says what it missed and goes on from the oldest kept.
    drop(held);
    let next = format!("evt_{}", oldest.sequence);
    until("the oldest kept event at the CRM", || {
        crm.got.lock().expect("lock").iter().any(|d| d.0 == next)
    })
    .await;
    let got: Vec<u64> = crm
        .got
        .lock()
        .expect("lock")
        .iter()
        .map(|d| d.0.trim_start_matches("evt_").parse().expect("sequence"))
        .collect();
    let mut delivered = got.clone();
    delivered.dedup();
    assert_eq!(delivered.first(), Some(&1), "{got:?}");
    assert_eq!(delivered.last(), Some(&oldest.sequence), "{got:?}");
    let hooks = t.client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let hook = hooks.into_inner().webhooks.into_iter().find(|w| w.id == hook.id).expect("hook");
    assert!(hook.missed_events > 0, "{hook:?}");
    // Each event up to the oldest kept was delivered or counted missed, none both.
    assert_eq!(delivered.len() as u64 + hook.missed_events, oldest.sequence, "{got:?} {hook:?}");
    let missed =
        format!("omnigate_event_deliveries_total{{webhook=\"{}\",result=\"missed\"}}", hook.id);
    let text = reqwest_get(&t.url("/metrics")).await;
    assert_eq!(metric(&text, &missed), hook.missed_events as f64, "{text}");
}
