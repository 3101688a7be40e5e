//! The event log under load: a consumer that falls far behind, and CRM deliveries while
//! many messages are sent at once.

use std::time::Duration;

use omnigate_proto::v1 as pb;

use crate::support::{self, text_request};

/// Sends `n` messages from concurrent clients; answers their ids.
async fn burst(t: &support::TestGateway, n: usize, prefix: &str) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut client = t.client.clone();
        let to = format!("{prefix}{i:04}");
        tasks.push(tokio::spawn(async move {
            let m = client.send_message(text_request(&to, "load")).await.expect("accepted");
            m.into_inner().message.expect("message").id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    ids
}

#[tokio::test]
async fn a_consumer_that_falls_behind_gets_every_event_once_in_order() {
    let mut t = support::gateway().start().await;
    let mut stream = t
        .client
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    // Four events a message (conversation opened, accepted, sent, delivered): more than the
    // live feed buffers while nobody reads.
    let ids = burst(&t, 1100, "+1415561").await;
    for id in ids.iter().step_by(50) {
        t.wait_for(id, pb::MessageStatus::Delivered).await;
    }
    let last = ids.last().expect("some");
    t.wait_for(last, pb::MessageStatus::Delivered).await;
    let mut expected = 1;
    while expected <= 4400 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        assert_eq!(e.sequence, expected, "no gap, no repeat");
        expected += 1;
    }
}

#[tokio::test]
async fn crm_deliveries_stay_in_order_under_concurrent_sends() {
    let t = support::gateway().start().await;
    let (crm, url) = crate::webhooks::receiver().await;
    let secret = t.subscribe(url).await.secret;
    burst(&t, 40, "+1415562").await;
    crate::webhooks::until("160 events at the CRM", || crm.got.lock().expect("lock").len() >= 160)
        .await;
    let got = crm.got.lock().expect("lock").clone();
    let sequences: Vec<u64> =
        got.iter().map(|d| d.0.trim_start_matches("evt_").parse().expect("seq")).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "strictly in order, no repeats");
    assert!(
        got.iter().all(|(id, ts, sig, body)| crate::webhooks::verify(&secret, id, ts, sig, body))
    );
}

/// `from_now` replays nothing: the first event is the first committed after the call.
#[tokio::test]
async fn a_stream_from_now_starts_with_what_happens_next() {
    let mut t = support::gateway().start().await;
    let earlier = t.send("+14155550111", "before").await;
    t.wait_for(&earlier.id, pb::MessageStatus::Delivered).await;
    let request = pb::StreamEventsRequest { from_now: true, ..Default::default() };
    let mut events = t.client.stream_events(request).await.expect("stream").into_inner();
    let later = t.send("+14155550112", "after").await;
    let first = events.message().await.expect("ok").expect("an event");
    let Some(pb::event::Kind::ConversationOpened(opened)) = first.kind else {
        panic!("not the later message's conversation: {first:?}")
    };
    assert_eq!(opened.conversation.expect("conversation").id, later.conversation_id);

    let both = pb::StreamEventsRequest { from_now: true, from_sequence: 3, kinds: vec![] };
    let refused = t.client.stream_events(both).await.expect_err("both starts");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // A cursor this store never handed out (another store's) is refused, not waited for.
    let ahead = pb::StreamEventsRequest { from_sequence: 1_000_000, ..Default::default() };
    let refused = t.client.stream_events(ahead).await.expect_err("a cursor past the log");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("past the last event"), "{refused:?}");
    let hook = pb::CreateWebhookRequest {
        url: "http://127.0.0.1:9/crm".into(),
        from_sequence: 1_000_000,
        ..Default::default()
    };
    let refused = t.client.create_webhook(hook).await.expect_err("a cursor past the log");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_instead_of_waiting_for_them() {
    let mut t = support::gateway().start().await;
    let request = pb::StreamEventsRequest { from_sequence: 0, kinds: vec![], ..Default::default() };
    let mut events = t.client.stream_events(request).await.expect("stream").into_inner();
    t.send("+14155550100", "hello").await;
    assert!(events.message().await.expect("ok").is_some(), "the stream is live");
    // The client keeps its stream open; a drain must not wait on it forever.
    tokio::time::timeout(Duration::from_secs(20), t.stop()).await.expect("shutdown finishes");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.message().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the gateway");
}
