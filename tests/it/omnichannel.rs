//! One person, one conversation across channels: contacts and identities, merge and forget,
//! conversation rules, event filters.

use std::time::Duration;

use omnigate_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::{self, WA_NUMBER_ID, request, text};

fn identity(channel: pb::Channel, address: &str) -> pb::Identity {
    pb::Identity { channel: channel as i32, address: address.into() }
}

#[tokio::test]
async fn a_whatsapp_reply_to_an_sms_lands_in_the_same_conversation() {
    let mut t = support::gateway().start().await;
    let sms = t.send("+1 (415) 555-0601", "your order shipped").await;
    assert_eq!(sms.to, "+14155550601", "addresses are stored normalised");
    t.wait_for(&sms.id, pb::MessageStatus::Delivered).await;
    let code = t
        .meta()
        .whatsapp_inbound(WA_NUMBER_ID, json!({
            "from": "14155550601", "id": "wamid.X1", "timestamp": "1", "type": "text", "text": { "body": "thanks!" }
        }))
        .await
        .expect("post");
    assert_eq!(code, 200);
    let reply = t.received("wamid.X1").await;
    assert_eq!(reply.contact_id, sms.contact_id, "one phone number, one person");
    assert_eq!(reply.conversation_id, sms.conversation_id, "one conversation across channels");
    // The window is open now: answer on WhatsApp in the same conversation.
    let answer = t
        .send_request(request(pb::Channel::Whatsapp, "+14155550601", text("glad to help")))
        .await
        .expect("ok");
    assert_eq!(answer.conversation_id, sms.conversation_id);
    let history = t.history(&sms.conversation_id).await;
    let channels: Vec<i32> = history.iter().map(|m| m.channel).collect();
    assert_eq!(
        channels,
        [pb::Channel::Sms as i32, pb::Channel::Whatsapp as i32, pb::Channel::Whatsapp as i32]
    );
    let c = t
        .client
        .get_conversation(pb::GetConversationRequest { id: sms.conversation_id.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(c.channels, [pb::Channel::Sms as i32, pb::Channel::Whatsapp as i32]);
    assert_eq!(c.contact_id, sms.contact_id);
}

#[tokio::test]
async fn identities_belong_to_one_contact_and_move_only_by_merge() {
    let mut t = support::gateway().start().await;
    let ann = t
        .client
        .upsert_contact(pb::UpsertContactRequest {
            display_name: "Ann".into(),
            identities: vec![
                identity(pb::Channel::Email, "Ann@Example.COM"),
                identity(pb::Channel::Sms, "+1 415 555 0602"),
            ],
            channel_preferences: vec![pb::Channel::Whatsapp as i32, pb::Channel::Sms as i32],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    assert!(ann.id.starts_with("ctc_"));
    assert_eq!(ann.identities[0].address, "ann@example.com");
    let found = t
        .client
        .find_contact(pb::FindContactRequest {
            identity: Some(identity(pb::Channel::Sms, "+14155550602")),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(found.id, ann.id);

    // Someone writes from Messenger: an unknown address makes a new contact.
    t.meta()
        .messaging_inbound(
            support::PAGE_ID,
            "998877",
            json!({ "mid": "m_ann", "text": "it's Ann" }),
        )
        .await
        .expect("post");
    let fb = t.received("m_ann").await;
    assert_ne!(fb.contact_id, ann.id);
    let steal = t
        .client
        .link_identity(pb::LinkIdentityRequest {
            contact_id: ann.id.clone(),
            identity: Some(identity(pb::Channel::Messenger, "998877")),
        })
        .await
        .expect_err("never a silent steal");
    assert_eq!(steal.code(), Code::FailedPrecondition);
    assert!(steal.message().contains("merge"), "{}", steal.message());

    let merged = t
        .client
        .merge_contacts(pb::MergeContactsRequest {
            into_contact_id: ann.id.clone(),
            from_contact_id: fb.contact_id.clone(),
        })
        .await
        .expect("merged")
        .into_inner();
    assert_eq!(merged.identities.len(), 3);
    let again = t
        .client
        .merge_contacts(pb::MergeContactsRequest {
            into_contact_id: ann.id.clone(),
            from_contact_id: fb.contact_id.clone(),
        })
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!(again.identities.len(), 3);
    let old = t
        .client
        .get_contact(pb::GetContactRequest { id: fb.contact_id.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(old.id, ann.id, "a merged contact answers as the one it joined");
    let moved = t.get(&fb.id).await;
    assert_eq!(moved.contact_id, ann.id, "history moves with the merge");
    let convs = t
        .client
        .list_conversations(pb::ListConversationsRequest {
            contact_id: ann.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .conversations;
    assert!(convs.iter().any(|c| c.id == fb.conversation_id), "conversations move with the merge");
    let mut merges = t
        .client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec!["contact_merged".into()],
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(5), merges.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("event");
    let Some(pb::event::Kind::ContactMerged(m)) = e.kind else { panic!("a merge event") };
    assert_eq!(m.merged_contact_id, fb.contact_id);
    let bad = t
        .client
        .stream_events(pb::StreamEventsRequest {
            from_sequence: 0,
            kinds: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn forgetting_a_contact_erases_messages_and_events() {
    let mut t = support::gateway().start().await;
    let m = t.send("+14155550603", "secret plans").await;
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    // An opt-out, then a merge, whose event carries the contact with its opt-outs.
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let stop = t.sandbox().deliver_inbound(&inbound, "+14155550603", support::FROM, "STOP");
    assert_eq!(stop.await.expect("post"), 200);
    let other = t
        .client
        .upsert_contact(pb::UpsertContactRequest {
            identities: vec![identity(pb::Channel::Email, "plans@example.com")],
            ..Default::default()
        })
        .await
        .expect("contact")
        .into_inner();
    let merged = t
        .client
        .merge_contacts(pb::MergeContactsRequest {
            into_contact_id: m.contact_id.clone(),
            from_contact_id: other.id,
        })
        .await
        .expect("merged")
        .into_inner();
    assert_eq!(merged.opt_outs.len(), 1, "{merged:?}");
    let erased = t
        .client
        .forget_contact(pb::ForgetContactRequest { contact_id: m.contact_id.clone() })
        .await
        .expect("forgotten")
        .into_inner();
    assert_eq!(erased.messages_erased, 2, "the message and the STOP");
    let after = t.get(&m.id).await;
    assert_eq!(after.to, "");
    assert!(
        matches!(after.content.and_then(|c| c.kind), Some(pb::content::Kind::Text(ref x)) if x.body == "[erased]")
    );
    assert_eq!(after.status, pb::MessageStatus::Delivered as i32, "anonymous facts stay");
    let mut events =
        t.client.stream_events(pb::StreamEventsRequest::default()).await.expect("s").into_inner();
    let mut forgotten = false;
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(500), events.message()).await
    {
        let text = format!("{e:?}");
        assert!(
            !text.contains("secret plans")
                && !text.contains("+14155550603")
                && !text.contains("plans@example.com"),
            "the event log keeps {text}"
        );
        forgotten |= matches!(e.kind, Some(pb::event::Kind::ContactForgotten(_)));
    }
    assert!(forgotten);
    let gone = t
        .client
        .find_contact(pb::FindContactRequest {
            identity: Some(identity(pb::Channel::Sms, "+14155550603")),
        })
        .await
        .expect_err("no identity left");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn conversations_close_explicitly_and_after_inactivity() {
    let mut t = support::gateway().inactivity_secs(1).start().await;
    let first = t.send("+14155550604", "one").await;
    let same = t.send("+14155550604", "two").await;
    assert_eq!(same.conversation_id, first.conversation_id, "while open and active: reused");
    let closed = t
        .client
        .close_conversation(pb::CloseConversationRequest { id: first.conversation_id.clone() })
        .await
        .expect("closed")
        .into_inner();
    assert_eq!(closed.state, pb::ConversationState::Closed as i32);
    let third = t.send("+14155550604", "three").await;
    assert_ne!(third.conversation_id, first.conversation_id, "a closed conversation is not reused");
    // An explicit conversation id is honoured, even a closed one.
    let mut explicit = support::text_request("+14155550604", "four");
    explicit.conversation_id = first.conversation_id.clone();
    let fourth = t.send_request(explicit).await.expect("ok");
    assert_eq!(fourth.conversation_id, first.conversation_id);
    let mut other = support::text_request("+14155550699", "x");
    other.conversation_id = first.conversation_id.clone();
    assert_eq!(
        t.send_request(other).await.expect_err("another person").code(),
        Code::InvalidArgument
    );

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let fifth = t.send("+14155550604", "after a pause").await;
    assert_ne!(fifth.conversation_id, third.conversation_id, "inactivity opens a new conversation");
    let open = t
        .client
        .list_conversations(pb::ListConversationsRequest {
            contact_id: first.contact_id.clone(),
            state: pb::ConversationState::Open as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(open.conversations.len(), 1);
    assert_eq!(open.conversations[0].id, fifth.conversation_id);
    assert!(open.next_page_token.is_empty(), "the stale one was closed");
    let all = t
        .client
        .list_conversations(pb::ListConversationsRequest {
            contact_id: first.contact_id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.conversations.len(), 2);
    let rest = t
        .client
        .list_conversations(pb::ListConversationsRequest {
            contact_id: first.contact_id.clone(),
            page_size: 2,
            page_token: all.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.conversations.len(), 1, "three conversations in all");
}

/// A contact reachable on SMS and WhatsApp at `number`, who wrote on WhatsApp (so its
/// window is open) with message id `wamid`.
pub async fn phone_contact_who_wrote(
    t: &mut support::TestGateway,
    number: &str,
    wamid: &str,
) -> pb::Contact {
    let contact = t
        .client
        .upsert_contact(pb::UpsertContactRequest {
            identities: vec![
                identity(pb::Channel::Whatsapp, number),
                identity(pb::Channel::Sms, number),
            ],
            ..Default::default()
        })
        .await
        .expect("contact")
        .into_inner();
    let from = number.trim_start_matches('+');
    let message = json!({ "from": from, "id": wamid, "timestamp": "1", "type": "text", "text": { "body": "hi" } });
    t.meta().whatsapp_inbound(WA_NUMBER_ID, message).await.expect("post");
    assert_eq!(t.received(wamid).await.contact_id, contact.id, "a known identity attaches");
    contact
}

pub fn template(name: &str) -> pb::content::Kind {
    pb::content::Kind::Template(pb::Template {
        name: name.into(),
        language: "en_US".into(),
        components: vec![],
    })
}

#[tokio::test]
async fn a_contact_gets_the_first_channel_that_can_carry_the_message() {
    let mut t = support::gateway().start().await;
    let contact = t
        .client
        .upsert_contact(pb::UpsertContactRequest {
            identities: vec![
                identity(pb::Channel::Whatsapp, "+14155550620"),
                identity(pb::Channel::Sms, "+14155550620"),
            ],
            channel_preferences: vec![pb::Channel::Whatsapp as i32, pb::Channel::Sms as i32],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    let by_contact = |kind| pb::SendMessageRequest {
        contact_id: contact.id.clone(),
        content: Some(pb::Content { kind: Some(kind) }),
        ..Default::default()
    };
    // Free text: WhatsApp's window is closed (the person never wrote), so SMS.
    let m = t.send_request(by_contact(text("your code is 1234"))).await.expect("accepted");
    assert_eq!((m.channel, m.to.as_str()), (pb::Channel::Sms as i32, "+14155550620"));
    // A template may go out on WhatsApp at any time, and WhatsApp is preferred.
    let m = t.send_request(by_contact(template("otp"))).await.expect("accepted");
    assert_eq!(m.channel, pb::Channel::Whatsapp as i32);
    // Nothing carries a location to this contact now: a clear refusal with the reasons.
    let location = pb::content::Kind::Location(pb::Location {
        latitude: 1.0,
        longitude: 2.0,
        ..Default::default()
    });
    let err = t.send_request(by_contact(location)).await.expect_err("no channel");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("whatsapp: outside the service window")
            && err.message().contains("sms:"),
        "{}",
        err.message()
    );
}

/// The journey: SMS out, a WhatsApp reply in, a WhatsApp send that fails and falls back to
/// email: one contact, one conversation, one history, and a CRM that sees every step signed.
#[tokio::test]
async fn journey_across_channels_with_fallback_and_crm_webhooks() {
    let mut t = support::gateway()
        .meta_rule(r#"{ to_prefix = "14155550630", fault = { kind = "error", code = 131026 }, times = 1 }"#)
        .meta_rule(r#"{ to_prefix = "14155550631", fault = { kind = "failed", code = 131026 } }"#)
        .start()
        .await;
    let (crm, url) = crate::webhooks::receiver().await;
    let hook = t.subscribe(url).await;

    let sms = t.send("+14155550630", "your parcel is on its way").await;
    t.wait_for(&sms.id, pb::MessageStatus::Delivered).await;
    t.meta()
        .whatsapp_inbound(WA_NUMBER_ID, json!({
            "from": "14155550630", "id": "wamid.J1", "timestamp": "1", "type": "text", "text": { "body": "can I change the address?" }
        }))
        .await
        .expect("post");
    let reply = t.received("wamid.J1").await;
    assert_eq!(reply.conversation_id, sms.conversation_id);

    // The person also has an email address.
    t.client
        .link_identity(pb::LinkIdentityRequest {
            contact_id: sms.contact_id.clone(),
            identity: Some(pb::Identity {
                channel: pb::Channel::Email as i32,
                address: "Ann@Example.com".into(),
            }),
        })
        .await
        .expect("link");
    // WhatsApp refuses this send outright (131026): the message falls back to email, where
    // the SMTP sandbox takes it (SENT: email has no delivery receipts).
    let mut answer =
        request(pb::Channel::Whatsapp, "+14155550630", text("yes: reply with the new address"));
    answer.fallback_channels = vec![pb::Channel::Email as i32];
    let answer = t.send_request(answer).await.expect("accepted");
    assert_eq!(answer.channel, pb::Channel::Whatsapp as i32);
    let done = t.wait_for(&answer.id, pb::MessageStatus::Sent).await;
    assert_eq!(done.id, answer.id, "one message, one id");
    assert_eq!(done.channel, pb::Channel::Email as i32);
    assert_eq!(done.to, "ann@example.com");
    assert_eq!(done.provider_message_id, format!("{}@omnigate.test", answer.id));
    let mail =
        t.smtp().accepted().into_iter().find(|m| m.to == ["ann@example.com"]).expect("mailed");
    let mail = String::from_utf8_lossy(&mail.data).to_string();
    assert!(mail.contains("Subject: yes: reply with the new address"), "{mail}");
    assert_eq!(done.channel_attempts.len(), 1);
    let attempt = &done.channel_attempts[0];
    assert_eq!(attempt.channel, pb::Channel::Whatsapp as i32);
    assert_eq!(attempt.error.as_ref().map(|e| e.provider_code.as_str()), Some("131026"));
    assert!(done.status_history.iter().any(|c| c.provider_status == "fallback to email"));
    assert_eq!(done.conversation_id, sms.conversation_id);

    let history = t.history(&sms.conversation_id).await;
    assert_eq!(
        history.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        [sms.id.clone(), reply.id.clone(), answer.id.clone()]
    );

    // A delivery failure reported later (a failed status webhook) falls back too.
    let other = phone_contact_who_wrote(&mut t, "+14155550631", "wamid.J2").await;
    let late = t
        .send_request(pb::SendMessageRequest {
            contact_id: other.id.clone(),
            channel: pb::Channel::Whatsapp as i32,
            fallback_channels: vec![pb::Channel::Sms as i32],
            content: Some(pb::Content { kind: Some(text("see you tomorrow")) }),
            ..Default::default()
        })
        .await
        .expect("accepted");
    let late = t.wait_for(&late.id, pb::MessageStatus::Delivered).await;
    assert_eq!(late.channel, pb::Channel::Sms as i32);
    assert_eq!(late.channel_attempts[0].status, pb::MessageStatus::Failed as i32);

    // The CRM saw it all, signed and in order, including the fallback's QUEUED step.
    crate::webhooks::until("the CRM to see the fallback", || {
        crm.got
            .lock()
            .expect("lock")
            .iter()
            .any(|d| String::from_utf8_lossy(&d.3).contains("fallback to sms"))
    })
    .await;
    let got = crm.got.lock().expect("lock").clone();
    let mut last = 0;
    for (id, ts, sig, body) in &got {
        assert!(crate::webhooks::verify(&hook.secret, id, ts, sig, body));
        let seq: u64 = id.trim_start_matches("evt_").parse().expect("seq");
        assert!(seq > last, "in order, no duplicates without failures");
        last = seq;
    }
}

#[tokio::test]
async fn no_delivery_receipt_in_time_moves_to_the_next_channel() {
    let mut t = support::gateway().callback_delay_ms(60_000).fallback_after_secs(0.5).start().await;
    let contact = phone_contact_who_wrote(&mut t, "+14155550640", "wamid.D1").await;
    let m = t
        .send_request(pb::SendMessageRequest {
            contact_id: contact.id.clone(),
            channel: pb::Channel::Sms as i32,
            fallback_channels: vec![pb::Channel::Whatsapp as i32],
            content: Some(pb::Content { kind: Some(text("are you there?")) }),
            ..Default::default()
        })
        .await
        .expect("accepted");
    assert_eq!(m.channel, pb::Channel::Sms as i32);
    // The SMS is sent but never reported delivered (the sandbox holds its receipts).
    let mut moved = t.get(&m.id).await;
    for _ in 0..250 {
        if moved.channel == pb::Channel::Whatsapp as i32 && !moved.provider_message_id.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        moved = t.get(&m.id).await;
    }
    assert_eq!(moved.channel, pb::Channel::Whatsapp as i32, "{moved:#?}");
    assert_eq!(moved.status, pb::MessageStatus::Sent as i32);
    let left = &moved.channel_attempts[0];
    assert_eq!(
        (left.channel, left.status),
        (pb::Channel::Sms as i32, pb::MessageStatus::Sent as i32)
    );
    assert!(left.provider_message_id.starts_with("SM"));
    assert_eq!(left.error.as_ref().map(|e| e.code), Some(pb::ErrorCode::Undeliverable as i32));
    assert_eq!(t.sandbox().sent_count(), 1);
    assert_eq!(t.meta().sent().len(), 1, "the WhatsApp copy went out once");
}
