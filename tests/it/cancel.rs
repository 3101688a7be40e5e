//! CancelMessage: a message its provider does not have yet is stopped for good (also across
//! a restart); one whose send has started, or that the provider has, is refused.

use omnigate_proto::v1 as pb;

use crate::send::until_metric;
use crate::support::{self, TestGateway, statuses};

async fn cancel(t: &mut TestGateway, id: &str) -> Result<pb::Message, tonic::Status> {
    let request = pb::CancelMessageRequest { id: id.into() };
    Ok(t.client.cancel_message(request).await?.into_inner().message.expect("message"))
}

/// One send a second on the route: the third message waits its turn, and is canceled then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_its_turn_is_canceled_and_never_sent_even_after_a_restart() {
    let mut t = support::gateway().rate(1.0, 1).start().await;
    let first = t.send("+14155550701", "one").await;
    let second = t.send("+14155550702", "two").await;
    let third = t.send("+14155550703", "three").await;

    let canceled = cancel(&mut t, &third.id).await.expect("canceled");
    assert_eq!(canceled.status, pb::MessageStatus::Canceled as i32);
    assert_eq!(statuses(&canceled), [pb::MessageStatus::Accepted, pb::MessageStatus::Canceled]);
    let again = cancel(&mut t, &third.id).await.expect("canceling twice is fine");
    assert_eq!(again.status_history.len(), 2, "no second CANCELED in the history");

    // The route is first in, first out: a message sent after the cancellation goes in the
    // canceled one's turn, so once it is delivered the canceled one would have been sent.
    let fourth = t.send("+14155550704", "four").await;
    t.wait_for(&fourth.id, pb::MessageStatus::Delivered).await;
    assert_eq!(t.recipients(), ["+14155550701", "+14155550702", "+14155550704"]);

    let refused = cancel(&mut t, &first.id).await.expect_err("delivered");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("delivered"), "{}", refused.message());
    assert_eq!(
        cancel(&mut t, "msg_nope").await.expect_err("unknown").code(),
        tonic::Code::NotFound
    );
    assert_eq!(cancel(&mut t, "").await.expect_err("no id").code(), tonic::Code::InvalidArgument);

    // Canceled before a restart: the outbox no longer holds it, so recovery does not send it.
    let fifth = t.send("+14155550705", "five").await;
    let sixth = t.send("+14155550706", "six").await;
    cancel(&mut t, &sixth.id).await.expect("canceled");
    t.restart().await;
    let seventh = t.send("+14155550707", "seven").await;
    t.wait_for(&fifth.id, pb::MessageStatus::Sent).await;
    t.wait_for(&seventh.id, pb::MessageStatus::Delivered).await;
    assert!(!t.recipients().contains(&"+14155550706".to_string()), "{:?}", t.recipients());
    assert_eq!(t.get(&sixth.id).await.status, pb::MessageStatus::Canceled as i32);
    assert_eq!(t.get(&second.id).await.status, pb::MessageStatus::Delivered as i32);
}

/// A message QUEUED for a retry is canceled, and its job dropped when it comes due; one
/// whose request is at the provider is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_can_be_canceled_but_not_a_send_under_way() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550711", fault = { kind = "throttle", retry_after_secs = 1 }, times = 1 }"#)
        .rule(r#"{ to_prefix = "+14155550712", fault = { kind = "slow", delay_ms = 1500 }, times = 1 }"#)
        .start()
        .await;
    let retried = t.send("+14155550711", "retry me").await;
    t.wait_for(&retried.id, pb::MessageStatus::Queued).await;
    let canceled = cancel(&mut t, &retried.id).await.expect("a queued retry is canceled");
    assert_eq!(
        statuses(&canceled),
        [pb::MessageStatus::Accepted, pb::MessageStatus::Queued, pb::MessageStatus::Canceled]
    );
    // The retry's job is dropped when it comes due, and no longer waits.
    let metrics = t.url("/metrics");
    let dropped = r#"omnigate_send_attempts_total{account="sms",outcome="canceled"}"#;
    until_metric(&metrics, dropped, 1.0).await;
    until_metric(&metrics, r#"omnigate_sends_waiting{account="sms"}"#, 0.0).await;
    assert!(t.recipients().is_empty(), "the canceled retry reached the provider");

    let slow = t.send("+14155550712", "slow").await;
    while t.sandbox().request_count() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = cancel(&mut t, &slow.id).await.expect_err("the send is under way");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("under way"), "{}", refused.message());
    t.wait_for(&slow.id, pb::MessageStatus::Delivered).await;
}
