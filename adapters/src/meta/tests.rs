//! The Meta adapters against Meta's own material: send bodies compared with the request
//! examples of Meta's WhatsApp OpenAPI (extracted to `spec/meta/whatsapp-send-examples.json`),
//! webhooks parsed from payloads of the documented shape (shared/providers README).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::client::MetaSender;
use super::config::MetaAccount;
use super::{MetaWebhooks, messenger, signature, whatsapp};
use crate::contract::{
    Outbound, Sender, WebhookError, WebhookEvent, WebhookHandler, WebhookRequest,
};
use crate::model::*;

const TO: &str = "{{Recipient-Phone-Number}}";

fn examples() -> Value {
    let raw = include_str!("../../spec/meta/whatsapp-send-examples.json");
    serde_json::from_str::<Value>(raw).expect("fixture JSON")["examples"].clone()
}

/// Our body must equal Meta's example; Meta defaults `type` to text and `recipient_type`
/// to individual, so an example that omits them still matches a body that states them.
fn assert_matches(name: &str, ours: Value, example: &Value) {
    let mut ours = ours;
    for defaulted in ["type", "recipient_type"] {
        if example.get(defaulted).is_none() {
            ours.as_object_mut().expect("object").remove(defaulted);
        }
    }
    assert_eq!(&ours, example, "{name}");
}

#[test]
fn send_bodies_match_metas_request_examples() {
    let ex = examples();
    let media = |kind, url: &str, caption: &str| {
        Content::Media(Media { url: url.into(), caption: caption.into(), kind, ..Media::default() })
    };
    let cases: Vec<(&str, Content, Option<&str>)> = vec![
        ("Send Text Message", Content::text("text-message-content"), None),
        (
            "Send Text Message with Preview URL",
            Content::Text(Text {
                body: "Please visit https://youtu.be/hpltvTEiRrY.".into(),
                preview_url: true,
            }),
            None,
        ),
        (
            "Send Reply to Text Message",
            Content::text("<TEXT_MSG_CONTENT>"),
            Some("<MSGID_OF_PREV_MSG>"),
        ),
        ("Send Image Message by URL", media(MediaKind::Image, "http(s)://image-url", ""), None),
        (
            "Send Reply to Image Message by URL",
            media(MediaKind::Image, "http(s)://image-url", ""),
            Some("<MSGID_OF_PREV_MSG>"),
        ),
        (
            "Send Image Message by ID",
            Content::Media(Media {
                provider_media_id: "<IMAGE_OBJECT_ID>".into(),
                kind: MediaKind::Image,
                ..Media::default()
            }),
            None,
        ),
        (
            "Send Document Message by URL",
            media(MediaKind::Document, "<http(s)://document-url>", "<DOCUMENT-CAPTION-TEXT>"),
            None,
        ),
        (
            "Send Sticker Message by URL",
            media(MediaKind::Sticker, "<http(s)://sticker-url>", ""),
            None,
        ),
        ("Send Audio Message by URL", media(MediaKind::Audio, "<http(s)://audio-url>", ""), None),
        (
            "Send Video Message by URL",
            media(MediaKind::Video, "<http(s)://video-url>", "<VIDEO_CAPTION_TEXT>"),
            None,
        ),
        (
            "Send Location Message",
            Content::Location(Location {
                latitude: 37.758056,
                longitude: -122.425332,
                name: "META HQ".into(),
                address: "1 Hacker Way, Menlo Park, CA 94025".into(),
            }),
            None,
        ),
        (
            "Send Reply with Reaction Message",
            Content::Reaction(Reaction {
                provider_message_id: "wamid.HBgLM...".into(),
                emoji: "\u{1F600}".into(),
            }),
            None,
        ),
        (
            "Send List Message",
            Content::Interactive(Interactive {
                header: "<HEADER_TEXT>".into(),
                body: "<BODY_TEXT>".into(),
                footer: "<FOOTER_TEXT>".into(),
                action: InteractiveAction::List {
                    button: "<BUTTON_TEXT>".into(),
                    sections: (1..=2)
                        .map(|s| Section {
                            title: format!("<LIST_SECTION_{s}_TITLE>"),
                            rows: (1..=2)
                                .map(|r| Choice {
                                    id: format!("<LIST_SECTION_{s}_ROW_{r}_ID>"),
                                    title: format!("<SECTION_{s}_ROW_{r}_TITLE>"),
                                    description: format!("<SECTION_{s}_ROW_{r}_DESC>"),
                                })
                                .collect(),
                        })
                        .collect(),
                },
            }),
            None,
        ),
        (
            "Send Reply Button",
            Content::Interactive(Interactive {
                body: "<BUTTON_TEXT>".into(),
                action: InteractiveAction::Buttons(
                    (1..=2)
                        .map(|i| Choice {
                            id: format!("<UNIQUE_BUTTON_ID_{i}>"),
                            title: format!("<BUTTON_TITLE_{i}>"),
                            ..Choice::default()
                        })
                        .collect(),
                ),
                ..Interactive::default()
            }),
            None,
        ),
    ];
    for (name, content, reply_to) in cases {
        let ours =
            whatsapp::encode(TO, &content, reply_to).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches(name, ours, &ex[name]);
    }
}

#[test]
fn template_bodies_match_metas_example() {
    let ex = examples();
    let mut example = ex["Send Message Template Media"].clone();
    // We send a date's fallback_value only; Meta's example also spells out its parts.
    example["template"]["components"][1]["parameters"][2]["date_time"] =
        json!({ "fallback_value": "February 25, 1977" });
    let content = Content::Template(Template {
        name: "template-name".into(),
        language: "language-and-locale-code".into(),
        components: vec![
            TemplateComponent {
                kind: "header".into(),
                parameters: vec![TemplateParameter::Image {
                    url: "http(s)://the-image-url".into(),
                }],
                ..TemplateComponent::default()
            },
            TemplateComponent {
                kind: "body".into(),
                parameters: vec![
                    TemplateParameter::Text("text-string".into()),
                    TemplateParameter::Currency {
                        fallback: "$100.99".into(),
                        code: "USD".into(),
                        amount_1000: 100_990,
                    },
                    TemplateParameter::DateTime { fallback: "February 25, 1977".into() },
                ],
                ..TemplateComponent::default()
            },
        ],
    });
    assert_matches("template", whatsapp::encode(TO, &content, None).expect("template"), &example);
}

#[test]
fn kinds_a_channel_cannot_carry_fail_with_kind_and_channel() {
    let choice = Content::Choice(Choice::default());
    let e = whatsapp::encode("+1", &choice, None).expect_err("choice is inbound only");
    assert!(e.message.contains("choice") && e.message.contains("whatsapp"), "{}", e.message);
    let template = Content::Template(Template::default());
    let e = messenger::encode(Channel::Messenger, "1", &template, None).expect_err("no templates");
    assert_eq!(e.code, ErrorCode::InvalidContent);
    assert!(e.message.contains("template") && e.message.contains("messenger"), "{}", e.message);
    let loc = Content::Location(Location::default());
    assert!(
        messenger::encode(Channel::Instagram, "1", &loc, None)
            .expect_err("no location")
            .message
            .contains("instagram")
    );
    let four = Content::Interactive(Interactive {
        body: "b".into(),
        action: InteractiveAction::Buttons(
            (0..4)
                .map(|i| Choice { id: i.to_string(), title: "t".into(), ..Choice::default() })
                .collect(),
        ),
        ..Interactive::default()
    });
    assert!(whatsapp::encode("+1", &four, None).is_err(), "WhatsApp takes three buttons at most");
    let captioned_audio = Content::Media(Media {
        url: "https://a".into(),
        kind: MediaKind::Audio,
        caption: "c".into(),
        ..Media::default()
    });
    assert!(
        whatsapp::encode("+1", &captioned_audio, None).is_err(),
        "never drop a caption silently"
    );
}

#[test]
fn messenger_bodies_follow_the_send_api() {
    let quick = Content::Interactive(Interactive {
        body: "Pick one".into(),
        action: InteractiveAction::QuickReplies(vec![Choice {
            id: "RED".into(),
            title: "Red".into(),
            ..Choice::default()
        }]),
        ..Interactive::default()
    });
    let body = messenger::encode(Channel::Messenger, "1254459154682919", &quick, None)
        .expect("quick replies");
    assert_eq!(
        body,
        json!({
            "recipient": { "id": "1254459154682919" },
            "messaging_type": "RESPONSE",
            "message": { "text": "Pick one", "quick_replies": [{ "content_type": "text", "title": "Red", "payload": "RED" }] }
        })
    );
    let image = Content::Media(Media {
        url: "https://e.com/a.png".into(),
        mime_type: "image/png".into(),
        ..Media::default()
    });
    let body = messenger::encode(Channel::Instagram, "17841400000", &image, Some("HUMAN_AGENT"))
        .expect("image");
    assert_eq!(body["messaging_type"], "MESSAGE_TAG");
    assert_eq!(body["tag"], "HUMAN_AGENT");
    assert_eq!(
        body["message"]["attachment"],
        json!({ "type": "image", "payload": { "url": "https://e.com/a.png", "is_reusable": true } })
    );
    let update = messenger::encode(
        Channel::Messenger,
        "1",
        &Content::text("your order shipped"),
        Some("UPDATE"),
    )
    .expect("update");
    assert_eq!(update["messaging_type"], "UPDATE");
    assert!(update.get("tag").is_none(), "UPDATE is a messaging type, not a tag");
    let long = Content::text("é".repeat(501));
    assert!(
        messenger::encode(Channel::Instagram, "1", &long, None).is_err(),
        "Instagram counts 1000 bytes"
    );
}

/// What the Send API cannot carry is refused at acceptance, limits at their edges: up to 13
/// quick replies of up to 20 characters ("A maximum of 13 quick replies are supported and
/// each quick reply allows up to 20 characters", Meta's quick replies page), no header or
/// footer, one attachment URL.
#[test]
fn messenger_refuses_what_the_send_api_cannot_carry() {
    let quick = |n: usize, title: &str| {
        Content::Interactive(Interactive {
            body: "Pick".into(),
            action: InteractiveAction::QuickReplies(
                (0..n)
                    .map(|i| Choice { id: i.to_string(), title: title.into(), ..Choice::default() })
                    .collect(),
            ),
            ..Interactive::default()
        })
    };
    let encode = |content: &Content| messenger::encode(Channel::Messenger, "1", content, None);
    let twenty = "t".repeat(20);
    let body = encode(&quick(13, &twenty)).expect("13 replies of 20 characters");
    assert_eq!(body["message"]["quick_replies"].as_array().map(Vec::len), Some(13));
    for (content, why) in [
        (quick(0, "t"), "1 to 13"),
        (quick(14, "t"), "1 to 13"),
        (quick(1, &"t".repeat(21)), "over 20 characters"),
    ] {
        let e = encode(&content).expect_err(why);
        assert!(e.message.contains(why), "{why}: {}", e.message);
    }
    let Content::Interactive(headed) = quick(1, "t") else { unreachable!() };
    for headed in [
        Interactive { header: "H".into(), ..headed.clone() },
        Interactive { footer: "F".into(), ..headed },
    ] {
        let e = encode(&Content::Interactive(headed)).expect_err("no header or footer");
        assert!(e.message.contains("header or footer"), "{}", e.message);
    }
    let media = |url: &str, extra: &[&str]| {
        Content::Media(Media {
            url: url.into(),
            extra_urls: extra.iter().map(|u| u.to_string()).collect(),
            ..Media::default()
        })
    };
    for content in [media("", &[]), media("https://e.com/a.png", &["https://e.com/b.png"])] {
        let e = encode(&content).expect_err("one URL");
        assert!(e.message.contains("exactly one attachment URL"), "{}", e.message);
    }
}

/// Instagram reacts through `sender_action: "react"` (shared/providers README, Instagram
/// Messaging), with no message and no messaging type; Messenger's Send API has no reaction.
#[test]
fn instagram_reactions_are_sender_actions_and_messenger_has_none() {
    let react = |emoji: &str| {
        Content::Reaction(Reaction { provider_message_id: "aWdfZAG1f".into(), emoji: emoji.into() })
    };
    let body =
        messenger::encode(Channel::Instagram, "17841400000", &react("\u{2764}\u{fe0f}"), None)
            .expect("a heart");
    assert_eq!(
        body,
        json!({
            "recipient": { "id": "17841400000" },
            "sender_action": "react",
            "payload": { "message_id": "aWdfZAG1f", "reaction": "love" }
        })
    );
    let undo =
        messenger::encode(Channel::Instagram, "17841400000", &react(""), None).expect("undo");
    assert_eq!(undo["sender_action"], "unreact");
    let thumbs = messenger::encode(Channel::Instagram, "1", &react("\u{1F44D}"), None);
    assert!(thumbs.expect_err("hearts only").message.contains("hearts"));
    let on_messenger = messenger::encode(Channel::Messenger, "1", &react("\u{2764}"), None);
    assert_eq!(on_messenger.expect_err("no reactions").code, ErrorCode::InvalidContent);
}

fn account() -> MetaAccount {
    MetaAccount {
        channel: Channel::Whatsapp,
        api_base: String::new(),
        version: "v23.0".into(),
        endpoint_id: "106540352242922".into(),
        access_token: "t".into(),
        app_secret: "app-secret".into(),
        verify_token: "verify-me".into(),
        request_timeout: std::time::Duration::from_secs(1),
        lost_send_wait: std::time::Duration::from_secs(60),
        waba_id: "102290129340398".into(),
    }
}

fn signed(body: &Value, secret: &str) -> WebhookRequest {
    let raw = serde_json::to_vec(body).expect("json");
    WebhookRequest {
        public_url: "https://gw/webhooks/meta/wa/events".into(),
        hook: "events".into(),
        headers: BTreeMap::from([(
            "x-hub-signature-256".to_string(),
            signature::sign(secret, &raw),
        )]),
        body: raw.into(),
    }
}

/// The content of each person's message among the parsed events, in order.
fn inbound_contents(parsed: &crate::contract::Parsed) -> Vec<&Content> {
    fn content(e: &WebhookEvent) -> Option<&Content> {
        match e {
            WebhookEvent::Inbound(m) => Some(&m.content),
            _ => None,
        }
    }
    parsed.events.iter().filter_map(content).collect()
}

#[test]
fn whatsapp_webhooks_become_canonical_events() {
    let h = MetaWebhooks::new(&account());
    let body = super::sandbox::whatsapp_envelope(
        "106540352242922",
        json!({
            "contacts": [{ "profile": { "name": "Kerry" }, "wa_id": "16315551234" }],
            "messages": [
                { "from": "16315551234", "id": "wamid.A", "timestamp": "1700000000", "type": "text", "text": { "body": "hi" },
                  "context": { "from": "15550001234", "id": "wamid.OURS" } },
                { "from": "16315551234", "id": "wamid.B", "timestamp": "1700000001", "type": "image",
                  "image": { "id": "1234", "mime_type": "image/jpeg", "sha256": "abc", "caption": "look" } },
                { "from": "16315551234", "id": "wamid.C", "timestamp": "1700000002", "type": "location",
                  "location": { "latitude": 1.5, "longitude": 2.5, "name": "Here" } },
                { "from": "16315551234", "id": "wamid.D", "timestamp": "1700000003", "type": "interactive",
                  "interactive": { "type": "button_reply", "button_reply": { "id": "yes", "title": "Yes" } } },
                { "from": "16315551234", "id": "wamid.E", "timestamp": "1700000004", "type": "reaction",
                  "reaction": { "message_id": "wamid.OURS", "emoji": "\u{1F44D}" } },
                { "from": "16315551234", "id": "wamid.F", "timestamp": "1700000005", "type": "unsupported",
                  "errors": [{ "code": 131051, "title": "Message type unknown" }] },
                { "garbage": true }
            ],
            "statuses": [
                { "id": "wamid.OURS", "status": "failed", "timestamp": "1700000006", "recipient_id": "16315551234",
                  "errors": [{ "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message" }] },
                { "id": "wamid.OURS2", "status": "delivered", "timestamp": "1700000007", "recipient_id": "16315551234",
                  "conversation": { "id": "c" }, "pricing": { "billable": true }, "new_field": 1,
                  "biz_opaque_callback_data": "msg_01" },
                { "id": "wamid.OURS3", "status": "sent", "timestamp": "1700000008", "recipient_id": "16315551234",
                  "biz_opaque_callback_data": "x".repeat(513) }
            ]
        }),
    );
    let parsed = h.handle(&signed(&body, "app-secret")).expect("valid");
    assert_eq!(parsed.ignored, 1, "the garbage part is counted, not fatal");
    // WhatsApp's `unsupported` message is still the person's: reported with its reason.
    let unreadable: Vec<_> = parsed
        .events
        .iter()
        .filter_map(|e| match e {
            WebhookEvent::Unreadable { provider_message_id, from, reason } => {
                Some((provider_message_id.as_str(), from.as_str(), reason.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        unreadable,
        [(
            "wamid.F",
            "+16315551234",
            "a WhatsApp message of type \"unsupported\", which omnigate cannot represent: Message type unknown"
        )]
    );
    let inbound: Vec<_> = parsed
        .events
        .iter()
        .filter_map(|e| match e {
            WebhookEvent::Inbound(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(inbound.len(), 5);
    assert_eq!(inbound[0].from, "+16315551234");
    assert_eq!(inbound[0].reply_to.as_deref(), Some("wamid.OURS"));
    assert!(
        matches!(&inbound[1].content, Content::Media(m) if m.provider_media_id == "1234" && m.caption == "look")
    );
    assert!(matches!(&inbound[2].content, Content::Location(l) if l.latitude == 1.5));
    assert!(matches!(&inbound[3].content, Content::Choice(c) if c.id == "yes"));
    assert!(
        matches!(&inbound[4].content, Content::Reaction(r) if r.provider_message_id == "wamid.OURS")
    );
    let statuses: Vec<_> = parsed
        .events
        .iter()
        .filter_map(|e| match e {
            WebhookEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    let failed = statuses[0].error.as_ref().expect("error");
    assert_eq!((failed.code, failed.provider_code.as_str()), (ErrorCode::OutsideWindow, "131047"));
    assert_eq!(statuses[1].status, MessageStatus::Delivered);
    // DETAILS.md 3: `biz_opaque_callback_data` is "echoed back in status webhooks".
    let echoed: Vec<_> = statuses.iter().map(|s| s.message_id.as_deref()).collect();
    assert_eq!(echoed, [None, Some("msg_01"), None], "an echo longer than 512 is not ours");
}

/// Every WhatsApp send carries our message id as `biz_opaque_callback_data` (DETAILS.md 3:
/// "≤512 chars [M]; echoed back in status webhooks"), every Messenger message as
/// `metadata`, for the receipts of a send whose answer was lost.
#[test]
fn sends_carry_our_id_for_their_receipts() {
    let outbound = Outbound::new("msg_01", "+16315551234", Content::text("hi"));
    let body = MetaSender::new(account()).encode(&outbound).expect("encodes");
    assert_eq!(body["biz_opaque_callback_data"], "msg_01");
    // Messenger's Send API has `message.metadata` instead (DETAILS.md 4); Instagram neither.
    let on = |channel| MetaSender::new(MetaAccount { channel, ..account() });
    let to_psid = Outbound { to: "1234".into(), ..outbound };
    let body = on(Channel::Messenger).encode(&to_psid).expect("encodes");
    assert!(body.get("biz_opaque_callback_data").is_none(), "{body}");
    assert_eq!(body["message"]["metadata"], "msg_01");
    let body = on(Channel::Instagram).encode(&to_psid).expect("encodes");
    assert!(body["message"].get("metadata").is_none(), "{body}");
}

#[test]
fn messenger_receipts_and_messages() {
    let h = MetaWebhooks::new(&MetaAccount { channel: Channel::Messenger, ..account() });
    let body = json!({ "object": "page", "entry": [
        { "id": "PAGE", "time": 1, "messaging": [
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 10,
              "message": { "mid": "m_1", "text": "hello", "reply_to": { "mid": "m_0" } } },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 11,
              "message": { "mid": "m_2", "text": "Red", "quick_reply": { "payload": "RED" } } },
            { "sender": { "id": "PAGE" }, "recipient": { "id": "PSID" }, "timestamp": 12,
              "message": { "mid": "m_3", "text": "echo", "is_echo": true } },
            { "sender": { "id": "PAGE" }, "recipient": { "id": "PSID" }, "timestamp": 12,
              "message": { "mid": "m_4", "text": "ours", "is_echo": true, "metadata": "msg_04" } },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 13,
              "delivery": { "mids": ["m_ours"], "watermark": 13 } },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 14, "read": { "watermark": 14 } },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 15, "postback_unknown": {} },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 17,
              "postback": { "title": "Get Started", "payload": "GET_STARTED" } },
            { "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": 16,
              "message": { "mid": "m_5", "attachments": [{ "type": "fallback", "payload": { "title": "a post" } }] } }
        ] },
        { "id": "PAGE", "time": 2 }
    ]});
    let parsed = h.handle(&signed(&body, "app-secret")).expect("valid");
    assert_eq!(parsed.ignored, 2);
    assert!(
        matches!(&parsed.events[0], WebhookEvent::Inbound(m) if m.reply_to.as_deref() == Some("m_0") && m.from == "PSID")
    );
    assert!(
        matches!(&parsed.events[1], WebhookEvent::Inbound(m) if matches!(&m.content, Content::Choice(c) if c.id == "RED"))
    );
    // DETAILS.md 4: `metadata` is "echoed in `message_echoes`": our echo is a `sent`
    // receipt that names our message; a person's reply from the Page inbox is nothing.
    assert!(
        matches!(&parsed.events[2], WebhookEvent::Status(s) if s.provider_message_id == "m_4" && s.status == MessageStatus::Sent && s.message_id.as_deref() == Some("msg_04"))
    );
    assert!(
        matches!(&parsed.events[3], WebhookEvent::Status(s) if s.provider_message_id == "m_ours" && s.status == MessageStatus::Delivered)
    );
    assert!(matches!(
        &parsed.events[4],
        WebhookEvent::Watermark { status: MessageStatus::Delivered, up_to_ms: 13, .. }
    ));
    assert!(matches!(
        &parsed.events[5],
        WebhookEvent::Watermark { status: MessageStatus::Read, up_to_ms: 14, .. }
    ));
    // DETAILS.md 4: `postback: {title, payload, mid?}`, a tap on a postback button: the
    // person's choice, with an id made of who and when where Meta gives no mid.
    assert!(matches!(
        &parsed.events[6],
        WebhookEvent::Inbound(m) if m.provider_message_id == "postback:PSID:17"
            && matches!(&m.content, Content::Choice(c) if c.id == "GET_STARTED" && c.title == "Get Started")
    ));
    // A shared post has no canonical form, but it is the person's message all the same.
    assert!(matches!(
        &parsed.events[7],
        WebhookEvent::Unreadable { provider_message_id, from, reason }
            if provider_message_id == "m_5" && from == "PSID" && reason.contains(r#"type "fallback""#)
    ));
}

#[test]
fn signatures_and_the_handshake_are_checked() {
    let h = MetaWebhooks::new(&account());
    let body = json!({ "object": "whatsapp_business_account", "entry": [] });
    assert!(matches!(h.handle(&signed(&body, "wrong")), Err(WebhookError::Signature(_))));
    let mut unsigned = signed(&body, "app-secret");
    unsigned.headers.clear();
    assert!(matches!(h.handle(&unsigned), Err(WebhookError::Signature(_))));
    let q = "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444";
    assert_eq!(h.verify_subscription("events", q).expect("handshake"), "1158201444");
    let bad = "hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1";
    assert!(matches!(h.verify_subscription("events", bad), Err(WebhookError::Signature(_))));
}

/// Fuzz-style property: any signed bytes get Ok or a clear error, never a panic.
#[test]
fn arbitrary_signed_bodies_never_panic() {
    let h = MetaWebhooks::new(&account());
    let pieces = [
        r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":1},"delivery":{"mids":[null]}}]}]}"#,
        r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"id":"x","from":"1","type":"interactive","interactive":{"type":"nfm_reply"}}]}}]}]}"#,
        r#"{"object":"instagram","entry":[{"messaging":[{"sender":{"id":"a"},"reaction":{"mid":"m"}}]}]}"#,
        r#"{"object":"whatsapp_business_account","entry":"no"}"#,
        r#"{"object":"page","entry":[{"messaging":[{"sender":{"id":"a"},"message":{"mid":"m","attachments":[{"type":"image"}]}}]}]}"#,
    ];
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..3_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let base = pieces[(rng % pieces.len() as u64) as usize].as_bytes();
        let mut bytes = base.to_vec();
        if round % 3 != 0 && !bytes.is_empty() {
            let i = (rng >> 8) as usize % bytes.len();
            bytes[i] = (rng >> 16) as u8;
        }
        let req = WebhookRequest {
            headers: BTreeMap::from([(
                "x-hub-signature-256".to_string(),
                signature::sign("app-secret", &bytes),
            )]),
            body: bytes.into(),
            ..signed(&json!({}), "app-secret")
        };
        let _ = h.handle(&req);
    }
}

/// A Graph sandbox that takes this file's account's token.
async fn sandbox() -> super::sandbox::SandboxHandle {
    super::sandbox::start(super::sandbox::SandboxConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        access_token: "t".into(),
        app_secret: "app-secret".into(),
        callback_delay_ms: 0,
        latency_ms: 0,
        rules: Vec::new(),
    })
    .await
    .expect("sandbox")
}

fn media_lookup_spec() -> Value {
    serde_json::from_str(include_str!("../../spec/meta/whatsapp-media-lookup.json"))
        .expect("fixture JSON")
}

/// The sandbox's media lookup answers the fields of Meta's `retrieveMediaUrl` schema, each
/// of its JSON type (`file_size` a string), and the sender reads that shape: it fetches the
/// bytes with the lookup's URL and the same token, and an id Graph cannot load (code 100,
/// subcode 33 in the OpenAPI's example) is media Meta no longer keeps.
#[tokio::test]
async fn media_lookup_has_metas_shape_and_the_sender_fetches_with_its_token() {
    let spec = media_lookup_spec();
    let sandbox = sandbox().await;
    let id = sandbox.keep_media("audio/ogg", b"OggS voice note");
    let http = crate::http::client(std::time::Duration::from_secs(5));
    let lookup = format!("{}/v23.0/{id}?phone_number_id=106540352242922", sandbox.api_base());
    let found: Value = http
        .get(&lookup)
        .bearer_auth("t")
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    let properties = spec["schema"]["properties"].as_object().expect("properties");
    let ours = found.as_object().expect("object");
    assert_eq!(ours.keys().collect::<Vec<_>>(), properties.keys().collect::<Vec<_>>());
    for (name, schema) in properties {
        assert_eq!(schema["type"], "string", "{name}");
        assert!(ours[name].is_string(), "{name} is a string as in the spec: {found}");
    }
    assert_eq!(found["file_size"], "15");
    let refused = http.get(&lookup).bearer_auth("wrong").send().await.expect("lookup");
    assert_eq!(refused.status().as_u16(), 401);

    let sender = MetaSender::new(MetaAccount { api_base: sandbox.api_base(), ..account() });
    let media = Media { provider_media_id: id, ..Media::default() };
    let mut download = sender.fetch_media(&media, 0).await.expect("fetched");
    assert_eq!((download.mime_type.as_str(), download.size), ("audio/ogg", Some(15)));
    let mut bytes = Vec::new();
    while let Some(chunk) = download.body.chunk().await.expect("chunk") {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes, b"OggS voice note");

    let spec_error = &spec["bad_object_id_error"]["error"];
    let gone = Media { provider_media_id: "424242".into(), ..Media::default() };
    let error = sender.fetch_media(&gone, 0).await.err().expect("gone");
    assert_eq!(
        error.provider_code,
        format!("{}/{}", spec_error["code"], spec_error["error_subcode"])
    );
    assert_eq!(error.code, ErrorCode::Expired);
    let wrong = MetaSender::new(MetaAccount {
        api_base: sandbox.api_base(),
        access_token: "wrong".into(),
        ..account()
    });
    let media =
        Media { provider_media_id: sandbox.keep_media("image/png", b"png"), ..Media::default() };
    let error = wrong.fetch_media(&media, 0).await.err().expect("refused");
    assert_eq!((error.code, error.provider_code.as_str()), (ErrorCode::Authentication, "190"));
    let odd = Media { provider_media_id: "../../me".into(), ..Media::default() };
    let error = sender.fetch_media(&odd, 0).await.err().expect("refused");
    assert!(error.message.contains("not a Graph media id"), "{error:?}");
}

/// A read receipt is Meta's "Send typing indicator and read receipt" example to the letter,
/// less the indicator when no typing is shown; Messenger's is a sender action alone.
#[test]
fn read_receipts_match_metas_example() {
    let example = &examples()["Send typing indicator and read receipt"];
    let id = example["message_id"].as_str().expect("id");
    assert_eq!(&whatsapp::read_receipt(id, true), example);
    let mut plain = example.clone();
    plain.as_object_mut().expect("object").remove("typing_indicator");
    assert_eq!(whatsapp::read_receipt(id, false), plain);
    assert_eq!(
        messenger::sender_action("6245120000000703", "mark_seen"),
        json!({ "recipient": { "id": "6245120000000703" }, "sender_action": "mark_seen" })
    );
}

fn templates_example() -> Value {
    serde_json::from_str::<Value>(include_str!("../../spec/meta/whatsapp-templates-example.json"))
        .expect("fixture JSON")["example"]
        .clone()
}

/// Meta's own example answer of `message_templates` reads as templates (the body's text,
/// all components kept); `paging.cursors.after` leads on only with a `next` page, which the
/// example (a last page) has not.
#[test]
fn template_pages_read_metas_example() {
    let example = templates_example();
    let page = whatsapp::template_page(&example);
    let names: Vec<_> =
        page.templates.iter().map(|t| (t.name.as_str(), t.status.as_str())).collect();
    assert_eq!(names, [("hello_world", "APPROVED"), ("2023_april_promo", "APPROVED")]);
    let promo = &page.templates[1];
    assert_eq!((promo.id.as_str(), promo.language.as_str()), ("920070352646140", "en_US"));
    assert!(promo.body.starts_with("Hi {{1}}, our Fall Sale is on!"), "{}", promo.body);
    let components: Value = serde_json::from_str(&promo.components_json).expect("JSON");
    assert_eq!(components, example["data"][1]["components"]);
    assert_eq!(page.after, "", "no next page");
    let mut more = example.clone();
    more["paging"]["next"] =
        json!("https://graph.facebook.com/v23.0/1/message_templates?after=MjQZD");
    assert_eq!(whatsapp::template_page(&more).after, "MjQZD");
}

/// The sandbox answers `message_templates` with the example's templates, Graph's paging
/// (cursors, `next` while more follow) and its token check; the sender pages through it.
#[tokio::test]
async fn the_sender_pages_through_the_sandboxs_templates() {
    let sandbox = sandbox().await;
    let sender = MetaSender::new(MetaAccount { api_base: sandbox.api_base(), ..account() });
    let first = sender.templates("", 1, "").await.expect("page");
    assert_eq!(first.templates.len(), 1);
    assert!(!first.after.is_empty());
    let second = sender.templates("", 1, &first.after).await.expect("page");
    assert_eq!(second.after, "", "the last page");
    let example = whatsapp::template_page(&templates_example());
    assert_eq!([first.templates, second.templates].concat(), example.templates);
    let named = sender.templates("hello_world", 25, "").await.expect("named");
    assert_eq!(named.templates.len(), 1);
    let wrong = MetaSender::new(MetaAccount {
        api_base: sandbox.api_base(),
        access_token: "wrong".into(),
        ..account()
    });
    let refused = wrong.templates("", 25, "").await.expect_err("token");
    assert_eq!(refused.code, ErrorCode::Authentication);
    let no_waba = MetaSender::new(MetaAccount {
        waba_id: String::new(),
        api_base: sandbox.api_base(),
        ..account()
    });
    let refused = no_waba.templates("", 25, "").await.expect_err("no waba");
    assert!(refused.message.contains("waba_id"), "{refused:?}");
}

/// DETAILS.md 2.2: other `field` values (`account_update`, template status updates...)
/// arrive on the same URL and are ignored with a 200; each one, and each unreadable item
/// of a `messages` change, counts once.
#[test]
fn every_ignored_change_and_item_is_counted() {
    let h = MetaWebhooks::new(&account());
    let body = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "WABA", "changes": [
        { "field": "account_update", "value": { "event": "VERIFIED_ACCOUNT" } },
        { "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001234", "phone_number_id": "106540352242922" },
            "messages": [{ "garbage": true }, { "garbage": true }] } }
    ] }] });
    let parsed = h.handle(&signed(&body, "app-secret")).expect("valid");
    assert_eq!(parsed.ignored, 3);
    assert!(parsed.events.is_empty());
}

/// DETAILS.md 4: `reaction: {mid, action: "react"|"unreact", reaction, emoji}`; an undone
/// reaction is a reaction with no emoji. Attachments come by type; the first is the media,
/// the rest ride along.
#[test]
fn messenger_reactions_and_attachments_become_canonical_content() {
    let h = MetaWebhooks::new(&MetaAccount { channel: Channel::Messenger, ..account() });
    let event = |ts: i64, body: Value| {
        let mut e =
            json!({ "sender": { "id": "PSID" }, "recipient": { "id": "PAGE" }, "timestamp": ts });
        if let (Some(e), Some(body)) = (e.as_object_mut(), body.as_object()) {
            e.extend(body.clone());
        }
        e
    };
    let attachment = |kind: &str| json!({ "type": kind, "payload": { "url": format!("https://cdn.example.test/{kind}") } });
    let body = json!({ "object": "page", "entry": [{ "id": "PAGE", "time": 1, "messaging": [
        event(20, json!({ "reaction": { "mid": "m_9", "action": "react", "reaction": "like", "emoji": "\u{1F44D}" } })),
        event(21, json!({ "reaction": { "mid": "m_9", "action": "unreact", "reaction": "like" } })),
        event(22, json!({ "message": { "mid": "m_10", "attachments": [attachment("image"), attachment("image")] } })),
        event(23, json!({ "message": { "mid": "m_11", "attachments": [attachment("audio")] } })),
        event(24, json!({ "message": { "mid": "m_12", "attachments": [attachment("video")] } })),
        event(25, json!({ "message": { "mid": "m_13", "attachments": [attachment("file")] } })),
    ] }] });
    let parsed = h.handle(&signed(&body, "app-secret")).expect("valid");
    let contents = inbound_contents(&parsed);
    let [react, unreact, image, audio, video, file] = &contents[..] else { panic!("{parsed:?}") };
    assert!(
        matches!(react, Content::Reaction(r) if r.provider_message_id == "m_9" && r.emoji == "\u{1F44D}")
    );
    assert!(
        matches!(unreact, Content::Reaction(r) if r.provider_message_id == "m_9" && r.emoji.is_empty())
    );
    let media = |c: &Content| match c {
        Content::Media(m) => (m.kind, m.url.clone(), m.extra_urls.len()),
        other => panic!("not media: {other:?}"),
    };
    assert_eq!(media(image), (MediaKind::Image, "https://cdn.example.test/image".into(), 1));
    assert_eq!(media(audio), (MediaKind::Audio, "https://cdn.example.test/audio".into(), 0));
    assert_eq!(media(video).0, MediaKind::Video);
    assert_eq!(media(file).0, MediaKind::Document);
}

/// A send's answer (Meta's Send API reference: `{"recipient_id", "message_id"}`), and text
/// limits at their edges: Messenger counts 2,000 characters, Instagram 1,000 bytes.
#[test]
fn messenger_answers_and_text_limits() {
    let answer = json!({ "recipient_id": "1254477777772919", "message_id": "AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P" });
    assert_eq!(
        messenger::sent_id(&answer).as_deref(),
        Some(
            "AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P"
        )
    );
    assert_eq!(messenger::sent_id(&json!({ "recipient_id": "1" })), None);
    let text = |channel, body: String| messenger::encode(channel, "1", &Content::text(body), None);
    assert!(text(Channel::Messenger, "é".repeat(2000)).is_ok());
    assert!(text(Channel::Messenger, "é".repeat(2001)).is_err());
    assert!(text(Channel::Instagram, "é".repeat(500)).is_ok());
    assert!(text(Channel::Instagram, format!("{}x", "é".repeat(500))).is_err());
}

/// WhatsApp's send limits at their edges (DETAILS.md 3: text body ≤ 4096 chars; reply
/// buttons 1..3 with titles ≤ 20; list rows ≤ 10), a filename only on a document, and the
/// send's answer: `{"messaging_product", "contacts", "messages": [{"id": "wamid.…"}]}`.
#[test]
fn whatsapp_limits_at_their_edges_and_the_send_answer() {
    let text = |n: usize| whatsapp::encode("+1", &Content::text("é".repeat(n)), None);
    assert!(text(4096).is_ok());
    assert!(text(4097).is_err());
    let buttons = |n: usize, title: &str| {
        let choices = (0..n)
            .map(|i| Choice { id: i.to_string(), title: title.into(), ..Choice::default() })
            .collect();
        let i = Interactive {
            body: "b".into(),
            action: InteractiveAction::Buttons(choices),
            ..Interactive::default()
        };
        whatsapp::encode("+1", &Content::Interactive(i), None)
    };
    assert!(buttons(3, &"t".repeat(20)).is_ok());
    assert!(buttons(0, "t").expect_err("none").message.contains("1 to 3"));
    assert!(buttons(1, &"t".repeat(21)).expect_err("long").message.contains("over 20"));
    let list = |rows: usize| {
        let i = Interactive {
            body: "b".into(),
            action: InteractiveAction::List {
                button: "Pick".into(),
                sections: vec![Section {
                    title: "S".into(),
                    rows: (0..rows)
                        .map(|r| Choice {
                            id: r.to_string(),
                            title: "r".into(),
                            ..Choice::default()
                        })
                        .collect(),
                }],
            },
            ..Interactive::default()
        };
        whatsapp::encode("+1", &Content::Interactive(i), None)
    };
    assert!(list(10).is_ok());
    for rows in [0, 11] {
        assert!(list(rows).expect_err("rows").message.contains("1 to 10 rows"), "{rows}");
    }
    let named = |kind: MediaKind| {
        let m = Media {
            url: "https://e.com/f".into(),
            kind,
            filename: "invoice.pdf".into(),
            ..Media::default()
        };
        whatsapp::encode("+1", &Content::Media(m), None)
    };
    assert_eq!(
        named(MediaKind::Document).expect("document")["document"]["filename"],
        "invoice.pdf"
    );
    assert!(named(MediaKind::Image).expect_err("image").message.contains("filename"));

    let answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": "+16505551234", "wa_id": "16505551234" }],
        "messages": [{ "id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA", "message_status": "accepted" }]
    });
    assert_eq!(
        whatsapp::sent_id(&answer).as_deref(),
        Some("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA")
    );
    assert_eq!(whatsapp::sent_id(&json!({ "messages": [] })), None);
}

/// Every media type a person sends (DETAILS.md 3: image, audio, video, document with its
/// filename, sticker), a template's quick-reply button (`button: {payload, text}`), a read
/// receipt; parts of no known shape are counted.
#[test]
fn whatsapp_media_buttons_and_reads_come_in_whole() {
    let h = MetaWebhooks::new(&account());
    let message = |id: &str, kind: &str, object: Value| {
        let mut m =
            json!({ "from": "16315551234", "id": id, "timestamp": "1700000000", "type": kind });
        m[kind] = object;
        m
    };
    let media =
        |mime: &str| json!({ "id": "4490709327384033", "mime_type": mime, "sha256": "abc" });
    let mut document = media("application/pdf");
    document["filename"] = json!("invoice.pdf");
    let body = super::sandbox::whatsapp_envelope(
        "106540352242922",
        json!({
            "messages": [
                message("wamid.1", "audio", media("audio/ogg")),
                message("wamid.2", "video", media("video/mp4")),
                message("wamid.3", "document", document),
                message("wamid.4", "sticker", media("image/webp")),
                message("wamid.5", "image", media("image/jpeg")),
                message("wamid.6", "button", json!({ "payload": "STOP_PROMOS", "text": "Stop promotions" })),
                { "garbage": true }
            ],
            "statuses": [
                { "id": "wamid.OURS", "status": "read", "timestamp": "1700000009", "recipient_id": "16315551234" },
                { "id": "wamid.OURS", "status": "deleted", "timestamp": "1700000010", "recipient_id": "16315551234" }
            ]
        }),
    );
    let parsed = h.handle(&signed(&body, "app-secret")).expect("valid");
    assert_eq!(parsed.ignored, 2, "the garbage message and the unknown status");
    let contents = inbound_contents(&parsed);
    let kinds: Vec<_> = contents[..5]
        .iter()
        .map(|c| match c {
            Content::Media(m) => (m.kind, m.mime_type.as_str(), m.filename.as_str()),
            other => panic!("not media: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (MediaKind::Audio, "audio/ogg", ""),
            (MediaKind::Video, "video/mp4", ""),
            (MediaKind::Document, "application/pdf", "invoice.pdf"),
            (MediaKind::Sticker, "image/webp", ""),
            (MediaKind::Image, "image/jpeg", ""),
        ]
    );
    assert!(
        matches!(contents[5], Content::Choice(c) if c.id == "STOP_PROMOS" && c.title == "Stop promotions")
    );
    let read = parsed.events.iter().find_map(|e| match e {
        WebhookEvent::Status(s) => Some(s),
        _ => None,
    });
    assert!(
        matches!(read, Some(s) if s.status == MessageStatus::Read && s.provider_message_id == "wamid.OURS")
    );
}
