//! Opt-outs: an SMS `STOP`, or Twilio refusing a send because of one (21610), bars the
//! account's sends to that person at acceptance, without a provider call, until `START`.
//! shared/providers/DETAILS.md 1.3: "After STOP, sends from that sender to that number fail
//! with 21610 until the user sends START"; 6: "Opt-outs (Twilio 21610 ...) should also
//! update contact consent state."

use std::time::Duration;

use omnigate_proto::v1 as pb;

use crate::support::{self, FROM, text};

/// The consent changes committed from the moment it is made, one at a time.
pub struct Changes(tonic::Streaming<pb::Event>);

impl Changes {
    pub async fn follow(t: &mut support::TestGateway) -> Self {
        let request = pb::StreamEventsRequest {
            kinds: vec!["consent_changed".into()],
            from_now: true,
            ..Default::default()
        };
        Changes(t.client.stream_events(request).await.expect("stream").into_inner())
    }

    pub async fn next(&mut self) -> pb::ConsentChanged {
        let event = tokio::time::timeout(Duration::from_secs(10), self.0.message())
            .await
            .expect("an event in time")
            .expect("stream ok")
            .expect("stream open");
        match event.kind {
            Some(pb::event::Kind::ConsentChanged(c)) => c,
            other => panic!("asked for consent changes only, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn stop_bars_the_accounts_sends_until_start() {
    let mut t = support::gateway().start().await;
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let sandbox = t.sandbox().clone();
    let said = |body: &'static str| {
        let (sandbox, inbound) = (sandbox.clone(), inbound.clone());
        async move { sandbox.deliver_inbound(&inbound, "+14155550601", FROM, body).await }
    };
    let mut changes = Changes::follow(&mut t).await;
    assert_eq!(said(" Stop ").await.expect("post"), 200);
    let out = changes.next().await;
    assert!(out.opted_out && !out.contact_id.is_empty());
    assert_eq!(
        (out.account.as_str(), out.channel, out.address.as_str(), out.reason.as_str()),
        ("sms", pb::Channel::Sms as i32, "+14155550601", r#"replied "Stop" on sms"#)
    );
    assert_eq!(said("STOP").await.expect("post"), 200, "a second STOP changes nothing");
    let (client, id) = (t.client.clone(), out.contact_id.clone());
    let opt_outs = move || {
        let (mut client, id) = (client.clone(), id.clone());
        async move {
            let request = pb::GetContactRequest { id };
            client.get_contact(request).await.expect("contact").into_inner().opt_outs
        }
    };
    let listed = opt_outs().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].account.as_str(), listed[0].address.as_str(), listed[0].reason.as_str()),
        ("sms", "+14155550601", r#"replied "Stop" on sms"#)
    );

    let refused = t.send("+14155550601", "20% off today").await;
    assert_eq!(refused.status, pb::MessageStatus::Failed as i32, "answered failed at once");
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32);
    assert!(error.message.contains(r#"replied "Stop" on sms"#), "{}", error.message);
    assert!(!error.retryable);
    assert_eq!(refused.attempts, 0);
    assert_eq!(
        support::statuses(&t.get(&refused.id).await),
        [pb::MessageStatus::Accepted, pb::MessageStatus::Failed],
        "stored as refused"
    );
    // Others still get theirs.
    let other = t.send("+14155550602", "20% off today").await;
    t.wait_for(&other.id, pb::MessageStatus::Delivered).await;

    assert_eq!(said("START").await.expect("post"), 200);
    let back = changes.next().await;
    assert!(!back.opted_out, "the next change is the opt-in, not the repeated STOP");
    assert_eq!(
        (back.contact_id, back.reason.as_str()),
        (out.contact_id, r#"replied "START" on sms"#)
    );
    assert_eq!(opt_outs().await, [], "START clears the list");
    let welcome = t.send("+14155550601", "welcome back").await;
    t.wait_for(&welcome.id, pb::MessageStatus::Delivered).await;
    assert_eq!(t.sent_to("+14155550601").len(), 1, "only the message after START went out");
}

#[tokio::test]
async fn a_send_twilio_refuses_for_an_opt_out_bars_the_next_before_sending() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550603", fault = { kind = "reject", code = 21610 } }"#)
        .start()
        .await;
    let first = t.send("+14155550603", "one").await;
    let first = t.wait_for(&first.id, pb::MessageStatus::Failed).await;
    assert_eq!(first.error.expect("error").provider_code, "21610");
    assert_eq!(t.sandbox().request_count(), 1);

    let second = t.send("+14155550603", "two").await;
    assert_eq!(second.status, pb::MessageStatus::Failed as i32);
    let error = second.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32);
    assert_eq!(error.provider_code, "", "the gateway refused it, not Twilio");
    assert!(error.message.contains("twilio refused a send with 21610"), "{}", error.message);
    assert_eq!(t.sandbox().request_count(), 1, "no second call to Twilio");
    let metrics = crate::send::reqwest_get(&t.url("/metrics")).await;
    let counted = |outcome: &str| {
        let name = format!(r#"omnigate_send_attempts_total{{account="sms",outcome="{outcome}"}}"#);
        crate::send::metric(&metrics, &name)
    };
    assert_eq!((counted("failed"), counted("refused")), (1.0, 1.0), "Twilio's, then ours");
}

/// A number that can never take an SMS (DETAILS.md 1.4: 21614 not SMS-capable, refused at
/// once; 30005 no such number, reported by a receipt) bars later sends to it, as a hard
/// bounce bars an email address; an SMS from the number shows it can, and lifts the bar.
#[tokio::test]
async fn a_number_that_takes_no_sms_is_barred_until_it_writes() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550607", fault = { kind = "reject", code = 21614 } }"#)
        .rule(r#"{ to_prefix = "+14155550608", fault = { kind = "undelivered", code = 30005 } }"#)
        .start()
        .await;
    let mut changes = Changes::follow(&mut t).await;
    for (to, code) in [("+14155550607", "21614"), ("+14155550608", "30005")] {
        let first = t.send(to, "one").await;
        t.wait_for(&first.id, pb::MessageStatus::Failed).await;
        let barred = changes.next().await;
        assert!(barred.opted_out && barred.bounced, "{barred:?}");
        assert_eq!(
            (barred.address.as_str(), barred.reason.clone()),
            (to, format!("twilio bounced a send with {code}"))
        );
        let sends = t.sandbox().request_count();
        let second = t.send(to, "two").await;
        assert_eq!((second.status, second.attempts), (pb::MessageStatus::Failed as i32, 0));
        let error = second.error.expect("error");
        assert_eq!(
            (error.code, error.provider_code.as_str()),
            (pb::ErrorCode::InvalidRecipient as i32, "")
        );
        assert_eq!(t.sandbox().request_count(), sends, "no call to Twilio");
    }
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let wrote = t.sandbox().deliver_inbound(&inbound, "+14155550608", FROM, "It's me");
    assert_eq!(wrote.await.expect("post"), 200);
    let lifted = changes.next().await;
    assert!(!lifted.opted_out && lifted.bounced, "{lifted:?}");
    assert_eq!((lifted.address.as_str(), lifted.reason.as_str()), ("+14155550608", "wrote on sms"));
    let third = t.send("+14155550608", "three").await;
    assert_eq!(third.status, pb::MessageStatus::Accepted as i32, "{third:?}");
}

#[tokio::test]
async fn an_opted_out_channel_falls_back_to_the_next() {
    let mut t = support::gateway().start().await;
    let contact =
        crate::omnichannel::phone_contact_who_wrote(&mut t, "+14155550604", "wamid.C1").await;
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let stop = t.sandbox().deliver_inbound(&inbound, "+14155550604", FROM, "STOP");
    assert_eq!(stop.await.expect("post"), 200);

    let answer = t
        .send_request(pb::SendMessageRequest {
            contact_id: contact.id.clone(),
            channel: pb::Channel::Sms as i32,
            fallback_channels: vec![pb::Channel::Whatsapp as i32],
            content: Some(pb::Content { kind: Some(text("your order shipped")) }),
            ..Default::default()
        })
        .await
        .expect("accepted");
    assert_eq!(answer.channel, pb::Channel::Whatsapp as i32, "moved on at acceptance");
    let done = t.wait_for(&answer.id, pb::MessageStatus::Delivered).await;
    let attempt = &done.channel_attempts[0];
    assert_eq!(attempt.channel, pb::Channel::Sms as i32);
    assert_eq!(
        attempt.error.as_ref().map(|e| e.code),
        Some(pb::ErrorCode::RecipientOptedOut as i32)
    );
    assert_eq!(t.sent_to("+14155550604").len(), 0);
    let metrics = crate::send::reqwest_get(&t.url("/metrics")).await;
    let refused = r#"omnigate_send_attempts_total{account="sms",outcome="refused"}"#;
    assert_eq!(crate::send::metric(&metrics, refused), 1.0, "the channel left counts");
}

#[tokio::test]
async fn consent_set_through_the_api_bars_any_channel_until_withdrawn() {
    let mut t = support::gateway().start().await;
    let set = |opted_out: bool| pb::SetConsentRequest {
        identity: Some(pb::Identity {
            channel: pb::Channel::Email as i32,
            address: "Pat@Example.com".into(),
        }),
        opted_out,
        reason: "unsubscribe link".into(),
        ..Default::default()
    };
    let out = t.client.set_consent(set(true)).await.expect("opt out").into_inner();
    assert!(out.changed && !out.contact_id.is_empty());
    let again = t.client.set_consent(set(true)).await.expect("opt out").into_inner();
    assert_eq!((again.changed, again.contact_id.as_str()), (false, out.contact_id.as_str()));

    let news = || support::request(pb::Channel::Email, "pat@example.com", text("news"));
    let refused = t.send_request(news()).await.expect("accepted");
    assert_eq!(refused.status, pb::MessageStatus::Failed as i32);
    assert_eq!(refused.contact_id, out.contact_id);
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32);
    assert!(error.message.contains("unsubscribe link"), "{}", error.message);
    let find = pb::FindContactRequest { identity: set(true).identity };
    let found = t.client.find_contact(find).await.expect("found").into_inner();
    let listed: Vec<_> = found.opt_outs.iter().map(|o| (&*o.account, &*o.address)).collect();
    assert_eq!(listed, [("email", "pat@example.com")], "the normalised address, by account");

    let back = t.client.set_consent(set(false)).await.expect("opt in").into_inner();
    assert!(back.changed);
    let sent = t.send_request(news()).await.expect("accepted");
    t.wait_for(&sent.id, pb::MessageStatus::Sent).await;
    let mailed = t.smtp().accepted().into_iter().filter(|m| m.to == ["pat@example.com"]).count();
    assert_eq!(mailed, 1, "only the message after the opt-in went out");

    // Bad requests name what is wrong.
    let status = |r: Result<tonic::Response<pb::SetConsentResponse>, tonic::Status>| {
        let e = r.expect_err("refused");
        (e.code(), e.message().to_string())
    };
    let (code, why) = status(t.client.set_consent(pb::SetConsentRequest::default()).await);
    assert_eq!(code, tonic::Code::InvalidArgument, "{why}");
    let (code, why) = status(
        t.client.set_consent(pb::SetConsentRequest { account: "nope".into(), ..set(true) }).await,
    );
    assert_eq!(code, tonic::Code::NotFound, "{why}");
    let (code, why) = status(
        t.client.set_consent(pb::SetConsentRequest { account: "sms".into(), ..set(true) }).await,
    );
    assert_eq!((code, why.contains("serves sms")), (tonic::Code::InvalidArgument, true), "{why}");
    let long = pb::SetConsentRequest { reason: "x".repeat(501), ..set(true) };
    let (code, why) = status(t.client.set_consent(long).await);
    assert_eq!((code, why.contains("reason")), (tonic::Code::InvalidArgument, true), "{why}");
}

/// RFC 8058: every email of an account with `unsubscribe_secret` carries its own signed
/// `List-Unsubscribe` HTTPS link (HTTP here, on loopback) and `List-Unsubscribe-Post:
/// List-Unsubscribe=One-Click`; the mail client's POST to it bars the person's mail.
#[tokio::test]
async fn a_one_click_unsubscribe_link_bars_the_persons_mail() {
    let mut t =
        support::gateway().extra(r#"unsubscribe_secret = "a secret of some length""#).start().await;
    let news = || support::request(pb::Channel::Email, "pat@example.com", text("news"));
    let first = t.send_request(news()).await.expect("accepted");
    t.wait_for(&first.id, pb::MessageStatus::Sent).await;
    let mail =
        t.smtp().accepted().into_iter().find(|m| m.to == ["pat@example.com"]).expect("mailed");
    // Long header values are folded onto continuation lines (RFC 5322 2.2.3).
    let text = String::from_utf8_lossy(&mail.data).replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    assert_eq!(header("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    let link = header("List-Unsubscribe");
    let link = link.trim().strip_prefix('<').and_then(|l| l.strip_suffix('>')).expect("<URI>");
    assert!(link.starts_with(&t.url("/unsubscribe/email/")), "{link}");

    let http = reqwest::Client::new();
    let scanned = http.get(link).send().await.expect("get");
    assert_eq!(scanned.status().as_u16(), 405, "a link scanner's GET changes nothing");
    let forged = format!("{}A", link);
    let forged = http.post(&forged).body("List-Unsubscribe=One-Click").send().await.expect("post");
    assert_eq!(forged.status().as_u16(), 403);
    let clicked = http
        .post(link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("post");
    assert_eq!(clicked.status().as_u16(), 200);

    let refused = t.send_request(news()).await.expect("accepted");
    assert_eq!(refused.status, pb::MessageStatus::Failed as i32);
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32);
    assert!(error.message.contains("one-click unsubscribe"), "{}", error.message);
    let metrics = crate::send::reqwest_get(&t.url("/metrics")).await;
    let counted = |result: &str| {
        let name = format!(r#"omnigate_webhooks_total{{account="email",result="{result}"}}"#);
        crate::send::metric(&metrics, &name)
    };
    assert_eq!((counted("unsubscribed"), counted("rejected")), (1.0, 1.0));
}

/// A short secret would make links guessable: refused at start, by its key.
#[tokio::test]
async fn a_short_unsubscribe_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = support::gateway().extra(r#"unsubscribe_secret = "short""#).config(dir.path());
    let err = omnigate::Gateway::start(config).await.err().expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("unsubscribe_secret") && err.contains("at least 16"), "{err}");
}

/// A send that waited (here for its scheduled time) reads the opt-outs again: the person
/// who said STOP in between gets nothing, and Twilio is not asked.
#[tokio::test]
async fn a_send_that_waited_reads_the_opt_outs_again() {
    let mut t = support::gateway().start().await;
    let when = omnigate::model::now_ms() + 1_500;
    let later = pb::SendMessageRequest {
        send_at: Some(omnigate::api::convert::timestamp(when)),
        ..support::text_request("+14155550605", "tomorrow's offer")
    };
    let scheduled = t.send_request(later).await.expect("accepted");
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let stop = t.sandbox().deliver_inbound(&inbound, "+14155550605", FROM, "STOP");
    assert_eq!(stop.await.expect("post"), 200);

    let refused = t.wait_for(&scheduled.id, pb::MessageStatus::Failed).await;
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32, "{}", error.message);
    assert_eq!(refused.attempts, 0);
    assert_eq!(t.sandbox().request_count(), 0, "no call to Twilio");
    let metrics = crate::send::reqwest_get(&t.url("/metrics")).await;
    let counted = r#"omnigate_send_attempts_total{account="sms",outcome="refused"}"#;
    assert_eq!(crate::send::metric(&metrics, counted), 1.0);
}

/// Fallback channels the person opted out of are passed over, each recorded as a channel
/// that failed at once; with none other left, the message fails where it stood.
#[tokio::test]
async fn fallbacks_the_person_opted_out_of_are_passed_over() {
    let mut t = support::gateway().start().await;
    let number = "+14155550606";
    let contact = crate::omnichannel::phone_contact_who_wrote(&mut t, number, "wamid.C2").await;
    let inbound = t.url("/webhooks/twilio/sms/inbound");
    let stop = t.sandbox().deliver_inbound(&inbound, number, FROM, "STOP");
    assert_eq!(stop.await.expect("post"), 200);
    let opt_out = pb::SetConsentRequest {
        identity: Some(pb::Identity {
            channel: pb::Channel::Whatsapp as i32,
            address: number.into(),
        }),
        opted_out: true,
        ..Default::default()
    };
    t.client.set_consent(opt_out).await.expect("opted out");
    let offer = |fallback_channels: Vec<pb::Channel>| pb::SendMessageRequest {
        contact_id: contact.id.clone(),
        channel: pb::Channel::Sms as i32,
        fallback_channels: fallback_channels.into_iter().map(|c| c as i32).collect(),
        content: Some(pb::Content { kind: Some(text("20% off")) }),
        ..Default::default()
    };

    let nowhere = t.send_request(offer(vec![pb::Channel::Whatsapp])).await.expect("accepted");
    assert_eq!(
        (nowhere.status, nowhere.channel, nowhere.channel_attempts.len()),
        (pb::MessageStatus::Failed as i32, pb::Channel::Sms as i32, 0),
        "no fallback left: failed on its own channel"
    );
    assert_eq!(nowhere.error.map(|e| e.code), Some(pb::ErrorCode::RecipientOptedOut as i32));

    let link = pb::LinkIdentityRequest {
        contact_id: contact.id.clone(),
        identity: Some(pb::Identity {
            channel: pb::Channel::Email as i32,
            address: "pat.c2@example.com".into(),
        }),
    };
    t.client.link_identity(link).await.expect("linked");
    let both = vec![pb::Channel::Whatsapp, pb::Channel::Email];
    let mailed = t.send_request(offer(both)).await.expect("accepted");
    assert_eq!(mailed.channel, pb::Channel::Email as i32, "past two opted-out channels");
    let done = t.wait_for(&mailed.id, pb::MessageStatus::Sent).await;
    let left: Vec<_> = done
        .channel_attempts
        .iter()
        .map(|a| (a.channel, a.status, a.error.as_ref().map(|e| e.code)))
        .collect();
    let opted_out = Some(pb::ErrorCode::RecipientOptedOut as i32);
    assert_eq!(
        left,
        [
            (pb::Channel::Sms as i32, pb::MessageStatus::Failed as i32, opted_out),
            (pb::Channel::Whatsapp as i32, pb::MessageStatus::Failed as i32, opted_out),
        ]
    );
    assert_eq!(t.sent_to(number).len(), 0);
    let digits = number.trim_start_matches('+');
    let to_whatsapp = t.meta().sent().into_iter().filter(|s| s.body["to"] == digits);
    assert_eq!(to_whatsapp.count(), 0);
}

/// DETAILS.md 6: "Opt-outs (Twilio 21610, Meta 131050) should also update contact consent
/// state." Meta's 131050 (the person stopped marketing messages) is kept and reported as
/// an opt-out of marketing alone, and bars nothing: the gateway cannot tell a marketing
/// template from a utility one, and Meta refuses the former itself.
#[tokio::test]
async fn whatsapps_marketing_opt_out_is_reported_but_bars_nothing() {
    let mut t = support::gateway()
        .meta_rule(r#"{ to_prefix = "14155550607", fault = { kind = "error", code = 131050 }, times = 1 }"#)
        .start()
        .await;
    let mut changes = Changes::follow(&mut t).await;
    let offer = || {
        let kind = crate::omnichannel::template("spring_sale");
        support::request(pb::Channel::Whatsapp, "+14155550607", kind)
    };
    let refused = t.send_request(offer()).await.expect("accepted");
    let refused = t.wait_for(&refused.id, pb::MessageStatus::Failed).await;
    assert_eq!(refused.error.map(|e| e.provider_code), Some("131050".into()));

    let change = changes.next().await;
    assert_eq!(
        (change.account.as_str(), change.opted_out, change.marketing_only),
        ("wa", true, true),
        "{change:?}"
    );
    assert_eq!(change.reason, "meta refused a send with 131050");
    let find = pb::FindContactRequest { identity: whatsapp_identity("+14155550607") };
    let contact = t.client.find_contact(find).await.expect("found").into_inner();
    assert!(contact.opt_outs.iter().all(|o| o.marketing_only) && contact.opt_outs.len() == 1);

    let next = t.send_request(offer()).await.expect("accepted");
    assert_eq!(next.status, pb::MessageStatus::Accepted as i32, "no bar at acceptance");
    t.wait_for(&next.id, pb::MessageStatus::Delivered).await;

    let mixed = pb::SetConsentRequest {
        identity: whatsapp_identity("+14155550607"),
        opted_out: false,
        marketing_only: true,
        ..Default::default()
    };
    let refused = t.client.set_consent(mixed).await.expect_err("an opt-in is of everything");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{}", refused.message());
}

fn whatsapp_identity(number: &str) -> Option<pb::Identity> {
    Some(pb::Identity { channel: pb::Channel::Whatsapp as i32, address: number.into() })
}

/// The suppression list pages through every bar by account and then address, bounces
/// marked, and names what it cannot take.
#[tokio::test]
async fn list_opt_outs_pages_through_every_accounts_bars() {
    let mut t = support::gateway()
        .rule(r#"{ to_prefix = "+14155550699", fault = { kind = "reject", code = 21211 } }"#)
        .start()
        .await;
    let opt_out = |channel: pb::Channel, address: &str| pb::SetConsentRequest {
        identity: Some(pb::Identity { channel: channel as i32, address: address.into() }),
        opted_out: true,
        ..Default::default()
    };
    for (channel, address) in [
        (pb::Channel::Sms, "+14155550692"),
        (pb::Channel::Email, "b@example.com"),
        (pb::Channel::Sms, "+14155550691"),
        (pb::Channel::Whatsapp, "+14155550693"),
        (pb::Channel::Email, "a@example.com"),
    ] {
        t.client.set_consent(opt_out(channel, address)).await.expect("opt out");
    }
    let bounced = t.send("+14155550699", "hi").await;
    t.wait_for(&bounced.id, pb::MessageStatus::Failed).await;
    let client = t.client.clone();
    let list = move |account: &str, page_token: String| {
        let request = pb::ListOptOutsRequest { account: account.into(), page_size: 2, page_token };
        let mut client = client.clone();
        async move { client.list_opt_outs(request).await }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list("", token).await.expect("page").into_inner();
        assert!(page.opt_outs.len() <= 2);
        seen.extend(page.opt_outs.into_iter().map(|o| (o.account, o.address, o.bounced)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let bar = |account: &str, address: &str, bounced| (account.into(), address.into(), bounced);
    assert_eq!(
        seen,
        [
            bar("email", "a@example.com", false),
            bar("email", "b@example.com", false),
            bar("sms", "+14155550691", false),
            bar("sms", "+14155550692", false),
            bar("sms", "+14155550699", true),
            bar("wa", "+14155550693", false),
        ]
    );
    let sms = list("sms", String::new()).await.expect("page").into_inner();
    assert_eq!(
        sms.opt_outs.iter().map(|o| o.address.as_str()).collect::<Vec<_>>(),
        ["+14155550691", "+14155550692"]
    );
    let unknown = list("nope", String::new()).await.expect_err("unknown account");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let forged = list("", "garbage".into()).await.expect_err("a token it never gave");
    assert_eq!(forged.code(), tonic::Code::InvalidArgument, "{forged:?}");
}
