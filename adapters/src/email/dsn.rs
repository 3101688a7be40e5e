//! Delivery status notifications (RFC 3464): the `multipart/report` a mail server sends
//! back when it bounces a message (or, when asked, confirms delivery).

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// What a report says about one recipient of one of our messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The Message-ID of the message it reports on, without angle brackets.
    pub original_message_id: String,
    pub recipient: String,
    pub action: Action,
    /// The enhanced status code ("5.1.1").
    pub status: String,
    /// The remote server's own words, when it gave them.
    pub diagnostic: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

/// `None` when the message is not a delivery report; `Some(Err)` when it is one we cannot
/// read.
pub fn report(message: &Message<'_>) -> Option<Result<Report, String>> {
    is_report(message, "delivery-status").then(|| read(message))
}

/// Whether the mail is a `multipart/report` (RFC 6522) of `report_type`.
pub(super) fn is_report(message: &Message<'_>, report_type: &str) -> bool {
    message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct.attribute("report-type").is_some_and(|t| t.eq_ignore_ascii_case(report_type))
    })
}

fn read(message: &Message<'_>) -> Result<Report, String> {
    let mut status_text = None;
    let mut original = None;
    for part in &message.parts {
        let Some(kind) = kind_of(part) else { continue };
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                status_text = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            _ => original = original.or_else(|| returned_message_id(part, &kind)),
        }
    }
    let status_text = status_text.ok_or("delivery report without a delivery-status part")?;
    // The first group is about the message; each later one about a recipient.
    let groups = field_groups(&status_text);
    // A server that returns no headers still names our ENVID, which is our Message-ID
    // (RFC 3464 2.2.1; Postfix writes it back as it was given, not as xtext).
    let original_message_id = original
        .or_else(|| {
            let envid = field(groups.first()?, "original-envelope-id")?;
            Some(envid.trim_matches(['<', '>', ' ']).to_string()).filter(|id| !id.is_empty())
        })
        .ok_or("delivery report names no original Message-ID")?;
    let recipient = groups
        .iter()
        .skip(1)
        .find(|g| field(g, "action").is_some())
        .ok_or("delivery report without a recipient")?;
    let action = match field(recipient, "action").unwrap_or_default().to_ascii_lowercase().as_str()
    {
        "failed" => Action::Failed,
        "delayed" => Action::Delayed,
        "delivered" => Action::Delivered,
        "relayed" => Action::Relayed,
        "expanded" => Action::Expanded,
        other => return Err(format!("unknown delivery report action {other:?}")),
    };
    let typed = |name| {
        field(recipient, name)
            .map(|v| v.split_once(';').map(|(_, a)| a).unwrap_or(v).trim().to_string())
            .unwrap_or_default()
    };
    Ok(Report {
        original_message_id,
        recipient: typed("final-recipient"),
        action,
        status: field(recipient, "status")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        diagnostic: typed("diagnostic-code"),
    })
}

/// The Message-ID of the message a report part returns (`message/rfc822`, or only its
/// headers as `text/rfc822-headers`), given the part's lower-case `type/subtype`.
pub(super) fn returned_message_id(part: &MessagePart<'_>, kind: &str) -> Option<String> {
    match (kind, &part.body) {
        ("message/rfc822" | "message/global", PartType::Message(m)) => {
            m.message_id().map(str::to_string)
        }
        ("message/rfc822" | "message/global" | "text/rfc822-headers", _) => {
            // The part may end without the line break that ends its last header.
            let mut headers = part.contents().to_vec();
            headers.extend_from_slice(b"\r\n\r\n");
            MessageParser::default()
                .parse_headers(&headers)
                .and_then(|m| m.message_id().map(str::to_string))
        }
        _ => None,
    }
}

/// A part's lower-case `type/subtype`.
pub(super) fn kind_of(part: &MessagePart<'_>) -> Option<String> {
    let ct = part.content_type()?;
    Some(format!(
        "{}/{}",
        ct.ctype().to_ascii_lowercase(),
        ct.subtype().unwrap_or_default().to_ascii_lowercase()
    ))
}

pub(super) type Fields = Vec<(String, String)>;

/// Header-style groups separated by blank lines, with folded lines unfolded.
pub(super) fn field_groups(text: &str) -> Vec<Fields> {
    let mut groups = vec![Fields::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Fields::new());
            }
            continue;
        }
        let group = groups.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    groups
}

pub(super) fn field<'a>(group: &'a Fields, name: &str) -> Option<&'a str> {
    group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}
