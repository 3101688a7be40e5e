//! Status callbacks and inbound messages through the HTTP ingress: signatures, ordering,
//! duplicates, conversations, events.

use std::time::Duration;

use omnigate_proto::v1 as pb;

use crate::support::{self, SID, TOKEN, statuses};

#[tokio::test]
async fn late_and_repeated_callbacks_never_move_a_message_back() {
    let mut t = support::gateway().start().await;
    let m = t.send("+14155550201", "hi").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let url = t.url("/webhooks/twilio/sms/status");
    let sid = m.provider_message_id.clone();
    for status in ["sent", "queued", "delivered", "sent"] {
        let (code, _) = support::post_signed(
            &url,
            &[
                ("AccountSid", SID),
                ("MessageSid", &sid),
                ("MessageStatus", status),
                ("SmsStatus", status),
            ],
            TOKEN,
        )
        .await;
        assert_eq!(code, 200, "a valid callback is acknowledged even when it changes nothing");
    }
    let after = t.get(&m.id).await;
    assert_eq!(after.status, pb::MessageStatus::Delivered as i32);
    assert_eq!(statuses(&after), statuses(&m), "no status appended by late or repeated callbacks");

    // READ still moves forward.
    let (code, _) =
        support::post_signed(&url, &[("MessageSid", &sid), ("MessageStatus", "read")], TOKEN).await;
    assert_eq!(code, 200);
    t.wait_for(&m.id, pb::MessageStatus::Read).await;
}

#[tokio::test]
async fn forged_or_unsigned_callbacks_are_refused() {
    let mut t = support::gateway().callback_delay_ms(60_000).start().await;
    let m = t.send("+14155550202", "hi").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Sent).await;
    let url = t.url("/webhooks/twilio/sms/status");
    let params = [
        ("MessageSid", m.provider_message_id.as_str()),
        ("MessageStatus", "failed"),
        ("ErrorCode", "30007"),
    ];
    let (code, body) = support::post_signed(&url, &params, "not-the-token").await;
    assert_eq!(code, 403);
    assert!(body.contains("signature"), "{body}");
    // Signed for another URL: Twilio signs the URL it called.
    let (code, _) =
        support::post_signed(&t.url("/webhooks/twilio/sms/other"), &params, TOKEN).await;
    assert_eq!(code, 404, "unknown hook");
    // Not a webhook path at all (a mistyped URL in a console): a 404 that says so.
    let (code, body) =
        support::post_signed(&t.url("/webhook/twilio/sms/status"), &params, TOKEN).await;
    assert_eq!(code, 404);
    assert!(body.contains("no endpoint POST /webhook/twilio/sms/status"), "{body}");
    let unsigned = omnigate_adapters::http::client(Duration::from_secs(5))
        .post(&url)
        .form(&params)
        .send()
        .await
        .expect("reachable");
    assert_eq!(unsigned.status().as_u16(), 403);
    assert_eq!(t.get(&m.id).await.status, pb::MessageStatus::Sent as i32, "nothing changed");
    // Malformed but signed: a clear 400.
    let (code, body) = support::post_signed(&url, &[("MessageStatus", "delivered")], TOKEN).await;
    assert_eq!((code, body.contains("MessageSid")), (400, true), "{body}");
}

#[tokio::test]
async fn inbound_sms_joins_the_conversation_and_is_streamed_once() {
    let mut t = support::gateway().start().await;
    let out = t.send("+14155550206", "how was it?").await;
    t.wait_for(&out.id, pb::MessageStatus::Delivered).await;
    let mut events = t
        .client
        .stream_events(pb::StreamEventsRequest { from_sequence: 0, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();
    let inbound_url = t.url("/webhooks/twilio/sms/inbound");
    let sandbox = t.sandbox().clone();
    let code = sandbox
        .deliver_inbound(&inbound_url, "+14155550206", support::FROM, "great, thanks")
        .await
        .expect("post");
    assert_eq!(code, 200);

    let received = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(pb::event::Kind::MessageReceived(r)) = event.kind {
            break r.message.expect("message");
        }
    };
    assert_eq!(received.status, pb::MessageStatus::Received as i32);
    assert_eq!(received.direction, pb::Direction::Inbound as i32);
    assert_eq!(
        received.conversation_id, out.conversation_id,
        "the reply threads with what we sent"
    );
    let Some(pb::content::Kind::Text(text)) = received.content.and_then(|c| c.kind) else {
        panic!("text")
    };
    assert_eq!(text.body, "great, thanks");

    // Twilio redelivers the same MessageSid: stored once.
    let sid = received.provider_message_id.clone();
    let params = [
        ("MessageSid", sid.as_str()),
        ("From", "+14155550206"),
        ("To", support::FROM),
        ("Body", "great, thanks"),
        ("NumMedia", "0"),
    ];
    let (code, body) = support::post_signed(&inbound_url, &params, TOKEN).await;
    assert_eq!(code, 200);
    assert!(body.contains("<Response/>"), "empty TwiML: {body}");
    let list = t.history(&out.conversation_id).await;
    assert_eq!(list.len(), 2, "one outbound, one inbound, no duplicate");
}

#[tokio::test]
async fn events_resume_from_a_cursor_without_gaps_or_repeats() {
    let mut t = support::gateway().start().await;
    let a = t.send("+14155550207", "a").await;
    t.wait_for(&a.id, pb::MessageStatus::Delivered).await;
    let mut stream = t
        .client
        .stream_events(pb::StreamEventsRequest { from_sequence: 0, ..Default::default() })
        .await
        .expect("s")
        .into_inner();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(stream.message().await.expect("ok").expect("event").sequence);
    }
    assert_eq!(seqs, [1, 2, 3], "ACCEPTED, SENT, DELIVERED");
    drop(stream);
    // Reconnect from the last cursor while new events are being written.
    let b = t.send("+14155550208", "b").await;
    let mut stream = t
        .client
        .stream_events(pb::StreamEventsRequest { from_sequence: 2, ..Default::default() })
        .await
        .expect("s")
        .into_inner();
    t.wait_for(&b.id, pb::MessageStatus::Delivered).await;
    let mut next = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        next.push(e.sequence);
    }
    assert_eq!(next, [3, 4, 5, 6]);
}
