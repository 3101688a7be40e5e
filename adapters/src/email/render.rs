//! Canonical content to MIME. Pure: attachments arrive already resolved to bytes, so this
//! is tested and fuzzed without a network.

use lettre::Message;
use std::collections::BTreeMap;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};

use crate::contract::Thread;
use crate::model::{
    Attachment, Channel, Content, ErrorCode, ProviderError, RESERVED_EMAIL_HEADERS, unsupported,
};

use super::config::EmailAccount;
use super::plus;
use super::unsubscribe::ONE_CLICK;

/// What an outbound message becomes before its attachments are fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
    pub headers: BTreeMap<String, String>,
}

/// A resolved attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub filename: String,
    pub mime_type: String,
    pub data: Vec<u8>,
}

/// The Message-ID of an outbound message, without angle brackets. Derived from the
/// gateway's id, so a retry carries the same id and receivers can drop the duplicate.
pub fn message_id_for(message_id: &str, account: &EmailAccount) -> String {
    format!("{message_id}@{}", account.domain())
}

/// The kinds email carries: its own, text, and media (as attachments under the caption).
pub fn body_of(content: &Content, thread: &Thread) -> Result<Body, ProviderError> {
    let body = match content {
        Content::Email(e) => Body {
            subject: e.subject.clone(),
            text: e.text.clone(),
            html: e.html.clone(),
            attachments: e.attachments.clone(),
            headers: e.headers.clone(),
        },
        Content::Text(t) => Body { text: t.body.clone(), ..Body::default() },
        Content::Media(m) => Body {
            text: m.caption.clone(),
            attachments: m
                .urls()
                .map(|url| Attachment {
                    url: url.to_string(),
                    mime_type: m.mime_type.clone(),
                    filename: m.filename.clone(),
                    ..Attachment::default()
                })
                .collect(),
            ..Body::default()
        },
        other => return Err(unsupported(other, Channel::Email)),
    };
    if let Some(reason) = body.headers.iter().find_map(|(name, value)| header_problem(name, value))
    {
        return Err(ProviderError::gateway(ErrorCode::InvalidContent, reason));
    }
    if body.text.is_empty() && body.html.is_empty() && body.attachments.is_empty() {
        return Err(ProviderError::gateway(
            ErrorCode::InvalidContent,
            "an email needs text, html or an attachment",
        ));
    }
    Ok(Body { subject: subject_for(&body.subject, thread, &body.text), ..body })
}

/// The subject as given; else a reply to the conversation's last subject; else the first
/// line of the text, shortened.
pub fn subject_for(explicit: &str, thread: &Thread, text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if !explicit.trim().is_empty() {
        return explicit.trim().to_string();
    }
    if !thread.subject.trim().is_empty() {
        return format!("Re: {}", strip_reply_prefixes(&thread.subject));
    }
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    if line.chars().count() <= MAX_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_CHARS).collect();
    // At a word boundary when there is one, so the subject does not end mid-word. The line
    // is trimmed, so what precedes its last space is never empty.
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

/// Why an extra header cannot be sent, if it cannot: a name that is not an RFC 5322 field
/// name, one the gateway sets itself, or a value with a line break (header injection).
pub fn header_problem(name: &str, value: &str) -> Option<String> {
    let valid_name = !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid_name {
        return Some(format!("email header name {name:?} is not a valid field name"));
    }
    if RESERVED_EMAIL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Some(format!("email header {name} is set by the gateway"));
    }
    if value.contains(['\r', '\n']) {
        return Some(format!("email header {name} must be one line"));
    }
    None
}

/// "Re: Re: AW: hello" -> "hello".
pub fn strip_reply_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    loop {
        let lower = s.get(..3).map(str::to_ascii_lowercase);
        match lower.as_deref() {
            Some("re:") | Some("aw:") | Some("sv:") => s = s[3..].trim_start(),
            _ => return s,
        }
    }
}

/// Builds the MIME message: text and/or html alternatives, attachments, our Message-ID,
/// and In-Reply-To/References from the thread so replies thread in the recipient's client.
pub fn compose(
    account: &EmailAccount,
    to: &str,
    message_id: &str,
    thread: &Thread,
    body: &Body,
    files: Vec<File>,
) -> Result<Message, ProviderError> {
    let invalid = |code, what: &str, e: &dyn std::fmt::Display| {
        ProviderError::gateway(code, format!("{what}: {e}"))
    };
    let from_address = account
        .address
        .parse()
        .map_err(|e| invalid(ErrorCode::Authentication, "our address is not valid", &e))?;
    let to_address =
        to.parse().map_err(|e| invalid(ErrorCode::InvalidRecipient, "invalid recipient", &e))?;
    let name = (!account.display_name.is_empty()).then(|| account.display_name.clone());
    let mut builder = Message::builder()
        .message_id(Some(format!("<{message_id}>")))
        .from(Mailbox::new(name.clone(), from_address))
        .to(Mailbox::new(None, to_address))
        .subject(body.subject.clone())
        .date_now()
        .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")).to_string());
    let mut headers: Vec<(String, String)> =
        body.headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
    if let Some(one_click) = &account.one_click_unsubscribe {
        if let Some((name, _)) = headers
            .iter()
            .find(|(name, _)| name.to_ascii_lowercase().starts_with("list-unsubscribe"))
        {
            let why = "the account sets it for one-click unsubscribe";
            return Err(invalid(ErrorCode::InvalidContent, &format!("email header {name}"), &why));
        }
        headers.push(("List-Unsubscribe".into(), format!("<{}>", one_click.link(to))));
        headers.push(("List-Unsubscribe-Post".into(), ONE_CLICK.into()));
    }
    for (name, value) in headers {
        // Names were checked by `body_of`; a name lettre still refuses is skipped loudly
        // rather than sent malformed.
        let Ok(header_name) = HeaderName::new_from_ascii(name.clone()) else {
            return Err(invalid(ErrorCode::InvalidContent, "invalid email header", &name));
        };
        builder = builder.raw_header(HeaderValue::new(header_name, value));
    }
    if let Some(parent) = thread.references.last() {
        builder = builder.in_reply_to(format!("<{parent}>")).references(references(thread));
    }
    // A Reply-To of the client's own is theirs to choose.
    let own_reply_to = body.headers.keys().any(|name| name.eq_ignore_ascii_case("reply-to"));
    if account.plus_address_replies
        && !own_reply_to
        && let Some(address) = plus::reply_address(&account.address, &thread.conversation_id)
            .and_then(|a| a.parse().ok())
    {
        builder = builder.reply_to(Mailbox::new(name, address));
    }
    let text_part = match (body.text.is_empty(), body.html.is_empty()) {
        (_, true) => Part::Single(SinglePart::plain(body.text.clone())),
        (true, false) => Part::Single(SinglePart::html(body.html.clone())),
        (false, false) => {
            Part::Multi(MultiPart::alternative_plain_html(body.text.clone(), body.html.clone()))
        }
    };
    let message = if files.is_empty() {
        match text_part {
            Part::Single(p) => builder.singlepart(p),
            Part::Multi(p) => builder.multipart(p),
        }
    } else {
        let mut mixed = match text_part {
            Part::Single(p) => MultiPart::mixed().singlepart(p),
            Part::Multi(p) => MultiPart::mixed().multipart(p),
        };
        for file in files {
            let content_type = ContentType::parse(&file.mime_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
            mixed =
                mixed.singlepart(MimeAttachment::new(file.filename).body(file.data, content_type));
        }
        builder.multipart(mixed)
    };
    message.map_err(|e| invalid(ErrorCode::InvalidContent, "cannot build the email", &e))
}

enum Part {
    Single(SinglePart),
    Multi(MultiPart),
}

/// Every earlier Message-ID, oldest first, bounded the way mail clients bound it: the first
/// (the thread's root) and the most recent ones.
fn references(thread: &Thread) -> String {
    const KEEP_RECENT: usize = 20;
    let refs = &thread.references;
    let recent = refs.len().saturating_sub(KEEP_RECENT);
    let mut ids: Vec<&String> = Vec::with_capacity(KEEP_RECENT + 1);
    if recent > 0 {
        ids.push(&refs[0]);
    }
    ids.extend(&refs[recent..]);
    ids.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_come_from_the_message_the_thread_or_the_text() {
        let none = Thread::default();
        let thread = Thread { subject: "RE: Re: Your order".into(), ..Thread::default() };
        assert_eq!(subject_for(" Hello ", &thread, "x"), "Hello");
        assert_eq!(subject_for("", &thread, "x"), "Re: Your order");
        assert_eq!(
            subject_for("", &none, "\n  Where is my parcel?\nthanks"),
            "Where is my parcel?"
        );
        // 60 characters end inside the ninth "parcel": the subject ends after the eighth.
        let long = "parcel ".repeat(30);
        assert_eq!(subject_for("", &none, &long), format!("{}…", ["parcel"; 8].join(" ")));
        let one_word = "x".repeat(70);
        assert_eq!(subject_for("", &none, &one_word), format!("{}…", "x".repeat(60)));
    }

    #[test]
    fn media_becomes_attachments_named_as_the_media_under_the_caption() {
        let media = crate::model::Media {
            url: "https://cdn.example.test/invoice.pdf".into(),
            mime_type: "application/pdf".into(),
            caption: "Your invoice".into(),
            filename: "invoice-42.pdf".into(),
            ..crate::model::Media::default()
        };
        let body = body_of(&Content::Media(media), &Thread::default()).expect("body");
        assert_eq!(body.text, "Your invoice");
        assert_eq!(body.subject, "Your invoice");
        let [a] = &body.attachments[..] else { panic!("{:?}", body.attachments) };
        assert_eq!(
            (a.url.as_str(), a.mime_type.as_str(), a.filename.as_str()),
            ("https://cdn.example.test/invoice.pdf", "application/pdf", "invoice-42.pdf")
        );
    }

    #[test]
    fn references_keep_the_root_and_the_recent_ones() {
        let refs: Vec<String> = (0..30).map(|i| format!("m{i}@x")).collect();
        let r = references(&Thread { references: refs, ..Thread::default() });
        assert!(r.starts_with("<m0@x> <m10@x>"), "{r}");
        assert!(r.ends_with("<m29@x>"));
        assert_eq!(r.split(' ').count(), 21);
        let short = references(&Thread {
            references: vec!["a@x".into(), "b@x".into()],
            ..Thread::default()
        });
        assert_eq!(short, "<a@x> <b@x>");
    }
}
