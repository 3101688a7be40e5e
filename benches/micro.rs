//! Micro-benchmarks of the per-message hot path pieces, each next to a baseline measured in
//! the same run: `cargo bench --bench micro`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omnigate::api::convert::message_to_pb;
use omnigate::model::{Direction, Message, StatusChange};
use omnigate_adapters::twilio::{TwilioWebhooks, signature};
use omnigate_adapters::{Channel, Content, MessageStatus, WebhookHandler, WebhookRequest};

fn callback() -> (String, Vec<(String, String)>) {
    let url = "https://gw.example.com/webhooks/twilio/sms/status".to_string();
    let params = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
        ("SmsStatus", "delivered"),
        ("To", "+14155550100"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (url, params)
}

fn webhooks(c: &mut Criterion) {
    let (url, params) = callback();
    let body = serde_urlencoded::to_string(&params).expect("form");
    let sig = signature::sign("token", &url, &params);
    let handler = TwilioWebhooks::new("token");
    let request = WebhookRequest {
        public_url: url.clone(),
        hook: "status".into(),
        headers: BTreeMap::from([("x-twilio-signature".to_string(), sig)]),
        body: body.clone().into(),
    };
    let mut g = c.benchmark_group("twilio_status_callback");
    g.throughput(Throughput::Elements(1));
    // Baseline: decoding the form alone.
    g.bench_function("baseline_form_decode", |b| {
        b.iter(|| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(black_box(&body)).expect("form")
        })
    });
    g.bench_function("verify_and_parse", |b| {
        b.iter(|| handler.handle(black_box(&request)).expect("valid"))
    });
    g.finish();
}

fn conversion(c: &mut Criterion) {
    let message = Message {
        id: "msg_01a204aa5b94708cba7eeffdc77d1d16".into(),
        conversation_id: "cnv_01a204aa5b94708cba7eeffdc77d1d17".into(),
        channel: Channel::Sms,
        direction: Direction::Outbound,
        account: "sms".into(),
        from: "+15005550006".into(),
        to: "+14155550100".into(),
        content: Content::text("benchmark message"),
        status: MessageStatus::Delivered,
        history: [MessageStatus::Accepted, MessageStatus::Sent, MessageStatus::Delivered]
            .into_iter()
            .map(|status| StatusChange {
                status,
                at: 1_700_000_000_000,
                provider_status: String::new(),
            })
            .collect(),
        error: None,
        provider_message_id: Some("SM0123456789abcdef0123456789abcdef".into()),
        attempts: 1,
        metadata: BTreeMap::new(),
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
        expires_at: Some(1_700_086_400_000),
        reply_to_message_id: None,
        contact_id: "ctc_01a204aa5b94708cba7eeffdc77d1d18".into(),
        send_options: Default::default(),
        channel_attempts: Vec::new(),
        send_at: None,
    };
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Elements(1));
    // Baseline: a plain clone of the stored record.
    g.bench_function("baseline_clone", |b| b.iter(|| black_box(&message).clone()));
    g.bench_function("to_proto", |b| b.iter(|| message_to_pb(black_box(&message))));
    g.bench_function("store_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&message)).expect("json"))
    });
    g.finish();
}

criterion_group!(benches, webhooks, conversion);
criterion_main!(benches);
