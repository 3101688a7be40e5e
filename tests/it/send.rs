//! Sending: the request Twilio gets, the statuses the message goes through, idempotency,
//! validation, and the conversation it lands in.

use omnigate_proto::v1 as pb;
use tonic::Code;

use crate::support::{self, FROM, statuses, text_request};

#[tokio::test]
async fn sms_goes_from_accepted_to_delivered() {
    let mut t = support::gateway().start().await;
    let m = t.send("+14155550101", "hello").await;
    assert_eq!(
        m.status,
        pb::MessageStatus::Accepted as i32,
        "answered after commit, before sending"
    );
    assert!(m.id.starts_with("msg_"));
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    assert_eq!(
        statuses(&m),
        [pb::MessageStatus::Accepted, pb::MessageStatus::Sent, pb::MessageStatus::Delivered]
    );
    assert_eq!(m.attempts, 1);
    assert_eq!(m.from, FROM);
    assert!(m.provider_message_id.starts_with("SM"), "{}", m.provider_message_id);
    assert_eq!(m.status_history[2].provider_status, "delivered");

    // What Twilio received: the documented CreateMessageRequest fields.
    let sent = t.sandbox().sent();
    assert_eq!(sent.len(), 1);
    let s = &sent[0];
    assert_eq!(s.field("To"), Some("+14155550101"));
    assert_eq!(s.field("From"), Some(FROM));
    assert_eq!(s.field("Body"), Some("hello"));
    assert_eq!(s.field("StatusCallback"), Some(t.url("/webhooks/twilio/sms/status").as_str()));
    let validity: u64 = s.field("ValidityPeriod").expect("ValidityPeriod").parse().expect("number");
    assert!((1..=36_000).contains(&validity));
}

#[tokio::test]
async fn mms_carries_every_media_url() {
    let mut t = support::gateway().start().await;
    let request = pb::SendMessageRequest {
        channel: pb::Channel::Sms as i32,
        to: "+14155550102".into(),
        content: Some(pb::Content {
            kind: Some(pb::content::Kind::Media(pb::Media {
                url: "https://example.com/a.jpg".into(),
                mime_type: "image/jpeg".into(),
                caption: "two pictures".into(),
                extra_urls: vec!["https://example.com/b.jpg".into()],
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let m = t.send_request(request).await.expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    assert!(m.provider_message_id.starts_with("MM"), "MMS sids start with MM");
    let sent = t.sandbox().sent();
    let urls: Vec<&str> =
        sent[0].form.iter().filter(|(k, _)| k == "MediaUrl").map(|(_, v)| v.as_str()).collect();
    assert_eq!(urls, ["https://example.com/a.jpg", "https://example.com/b.jpg"]);
    assert_eq!(sent[0].field("Body"), Some("two pictures"));
}

#[tokio::test]
async fn the_same_idempotency_key_sends_once() {
    let mut t = support::gateway().start().await;
    let mut request = text_request("+14155550103", "once");
    request.idempotency_key = "order-42-shipped".into();
    let first = t.send_request(request.clone()).await.expect("accepted");
    let again = t.send_request(request.clone()).await.expect("same answer");
    assert_eq!(first.id, again.id);
    t.wait_for(&first.id, pb::MessageStatus::Delivered).await;
    let third = t.send_request(request.clone()).await.expect("same answer after delivery");
    assert_eq!(third.id, first.id);
    assert_eq!(
        third.status,
        pb::MessageStatus::Delivered as i32,
        "the stored message, as it is now"
    );

    request.content = Some(pb::Content {
        kind: Some(pb::content::Kind::Text(pb::Text { body: "other".into(), preview_url: false })),
    });
    let err = t.send_request(request).await.expect_err("a different request under the same key");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("order-42-shipped"), "{}", err.message());
    assert_eq!(t.sandbox().sent_count(), 1, "the provider saw one message");
}

#[tokio::test]
async fn concurrent_sends_share_commits_and_all_arrive() {
    let mut t = support::gateway().start().await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = t.client.clone();
        tasks.push(tokio::spawn(async move {
            let r = text_request(&format!("+1415556{i:04}"), "burst");
            client
                .send_message(r)
                .await
                .expect("accepted")
                .into_inner()
                .message
                .expect("message")
                .id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    for id in &ids {
        t.wait_for(id, pb::MessageStatus::Delivered).await;
    }
    assert_eq!(t.sandbox().sent_count(), 200);
    let metrics = reqwest_get(&t.url("/metrics")).await;
    let commits = metric(&metrics, "omnigate_store_commits_total");
    let writes = metric(&metrics, "omnigate_store_writes_total");
    assert!(writes >= 200.0 * 3.0, "accept, sent and delivered per message: {writes}");
    assert!(commits < writes, "group commit: {writes} writes in {commits} commits");
    // The writer's busy time is a share of the time the writes took: above zero, never more.
    let busy = metric(&metrics, "omnigate_store_writer_busy_seconds_total");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(busy > 0.0 && busy < elapsed, "writer busy {busy} s of {elapsed} s");
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let mut t = support::gateway().start().await;
    let cases = [
        (text_request("4155550100", "x"), Code::InvalidArgument, "E.164"),
        (text_request("+14155550100", "  "), Code::InvalidArgument, "body is empty"),
        // Twilio's Body holds 1600 characters (21617 beyond): no attempt could send it.
        (
            text_request("+14155550100", &"é".repeat(1601)),
            Code::InvalidArgument,
            "more than 1600 characters",
        ),
        (
            pb::SendMessageRequest { content: None, ..text_request("+14155550100", "x") },
            Code::InvalidArgument,
            "content",
        ),
        (
            pb::SendMessageRequest { channel: 0, ..text_request("+14155550100", "x") },
            Code::InvalidArgument,
            "channel",
        ),
        (
            pb::SendMessageRequest { account: "nope".into(), ..text_request("+14155550100", "x") },
            Code::NotFound,
            "nope",
        ),
        (
            // A line break in a header would let a client inject headers.
            pb::SendMessageRequest {
                channel: pb::Channel::Email as i32,
                content: Some(pb::Content {
                    kind: Some(pb::content::Kind::Email(pb::Email {
                        subject: "hi\r\nBcc: victim@example.com".into(),
                        text: "x".into(),
                        ..Default::default()
                    })),
                }),
                ..text_request("ann@example.com", "x")
            },
            Code::InvalidArgument,
            "subject must be one line",
        ),
        (
            pb::SendMessageRequest {
                channel: pb::Channel::Email as i32,
                content: Some(pb::Content {
                    kind: Some(pb::content::Kind::Email(pb::Email {
                        text: "x".into(),
                        headers: [("Message-ID".to_string(), "<forged@x>".to_string())].into(),
                        ..Default::default()
                    })),
                }),
                ..text_request("ann@example.com", "x")
            },
            Code::InvalidArgument,
            "Message-ID is set by the gateway",
        ),
        (
            pb::SendMessageRequest {
                channel: pb::Channel::Email as i32,
                content: Some(pb::Content {
                    kind: Some(pb::content::Kind::Email(pb::Email {
                        text: "x".into(),
                        attachments: vec![pb::Attachment {
                            filename: "a.pdf".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                }),
                ..text_request("ann@example.com", "x")
            },
            Code::InvalidArgument,
            "attachments[0] needs a url or data",
        ),
        (
            pb::SendMessageRequest {
                channel: pb::Channel::Email as i32,
                ..text_request("ann@localhost", "x")
            },
            Code::InvalidArgument,
            "to",
        ),
        (
            pb::SendMessageRequest {
                conversation_id: "cnv_missing".into(),
                ..text_request("+14155550100", "x")
            },
            Code::NotFound,
            "cnv_missing",
        ),
    ];
    for (request, code, reason) in cases {
        let err = t.send_request(request).await.expect_err("refused");
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(reason), "{:?} lacks {reason:?}", err.message());
    }
    assert_eq!(t.sandbox().request_count(), 0, "nothing reached the provider");
    let err = t
        .client
        .get_message(pb::GetMessageRequest { id: "msg_nope".into() })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_conversation_lists_its_messages_oldest_first_across_pages() {
    let mut t = support::gateway().start().await;
    let first = t.send("+14155550104", "m0").await;
    let mut ids = vec![first.id.clone()];
    for i in 1..5 {
        let m = t.send("+14155550104", &format!("m{i}")).await;
        assert_eq!(
            m.conversation_id, first.conversation_id,
            "same recipient, same account, same conversation"
        );
        ids.push(m.id);
    }
    let other = t.send("+14155550105", "elsewhere").await;
    assert_ne!(other.conversation_id, first.conversation_id);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = t
            .client
            .list_messages(pb::ListMessagesRequest {
                conversation_id: first.conversation_id.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.messages.len() <= 2);
        seen.extend(page.messages.into_iter().map(|m| m.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    let err = t
        .client
        .list_messages(pb::ListMessagesRequest {
            conversation_id: first.conversation_id,
            page_size: 2,
            page_token: "x".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
}

pub async fn reqwest_get(url: &str) -> String {
    omnigate_adapters::http::client(std::time::Duration::from_secs(5))
        .get(url)
        .send()
        .await
        .expect("reachable")
        .text()
        .await
        .expect("body")
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// Polls `/metrics` at `url` until the metric `name` (with its labels) reads `want`.
pub async fn until_metric(url: &str, name: &str, want: f64) {
    let mut text = String::new();
    for _ in 0..250 {
        text = reqwest_get(url).await;
        let value = text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok());
        if value == Some(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{name} never read {want}:\n{text}");
}

/// Past `server.max_pending_sends`, SendMessage answers UNAVAILABLE at once instead of
/// queueing without bound; the sends already waiting are kept and complete.
#[tokio::test]
async fn sends_past_the_pending_limit_are_shed_and_the_waiting_ones_kept() {
    let t = support::gateway().server("max_pending_sends = 2").start().await;
    // Another connection holds the database's write lock, so accepted sends wait for the
    // writer (its busy timeout is 5 s) while more arrive.
    let lock = rusqlite::Connection::open(t._dir.path().join("omnigate.db")).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("write lock");
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = t.client.clone();
        sends.spawn(async move {
            client.send_message(support::text_request(&format!("+1415555081{i}"), "x")).await
        });
    }
    let mut shed = 0;
    while shed < 8 {
        let answer = sends.join_next().await.expect("a send").expect("task");
        let status = answer.expect_err("only two may wait; none can finish while locked");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("max_pending_sends"), "{}", status.message());
        shed += 1;
    }
    lock.execute_batch("COMMIT").expect("release");
    while let Some(answer) = sends.join_next().await {
        let message = answer.expect("task").expect("the waiting sends are accepted").into_inner();
        assert_eq!(message.message.expect("message").status, pb::MessageStatus::Accepted as i32);
    }
    let text = reqwest_get(&t.url("/metrics")).await;
    assert_eq!(metric(&text, "omnigate_sends_shed_total"), 8.0, "{text}");
}

/// An email's inline attachments may run to the account's `max_attachment_bytes` (10 MiB by
/// default), beyond gRPC's customary 4 MiB message limit: the gateway takes such a request,
/// and its answers do not echo the bytes back, so a client with the default limit reads
/// them (a reply it cannot read would look like a failure and invite a second send).
#[tokio::test]
async fn large_inline_attachments_are_taken_and_not_echoed() {
    let mut t = support::gateway().start().await;
    let file: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let content = pb::content::Kind::Email(pb::Email {
        subject: "your archive".into(),
        text: "attached".into(),
        attachments: vec![pb::Attachment {
            filename: "archive.bin".into(),
            mime_type: "application/octet-stream".into(),
            data: file.clone(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let accepted = t
        .send_request(support::request(pb::Channel::Email, "big@example.com", content))
        .await
        .expect("taken, though over 4 MiB");
    let sent_back = |m: &pb::Message| match m.content.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(pb::content::Kind::Email(e)) => (e.attachments[0].data.len(), e.attachments[0].size),
        other => panic!("not email: {other:?}"),
    };
    assert_eq!(sent_back(&accepted), (0, file.len() as u64), "named with its size, not echoed");
    let sent = t.wait_for(&accepted.id, pb::MessageStatus::Sent).await;
    assert_eq!(sent_back(&sent), (0, file.len() as u64));
    let mailed =
        t.smtp().accepted().into_iter().find(|m| m.to == ["big@example.com"]).expect("mailed");
    assert!(mailed.data.len() > file.len(), "the attachment went out whole (base64)");
}
