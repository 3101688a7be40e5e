//! Scheduled sends (`SendMessageRequest.send_at`): held until their time, also across a
//! restart, cancelable until then, with the TTL counted from then; refused further ahead
//! than the longest TTL.

use omnigate::api::convert::{millis, timestamp};
use omnigate::model::now_ms;
use omnigate_proto::v1 as pb;

use crate::support::{self, text_request};

fn at(to: &str, send_at: i64) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        send_at: Some(timestamp(send_at)),
        ttl: Some(omnigate_proto::pbjson_types::Duration { seconds: 60, nanos: 0 }),
        ..text_request(to, "later")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_waits_for_its_time_even_across_a_restart() {
    let mut t = support::gateway().start().await;
    let when = now_ms() + 1500;
    let scheduled = t.send_request(at("+14155550901", when)).await.expect("accepted");
    assert_eq!(scheduled.send_at.as_ref().map(millis), Some(when));
    assert_eq!(scheduled.expires_at.as_ref().map(millis), Some(when + 60_000), "ttl from then");
    let dropped = t.send_request(at("+14155550902", when)).await.expect("accepted");
    let request = pb::CancelMessageRequest { id: dropped.id.clone() };
    t.client.cancel_message(request).await.expect("a scheduled message can be canceled");

    // A message sent at once goes past the scheduled ones.
    let now = t.send("+14155550903", "now").await;
    t.wait_for(&now.id, pb::MessageStatus::Delivered).await;
    assert_eq!(t.get(&scheduled.id).await.status, pb::MessageStatus::Accepted as i32);
    assert_eq!(t.recipients(), ["+14155550903"]);

    // Held in the outbox, it survives a restart and still goes at its time, not before.
    t.restart().await;
    let delivered = t.wait_for(&scheduled.id, pb::MessageStatus::Delivered).await;
    let sent = delivered
        .status_history
        .iter()
        .find(|c| c.status == pb::MessageStatus::Sent as i32)
        .and_then(|c| c.time.as_ref().map(millis))
        .expect("a SENT time");
    assert!(sent >= when, "sent at {sent}, before its time {when}");
    // (The restart started a fresh sandbox.)
    assert_eq!(t.recipients(), ["+14155550901"], "the canceled one never went");

    let far = now_ms() + 31 * 86_400_000;
    let refused = t.send_request(at("+14155550904", far)).await.expect_err("too far ahead");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("send_at"), "{}", refused.message());
    let past = t.send_request(at("+14155550905", now_ms() - 60_000)).await.expect("accepted");
    assert_eq!(past.send_at, None, "a time already past means now");
    let huge = pb::SendMessageRequest {
        send_at: Some(omnigate_proto::pbjson_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
        ..text_request("+14155550906", "overflow")
    };
    let refused = t.send_request(huge).await.expect_err("the end of time");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}
