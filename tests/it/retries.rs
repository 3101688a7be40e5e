//! How provider failures are treated: retried with backoff and Retry-After, failed fast
//! when permanent, bounded by attempts and time-to-live; and how fast a route may send.

use omnigate_proto::v1 as pb;

use crate::send::{metric, reqwest_get, until_metric};
use crate::support::{self, statuses, text_request};

#[tokio::test]
async fn throttling_is_retried_after_the_delay_twilio_asked_for() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550401", fault = { kind = "throttle", retry_after_secs = 1 }, times = 2 }"#)
        .start()
        .await;
    let m = t.send("+14155550401", "patience").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    assert_eq!(m.attempts, 3);
    assert_eq!(t.sandbox().request_count(), 3);
    assert_eq!(t.sandbox().sent_count(), 1);
    assert_eq!(
        statuses(&m),
        [
            pb::MessageStatus::Accepted,
            pb::MessageStatus::Queued,
            pb::MessageStatus::Sent,
            pb::MessageStatus::Delivered
        ]
    );
    assert!(m.error.is_none(), "a later success clears the error");
    // Two 429s with `Retry-After: 1`: the first success cannot come sooner than 2 s later.
    let accepted = &m.status_history[0].time.expect("time");
    let sent = &m.status_history[2].time.expect("time");
    let waited_ms = (sent.seconds - accepted.seconds) * 1000
        + i64::from(sent.nanos - accepted.nanos) / 1_000_000;
    assert!(waited_ms >= 2000, "Retry-After honoured: waited only {waited_ms} ms");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550402", fault = { kind = "server_error" }, times = 2 }"#)
        .rule(r#"{ to_prefix = "+14155550403", fault = { kind = "slow", delay_ms = 3000 }, times = 1 }"#)
        .start()
        .await;
    let a = t.send("+14155550402", "5xx").await;
    let b = t.send("+14155550403", "timeout").await;
    let a = t.wait_for(&a.id, pb::MessageStatus::Delivered).await;
    let b = t.wait_for(&b.id, pb::MessageStatus::Delivered).await;
    assert_eq!(a.attempts, 3);
    assert_eq!(b.attempts, 2, "the timed-out attempt counts");
}

/// A send Twilio took but whose answer timed out is not sent again: the retry finds it in
/// Twilio's message list (shared/providers/DETAILS.md 6: "Twilio and Meta create calls are
/// not idempotent ... reconcile: Twilio via GET Messages.json?To=&From=").
#[tokio::test]
async fn a_send_whose_answer_was_lost_is_found_not_sent_twice() {
    // The first send loses its answer; a second one alike, sent meanwhile, goes through.
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550412", fault = { kind = "lost", delay_ms = 3000 }, times = 1 }"#)
        .start()
        .await;
    let m = t.send("+14155550412", "your order shipped").await;
    let other = t.send("+14155550412", "your order shipped").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let other = t.wait_for(&other.id, pb::MessageStatus::Delivered).await;
    let sent = t.sandbox().sent();
    assert_eq!(sent.len(), 2, "one message at Twilio each");
    // Twilio's list has both; the other's is known as the other message's.
    assert_eq!(m.provider_message_id, sent[0].sid, "the lost answer's message is this one");
    assert_eq!(other.provider_message_id, sent[1].sid);
    assert_eq!(m.attempts, 2, "the unsure attempt counts");
    assert!(t.sandbox().lookup_count() >= 1);
    let metrics = reqwest_get(&t.url("/metrics")).await;
    let found = r#"omnigate_send_attempts_total{account="sms",outcome="found"}"#;
    assert_eq!(metric(&metrics, found), 1.0);
    assert_eq!(
        metric(&metrics, r#"omnigate_send_attempts_total{account="sms",outcome="unsure"}"#),
        1.0
    );
}

/// Graph cannot be asked about a send either, but a WhatsApp send carries our id as
/// `biz_opaque_callback_data`, which Meta's status webhooks echo (DETAILS.md 6: "Meta has
/// no lookup by client key, so use biz_opaque_callback_data to match later status
/// webhooks"). A send whose answer was lost waits for them (`lost_send_wait_ms`), and a
/// receipt naming the message and an id we do not know is the lost answer: nothing is
/// sent twice, and the receipts that came early apply.
#[tokio::test]
async fn a_lost_whatsapp_send_is_found_by_its_receipts() {
    let mut t = support::gateway()
        .meta_rule(r#"{ to_prefix = "14155550415", fault = { kind = "lost", delay_ms = 3000 }, times = 1 }"#)
        .start()
        .await;
    let offer = pb::SendMessageRequest {
        content: Some(pb::Content { kind: Some(crate::omnichannel::template("order_update")) }),
        ..support::request(pb::Channel::Whatsapp, "+14155550415", support::text(""))
    };
    let m = t.send_request(offer).await.expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Read).await;
    let sent = t.meta().sent();
    assert_eq!(sent.len(), 1, "one message at Meta");
    assert_eq!(sent[0].body["biz_opaque_callback_data"], m.id.as_str());
    assert_eq!(m.provider_message_id, sent[0].id, "the receipts' id is the lost answer");
    assert_eq!(m.attempts, 2, "the unsure attempt counts");
    assert_eq!(
        support::statuses(&m),
        [
            pb::MessageStatus::Accepted,
            pb::MessageStatus::Queued,
            pb::MessageStatus::Sent,
            pb::MessageStatus::Delivered,
            pb::MessageStatus::Read,
        ]
    );
    let metrics = reqwest_get(&t.url("/metrics")).await;
    let counted = |outcome: &str| {
        let name = format!(r#"omnigate_send_attempts_total{{account="wa",outcome="{outcome}"}}"#);
        metric(&metrics, &name)
    };
    assert_eq!((counted("unsure"), counted("found")), (1.0, 1.0));
    assert!(!metrics.contains(r#"account="wa",outcome="sent""#), "never sent again");
}

/// Messenger's echo of a send carries the `metadata` we gave it (DETAILS.md 4: "echoed in
/// `message_echoes`"), so a Messenger send whose answer was lost is found the same way.
#[tokio::test]
async fn a_lost_messenger_send_is_found_by_its_echo() {
    let psid = "1254459154682920";
    let mut t = support::gateway()
        .meta_rule(&format!(
            r#"{{ to_prefix = "{psid}", fault = {{ kind = "lost", delay_ms = 3000 }}, times = 1 }}"#
        ))
        .start()
        .await;
    // A tag for updates outside the window, so nobody needs to write first.
    let update = pb::SendMessageRequest {
        message_tag: "ACCOUNT_UPDATE".into(),
        ..support::request(pb::Channel::Messenger, psid, support::text("your order shipped"))
    };
    let m = t.send_request(update).await.expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let sent = t.meta().sent();
    assert_eq!(sent.len(), 1, "one message at Meta");
    assert_eq!(sent[0].body["message"]["metadata"], m.id.as_str());
    assert_eq!(m.provider_message_id, sent[0].id);
    let metrics = reqwest_get(&t.url("/metrics")).await;
    let found = r#"omnigate_send_attempts_total{account="fb",outcome="found"}"#;
    assert_eq!(metric(&metrics, found), 1.0);
}

/// While Twilio cannot be asked about a lost send, it is not sent blind: the attempts run
/// out instead. When it can never be asked (credentials that may not list messages), the
/// message is sent again, at least once, as before the lookup existed.
#[tokio::test]
async fn a_lost_send_is_sent_again_only_when_twilio_can_never_be_asked() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550413", fault = { kind = "lost", delay_ms = 3000, list_status = 503 }, times = 1 }"#)
        .rule(r#"{ to_prefix = "+14155550414", fault = { kind = "lost", delay_ms = 3000, list_status = 403 }, times = 1 }"#)
        .start()
        .await;
    let not_now = t.send("+14155550413", "not now").await;
    let never = t.send("+14155550414", "never").await;
    let not_now = t.wait_for(&not_now.id, pb::MessageStatus::Failed).await;
    assert_eq!(not_now.error.expect("error").code, pb::ErrorCode::AttemptsExhausted as i32);
    let never = t.wait_for(&never.id, pb::MessageStatus::Delivered).await;
    assert_eq!(
        t.sent_to("+14155550413").len(),
        1,
        "never sent blind while Twilio may answer later"
    );
    let resent = t.sent_to("+14155550414");
    assert_eq!(resent.len(), 2, "sent again: Twilio will never say");
    assert_eq!(Some(never.provider_message_id), resent.last().map(|s| s.sid.clone()));
}

#[tokio::test]
async fn permanent_errors_fail_fast_with_the_twilio_code() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550404", fault = { kind = "reject", code = 21211 } }"#)
        .rule(r#"{ to_prefix = "+14155550405", fault = { kind = "reject", code = 21610 } }"#)
        .rule(r#"{ to_prefix = "+14155550406", fault = { kind = "reject", code = 21614 } }"#)
        .start()
        .await;
    let cases = [
        ("+14155550404", pb::ErrorCode::InvalidRecipient, "21211"),
        ("+14155550405", pb::ErrorCode::RecipientOptedOut, "21610"),
        ("+14155550406", pb::ErrorCode::InvalidRecipient, "21614"),
    ];
    for (to, code, provider_code) in cases {
        let m = t.send(to, "no").await;
        let m = t.wait_for(&m.id, pb::MessageStatus::Failed).await;
        let e = m.error.expect("error");
        assert_eq!(
            (e.code, e.provider_code.as_str(), e.provider.as_str()),
            (code as i32, provider_code, "twilio")
        );
        assert!(!e.retryable);
        assert_eq!(m.attempts, 1);
    }
    assert_eq!(t.sandbox().request_count(), 3, "never retried");
}

#[tokio::test]
async fn an_undelivered_receipt_fails_the_message_with_its_code() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550407", fault = { kind = "undelivered", code = 30003 } }"#)
        .start()
        .await;
    let m = t.send("+14155550407", "into the void").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Failed).await;
    assert_eq!(
        statuses(&m),
        [pb::MessageStatus::Accepted, pb::MessageStatus::Sent, pb::MessageStatus::Failed]
    );
    let e = m.error.expect("error");
    assert_eq!((e.code, e.provider_code.as_str()), (pb::ErrorCode::Undeliverable as i32, "30003"));
    assert_eq!(m.status_history[2].provider_status, "undelivered");
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550408", fault = { kind = "server_error" } }"#)
        .start()
        .await;
    let m = t.send("+14155550408", "never").await;
    let m = t.wait_for(&m.id, pb::MessageStatus::Failed).await;
    assert_eq!(m.attempts, 5);
    assert_eq!(t.sandbox().request_count(), 5);
    let e = m.error.expect("error");
    assert_eq!(e.code, pb::ErrorCode::AttemptsExhausted as i32);
    assert_eq!(e.provider_code, "20500", "the last provider code is kept");
}

#[tokio::test]
async fn a_message_expires_when_its_ttl_runs_out_before_a_retry() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550409", fault = { kind = "throttle", retry_after_secs = 30 } }"#)
        .start()
        .await;
    let mut request = text_request("+14155550409", "too late");
    request.ttl = Some(omnigate_proto::pbjson_types::Duration { seconds: 5, nanos: 0 });
    let m = t.send_request(request).await.expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Expired).await;
    assert_eq!(m.error.expect("error").code, pb::ErrorCode::Expired as i32);
    assert_eq!(t.sandbox().request_count(), 1, "no attempt past the TTL");
}

#[tokio::test]
async fn a_route_never_sends_faster_than_its_rate_and_keeps_order() {
    let mut t = support::gateway().rate(5.0, 1).start().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(t.send("+14155550410", &format!("n{i}")).await.id);
    }
    // At most two have left in the time the eight calls took; the rest wait for their turn.
    let metrics = t.url("/metrics");
    let waiting = r#"omnigate_sends_waiting{account="sms"}"#;
    assert!(metric(&reqwest_get(&metrics).await, waiting) >= 5.0);
    for id in &ids {
        t.wait_for(id, pb::MessageStatus::Delivered).await;
    }
    until_metric(&metrics, waiting, 0.0).await;
    let sent = t.sandbox().sent();
    let bodies: Vec<&str> = sent.iter().map(|s| s.field("Body").expect("body")).collect();
    assert_eq!(
        bodies,
        ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"],
        "one route sends in order"
    );
    // Eight sends at five per second with a burst of one span at least 7 × 200 ms.
    let span = sent[7].at.duration_since(sent[0].at);
    assert!(span.as_millis() >= 1300, "8 sends in {span:?}");
}

#[tokio::test]
async fn a_long_sms_spends_a_token_of_the_route_per_segment() {
    let mut t = support::gateway().rate(5.0, 1).start().await;
    // 400 GSM-7 characters are three segments of 153 (shared/providers/README.md: Twilio
    // paces a sender by segment), so they take three of the route's 200 ms tokens.
    let long = "a".repeat(400);
    let ids = [
        t.send("+14155550411", "before").await.id,
        t.send("+14155550411", &long).await.id,
        t.send("+14155550411", "after").await.id,
    ];
    for id in &ids {
        t.wait_for(id, pb::MessageStatus::Delivered).await;
    }
    let sent = t.sandbox().sent();
    let bodies: Vec<&str> = sent.iter().map(|s| s.field("Body").expect("body")).collect();
    assert_eq!(bodies, ["before", long.as_str(), "after"]);
    // Five tokens at five per second with a burst of one: the last leaves at least 4 × 200 ms
    // after the first. Counting messages, it would have been 2 × 200 ms.
    let span = sent[2].at.duration_since(sent[0].at);
    assert!(span.as_millis() >= 700, "5 segments in {span:?}");
}

/// An email whose server kept it but lost its reply (the connection dropped after the
/// data; RFC 5321 6.1 accepts the duplicate, as SMTP offers no way to ask) goes again, and
/// both copies carry the same Message-ID, by which mail stores fold the duplicate.
#[tokio::test]
async fn an_email_whose_reply_was_lost_goes_again_under_the_same_message_id() {
    let mut t = support::gateway().start().await;
    let to = "lost-once@example.com";
    let request = support::request(pb::Channel::Email, to, support::text("your receipt"));
    let sent = t.send_request(request).await.expect("accepted");
    let done = t.wait_for(&sent.id, pb::MessageStatus::Sent).await;
    assert_eq!(done.attempts, 2, "the dropped connection is retried");
    let copies: Vec<_> = t.smtp().accepted().into_iter().filter(|m| m.to == [to]).collect();
    assert_eq!(copies.len(), 2, "kept the first time, then sent again");
    let message_id = |data: &[u8]| {
        String::from_utf8_lossy(data)
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
            .expect("a Message-ID")
    };
    assert_eq!(message_id(&copies[0].data), message_id(&copies[1].data));
    assert_eq!(message_id(&copies[1].data), format!("<{}>", done.provider_message_id));
}
