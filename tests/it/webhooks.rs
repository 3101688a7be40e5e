//! CRM webhooks against a test receiver that verifies Standard Webhooks signatures the way
//! any receiver library does, and fails on demand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use omnigate_proto::v1 as pb;
use serde_json::Value;
use sha2::Sha256;

use crate::send::{metric, reqwest_get, until_metric};
use crate::support;

/// (webhook-id, webhook-timestamp, webhook-signature, body) of one request.
type Delivery = (String, String, String, Vec<u8>);

#[derive(Default)]
pub struct Receiver {
    /// Answer 500 to this many requests first.
    fail_first: AtomicU32,
    /// Answer this status to everything, when set; 3xx with `Location: /moved`.
    always: Mutex<Option<u16>>,
    pub got: Mutex<Vec<Delivery>>,
    /// Requests that reached `/moved`, which answers 200 to anything.
    moved: AtomicU32,
    /// Requests are recorded, then answered once no one holds this for writing.
    pub gate: tokio::sync::RwLock<()>,
    /// Answer 500 to bodies holding this text, when set.
    refuse_holding: Mutex<Option<String>>,
    /// The webhook-ids of the requests answered 2xx, in order.
    pub accepted: Mutex<Vec<String>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if let Ok(mut got) = r.got.lock() {
        got.push((h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"), body.to_vec()));
    }
    drop(r.gate.read().await);
    if let Some(code) = r.always.lock().ok().and_then(|a| *a) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [(axum::http::header::LOCATION, "/moved")]).into_response();
    }
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let refused = r.refuse_holding.lock().ok().and_then(|t| t.clone());
    if refused.is_some_and(|text| String::from_utf8_lossy(&body).contains(&text)) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if let Ok(mut accepted) = r.accepted.lock() {
        accepted.push(h("webhook-id"));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn moved(State(r): State<Arc<Receiver>>) -> StatusCode {
    r.moved.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

pub async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .route("/moved", axum::routing::any(moved))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

/// Verification as the Standard Webhooks specification describes it.
pub fn verify(secret: &str, id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).expect("secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh =
        timestamp.parse::<i64>().is_ok_and(|t| (omnigate::model::now_ms() / 1000 - t).abs() < 300);
    fresh && signature.split(' ').any(|s| s == expected)
}

pub async fn until<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn events_arrive_signed_in_order_after_retries() {
    let mut t = support::gateway().start().await;
    let (rx, url) = receiver().await;
    rx.fail_first.store(2, Ordering::SeqCst);
    let hook = t.subscribe(url).await;
    assert!(hook.secret.starts_with("whsec_"));
    let held = rx.gate.write().await;
    let m = t.send("+14155550701", "tell the CRM").await;
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    until("the first attempt, held", || !rx.got.lock().expect("lock").is_empty()).await;
    let metrics = t.url("/metrics");
    let lag = format!("omnigate_event_delivery_lag{{webhook=\"{}\"}}", hook.id);
    assert!(metric(&reqwest_get(&metrics).await, &lag) >= 1.0, "the held event is behind");
    drop(held);
    // conversation_opened, ACCEPTED, SENT, DELIVERED.
    until("four distinct events", || {
        let got = rx.got.lock().expect("lock");
        let mut ids: Vec<&String> = got.iter().map(|g| &g.0).collect();
        ids.dedup();
        ids.len() >= 4
    })
    .await;
    let got = rx.got.lock().expect("lock").clone();
    assert_eq!(got[0].0, got[1].0, "a retry keeps its webhook-id");
    assert_eq!(got[1].0, got[2].0);
    let mut sequences = Vec::new();
    for (id, ts, sig, body) in &got {
        assert!(verify(&hook.secret, id, ts, sig, body), "signature of {id}");
        let v: Value = serde_json::from_slice(body).expect("json");
        let seq: u64 = v["data"]["sequence"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or(v["data"]["sequence"].as_u64())
            .expect("seq");
        assert_eq!(id, &format!("evt_{seq}"));
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.len() >= 20
                && ts.as_bytes()[10] == b'T'
                && (ts.ends_with('Z') || ts.ends_with("+00:00")),
            "RFC 3339 timestamp {ts}"
        );
        sequences.push((seq, v["type"].as_str().expect("type").to_string()));
    }
    sequences.dedup();
    assert!(sequences.windows(2).all(|w| w[0].0 < w[1].0), "in order: {sequences:?}");
    assert_eq!(sequences[0].1, "conversation_opened");
    assert_eq!(sequences[1].1, "message_status_changed");
    let v: Value = serde_json::from_slice(&got.last().expect("one").3).expect("json");
    assert_eq!(
        v["data"]["messageStatusChanged"]["message"]["id"],
        m.id.as_str(),
        "proto3 JSON field names"
    );
    let deliveries = |result: &str| {
        format!("omnigate_event_deliveries_total{{webhook=\"{}\",result=\"{result}\"}}", hook.id)
    };
    until_metric(&metrics, &deliveries("delivered"), 4.0).await;
    until_metric(&metrics, &lag, 0.0).await;
    assert_eq!(metric(&reqwest_get(&metrics).await, &deliveries("failed")), 2.0);
}

/// The signatures of the deliveries of `message`'s DELIVERED event (its last).
async fn delivered_signatures(rx: &Receiver, message: &str) -> (Delivery, usize) {
    let last = || {
        rx.got
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .find(|(_, _, _, body)| {
                let v: Value = serde_json::from_slice(body).unwrap_or_default();
                let m = &v["data"]["messageStatusChanged"]["message"];
                m["id"] == message && m["status"] == "MESSAGE_STATUS_DELIVERED"
            })
            .cloned()
    };
    until("the DELIVERED event", || last().is_some()).await;
    let got = last().expect("delivered");
    let count = got.2.split(' ').count();
    (got, count)
}

/// Rotation as Standard Webhooks provides for it: during the grace period each delivery
/// carries the new secret's signature and the old one's ("space delimited list of
/// signatures ... to support zero downtime secret rotation"), so a receiver verifying with
/// either accepts it; a rotation without grace (a leaked secret) signs with the new alone.
#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_for_the_grace_period() {
    let mut t = support::gateway().start().await;
    let (rx, url) = receiver().await;
    let hook = t.subscribe(url).await;
    let mut client = t.client.clone();
    let rotate = |secret: &str, grace: Option<i64>| pb::RotateWebhookSecretRequest {
        id: hook.id.clone(),
        secret: secret.into(),
        grace: grace.map(|seconds| omnigate_proto::pbjson_types::Duration { seconds, nanos: 0 }),
    };
    let rotated = client.rotate_webhook_secret(rotate("", None)).await.expect("rotated");
    let rotated = rotated.into_inner();
    assert_ne!(rotated.secret, hook.secret);
    let until = rotated.previous_secret_expires_at.expect("the old secret's grace");
    let day = until.seconds - omnigate::model::now_ms() / 1000;
    assert!((86_390..=86_400).contains(&day), "24 hours by default, not {day} s");

    let m = t.send("+14155550711", "both secrets").await;
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let ((id, ts, sig, body), count) = delivered_signatures(&rx, &m.id).await;
    assert_eq!(count, 2, "two signatures: {sig}");
    assert!(verify(&rotated.secret, &id, &ts, &sig, &body), "the new secret verifies");
    assert!(verify(&hook.secret, &id, &ts, &sig, &body), "the old one still does");
    let listed = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let listed = listed.into_inner().webhooks;
    assert_eq!(listed[0].previous_secret_expires_at, Some(until));
    assert!(listed[0].secret.is_empty(), "secrets show only when made");

    let leaked = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let now = client.rotate_webhook_secret(rotate(leaked, Some(0))).await.expect("rotated");
    assert_eq!(now.get_ref().secret, leaked);
    assert_eq!(now.get_ref().previous_secret_expires_at, None, "no grace");
    let m = t.send("+14155550712", "new secret only").await;
    t.wait_for(&m.id, pb::MessageStatus::Delivered).await;
    let ((id, ts, sig, body), count) = delivered_signatures(&rx, &m.id).await;
    assert_eq!(count, 1, "one signature: {sig}");
    assert!(verify(leaked, &id, &ts, &sig, &body));
    assert!(!verify(&rotated.secret, &id, &ts, &sig, &body), "the replaced secret is out");

    for (request, code) in [
        (rotate("whsec_AAAA", None), tonic::Code::InvalidArgument),
        (rotate("", Some(8 * 86_400)), tonic::Code::InvalidArgument),
        (rotate("", Some(-1)), tonic::Code::InvalidArgument),
        (
            pb::RotateWebhookSecretRequest { id: "whk_none".into(), ..rotate("", None) },
            tonic::Code::NotFound,
        ),
    ] {
        let refused = client.rotate_webhook_secret(request).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{refused:?}");
    }
    let kept = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    assert_eq!(
        kept.into_inner().webhooks[0].state,
        pb::WebhookState::Active as i32,
        "a refused rotation changes nothing"
    );
}

/// The webhook-id of `message`'s event reaching `status`, once the gateway has it.
async fn status_event(t: &mut support::TestGateway, message: &str, status: &str) -> String {
    let mut client = t.client.clone();
    let mut events = client
        .stream_events(pb::StreamEventsRequest { from_sequence: 0, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("open");
        if let Some(pb::event::Kind::MessageStatusChanged(c)) = &event.kind
            && let Some(m) = &c.message
            && m.id == message
            && pb::MessageStatus::try_from(m.status).is_ok_and(|s| s.as_str_name() == status)
        {
            return format!("evt_{}", event.sequence);
        }
    }
}

/// A message delivered while its subscription (delivering each event on its own, retried
/// twice a second apart) had a receiver refusing it: its events wait for their retries.
struct Held {
    t: support::TestGateway,
    rx: Arc<Receiver>,
    hook: pb::Webhook,
    held: pb::Message,
    /// The subscription once the events wait.
    listed: pb::Webhook,
}

async fn held_by_an_independent_subscription() -> Held {
    let mut t = support::gateway().webhook_retries("[1.0, 1.0]").start().await;
    let (rx, url) = receiver().await;
    *rx.refuse_holding.lock().expect("lock") = Some("hold me".into());
    let request = pb::CreateWebhookRequest {
        url,
        delivery: pb::WebhookDelivery::Independent as i32,
        ..Default::default()
    };
    let hook = t.client.create_webhook(request).await.expect("created").into_inner();
    let held = t.send("+14155550721", "hold me").await;
    t.wait_for(&held.id, pb::MessageStatus::Delivered).await;
    let listed = first_webhook_once(&mut t, |w| w.retrying == 3).await;
    // ACCEPTED, SENT and DELIVERED hold the text, and wait for their retries.
    assert_eq!(listed.retrying, 3, "{listed:?}");
    Held { t, rx, hook, held, listed }
}

/// Independent delivery: an event the receiver keeps refusing is retried on the schedule
/// (kept in the store, so also across a restart) while the events after it go on, and
/// arrives later, out of order; one refused through the whole schedule is dead-lettered.
#[tokio::test]
async fn independent_delivery_retries_a_refused_event_while_later_ones_go_on() {
    let Held { mut t, rx, hook, held, listed } = held_by_an_independent_subscription().await;
    assert_eq!(hook.delivery, pb::WebhookDelivery::Independent as i32);
    assert!(listed.last_error.contains("HTTP 500"), "why: {listed:?}");
    let later = t.send("+14155550722", "go ahead").await;
    t.wait_for(&later.id, pb::MessageStatus::Delivered).await;
    let held_event = status_event(&mut t, &held.id, "MESSAGE_STATUS_DELIVERED").await;
    let later_event = status_event(&mut t, &later.id, "MESSAGE_STATUS_DELIVERED").await;
    let accepted = |id: &str| rx.accepted.lock().expect("lock").iter().position(|a| a == id);
    until("the later event, past the refused ones", || accepted(&later_event).is_some()).await;
    assert_eq!(accepted(&held_event), None, "refused so far");
    let listed = t.client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let listed = listed.into_inner().webhooks.remove(0);
    assert!(listed.retrying >= 1, "waiting for a retry: {listed:?}");
    let later_seq: u64 = later_event["evt_".len()..].parse().expect("sequence");
    assert!(listed.cursor >= later_seq, "the cursor moved on: {listed:?}");

    // The retries are in the store: a restart keeps them.
    t.restart().await;
    rx.refuse_holding.lock().expect("lock").take();
    until("the refused event, on a retry", || accepted(&held_event).is_some()).await;
    assert!(accepted(&held_event) > accepted(&later_event), "out of order, as asked");
    let listed = first_webhook_once(&mut t, |w| w.retrying == 0).await;
    assert_eq!((listed.retrying, listed.dead_letters), (0, 0), "{listed:?}");

    *rx.refuse_holding.lock().expect("lock") = Some("never".into());
    let never = t.send("+14155550723", "never").await;
    t.wait_for(&never.id, pb::MessageStatus::Delivered).await;
    let never_event = status_event(&mut t, &never.id, "MESSAGE_STATUS_DELIVERED").await;
    let listed = first_webhook_once(&mut t, |w| w.dead_letters >= 3 && w.retrying == 0).await;
    // ACCEPTED, SENT and DELIVERED hold the text; each tried three times.
    assert_eq!((listed.dead_letters, listed.retrying), (3, 0), "{listed:?}");
    let dead = |page_token: String| pb::ListWebhookDeadLettersRequest {
        webhook_id: hook.id.clone(),
        page_size: 2,
        page_token,
    };
    let mut client = t.client.clone();
    let first = client.list_webhook_dead_letters(dead(String::new())).await.expect("dead");
    let first = first.into_inner();
    assert_eq!(first.dead_letters.len(), 2);
    let second = client.list_webhook_dead_letters(dead(first.next_page_token)).await.expect("dead");
    let second = second.into_inner();
    assert_eq!((second.dead_letters.len(), second.next_page_token.as_str()), (1, ""));
    let all: Vec<_> = first.dead_letters.iter().chain(&second.dead_letters).collect();
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence), "by sequence: {all:?}");
    assert_eq!(format!("evt_{}", all[2].sequence), never_event, "the DELIVERED event last");
    assert!(all.iter().all(|d| d.error.contains("HTTP 500") && d.at.is_some()), "{all:?}");
    let unknown =
        pb::ListWebhookDeadLettersRequest { webhook_id: "whk_none".into(), ..dead(String::new()) };
    let refused = client.list_webhook_dead_letters(unknown).await.expect_err("unknown");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let refused = client.list_webhook_dead_letters(dead("x".into())).await.expect_err("token");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let attempts = rx.got.lock().expect("lock").iter().filter(|g| g.0 == never_event).count();
    assert_eq!(attempts, 3, "one attempt and the schedule's two retries");
}

/// The first subscription once `done` holds for it, or as it is after about 6 s (the
/// caller's assertions then show it).
async fn first_webhook_once(
    t: &mut support::TestGateway,
    done: impl Fn(&pb::Webhook) -> bool,
) -> pb::Webhook {
    let mut client = t.client.clone();
    let mut listed = pb::Webhook::default();
    for _ in 0..300 {
        let all = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
        listed = all.into_inner().webhooks.remove(0);
        if done(&listed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listed
}

/// A 302 to a POST is followed by clients as a GET without the body (RFC 9110 15.4.3), whose
/// 200 read as a delivery would lose the event; receivers are expected to answer 2xx at the
/// subscribed URL itself, so a redirect is a failed attempt with its status.
#[tokio::test]
async fn a_redirecting_receiver_is_a_failed_attempt_not_a_delivery() {
    let mut t = support::gateway().start().await;
    let (rx, url) = receiver().await;
    *rx.always.lock().expect("lock") = Some(302);
    t.client
        .create_webhook(pb::CreateWebhookRequest {
            url,
            kinds: vec!["conversation_opened".into()],
            ..Default::default()
        })
        .await
        .expect("created");
    t.send("+14155550704", "x").await;
    let listed = first_webhook_once(&mut t, |w| w.dead_letters > 0).await;
    assert_eq!(listed.dead_letters, 1, "every attempt failed: {}", listed.last_error);
    assert!(listed.last_error.contains("HTTP 302"), "{}", listed.last_error);
    assert_eq!(rx.moved.load(Ordering::SeqCst), 0, "the redirect was not followed");
}

#[tokio::test]
async fn last_attempt_dead_letters_then_replay_redelivers_and_410_disables() {
    let mut t = support::gateway().start().await;
    let (rx, url) = receiver().await;
    *rx.always.lock().expect("lock") = Some(503);
    let hook = t
        .client
        .create_webhook(pb::CreateWebhookRequest {
            url,
            kinds: vec!["message_received".into(), "conversation_opened".into()],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    t.send("+14155550702", "x").await;
    until("four attempts at the first event", || rx.got.lock().expect("lock").len() >= 4).await;
    let listed = first_webhook_once(&mut t, |w| w.dead_letters > 0).await;
    assert_eq!(listed.dead_letters, 1);
    assert!(listed.last_error.contains("503"), "{}", listed.last_error);
    assert_eq!(listed.secret, "", "the secret is shown once");
    assert_eq!(
        rx.got.lock().expect("lock").len(),
        4,
        "one attempt and three retries, then no more"
    );

    *rx.always.lock().expect("lock") = None;
    rx.got.lock().expect("lock").clear();
    t.client
        .replay_webhook(pb::ReplayWebhookRequest { id: hook.id.clone(), from_sequence: 0 })
        .await
        .expect("replay");
    until("the replayed event", || !rx.got.lock().expect("lock").is_empty()).await;
    let v: Value = serde_json::from_slice(&rx.got.lock().expect("lock")[0].3).expect("json");
    assert_eq!(v["type"], "conversation_opened", "only the kinds asked for");

    *rx.always.lock().expect("lock") = Some(410);
    t.send("+14155550703", "y").await;
    let mut state = 0;
    for _ in 0..200 {
        state = t
            .client
            .list_webhooks(pb::ListWebhooksRequest {})
            .await
            .expect("list")
            .into_inner()
            .webhooks[0]
            .state;
        if state == pb::WebhookState::Disabled as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, pb::WebhookState::Disabled as i32, "410 Gone disables the subscription");
    t.client
        .delete_webhook(pb::DeleteWebhookRequest { id: hook.id.clone() })
        .await
        .expect("deleted");
    let text = reqwest_get(&t.url("/metrics")).await;
    let deliveries = |result: &str| {
        format!("omnigate_event_deliveries_total{{webhook=\"{}\",result=\"{result}\"}}", hook.id)
    };
    assert_eq!(metric(&text, &deliveries("dead_lettered")), 1.0, "{text}");
    assert_eq!(metric(&text, &deliveries("gone")), 1.0, "{text}");
    assert!(!text.contains("omnigate_event_delivery_lag{"), "no lag for a deleted one: {text}");
    assert!(
        t.client
            .list_webhooks(pb::ListWebhooksRequest {})
            .await
            .expect("list")
            .into_inner()
            .webhooks
            .is_empty()
    );
    let bad = t
        .client
        .create_webhook(pb::CreateWebhookRequest {
            url: "http://x/".into(),
            secret: "plain".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad secret");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// A subscription from the config file may ask for independent delivery too.
#[tokio::test]
async fn a_configured_subscription_may_deliver_independently() {
    let t = support::gateway()
        .extra(
            "[[webhooks.subscriptions]]\nurl = \"http://127.0.0.1:9/crm\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nindependent = true\n",
        )
        .start()
        .await;
    let listed = t.client.clone().list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let listed = listed.into_inner().webhooks;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].delivery, pb::WebhookDelivery::Independent as i32);
}

/// `UpdateWebhook` moves a subscription to another URL, pauses it and resumes it in place:
/// its id and secret stay, and every event, from the first on, reaches the old receiver or
/// the new one exactly once (none lost to the move or the pause, none repeated).
#[tokio::test]
async fn an_update_moves_pauses_and_resumes_a_subscription_losing_no_event() {
    let mut t = support::gateway().start().await;
    let (old_rx, old_url) = receiver().await;
    let (new_rx, new_url) = receiver().await;
    let hook = t.subscribe(old_url.clone()).await;
    let mut client = t.client.clone();
    let accepted =
        |rx: &Receiver, id: &str| rx.accepted.lock().expect("lock").iter().any(|a| a == id);
    let first = t.send("+14155550731", "before the move").await;
    t.wait_for(&first.id, pb::MessageStatus::Delivered).await;
    let first_event = status_event(&mut t, &first.id, "MESSAGE_STATUS_DELIVERED").await;
    until("the first events at the old URL", || accepted(&old_rx, &first_event)).await;

    // Without a mask, the fields the request sets change.
    let webhook = pb::Webhook { id: hook.id.clone(), url: new_url.clone(), ..Default::default() };
    let request = pb::UpdateWebhookRequest { webhook: Some(webhook), update_mask: None };
    let moved = client.update_webhook(request).await.expect("moved").into_inner();
    assert_eq!((moved.id.as_str(), moved.url.as_str()), (hook.id.as_str(), new_url.as_str()));
    assert_eq!(moved.state, pb::WebhookState::Active as i32);
    assert!(moved.secret.is_empty(), "the secret shows only when made");
    let second = t.send("+14155550732", "after the move").await;
    t.wait_for(&second.id, pb::MessageStatus::Delivered).await;
    let second_event = status_event(&mut t, &second.id, "MESSAGE_STATUS_DELIVERED").await;
    until("the second events at the new URL", || accepted(&new_rx, &second_event)).await;
    let signed = new_rx.got.lock().expect("lock").iter().find(|g| g.0 == second_event).cloned();
    let (id, ts, sig, body) = signed.expect("delivered");
    assert!(verify(&hook.secret, &id, &ts, &sig, &body), "the same secret signs at the new URL");

    let set_state = |state: pb::WebhookState| pb::UpdateWebhookRequest {
        webhook: Some(pb::Webhook {
            id: hook.id.clone(),
            state: state as i32,
            ..Default::default()
        }),
        update_mask: Some(omnigate_proto::pbjson_types::FieldMask { paths: vec!["state".into()] }),
    };
    let paused = client.update_webhook(set_state(pb::WebhookState::Disabled)).await;
    assert_eq!(paused.expect("paused").get_ref().state, pb::WebhookState::Disabled as i32);
    let third = t.send("+14155550733", "while paused").await;
    t.wait_for(&third.id, pb::MessageStatus::Delivered).await;
    let third_event = status_event(&mut t, &third.id, "MESSAGE_STATUS_DELIVERED").await;
    let third_seq: u64 = third_event["evt_".len()..].parse().expect("sequence");
    // Whatever a still-running worker would do in this time, it would do to the cursor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let listed = listed.into_inner().webhooks.remove(0);
    assert_eq!(listed.state, pb::WebhookState::Disabled as i32);
    assert!(listed.cursor < third_seq, "nothing delivered while paused: {listed:?}");
    assert!(!accepted(&new_rx, &third_event), "nothing delivered while paused");

    let resumed = client.update_webhook(set_state(pb::WebhookState::Active)).await;
    assert_eq!(resumed.expect("resumed").get_ref().cursor, listed.cursor, "from where it stopped");
    until("the events held by the pause", || accepted(&new_rx, &third_event)).await;
    let mut seen: Vec<u64> = [&old_rx, &new_rx]
        .iter()
        .flat_map(|rx| rx.accepted.lock().expect("lock").clone())
        .map(|id| id["evt_".len()..].parse().expect("sequence"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=third_seq).collect::<Vec<_>>(), "each event once, none missing");
    let first_seq: u64 = first_event["evt_".len()..].parse().expect("sequence");
    let at_old = old_rx.accepted.lock().expect("lock").len() as u64;
    assert_eq!(at_old, first_seq, "the old URL got nothing after the move");

    let unchanged = |paths: &[&str], webhook: pb::Webhook| pb::UpdateWebhookRequest {
        webhook: Some(pb::Webhook { id: hook.id.clone(), ..webhook }),
        update_mask: Some(omnigate_proto::pbjson_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let ftp = pb::Webhook { url: "ftp://crm.example".into(), ..Default::default() };
    let bad_kind = pb::Webhook { kinds: vec!["message_sent".into()], ..Default::default() };
    for (request, code, why) in [
        (unchanged(&["url"], ftp), tonic::Code::InvalidArgument, "http(s)"),
        (unchanged(&["kinds"], bad_kind), tonic::Code::InvalidArgument, "unknown event kind"),
        (
            unchanged(&["secret"], Default::default()),
            tonic::Code::InvalidArgument,
            "RotateWebhookSecret",
        ),
        (unchanged(&["cursor"], Default::default()), tonic::Code::InvalidArgument, "ReplayWebhook"),
        (unchanged(&["name"], Default::default()), tonic::Code::InvalidArgument, "not one of"),
        (unchanged(&["state"], Default::default()), tonic::Code::InvalidArgument, "state must be"),
        (unchanged(&[], Default::default()), tonic::Code::InvalidArgument, "nothing to change"),
        (
            pb::UpdateWebhookRequest { webhook: None, update_mask: None },
            tonic::Code::InvalidArgument,
            "required",
        ),
        (
            pb::UpdateWebhookRequest {
                webhook: Some(pb::Webhook {
                    id: "whk_none".into(),
                    url: new_url.clone(),
                    ..Default::default()
                }),
                update_mask: None,
            },
            tonic::Code::NotFound,
            "not found",
        ),
    ] {
        let refused = client.update_webhook(request).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(why), "{refused:?}");
    }
    let kept = client.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    let kept = kept.into_inner().webhooks.remove(0);
    assert_eq!((kept.url, kept.state), (new_url, pb::WebhookState::Active as i32), "unchanged");
}

/// A subscription switched from independent to in-order delivery still makes the retries
/// it had scheduled: they are not stranded in the store, counted as retrying forever.
#[tokio::test]
async fn retries_scheduled_before_a_switch_to_in_order_delivery_still_run() {
    let Held { mut t, rx, hook, held, .. } = held_by_an_independent_subscription().await;
    let webhook = pb::Webhook {
        id: hook.id.clone(),
        delivery: pb::WebhookDelivery::InOrder as i32,
        ..Default::default()
    };
    let request = pb::UpdateWebhookRequest { webhook: Some(webhook), update_mask: None };
    let switched = t.client.update_webhook(request).await.expect("switched").into_inner();
    assert_eq!(switched.delivery, pb::WebhookDelivery::InOrder as i32);
    assert_eq!(switched.retrying, 3, "the schedule stays: {switched:?}");
    rx.refuse_holding.lock().expect("lock").take();
    let held_event = status_event(&mut t, &held.id, "MESSAGE_STATUS_DELIVERED").await;
    let accepted = |id: &str| rx.accepted.lock().expect("lock").iter().any(|a| a == id);
    until("the held events, on their retries", || accepted(&held_event)).await;
    let listed = first_webhook_once(&mut t, |w| w.retrying == 0).await;
    assert_eq!((listed.retrying, listed.dead_letters), (0, 0), "{listed:?}");
}
