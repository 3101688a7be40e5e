//! Delivery status notifications (RFC 3464): the `multipart/report` a mail server sends
//! back when it bounces a message (or, when asked, confirms delivery).

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

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
    let is_report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    if !is_report {
        return None;
    }
    Some(read(message))
}

fn read(message: &Message<'_>) -> Result<Report, String> {
    let mut status_text = None;
    let mut original = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else { continue };
        let kind = format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase()
        );
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                status_text = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            "message/rfc822" | "message/global" | "text/rfc822-headers" => {
                let id = match &part.body {
                    PartType::Message(m) => m.message_id().map(str::to_string),
                    _ => {
                        // The part may end without the line break that ends its last header.
                        let mut headers = part.contents().to_vec();
                        headers.extend_from_slice(b"\r\n\r\n");
                        MessageParser::default()
                            .parse_headers(&headers)
                            .and_then(|m| m.message_id().map(str::to_string))
                    }
                };
                original = original.or(id);
            }
            _ => {}
        }
    }
    let status_text = status_text.ok_or("delivery report without a delivery-status part")?;
    let original_message_id = original.ok_or("delivery report names no original Message-ID")?;
    // The first group is about the message; each later one about a recipient.
    let groups = field_groups(&status_text);
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

type Fields = Vec<(String, String)>;

/// Header-style groups separated by blank lines, with folded lines unfolded.
fn field_groups(text: &str) -> Vec<Fields> {
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

fn field<'a>(group: &'a Fields, name: &str) -> Option<&'a str> {
    group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}
