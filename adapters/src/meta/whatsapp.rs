//! The WhatsApp Cloud API wire format: `POST /{version}/{phone-number-id}/messages` bodies
//! for each canonical content kind (Meta's OpenAPI request examples are the fixtures), and
//! the `messages` webhook (statuses and inbound messages).

use serde_json::{Map, Value, json};

use crate::contract::{InboundMessage, StatusReport, TemplateInfo, TemplatePage, WebhookEvent};
use crate::model::{
    Channel, Choice, Content, InteractiveAction, Location, Media, MediaKind, MessageStatus,
    ProviderError, Reaction, TemplateParameter, Text, unsupported,
};

use super::errors::canonical_code;

/// Limits from Meta's spec (interactive objects) that we check before sending.
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE: usize = 20;
pub const MAX_LIST_ROWS: usize = 10;
pub const MAX_TEXT: usize = 4096;
/// `biz_opaque_callback_data`: "≤512 chars" (shared/providers DETAILS.md 3).
pub const MAX_CALLBACK_DATA: usize = 512;

fn invalid(message: String) -> ProviderError {
    ProviderError::gateway(crate::model::ErrorCode::InvalidContent, message)
}

/// The JSON body of a send. `to` may carry a leading `+`; Meta takes digits.
pub fn encode(to: &str, content: &Content, reply_to: Option<&str>) -> Result<Value, ProviderError> {
    let (kind, object) = match content {
        Content::Text(t) => {
            if t.body.chars().count() > MAX_TEXT {
                return Err(invalid(format!("WhatsApp text is limited to {MAX_TEXT} characters")));
            }
            ("text", json!({ "body": t.body, "preview_url": t.preview_url }))
        }
        Content::Media(m) => media(m)?,
        Content::Template(t) => {
            let components: Vec<Value> = t
                .components
                .iter()
                .map(|c| {
                    let mut o = Map::new();
                    o.insert("type".into(), json!(c.kind));
                    if !c.sub_type.is_empty() {
                        o.insert("sub_type".into(), json!(c.sub_type));
                    }
                    if let Some(i) = c.index {
                        o.insert("index".into(), json!(i.to_string()));
                    }
                    o.insert(
                        "parameters".into(),
                        Value::Array(c.parameters.iter().map(parameter).collect()),
                    );
                    Value::Object(o)
                })
                .collect();
            let mut template = json!({ "name": t.name, "language": { "code": t.language } });
            if !components.is_empty() {
                template["components"] = Value::Array(components);
            }
            ("template", template)
        }
        Content::Interactive(i) => {
            let (kind, action) = match &i.action {
                InteractiveAction::Buttons(buttons) => {
                    if buttons.is_empty() || buttons.len() > MAX_BUTTONS {
                        return Err(invalid(format!(
                            "WhatsApp takes 1 to {MAX_BUTTONS} reply buttons"
                        )));
                    }
                    if let Some(b) =
                        buttons.iter().find(|b| b.title.chars().count() > MAX_BUTTON_TITLE)
                    {
                        return Err(invalid(format!(
                            "button title {:?} is over {MAX_BUTTON_TITLE} characters",
                            b.title
                        )));
                    }
                    let buttons: Vec<Value> = buttons
                        .iter()
                        .map(|b| json!({ "type": "reply", "reply": { "id": b.id, "title": b.title } }))
                        .collect();
                    ("button", json!({ "buttons": buttons }))
                }
                InteractiveAction::List { button, sections } => {
                    let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
                    if rows == 0 || rows > MAX_LIST_ROWS {
                        return Err(invalid(format!(
                            "a WhatsApp list takes 1 to {MAX_LIST_ROWS} rows"
                        )));
                    }
                    let sections: Vec<Value> = sections
                        .iter()
                        .map(|s| {
                            let rows: Vec<Value> = s.rows.iter().map(row).collect();
                            json!({ "title": s.title, "rows": rows })
                        })
                        .collect();
                    ("list", json!({ "button": button, "sections": sections }))
                }
                InteractiveAction::QuickReplies(_) => {
                    return Err(invalid(
                        "quick replies cannot be sent on whatsapp; use buttons".into(),
                    ));
                }
            };
            let mut o = json!({ "type": kind, "body": { "text": i.body }, "action": action });
            if !i.header.is_empty() {
                o["header"] = json!({ "type": "text", "text": i.header });
            }
            if !i.footer.is_empty() {
                o["footer"] = json!({ "text": i.footer });
            }
            ("interactive", o)
        }
        Content::Location(l) => (
            "location",
            json!({ "latitude": l.latitude, "longitude": l.longitude, "name": l.name, "address": l.address }),
        ),
        Content::Reaction(r) => {
            ("reaction", json!({ "message_id": r.provider_message_id, "emoji": r.emoji }))
        }
        Content::Choice(_) | Content::Email(_) => {
            return Err(unsupported(content, Channel::Whatsapp));
        }
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.trim_start_matches('+'),
        "type": kind,
    });
    body[kind] = object;
    if let Some(id) = reply_to {
        body["context"] = json!({ "message_id": id });
    }
    Ok(body)
}

fn row(c: &Choice) -> Value {
    let mut r = json!({ "id": c.id, "title": c.title });
    if !c.description.is_empty() {
        r["description"] = json!(c.description);
    }
    r
}

fn media(m: &Media) -> Result<(&'static str, Value), ProviderError> {
    if !m.extra_urls.is_empty() {
        return Err(invalid("WhatsApp sends one media item per message".into()));
    }
    let kind = match m.resolved_kind() {
        MediaKind::Image | MediaKind::Auto => "image",
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
        MediaKind::Document => "document",
        MediaKind::Sticker => "sticker",
    };
    let mut o = Map::new();
    if !m.provider_media_id.is_empty() {
        o.insert("id".into(), json!(m.provider_media_id));
    } else if !m.url.is_empty() {
        o.insert("link".into(), json!(m.url));
    } else {
        return Err(invalid("WhatsApp media needs a url or a provider_media_id".into()));
    }
    if !m.caption.is_empty() {
        if matches!(kind, "audio" | "sticker") {
            return Err(invalid(format!("a caption cannot be sent with {kind} on whatsapp")));
        }
        o.insert("caption".into(), json!(m.caption));
    }
    if !m.filename.is_empty() {
        if kind != "document" {
            return Err(invalid(format!("a filename cannot be sent with {kind} on whatsapp")));
        }
        o.insert("filename".into(), json!(m.filename));
    }
    Ok((kind, Value::Object(o)))
}

fn parameter(p: &TemplateParameter) -> Value {
    match p {
        TemplateParameter::Text(t) => json!({ "type": "text", "text": t }),
        TemplateParameter::Payload(p) => json!({ "type": "payload", "payload": p }),
        TemplateParameter::Image { url } => json!({ "type": "image", "image": { "link": url } }),
        TemplateParameter::Video { url } => json!({ "type": "video", "video": { "link": url } }),
        TemplateParameter::Document { url, filename } => {
            json!({ "type": "document", "document": { "link": url, "filename": filename } })
        }
        TemplateParameter::Currency { fallback, code, amount_1000 } => json!({
            "type": "currency",
            "currency": { "fallback_value": fallback, "code": code, "amount_1000": amount_1000 }
        }),
        TemplateParameter::DateTime { fallback } => {
            json!({ "type": "date_time", "date_time": { "fallback_value": fallback } })
        }
    }
}

/// The message id in a send's answer: `{"messages": [{"id": "wamid..."}]}`.
/// Marks an inbound message read, with a typing indicator when `typing` (the OpenAPI's
/// "Send typing indicator and read receipt" example); it goes to the messages endpoint.
pub fn read_receipt(provider_message_id: &str, typing: bool) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": provider_message_id,
    });
    if typing {
        body["typing_indicator"] = json!({ "type": "text" });
    }
    body
}

/// A `message_templates` answer: `data` (each with `components`, of which the `BODY` has
/// the text) and `paging`, whose `cursors.after` leads on when there is a `next` page.
pub fn template_page(answer: &Value) -> TemplatePage {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let templates = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| TemplateInfo {
            id: text(&t["id"]),
            name: text(&t["name"]),
            language: text(&t["language"]),
            category: text(&t["category"]),
            status: text(&t["status"]),
            body: t["components"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "BODY")
                .map(|c| text(&c["text"]))
                .unwrap_or_default(),
            components_json: t["components"].to_string(),
        })
        .collect();
    let paging = &answer["paging"];
    let after =
        if paging["next"].is_string() { text(&paging["cursors"]["after"]) } else { String::new() };
    TemplatePage { templates, after }
}

pub fn sent_id(answer: &Value) -> Option<String> {
    answer["messages"][0]["id"].as_str().map(str::to_string)
}

/// One `changes[].value` of field `messages`. Parts it cannot read are counted, not fatal.
pub fn parse_value(value: &Value, events: &mut Vec<WebhookEvent>) -> usize {
    let mut ignored = 0;
    let our_number = value["metadata"]["display_phone_number"].as_str().unwrap_or_default();
    for status in value["statuses"].as_array().into_iter().flatten() {
        match parse_status(status) {
            Some(report) => events.push(WebhookEvent::Status(report)),
            None => ignored += 1,
        }
    }
    for message in value["messages"].as_array().into_iter().flatten() {
        match parse_message(message, our_number) {
            Some(event) => events.push(event),
            None => ignored += 1,
        }
    }
    ignored
}

fn parse_status(s: &Value) -> Option<StatusReport> {
    let id = s["id"].as_str()?;
    let word = s["status"].as_str()?;
    let status = match word {
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" => MessageStatus::Failed,
        _ => return None,
    };
    let error = (status == MessageStatus::Failed).then(|| {
        let e = &s["errors"][0];
        let code = e["code"].as_i64().unwrap_or(0);
        ProviderError {
            code: canonical_code(code, None),
            message: e["message"].as_str().or(e["title"].as_str()).unwrap_or("failed").to_string(),
            provider: super::PROVIDER.into(),
            provider_code: code.to_string(),
            retryable: false,
        }
    });
    // What we sent as `biz_opaque_callback_data` (shared/providers DETAILS.md 3: "echoed
    // back in status webhooks"); an overlong echo is not one of ours.
    let message_id = s["biz_opaque_callback_data"]
        .as_str()
        .filter(|d| d.len() <= MAX_CALLBACK_DATA)
        .map(str::to_string);
    Some(StatusReport {
        provider_message_id: id.to_string(),
        status,
        provider_status: word.to_string(),
        error,
        message_id,
    })
}

/// A person's message; `None` when it is not readable as one at all (no id or sender).
fn parse_message(m: &Value, our_number: &str) -> Option<WebhookEvent> {
    let id = m["id"].as_str()?;
    let from = m["from"].as_str()?;
    let from = format!("+{}", from.trim_start_matches('+'));
    let kind = m["type"].as_str().unwrap_or("text");
    let Some(content) = content(kind, &m[kind]) else {
        // Contact cards, orders, and what WhatsApp itself calls `unsupported` (its
        // `errors[0].title` says why), or a known kind without its fields.
        let why = m["errors"][0]["title"].as_str().map(|t| format!(": {t}")).unwrap_or_default();
        return Some(WebhookEvent::Unreadable {
            provider_message_id: id.to_string(),
            from,
            reason: format!(
                "a WhatsApp message of type {kind:?}, which omnigate cannot represent{why}"
            ),
        });
    };
    Some(WebhookEvent::Inbound(InboundMessage {
        provider_message_id: id.to_string(),
        from,
        to: if our_number.is_empty() {
            String::new()
        } else {
            format!("+{}", our_number.trim_start_matches('+'))
        },
        content,
        reply_to: m["context"]["id"].as_str().map(str::to_string),
        references: Vec::new(),
        consent: None,
        conversation: None,
    }))
}

/// The canonical content of a message of type `kind` whose object is `o`.
fn content(kind: &str, o: &Value) -> Option<Content> {
    let content = match kind {
        "text" => Content::Text(Text { body: o["body"].as_str()?.to_string(), preview_url: false }),
        "image" | "audio" | "video" | "document" | "sticker" => Content::Media(Media {
            provider_media_id: o["id"].as_str()?.to_string(),
            mime_type: o["mime_type"].as_str().unwrap_or_default().to_string(),
            caption: o["caption"].as_str().unwrap_or_default().to_string(),
            filename: o["filename"].as_str().unwrap_or_default().to_string(),
            kind: match kind {
                "image" => MediaKind::Image,
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                "document" => MediaKind::Document,
                _ => MediaKind::Sticker,
            },
            ..Media::default()
        }),
        "location" => Content::Location(Location {
            latitude: o["latitude"].as_f64()?,
            longitude: o["longitude"].as_f64()?,
            name: o["name"].as_str().unwrap_or_default().to_string(),
            address: o["address"].as_str().unwrap_or_default().to_string(),
        }),
        "interactive" => {
            let reply = &o[o["type"].as_str()?];
            Content::Choice(Choice {
                id: reply["id"].as_str()?.to_string(),
                title: reply["title"].as_str().unwrap_or_default().to_string(),
                description: reply["description"].as_str().unwrap_or_default().to_string(),
            })
        }
        // A template's quick-reply button.
        "button" => Content::Choice(Choice {
            id: o["payload"].as_str()?.to_string(),
            title: o["text"].as_str().unwrap_or_default().to_string(),
            description: String::new(),
        }),
        "reaction" => Content::Reaction(Reaction {
            provider_message_id: o["message_id"].as_str()?.to_string(),
            emoji: o["emoji"].as_str().unwrap_or_default().to_string(),
        }),
        _ => return None,
    };
    Some(content)
}
