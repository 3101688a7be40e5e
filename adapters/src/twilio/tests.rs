//! The Twilio client and sandbox checked against Twilio's official OpenAPI document: every
//! field we send is a documented request field, and every resource the sandbox answers
//! validates against the documented Message schema (OpenAPI 3.0 `nullable` honoured).

use std::time::{Duration, SystemTime};

use regex::Regex;
use serde_json::Value;

use super::TwilioSender;
use super::config::{TwilioAccount, TwilioSenderId};
use super::sandbox::{self, Fault, Rule, SandboxConfig};
use super::tests_spec::{resolve, spec};
use super::wire::MessageResource;
use crate::contract::{FailureClass, Outbound, Sender};
use crate::model::{Content, ErrorCode, Media};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const MESSAGES: &str = "/2010-04-01/Accounts/{AccountSid}/Messages.json";

fn sandbox_config(rules: Vec<Rule>) -> SandboxConfig {
    SandboxConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        account_sid: SID.into(),
        auth_token: "token".into(),
        callback_delay_ms: 10,
        latency_ms: 0,
        rules,
    }
}

fn sender_account(api_base: String, sender: TwilioSenderId) -> TwilioAccount {
    TwilioAccount {
        api_base,
        account_sid: SID.into(),
        auth_token: "token".into(),
        api_key: None,
        sender,
        request_timeout: Duration::from_secs(5),
    }
}

fn sender(api_base: String, sender: TwilioSenderId) -> TwilioSender {
    TwilioSender::new(sender_account(api_base, sender))
}

fn outbound(to: &str, content: Content) -> Outbound {
    Outbound {
        status_callback: Some("http://127.0.0.1:9/webhooks/twilio/sms/status".into()),
        remaining_ttl: Some(Duration::from_secs(90_000)),
        ..Outbound::new("msg_1", to, content)
    }
}

/// Checks `value` against an OpenAPI 3.0 schema: types, `nullable`, enums, patterns, and
/// no property the schema does not document.
fn validate(spec: &Value, schema: &Value, value: &Value, path: &str) {
    let schema = resolve(spec, schema);
    if value.is_null() {
        assert!(schema["nullable"].as_bool().unwrap_or(false), "{path} is null but not nullable");
        return;
    }
    if let Some(choices) = schema["enum"].as_array() {
        assert!(choices.contains(value), "{path} = {value} is not one of {choices:?}");
    }
    match schema["type"].as_str() {
        Some("string") => {
            let s = value.as_str().unwrap_or_else(|| panic!("{path} should be a string: {value}"));
            if let Some(p) = schema["pattern"].as_str() {
                assert!(
                    Regex::new(p).expect("spec pattern").is_match(s),
                    "{path} = {s:?} fails {p}"
                );
            }
            if schema["format"] == "date-time-rfc-2822" {
                let rfc2822 = Regex::new(
                    r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$",
                )
                .expect("re");
                assert!(rfc2822.is_match(s), "{path} = {s:?} is not RFC 2822");
            }
        }
        Some("integer") => assert!(value.is_i64(), "{path} should be an integer: {value}"),
        Some("object") => {
            let object = value.as_object().unwrap_or_else(|| panic!("{path} should be an object"));
            if let Some(properties) = schema["properties"].as_object() {
                for (key, v) in object {
                    let sub = properties
                        .get(key)
                        .unwrap_or_else(|| panic!("{path}.{key} is not in the spec"));
                    validate(spec, sub, v, &format!("{path}.{key}"));
                }
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_field_we_send_is_a_documented_request_field() {
    let spec = spec();
    let request = &spec["paths"][MESSAGES]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        ["schema"];
    let fields = request["properties"].as_object().expect("CreateMessageRequest properties");
    let sb = sandbox::start(sandbox_config(Vec::new())).await.expect("sandbox");
    let from = sender(sb.api_base(), TwilioSenderId::From("+15005550006".into()));
    let service =
        sender(sb.api_base(), TwilioSenderId::MessagingService(format!("MG{}", "a".repeat(32))));
    from.send(&outbound("+14155550100", Content::text("hi"))).await.expect("text");
    let media = Media {
        url: "https://e.com/a.png".into(),
        mime_type: "image/png".into(),
        caption: "c".into(),
        extra_urls: vec!["https://e.com/b.png".into()],
        ..Media::default()
    };
    service.send(&outbound("+14155550101", Content::Media(media))).await.expect("mms");
    let sent = sb.sent();
    assert_eq!(sent.len(), 2);
    for s in &sent {
        for (name, value) in &s.form {
            let field = fields
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not a CreateMessageRequest field"));
            if field["type"] == "integer" {
                value
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("{name}={value} should be an integer"));
            }
        }
        // "Accepted values are integers from 1 to 36000" (ValidityPeriod description).
        assert_eq!(
            s.field("ValidityPeriod"),
            Some("36000"),
            "a longer TTL is clamped to Twilio's maximum"
        );
    }
    assert!(sent[1].field("MessagingServiceSid").is_some() && sent[1].field("From").is_none());
}

#[tokio::test]
async fn sandbox_resources_validate_against_the_message_schema() {
    let spec = spec();
    let schema = &spec["components"]["schemas"]["api.v2010.account.message"];
    let sb = sandbox::start(sandbox_config(Vec::new())).await.expect("sandbox");
    let http = crate::http::client(Duration::from_secs(5));
    let url = format!("{}/2010-04-01/Accounts/{SID}/Messages.json", sb.api_base());
    for form in [
        vec![("To", "+14155550100"), ("From", "+15005550006"), ("Body", "hello")],
        vec![
            ("To", "+14155550100"),
            ("MessagingServiceSid", "MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("MediaUrl", "https://e.com/a.png"),
        ],
    ] {
        let response =
            http.post(&url).basic_auth(SID, Some("token")).form(&form).send().await.expect("send");
        assert_eq!(response.status().as_u16(), 201, "the spec documents 201 for a create");
        let body: Value = response.json().await.expect("json");
        validate(&spec, schema, &body, "message");
        let documented = schema["properties"].as_object().expect("properties");
        for key in documented.keys() {
            assert!(
                body.get(key).is_some(),
                "the sandbox omits {key}, which Twilio always returns"
            );
        }
    }
    // Our client reads the spec's own example create response.
    let example = &spec["paths"][MESSAGES]["post"]["responses"]["201"]["content"]["application/json"]
        ["examples"]["create"]["value"];
    let parsed: MessageResource = serde_json::from_value(example.clone()).expect("example parses");
    assert!(parsed.sid.starts_with("SM"));
    validate(&spec, schema, example, "example");
}

#[tokio::test]
async fn sandbox_errors_have_twilios_shape_and_classify() {
    let rules = vec![
        Rule { to_prefix: "+1415555020".into(), fault: Fault::Reject { code: 21610 }, times: None },
        Rule {
            to_prefix: "+1415555021".into(),
            fault: Fault::Throttle { retry_after_secs: Some(2) },
            times: None,
        },
    ];
    let sb = sandbox::start(sandbox_config(rules)).await.expect("sandbox");
    let http = crate::http::client(Duration::from_secs(5));
    let url = format!("{}/2010-04-01/Accounts/{SID}/Messages.json", sb.api_base());
    let wrong = http
        .post(&url)
        .basic_auth(SID, Some("nope"))
        .form(&[("To", "+14155550100")])
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["code"], 20003);
    assert_eq!(body["more_info"], "https://www.twilio.com/docs/errors/20003");
    assert_eq!(body["status"], 401);

    let s = sender(sb.api_base(), TwilioSenderId::From("+15005550006".into()));
    let text = || Content::text("x");
    let opted_out = s.send(&outbound("+14155550200", text())).await.expect_err("21610");
    assert_eq!(
        (opted_out.class, opted_out.error.code),
        (FailureClass::Permanent, ErrorCode::RecipientOptedOut)
    );
    let throttled = s.send(&outbound("+14155550210", text())).await.expect_err("429");
    assert_eq!(
        throttled.class,
        FailureClass::RateLimited { retry_after: Some(Duration::from_secs(2)) }
    );
    let invalid = s.send(&outbound("not-a-number", text())).await.expect_err("21211");
    assert_eq!(
        (invalid.error.code, invalid.error.provider_code.as_str()),
        (ErrorCode::InvalidRecipient, "21211")
    );
    let too_long = s.send(&outbound("+14155550100", Content::text("x".repeat(1601)))).await;
    assert_eq!(
        too_long.expect_err("1601 chars").error.code,
        ErrorCode::InvalidContent,
        "refused before sending"
    );
    let unreachable =
        sender("http://127.0.0.1:9".into(), TwilioSenderId::From("+15005550006".into()));
    let down = unreachable.send(&outbound("+14155550100", text())).await.expect_err("refused");
    assert_eq!(down.class, FailureClass::Retryable { retry_after: None });
}

#[tokio::test]
async fn a_send_spends_as_many_rate_tokens_as_twilio_counts_segments() {
    let sb = sandbox::start(sandbox_config(Vec::new())).await.expect("sandbox");
    let s = sender(sb.api_base(), TwilioSenderId::From("+15005550006".into()));
    let url = format!("{}/2010-04-01/Accounts/{SID}/Messages.json", sb.api_base());
    let http = crate::http::client(Duration::from_secs(5));
    // `num_segments`: "The number of segments that make up the complete message" (the
    // Message schema); the sandbox answers it as the sender paces.
    for body in ["hello".to_string(), "a".repeat(161), "ж".repeat(135)] {
        let form = [("To", "+14155550100"), ("From", "+15005550006"), ("Body", body.as_str())];
        let response =
            http.post(&url).basic_auth(SID, Some("token")).form(&form).send().await.expect("send");
        let resource: Value = response.json().await.expect("json");
        let cost = s.rate_cost(&Content::text(body.clone())).get().to_string();
        assert_eq!(resource["num_segments"], Value::String(cost.clone()), "{} chars", body.len());
        assert_ne!(cost, "0");
    }
    assert_eq!(s.rate_cost(&Content::text("a".repeat(400))).get(), 3);
    let long_caption =
        Media { url: "https://e.com/a.png".into(), caption: "a".repeat(400), ..Media::default() };
    assert_eq!(s.rate_cost(&Content::Media(long_caption)).get(), 1, "an MMS goes whole");
}

/// A send whose answer is lost is `Unsure`, and the message list (`GET Messages.json`, the
/// spec's ListMessageResponse, filtered by its documented `To`, `From` and `PageSize`)
/// finds the message it made, and no other.
#[tokio::test]
async fn a_lost_answer_is_unsure_and_the_message_list_finds_what_it_made() {
    let spec = spec();
    let list = &spec["paths"][MESSAGES]["get"];
    let documented: Vec<&str> = list["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["To", "From", "PageSize"] {
        assert!(documented.contains(&name), "{name} is not a list filter");
    }
    let rules = vec![Rule {
        to_prefix: "+1415555030".into(),
        fault: Fault::Lost { delay_ms: 2_000, list_status: None },
        times: None,
    }];
    let sb = sandbox::start(sandbox_config(rules)).await.expect("sandbox");
    let s = TwilioSender::new(TwilioAccount {
        request_timeout: Duration::from_millis(300),
        ..sender_account(sb.api_base(), TwilioSenderId::From("+15005550006".into()))
    });
    let began = SystemTime::now();
    let message = outbound("+14155550300", Content::text("your code is 1234"));
    let lost = s.send(&message).await.expect_err("the answer never comes in time");
    assert_eq!(lost.class, FailureClass::Unsure);
    assert!(lost.error.retryable);

    let found = s.find_sent(&message, began).await.expect("listed");
    let made = sb.sent()[0].sid.clone();
    assert_eq!(found.iter().map(|a| a.provider_message_id.as_str()).collect::<Vec<_>>(), [&made]);
    let other_body = outbound("+14155550300", Content::text("your code is 9999"));
    assert!(s.find_sent(&other_body, began).await.expect("listed").is_empty());
    let other_person = outbound("+14155550301", Content::text("your code is 1234"));
    assert!(s.find_sent(&other_person, began).await.expect("listed").is_empty());
    let after = began + Duration::from_secs(120);
    assert!(s.find_sent(&message, after).await.expect("listed").is_empty(), "made before it");
    assert_eq!(sb.lookup_count(), 4);

    let http = crate::http::client(Duration::from_secs(5));
    let url =
        format!("{}/2010-04-01/Accounts/{SID}/Messages.json?To=%2B14155550300", sb.api_base());
    let page: Value = http
        .get(&url)
        .basic_auth(SID, Some("token"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let schema = &list["responses"]["200"]["content"]["application/json"]["schema"];
    validate(&spec, schema, &page, "page");
    assert_eq!(page["messages"][0]["sid"], made.as_str());
}
