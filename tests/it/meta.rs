//! WhatsApp, Messenger and Instagram through the real gateway and the Meta sandbox: content
//! kinds in Meta's shape, service windows, error classes, receipts, inbound kinds, webhook
//! signatures, the handshake and redeliveries.

use std::time::Duration;

use omnigate_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{self, IG_ID, PAGE_ID, WA_NUMBER_ID, request, statuses, text};

const PERSON: &str = "+16315551234";

/// A person writes first: opens the 24-hour window and answers the inbound message.
async fn person_writes(t: &mut support::TestGateway, id: &str, body: &str) -> pb::Message {
    let code = t
        .meta()
        .whatsapp_inbound(
            WA_NUMBER_ID,
            json!({
                "from": PERSON.trim_start_matches('+'), "id": id, "timestamp": "1700000000",
                "type": "text", "text": { "body": body }
            }),
        )
        .await
        .expect("post");
    assert_eq!(code, 200);
    t.received(id).await
}

fn last_body(t: &support::TestGateway) -> Value {
    t.meta().sent().last().expect("a send").body.clone()
}

/// A closed window fails the channel as Meta would, so the message moves on to its
/// fallback at acceptance.
#[tokio::test]
async fn a_closed_window_falls_back_at_acceptance() {
    let mut t = support::gateway().start().await;
    let phone = |channel: pb::Channel| pb::Identity {
        channel: channel as i32,
        address: "+16315550050".into(),
    };
    let both = pb::UpsertContactRequest {
        identities: vec![phone(pb::Channel::Whatsapp), phone(pb::Channel::Sms)],
        ..Default::default()
    };
    t.client.upsert_contact(both).await.expect("contact");
    let mut free = request(pb::Channel::Whatsapp, "+16315550050", text("still there?"));
    free.fallback_channels = vec![pb::Channel::Sms as i32];
    let answer = t.send_request(free).await.expect("accepted");
    assert_eq!(answer.channel, pb::Channel::Sms as i32, "moved on at once");
    let done = t.wait_for(&answer.id, pb::MessageStatus::Delivered).await;
    let error = done.channel_attempts[0].error.as_ref().expect("the window's error");
    assert_eq!(error.code, pb::ErrorCode::OutsideWindow as i32);
    assert_eq!(t.meta().request_count(), 0);
}

#[tokio::test]
async fn whatsapp_free_form_needs_the_window_and_templates_do_not() {
    let mut t = support::gateway().start().await;
    let free = t
        .send_request(request(pb::Channel::Whatsapp, PERSON, text("hello?")))
        .await
        .expect("answered");
    assert_eq!(free.status, pb::MessageStatus::Failed as i32, "fails fast, not at Meta");
    let e = free.error.expect("error");
    assert_eq!(e.code, pb::ErrorCode::OutsideWindow as i32);
    assert!(e.message.contains("template") && e.message.contains("whatsapp"), "{}", e.message);
    assert_eq!(t.meta().request_count(), 0);

    let template = pb::content::Kind::Template(pb::Template {
        name: "order_update".into(),
        language: "en_US".into(),
        components: vec![pb::TemplateComponent {
            r#type: "body".into(),
            parameters: vec![pb::TemplateParameter {
                kind: Some(pb::template_parameter::Kind::Text("42".into())),
            }],
            ..Default::default()
        }],
    });
    let m =
        t.send_request(request(pb::Channel::Whatsapp, PERSON, template)).await.expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Read).await;
    assert_eq!(
        statuses(&m),
        [
            pb::MessageStatus::Accepted,
            pb::MessageStatus::Sent,
            pb::MessageStatus::Delivered,
            pb::MessageStatus::Read
        ]
    );
    assert!(m.provider_message_id.starts_with("wamid."));
    let body = last_body(&t);
    assert_eq!(body["template"]["name"], "order_update");
    assert_eq!(body["to"], "16315551234");

    let inbound = person_writes(&mut t, "wamid.IN1", "hi there").await;
    assert_eq!(inbound.conversation_id, m.conversation_id, "the reply joins the conversation");
    let ok = t
        .send_request(request(pb::Channel::Whatsapp, PERSON, text("welcome back")))
        .await
        .expect("accepted");
    t.wait_for(&ok.id, pb::MessageStatus::Delivered).await;
}

#[tokio::test]
async fn every_content_kind_reaches_whatsapp_in_metas_shape() {
    let mut t = support::gateway().start().await;
    let inbound = person_writes(&mut t, "wamid.IN2", "show me").await;
    let kinds = vec![
        (
            pb::content::Kind::Media(pb::Media {
                url: "https://e.com/doc.pdf".into(),
                kind: pb::MediaKind::Document as i32,
                caption: "your invoice".into(),
                filename: "invoice.pdf".into(),
                ..Default::default()
            }),
            json!({ "link": "https://e.com/doc.pdf", "caption": "your invoice", "filename": "invoice.pdf" }),
            "document",
        ),
        (
            pb::content::Kind::Media(pb::Media {
                url: "https://e.com/a.jpg".into(),
                mime_type: "image/jpeg".into(),
                ..Default::default()
            }),
            json!({ "link": "https://e.com/a.jpg" }),
            "image",
        ),
        (
            pb::content::Kind::Location(pb::Location {
                latitude: 37.48,
                longitude: -122.15,
                name: "HQ".into(),
                address: "1 Hacker Way".into(),
            }),
            json!({ "latitude": 37.48, "longitude": -122.15, "name": "HQ", "address": "1 Hacker Way" }),
            "location",
        ),
        (
            pb::content::Kind::Interactive(pb::Interactive {
                body: "Did it arrive?".into(),
                action: Some(pb::interactive::Action::Buttons(pb::Choices {
                    choices: vec![pb::Choice {
                        id: "yes".into(),
                        title: "Yes".into(),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            }),
            json!({ "type": "button", "body": { "text": "Did it arrive?" },
                    "action": { "buttons": [{ "type": "reply", "reply": { "id": "yes", "title": "Yes" } }] } }),
            "interactive",
        ),
        (
            pb::content::Kind::Interactive(pb::Interactive {
                body: "Pick a slot".into(),
                action: Some(pb::interactive::Action::List(pb::ListMenu {
                    button: "Slots".into(),
                    sections: vec![pb::ListSection {
                        title: "Today".into(),
                        rows: vec![pb::Choice {
                            id: "9".into(),
                            title: "9:00".into(),
                            description: "morning".into(),
                        }],
                    }],
                })),
                ..Default::default()
            }),
            json!({ "type": "list", "body": { "text": "Pick a slot" }, "action": { "button": "Slots",
                    "sections": [{ "title": "Today", "rows": [{ "id": "9", "title": "9:00", "description": "morning" }] }] } }),
            "interactive",
        ),
        (
            pb::content::Kind::Reaction(pb::Reaction {
                message_id: inbound.id.clone(),
                emoji: "\u{1F44D}".into(),
            }),
            json!({ "message_id": "wamid.IN2", "emoji": "\u{1F44D}" }),
            "reaction",
        ),
    ];
    for (kind, expected, name) in kinds {
        let m =
            t.send_request(request(pb::Channel::Whatsapp, PERSON, kind)).await.expect("accepted");
        t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
        let body = t
            .meta()
            .sent()
            .into_iter()
            .find(|s| s.body["type"] == name && s.body[name] == expected)
            .map(|s| s.body);
        assert!(
            body.is_some(),
            "no {name} body {expected} in {:#?}",
            t.meta().sent().iter().map(|s| &s.body).collect::<Vec<_>>()
        );
    }
    // A reply quotes the person's message by its wamid.
    let mut reply = request(pb::Channel::Whatsapp, PERSON, text("answering that"));
    reply.reply_to_message_id = inbound.id.clone();
    let m = t.send_request(reply).await.expect("accepted");
    assert_eq!(m.reply_to_message_id, inbound.id);
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    assert_eq!(last_body(&t)["context"], json!({ "message_id": "wamid.IN2" }));

    // A kind WhatsApp cannot carry is refused, naming kind and channel; nothing is stored.
    let quick = pb::content::Kind::Interactive(pb::Interactive {
        body: "x".into(),
        action: Some(pb::interactive::Action::QuickReplies(pb::Choices {
            choices: vec![pb::Choice { id: "a".into(), title: "A".into(), ..Default::default() }],
        })),
        ..Default::default()
    });
    let sent_before = t.meta().request_count();
    let refused =
        t.send_request(request(pb::Channel::Whatsapp, PERSON, quick)).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("whatsapp"), "{}", refused.message());
    assert_eq!(t.meta().request_count(), sent_before);
}

#[tokio::test]
async fn meta_error_classes_retry_or_fail_as_documented() {
    let mut t = support::gateway()
        .meta_rule(r#"{ to_prefix = "1631555000", fault = { kind = "error", code = 130429 }, times = 1 }"#)
        .meta_rule(r#"{ to_prefix = "1631555001", fault = { kind = "error", code = 131056 }, times = 1 }"#)
        .meta_rule(r#"{ to_prefix = "1631555002", fault = { kind = "error", code = 131048 }, times = 1 }"#)
        .meta_rule(r#"{ to_prefix = "1631555003", fault = { kind = "server_error" }, times = 2 }"#)
        .meta_rule(r#"{ to_prefix = "1631555004", fault = { kind = "error", code = 131047 } }"#)
        .meta_rule(r#"{ to_prefix = "1631555005", fault = { kind = "error", code = 190, http_status = 401 } }"#)
        .meta_rule(r#"{ to_prefix = "1631555006", fault = { kind = "error", code = 132001 } }"#)
        .meta_rule(r#"{ to_prefix = "1631555007", fault = { kind = "failed", code = 131026 } }"#)
        .start()
        .await;
    let template = || {
        pb::content::Kind::Template(pb::Template {
            name: "hello_world".into(),
            language: "en_US".into(),
            components: vec![],
        })
    };
    for (to, attempts) in
        [("+16315550001", 2), ("+16315550011", 2), ("+16315550021", 2), ("+16315550031", 3)]
    {
        let m =
            t.send_request(request(pb::Channel::Whatsapp, to, template())).await.expect("accepted");
        let m = t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
        assert_eq!(m.attempts, attempts, "{to} retried");
    }
    for (to, code, provider_code) in [
        ("+16315550041", pb::ErrorCode::OutsideWindow, "131047"),
        ("+16315550051", pb::ErrorCode::Authentication, "190"),
        ("+16315550061", pb::ErrorCode::InvalidContent, "132001"),
        ("+16315550071", pb::ErrorCode::Undeliverable, "131026"),
    ] {
        let m =
            t.send_request(request(pb::Channel::Whatsapp, to, template())).await.expect("accepted");
        let m = t.wait_for(&m.id, pb::MessageStatus::Failed).await;
        let e = m.error.expect("error");
        assert_eq!(
            (e.code, e.provider_code.as_str(), e.provider.as_str()),
            (code as i32, provider_code, "meta"),
            "{to}"
        );
        assert_eq!(m.attempts, 1, "{to} not retried");
    }
}

#[tokio::test]
async fn the_pair_rate_limit_spaces_messages_to_one_person_only() {
    let mut t = support::gateway().pair_rate(2.0).start().await;
    let template = |name: &str| {
        pb::content::Kind::Template(pb::Template {
            name: name.into(),
            language: "en_US".into(),
            components: vec![],
        })
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            t.send_request(request(pb::Channel::Whatsapp, PERSON, template(&format!("same_{i}"))))
                .await
                .expect("ok")
                .id,
        );
    }
    ids.push(
        t.send_request(request(pb::Channel::Whatsapp, "+16315559999", template("other")))
            .await
            .expect("ok")
            .id,
    );
    for id in &ids {
        t.wait_for(id, pb::MessageStatus::Delivered).await;
    }
    let sent = t.meta().sent();
    let to_person: Vec<_> = sent.iter().filter(|s| s.body["to"] == "16315551234").collect();
    assert_eq!(to_person.len(), 3);
    for pair in to_person.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(450),
            "two messages to one person {gap:?} apart at 2/s"
        );
    }
    let other = sent.iter().position(|s| s.body["to"] == "16315559999").expect("other sent");
    let last_same = sent.iter().rposition(|s| s.body["to"] == "16315551234").expect("same sent");
    assert!(other < last_same, "another person is not held behind the paced one");
}

#[tokio::test]
async fn messenger_window_tags_quick_replies_and_watermarks() {
    let mut t = support::gateway().start().await;
    let psid = "1254459154682919";
    let closed =
        t.send_request(request(pb::Channel::Messenger, psid, text("hi"))).await.expect("answered");
    let error = closed.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::OutsideWindow as i32);
    // Messenger has no templates: the way on is a message tag.
    assert!(error.message.contains("message_tag: HUMAN_AGENT"), "{}", error.message);
    let mut tagged = request(pb::Channel::Messenger, psid, text("an agent here"));
    tagged.message_tag = "HUMAN_AGENT".into();
    let tagged = t.send_request(tagged).await.expect("accepted");
    assert_eq!(
        tagged.status,
        pb::MessageStatus::Failed as i32,
        "HUMAN_AGENT needs a message within 7 days too"
    );
    let error = tagged.error.expect("error");
    assert!(error.message.contains("within the last 168 h"), "{}", error.message);

    let code = t
        .meta()
        .messaging_inbound(PAGE_ID, psid, json!({ "mid": "m_in1", "text": "need help" }))
        .await
        .expect("post");
    assert_eq!(code, 200);
    let inbound = t.received("m_in1").await;
    assert_eq!(inbound.channel, pb::Channel::Messenger as i32);

    let quick = pb::content::Kind::Interactive(pb::Interactive {
        body: "Which?".into(),
        action: Some(pb::interactive::Action::QuickReplies(pb::Choices {
            choices: vec![pb::Choice {
                id: "A".into(),
                title: "Option A".into(),
                ..Default::default()
            }],
        })),
        ..Default::default()
    });
    let m = t.send_request(request(pb::Channel::Messenger, psid, quick)).await.expect("accepted");
    // Delivery then read watermarks from the sandbox.
    let m = t.wait_for(&m.id, pb::MessageStatus::Read).await;
    assert_eq!(
        statuses(&m)[1..],
        [pb::MessageStatus::Sent, pb::MessageStatus::Delivered, pb::MessageStatus::Read]
    );
    let body = last_body(&t);
    assert_eq!(body["messaging_type"], "RESPONSE");
    assert_eq!(
        body["message"]["quick_replies"][0],
        json!({ "content_type": "text", "title": "Option A", "payload": "A" })
    );
    let mut tagged = request(pb::Channel::Messenger, psid, text("following up"));
    tagged.message_tag = "HUMAN_AGENT".into();
    let tagged = t.send_request(tagged).await.expect("accepted");
    t.wait_for(&tagged.id, pb::MessageStatus::Delivered).await;
    assert_eq!(
        (last_body(&t)["messaging_type"].clone(), last_body(&t)["tag"].clone()),
        (json!("MESSAGE_TAG"), json!("HUMAN_AGENT"))
    );
    let err = t
        .send_request(request(pb::Channel::Messenger, "not-a-psid", text("x")))
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn instagram_has_read_receipts_only() {
    let mut t = support::gateway().start().await;
    let igsid = "6234567890123456";
    t.meta()
        .messaging_inbound(IG_ID, igsid, json!({ "mid": "ig_in1", "text": "hey" }))
        .await
        .expect("post");
    t.received("ig_in1").await;
    let m = t
        .send_request(request(pb::Channel::Instagram, igsid, text("hello")))
        .await
        .expect("accepted");
    let m = t.wait_for(&m.id, pb::MessageStatus::Read).await;
    assert_eq!(
        statuses(&m),
        [pb::MessageStatus::Accepted, pb::MessageStatus::Sent, pb::MessageStatus::Read]
    );
}

#[tokio::test]
async fn inbound_kinds_signatures_handshake_and_redeliveries() {
    let mut t = support::gateway().start().await;
    let ours = person_writes(&mut t, "wamid.FIRST", "start").await;
    let reply = t
        .send_request(request(pb::Channel::Whatsapp, PERSON, text("we got it")))
        .await
        .expect("accepted");
    let reply = t.wait_for(&reply.id, pb::MessageStatus::Delivered).await;
    let from = PERSON.trim_start_matches('+');
    let batch = omnigate_adapters::meta::sandbox::whatsapp_envelope(
        WA_NUMBER_ID,
        json!({
            "messages": [
                { "from": from, "id": "wamid.LOC", "timestamp": "1", "type": "location", "location": { "latitude": 1.0, "longitude": 2.0 } },
                { "from": from, "id": "wamid.BTN", "timestamp": "2", "type": "interactive",
                  "interactive": { "type": "list_reply", "list_reply": { "id": "9", "title": "9:00" } } },
                { "from": from, "id": "wamid.RCT", "timestamp": "3", "type": "reaction",
                  "reaction": { "message_id": reply.provider_message_id, "emoji": "\u{2764}\u{fe0f}" } },
                { "from": from, "id": "wamid.CTX", "timestamp": "4", "type": "text", "text": { "body": "about that" },
                  "context": { "from": "15550001234", "id": reply.provider_message_id } },
                { "from": from, "id": "wamid.ODD", "timestamp": "5", "type": "order", "order": {} }
            ]
        }),
    );
    assert_eq!(t.meta().post_webhook(WA_NUMBER_ID, &batch).await.expect("post"), 200);
    // Meta redelivers the same batch: nothing is stored twice.
    assert_eq!(t.meta().post_webhook(WA_NUMBER_ID, &batch).await.expect("post"), 200);
    let ctx = t.received("wamid.CTX").await;
    assert_eq!(ctx.reply_to_message_id, reply.id, "the quoted message is ours, by omnigate id");
    let list = t.history(&ours.conversation_id).await;
    assert_eq!(
        list.len(),
        6,
        "start, our reply, and four inbound kinds once each (the order kind has no canonical form)"
    );
    let kinds: Vec<_> =
        list.iter().map(|m| m.content.as_ref().and_then(|c| c.kind.clone())).collect();
    assert!(matches!(&kinds[2], Some(pb::content::Kind::Location(l)) if l.latitude == 1.0));
    assert!(matches!(&kinds[3], Some(pb::content::Kind::Choice(c)) if c.id == "9"));
    assert!(
        matches!(&kinds[4], Some(pb::content::Kind::Reaction(r)) if r.message_id == reply.provider_message_id)
    );
    // The order is still the person's: reported, with who sent it, rather than dropped.
    let request =
        pb::StreamEventsRequest { kinds: vec!["inbound_rejected".into()], ..Default::default() };
    let mut rejected = t.client.stream_events(request).await.expect("stream").into_inner();
    let next = tokio::time::timeout(Duration::from_secs(10), rejected.message()).await;
    let Some(pb::event::Kind::InboundRejected(order)) =
        next.expect("in time").expect("stream").expect("an event").kind
    else {
        panic!("filtered to inbound_rejected")
    };
    assert_eq!((order.reference.as_str(), order.from.as_str()), ("wamid.ODD", PERSON));
    assert_eq!(order.contact_id, ours.contact_id);
    assert!(order.reason.contains(r#"type "order""#), "{}", order.reason);

    // Forged and unsigned posts are refused.
    let http = omnigate_adapters::http::client(Duration::from_secs(5));
    let url = t.url("/webhooks/meta/wa/events");
    let raw = serde_json::to_vec(&batch).expect("json");
    let forged = http
        .post(&url)
        .header(
            "x-hub-signature-256",
            omnigate_adapters::meta::signature::sign("not-the-secret", &raw),
        )
        .body(raw.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status().as_u16(), 403);
    let unsigned = http.post(&url).body(raw).send().await.expect("post");
    assert_eq!(unsigned.status().as_u16(), 403);

    let challenge = http
        .get(format!("{url}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=8731"))
        .send()
        .await
        .expect("get");
    assert_eq!(challenge.status().as_u16(), 200);
    assert_eq!(challenge.text().await.expect("body"), "8731");
    let wrong = http
        .get(format!("{url}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status().as_u16(), 403);
}

/// `MarkRead` sends WhatsApp's read receipt (with the typing indicator when asked) for the
/// person's message, and Messenger's `mark_seen` then `typing_on` to the person; SMS has no
/// read receipts and an outbound message is not the person's, so both are refused.
#[tokio::test]
async fn read_receipts_go_to_the_person_on_meta_channels() {
    let mut t = support::gateway().start().await;
    let inbound = person_writes(&mut t, "wamid.READ1", "anyone there?").await;
    let mark = |id: &str, typing| pb::MarkReadRequest { message_id: id.into(), typing };
    t.client.mark_read(mark(&inbound.id, true)).await.expect("marked");
    let marks = t.meta().marks();
    let (endpoint, body) = marks.last().expect("a mark");
    assert_eq!(endpoint, WA_NUMBER_ID);
    assert_eq!(body, &omnigate_adapters::meta::whatsapp::read_receipt("wamid.READ1", true));

    let psid = "6245120000000801";
    let code = t
        .meta()
        .messaging_inbound(PAGE_ID, psid, json!({ "mid": "m_read1", "text": "hello?" }))
        .await
        .expect("post");
    assert_eq!(code, 200);
    let on_messenger = t.received("m_read1").await;
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["mark-read", &on_messenger.id, "--typing", "--addr", &addr])
        .output()
        .await
        .expect("runs");
    assert!(cli.status.success(), "{cli:?}");
    let actions: Vec<_> = t.meta().marks()[1..]
        .iter()
        .map(|(endpoint, body)| {
            assert_eq!(
                (endpoint.as_str(), body["recipient"]["id"].as_str()),
                (PAGE_ID, Some(psid))
            );
            body["sender_action"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(actions, ["mark_seen", "typing_on"]);

    let ours = t
        .send_request(request(pb::Channel::Whatsapp, PERSON, text("yes, here")))
        .await
        .expect("accepted");
    let refused = t.client.mark_read(mark(&ours.id, false)).await.expect_err("outbound");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("outbound"), "{refused:?}");
    let sms = t
        .sandbox()
        .deliver_inbound_mms(
            &t.url("/webhooks/twilio/sms/inbound"),
            "+14155550802",
            support::FROM,
            "hi",
            &[],
        )
        .await
        .expect("post")
        .1;
    let sms = t.received(&sms).await;
    let refused = t.client.mark_read(mark(&sms.id, false)).await.expect_err("sms");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("came by sms"), "{refused:?}");
    assert_eq!(t.meta().marks().len(), 3, "nothing more reached Meta");
}

/// `ListTemplates` reads the WhatsApp Business Account's templates from Graph with the
/// account's token, page by page (Graph's `after` cursor), by name when asked; other
/// channels have none. The sandbox holds the OpenAPI document's example templates.
#[tokio::test]
async fn whatsapp_templates_are_listed_page_by_page() {
    let mut t = support::gateway().start().await;
    let list = |name: &str, page_size, page_token: String| pb::ListTemplatesRequest {
        account: String::new(),
        name: name.into(),
        page_size,
        page_token,
    };
    let first =
        t.client.list_templates(list("", 1, String::new())).await.expect("page").into_inner();
    assert!(!first.next_page_token.is_empty());
    let second = t
        .client
        .list_templates(list("", 1, first.next_page_token))
        .await
        .expect("page")
        .into_inner();
    assert!(second.next_page_token.is_empty(), "the last page");
    let all: Vec<_> = first.templates.iter().chain(&second.templates).collect();
    let names: Vec<_> = all.iter().map(|t| (t.name.as_str(), t.category.as_str())).collect();
    assert_eq!(names, [("hello_world", "MARKETING"), ("2023_april_promo", "MARKETING")]);
    let hello = all[0];
    assert_eq!((hello.id.as_str(), hello.status.as_str()), ("1192339204654487", "APPROVED"));
    assert!(hello.body.starts_with("Welcome and congratulations!!"), "{}", hello.body);
    let components: Value = serde_json::from_str(&hello.components_json).expect("JSON");
    assert_eq!(components[0]["text"], "Hello World");

    let named = t.client.list_templates(list("2023_april_promo", 0, String::new())).await;
    let named = named.expect("named").into_inner();
    assert_eq!(
        named.templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["2023_april_promo"]
    );
    let too_many = t.client.list_templates(list("", 101, String::new())).await;
    assert_eq!(too_many.expect_err("over 100").code(), Code::InvalidArgument);
    let on_sms = pb::ListTemplatesRequest { account: "sms".into(), ..list("", 0, String::new()) };
    let refused = t.client.list_templates(on_sms).await.expect_err("not WhatsApp");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // The CLI prints every page, one template a line.
    let addr = format!("http://{}", t.gw().grpc_addr);
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["templates", "--addr", &addr])
        .output()
        .await
        .expect("runs");
    assert!(cli.status.success(), "{cli:?}");
    let printed: Vec<Value> = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let names: Vec<_> = printed.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["hello_world", "2023_april_promo"]);
}
