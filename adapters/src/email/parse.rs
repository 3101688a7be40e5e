//! One fetched mail in canonical terms: a person's message, a delivery report on one of
//! ours, or something to skip. Mail is untrusted input: nothing here panics on it (see
//! the fuzz targets), and what cannot be read is an error naming why.

use std::collections::HashMap;

use mail_parser::{Message, MessageParser, MessagePartId, MimeHeaders, PartType};

use crate::contract::{InboundMessage, StatusReport};
use crate::model::{
    Attachment, Content, Email, MessageStatus, ProviderError, RESERVED_EMAIL_HEADERS,
};

use super::dsn::{self, Action};
use super::feedback::{self, Complaint};
use super::{bounce, plus, quote, smtp};

#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Message(InboundMessage),
    Report(StatusReport),
    /// A person complained about one of our messages (a spam report from their mailbox
    /// provider's feedback loop).
    Complaint(Complaint),
    /// Understood, and nothing to do (a delay notice, a copy of our own mail).
    Ignored(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("not a MIME message")]
    Unparsable,
    #[error("MIME too malformed to read")]
    Malformed,
    #[error("no sender address in From")]
    NoSender,
    #[error("unreadable report: {0}")]
    Report(String),
    #[error("message of {size} bytes is over the {limit} byte limit")]
    TooLarge { size: u64, limit: u64 },
}

/// Where a mail came from, for ids and references to what is not stored inline.
#[derive(Clone, Debug)]
pub struct Source<'a> {
    /// Our address (the mailbox owner).
    pub account_address: &'a str,
    /// The provider id when the mail has no Message-ID: unique per mailbox and UID.
    pub fallback_id: String,
    /// An IMAP URL of the mail (RFC 5092), for attachments kept by reference.
    pub url: String,
    pub max_inline_attachment_bytes: u64,
}

/// Reads one mail. A panic in the MIME parser on hostile input (mail-parser 0.11 asserts
/// on some broken multipart nesting in debug builds) is this mail's error, not the end of
/// the mailbox reader that called it.
pub fn parse(raw: &[u8], source: &Source<'_>) -> Result<Incoming, MailError> {
    std::panic::catch_unwind(|| read(raw, source)).unwrap_or(Err(MailError::Malformed))
}

fn read(raw: &[u8], source: &Source<'_>) -> Result<Incoming, MailError> {
    let message = MessageParser::default().parse(raw).ok_or(MailError::Unparsable)?;
    // A feedback loop may write as `postmaster`, whose other mail is read as a bounce.
    if let Some(complaint) = feedback::complaint(&message) {
        return complaint.map(Incoming::Complaint).map_err(MailError::Report);
    }
    if let Some(report) = dsn::report(&message).or_else(|| bounce::free_text(&message)) {
        return report.map(status_report).map_err(MailError::Report);
    }
    let sender = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| a.contains('@'))
        .ok_or(MailError::NoSender)?;
    if sender.eq_ignore_ascii_case(source.account_address) {
        return Ok(Incoming::Ignored("a copy of our own message".into()));
    }
    // Canonical text uses "\n" line breaks whatever the wire used.
    let text = message.body_text(0).map(|t| t.replace("\r\n", "\n")).unwrap_or_default();
    // A message with only HTML still has a text rendering from mail-parser; keep the HTML
    // only where the sender wrote some.
    let html = if message.html_body_count() > 0
        && message.html_part(0).is_some_and(|p| p.is_text_html())
    {
        message.body_html(0).map(|h| h.into_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    let in_reply_to = ids(message.in_reply_to());
    let mut references = ids(message.references());
    for id in &in_reply_to {
        if !references.contains(id) {
            references.push(id.clone());
        }
    }
    let email = Email {
        headers: other_headers(&message),
        subject: message.subject().unwrap_or_default().to_string(),
        reply_text: quote::reply_part(&text).to_string(),
        automatic: automatic(&message),
        attachments: attachments(&message, source),
        text,
        html,
    };
    Ok(Incoming::Message(InboundMessage {
        provider_message_id: message
            .message_id()
            .and_then(message_id)
            .unwrap_or_else(|| source.fallback_id.clone()),
        from: sender,
        to: source.account_address.to_string(),
        content: Content::Email(email),
        reply_to: in_reply_to.last().cloned(),
        references,
        consent: None,
        conversation: named_conversation(&message, source.account_address),
    }))
}

/// The conversation a plus-addressed recipient names ([`plus`]): as the person's client
/// wrote it (To, Cc), or as their server delivered it (Delivered-To, X-Original-To, which
/// also show a Bcc).
fn named_conversation(message: &Message<'_>, account: &str) -> Option<String> {
    let written = [message.to(), message.cc()]
        .into_iter()
        .flatten()
        .flat_map(|list| list.iter())
        .filter_map(|addr| addr.address());
    let delivered = message
        .headers_raw()
        .filter(|(name, _)| {
            name.eq_ignore_ascii_case("delivered-to") || name.eq_ignore_ascii_case("x-original-to")
        })
        .map(|(_, value)| value);
    written.chain(delivered).find_map(|recipient| plus::conversation_of(account, recipient))
}

/// Whether a program sent the mail, by what RFC 3834 section 2 says an automatic responder
/// must not answer: `Auto-Submitted` other than `no`, `Precedence: bulk|junk|list`, a
/// list's `List-Id`, a null return path; and the `X-Autoreply`/`X-Autorespond` that common
/// responders add.
fn automatic(message: &Message<'_>) -> bool {
    // Names and words compared in place: no copy of every header of every mail.
    message.headers_raw().any(|(name, value)| {
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        let value = value.trim();
        let word = value.split(|c: char| c == '(' || c == ';' || c.is_whitespace()).next();
        let word_is = |w: &str| word.is_some_and(|word| word.eq_ignore_ascii_case(w));
        if is("auto-submitted") {
            !word_is("no")
        } else if is("precedence") {
            ["bulk", "junk", "list"].into_iter().any(word_is)
        } else if is("return-path") {
            value == "<>"
        } else {
            ["list-id", "x-autoreply", "x-autorespond"].into_iter().any(is)
        }
    })
}

/// Headers worth keeping that the canonical fields do not carry (`Reply-To`,
/// `Auto-Submitted`, `List-*`, `X-*`), unfolded, first occurrence kept, within a budget.
/// Transport trace headers are left out: they are the servers' business, not the person's.
fn other_headers(message: &Message<'_>) -> std::collections::BTreeMap<String, String> {
    const BUDGET: usize = 16 * 1024;
    const TRACE: [&str; 6] = [
        "dkim-signature",
        "authentication-results",
        "delivered-to",
        "x-received",
        "received-spf",
        "x-original-to",
    ];
    let mut kept = std::collections::BTreeMap::new();
    let mut used = 0;
    for (name, raw) in message.headers_raw() {
        let lower = name.to_ascii_lowercase();
        if RESERVED_EMAIL_HEADERS.contains(&lower.as_str())
            || TRACE.contains(&lower.as_str())
            || lower.starts_with("arc-")
            || kept.contains_key(name)
        {
            continue;
        }
        let value = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        used += name.len() + value.len();
        if used > BUDGET {
            break;
        }
        kept.insert(name.to_string(), value);
    }
    kept
}

/// The message ids a header holds. A malformed header comes back from mail-parser as raw
/// text, line breaks and all; such ids are dropped, since they go into threading and into
/// the `References` of replies, where a line break would start a header of the sender's.
fn ids(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    let texts: Vec<&str> = match value {
        mail_parser::HeaderValue::Text(t) => vec![t.as_ref()],
        mail_parser::HeaderValue::TextList(list) => list.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    texts.into_iter().filter_map(message_id).collect()
}

/// An id as RFC 5322 3.6.4 allows it (no white space or control characters, and no longer
/// than a header line may be), or nothing.
fn message_id(text: &str) -> Option<String> {
    let well_formed = !text.is_empty()
        && text.len() <= 998
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    well_formed.then(|| text.to_string())
}

/// A leaf part's type and its bytes, decoded from their transfer encoding; `None` for a
/// multipart, which has no bytes of its own.
fn decoded<'a>(part: &'a mail_parser::MessagePart<'_>) -> Option<(String, &'a [u8])> {
    let data = match &part.body {
        PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
        PartType::Message(m) => m.raw_message(),
        PartType::Multipart(_) => return None,
    };
    let mime_type = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase();
    Some((mime_type, data))
}

/// A MIME entity (a part's header and body, as IMAP's `BODY[n.MIME]` and `BODY[n]` give
/// them) as its type and decoded bytes.
pub fn decode_entity(entity: &[u8]) -> Option<(String, Vec<u8>)> {
    let message = MessageParser::default().parse(entity)?;
    let (mime_type, data) = decoded(message.parts.first()?)?;
    Some((mime_type, data.to_vec()))
}

fn attachments(message: &Message<'_>, source: &Source<'_>) -> Vec<Attachment> {
    let sections = imap_sections(message);
    message
        .attachments
        .iter()
        .filter_map(|&id| {
            let part = message.parts.get(id as usize)?;
            let (mime_type, data) = decoded(part)?;
            let size = data.len() as u64;
            let inline = size <= source.max_inline_attachment_bytes;
            Some(Attachment {
                filename: part.attachment_name().unwrap_or_default().to_string(),
                mime_type,
                url: match (inline, sections.get(&id)) {
                    (true, _) => String::new(),
                    (false, Some(section)) => format!("{}/;SECTION={section}", source.url),
                    (false, None) => source.url.clone(),
                },
                data: if inline { data.to_vec() } else { Vec::new() },
                size,
            })
        })
        .collect()
}

/// The IMAP section number (RFC 3501 6.4.5) of each part, so a large attachment can be
/// fetched on its own later.
fn imap_sections(message: &Message<'_>) -> HashMap<MessagePartId, String> {
    let mut out = HashMap::new();
    let Some(PartType::Multipart(children)) = message.parts.first().map(|p| &p.body) else {
        out.insert(0, "1".to_string());
        return out;
    };
    let mut stack: Vec<(MessagePartId, String)> =
        children.iter().enumerate().map(|(i, &c)| (c, (i + 1).to_string())).collect();
    // Each part is visited once, also when a broken nesting lists a part under several
    // parents or under itself (mail-parser can build such a graph from malformed
    // boundaries: fuzzing found a cycle whose paths grew until memory ran out).
    while let Some((id, path)) = stack.pop() {
        if out.contains_key(&id) {
            continue;
        }
        if let Some(PartType::Multipart(children)) = message.parts.get(id as usize).map(|p| &p.body)
        {
            stack.extend(
                children.iter().enumerate().map(|(i, &c)| (c, format!("{path}.{}", i + 1))),
            );
        }
        out.insert(id, path);
    }
    out
}

fn status_report(report: dsn::Report) -> Incoming {
    let (status, word) = match report.action {
        Action::Failed => (MessageStatus::Failed, "failed"),
        Action::Delivered => (MessageStatus::Delivered, "delivered"),
        Action::Relayed => (MessageStatus::Delivered, "relayed"),
        Action::Delayed | Action::Expanded => {
            return Incoming::Ignored(format!(
                "delivery report: {:?} {}",
                report.action, report.status
            ));
        }
    };
    let error = (status == MessageStatus::Failed).then(|| ProviderError {
        code: smtp::permanent(&report.status),
        message: if report.diagnostic.is_empty() {
            format!("bounced for {}", report.recipient)
        } else {
            report.diagnostic.clone()
        },
        provider: "smtp".into(),
        provider_code: report.status.clone(),
        retryable: false,
    });
    Incoming::Report(StatusReport {
        provider_message_id: report.original_message_id,
        status,
        provider_status: format!("{word} {}", report.status).trim().to_string(),
        error,
        message_id: None,
    })
}
