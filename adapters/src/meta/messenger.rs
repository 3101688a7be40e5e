//! The Messenger Platform Send API and webhooks, which Instagram messaging shares:
//! `{"recipient": {"id"}, "messaging_type", "tag", "message": {...}}` out, and `messaging`
//! events (messages, delivery and read receipts, reactions) in.

use serde_json::{Value, json};

use crate::contract::{InboundMessage, StatusReport, WebhookEvent};
use crate::model::{
    Channel, Choice, Content, ErrorCode, InteractiveAction, Media, MediaKind, MessageStatus,
    ProviderError, Reaction, Text, unsupported,
};

pub const MAX_QUICK_REPLIES: usize = 13;
pub const MAX_QUICK_REPLY_TITLE: usize = 20;
/// Messenger text; Instagram counts 1000 bytes of UTF-8.
pub const MAX_MESSENGER_TEXT: usize = 2000;
pub const MAX_INSTAGRAM_TEXT_BYTES: usize = 1000;

fn invalid(message: String) -> ProviderError {
    ProviderError::gateway(ErrorCode::InvalidContent, message)
}

/// The Send API body. `tag` names the messaging type: `RESPONSE` (the default) and
/// `UPDATE` (a proactive message within the window) are sent as such; any other value
/// (`HUMAN_AGENT`, `ACCOUNT_UPDATE`...) is a MESSAGE_TAG with that tag.
pub fn encode(
    channel: Channel,
    to: &str,
    content: &Content,
    tag: Option<&str>,
) -> Result<Value, ProviderError> {
    let mut body = json!({ "recipient": { "id": to } });
    match tag {
        None | Some("RESPONSE") => body["messaging_type"] = json!("RESPONSE"),
        Some("UPDATE") => body["messaging_type"] = json!("UPDATE"),
        Some(tag) => {
            body["messaging_type"] = json!("MESSAGE_TAG");
            body["tag"] = json!(tag);
        }
    }
    let message = match content {
        Content::Text(t) => {
            check_text(channel, &t.body)?;
            json!({ "text": t.body })
        }
        Content::Media(m) => {
            if !m.caption.is_empty() {
                return Err(invalid(format!(
                    "{channel} attachments carry no caption; send the text separately"
                )));
            }
            if !m.extra_urls.is_empty() || m.url.is_empty() {
                return Err(invalid(format!(
                    "{channel} sends exactly one attachment URL per message"
                )));
            }
            let kind = match m.resolved_kind() {
                MediaKind::Image | MediaKind::Auto => "image",
                MediaKind::Audio => "audio",
                MediaKind::Video => "video",
                MediaKind::Document => "file",
                MediaKind::Sticker => {
                    return Err(invalid(format!("stickers cannot be sent on {channel}")));
                }
            };
            json!({ "attachment": { "type": kind, "payload": { "url": m.url, "is_reusable": true } } })
        }
        // Buttons render as quick replies: both ask for one tap that comes back as a payload.
        Content::Interactive(i) => {
            let choices = match &i.action {
                InteractiveAction::QuickReplies(c) | InteractiveAction::Buttons(c) => c,
                InteractiveAction::List { .. } => {
                    return Err(invalid(format!("list menus cannot be sent on {channel}")));
                }
            };
            if !i.header.is_empty() || !i.footer.is_empty() {
                return Err(invalid(format!("{channel} quick replies carry no header or footer")));
            }
            if choices.is_empty() || choices.len() > MAX_QUICK_REPLIES {
                return Err(invalid(format!(
                    "{channel} takes 1 to {MAX_QUICK_REPLIES} quick replies"
                )));
            }
            if let Some(c) =
                choices.iter().find(|c| c.title.chars().count() > MAX_QUICK_REPLY_TITLE)
            {
                return Err(invalid(format!(
                    "quick reply title {:?} is over {MAX_QUICK_REPLY_TITLE} characters",
                    c.title
                )));
            }
            check_text(channel, &i.body)?;
            let replies: Vec<Value> = choices
                .iter()
                .map(|c| json!({ "content_type": "text", "title": c.title, "payload": c.id }))
                .collect();
            json!({ "text": i.body, "quick_replies": replies })
        }
        Content::Reaction(r) if channel == Channel::Instagram => {
            // Instagram reacts with a sender action; "love" is the reaction it documents.
            let reaction = if r.emoji.is_empty() { "unreact" } else { "react" };
            body["sender_action"] = json!(reaction);
            body["payload"] = json!({ "message_id": r.provider_message_id, "reaction": "love" });
            if let Some(o) = body.as_object_mut() {
                o.remove("messaging_type");
                o.remove("tag");
            }
            if !r.emoji.is_empty() && r.emoji != "\u{2764}\u{fe0f}" && r.emoji != "\u{2764}" {
                return Err(invalid(
                    "Instagram reactions are hearts (\u{2764}\u{fe0f}) only".into(),
                ));
            }
            return Ok(body);
        }
        _ => return Err(unsupported(content, channel)),
    };
    body["message"] = message;
    Ok(body)
}

fn check_text(channel: Channel, text: &str) -> Result<(), ProviderError> {
    let too_long = match channel {
        Channel::Instagram => text.len() > MAX_INSTAGRAM_TEXT_BYTES,
        _ => text.chars().count() > MAX_MESSENGER_TEXT,
    };
    if too_long {
        return Err(invalid(format!("text is too long for {channel}")));
    }
    Ok(())
}

/// `message.metadata`: "≤1000 chars, echoed in `message_echoes`" (shared/providers
/// DETAILS.md 4).
pub const MAX_METADATA: usize = 1000;

/// A `sender_action` (`mark_seen`, `typing_on`, `typing_off`): sent instead of a message,
/// one action a request.
pub fn sender_action(recipient: &str, action: &str) -> Value {
    json!({ "recipient": { "id": recipient }, "sender_action": action })
}

/// The message id in a send's answer: `{"recipient_id", "message_id"}`.
pub fn sent_id(answer: &Value) -> Option<String> {
    answer["message_id"].as_str().map(str::to_string)
}

/// One `entry[].messaging[]` event. Answers how many parts were skipped.
pub fn parse_event(e: &Value, events: &mut Vec<WebhookEvent>) -> usize {
    let Some(sender) = e["sender"]["id"].as_str() else { return 1 };
    let recipient = e["recipient"]["id"].as_str().unwrap_or_default();
    if let Some(m) = e.get("message") {
        // Echoes of what the Page sent. Ours carry our id as `metadata`: the echo is then
        // the `sent` receipt that ties Meta's id to our message, even when the send's own
        // answer was lost. Others (a person answering in the Page inbox) are not ours.
        if m["is_echo"].as_bool().unwrap_or(false) {
            let ours = m["metadata"].as_str().filter(|d| d.len() <= MAX_METADATA);
            if let (Some(mid), Some(id)) = (m["mid"].as_str(), ours) {
                events.push(WebhookEvent::Status(StatusReport {
                    message_id: Some(id.to_string()),
                    ..status_report(mid, MessageStatus::Sent, "echo")
                }));
            }
            return 0;
        }
        let Some(mid) = m["mid"].as_str() else { return 1 };
        events.push(match content(m) {
            Some(content) => WebhookEvent::Inbound(InboundMessage {
                provider_message_id: mid.to_string(),
                from: sender.to_string(),
                to: recipient.to_string(),
                content,
                reply_to: m["reply_to"]["mid"].as_str().map(str::to_string),
                references: Vec::new(),
                consent: None,
                conversation: None,
            }),
            // A shared post, a story mention, a template's fallback...: still the person's.
            None => WebhookEvent::Unreadable {
                provider_message_id: mid.to_string(),
                from: sender.to_string(),
                reason: format!(
                    "a message with {}, which omnigate cannot represent",
                    match m["attachments"][0]["type"].as_str() {
                        Some(kind) => format!("an attachment of type {kind:?}"),
                        None => "neither text nor an attachment".into(),
                    }
                ),
            },
        });
        return 0;
    }
    if let Some(d) = e.get("delivery") {
        for mid in d["mids"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            events.push(status(mid, MessageStatus::Delivered, "delivered"));
        }
        if let Some(watermark) = d["watermark"].as_i64() {
            events.push(WebhookEvent::Watermark {
                peer: sender.to_string(),
                status: MessageStatus::Delivered,
                up_to_ms: watermark,
            });
        }
        return 0;
    }
    if let Some(r) = e.get("read") {
        // Instagram names the message read; Messenger gives a watermark.
        if let Some(mid) = r["mid"].as_str() {
            events.push(status(mid, MessageStatus::Read, "read"));
            return 0;
        }
        return match r["watermark"].as_i64() {
            Some(w) => {
                events.push(WebhookEvent::Watermark {
                    peer: sender.to_string(),
                    status: MessageStatus::Read,
                    up_to_ms: w,
                });
                0
            }
            None => 1,
        };
    }
    // A tap on a postback button (a template's, the persistent menu's, Get Started): what
    // the person chose, as a quick reply's choice is.
    if let Some(p) = e.get("postback") {
        let (Some(payload), Some(ts)) = (p["payload"].as_str(), e["timestamp"].as_i64()) else {
            return 1;
        };
        let id =
            p["mid"].as_str().map_or_else(|| format!("postback:{sender}:{ts}"), str::to_string);
        events.push(WebhookEvent::Inbound(InboundMessage {
            provider_message_id: id,
            from: sender.to_string(),
            to: recipient.to_string(),
            content: Content::Choice(Choice {
                id: payload.to_string(),
                title: p["title"].as_str().unwrap_or_default().to_string(),
                description: String::new(),
            }),
            reply_to: None,
            references: Vec::new(),
            consent: None,
            conversation: None,
        }));
        return 0;
    }
    if let Some(r) = e.get("reaction") {
        let (Some(mid), Some(ts)) = (r["mid"].as_str(), e["timestamp"].as_i64()) else { return 1 };
        let emoji = match r["action"].as_str() {
            Some("unreact") => String::new(),
            _ => r["emoji"].as_str().unwrap_or("\u{2764}\u{fe0f}").to_string(),
        };
        events.push(WebhookEvent::Inbound(InboundMessage {
            // A reaction has no id of its own: the reacted message, the person and the time.
            provider_message_id: format!("{mid}:reaction:{sender}:{ts}"),
            from: sender.to_string(),
            to: recipient.to_string(),
            content: Content::Reaction(Reaction { provider_message_id: mid.to_string(), emoji }),
            reply_to: None,
            references: Vec::new(),
            consent: None,
            conversation: None,
        }));
        return 0;
    }
    1
}

fn status(mid: &str, status: MessageStatus, word: &str) -> WebhookEvent {
    WebhookEvent::Status(status_report(mid, status, word))
}

fn status_report(mid: &str, status: MessageStatus, word: &str) -> StatusReport {
    StatusReport {
        provider_message_id: mid.to_string(),
        status,
        provider_status: word.to_string(),
        error: None,
        message_id: None,
    }
}

/// A person's message as canonical content, when it has one.
fn content(m: &Value) -> Option<Content> {
    let content = if let Some(payload) = m["quick_reply"]["payload"].as_str() {
        Content::Choice(Choice {
            id: payload.to_string(),
            title: m["text"].as_str().unwrap_or_default().to_string(),
            description: String::new(),
        })
    } else if let Some(text) = m["text"].as_str() {
        Content::Text(Text { body: text.to_string(), preview_url: false })
    } else {
        let a = m["attachments"].as_array()?.first()?;
        let kind = match a["type"].as_str()? {
            "image" => MediaKind::Image,
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "file" => MediaKind::Document,
            _ => return None,
        };
        let extra_urls = m["attachments"]
            .as_array()?
            .iter()
            .skip(1)
            .filter_map(|a| a["payload"]["url"].as_str().map(str::to_string))
            .collect();
        Content::Media(Media {
            url: a["payload"]["url"].as_str()?.to_string(),
            kind,
            extra_urls,
            ..Media::default()
        })
    };
    Some(content)
}
