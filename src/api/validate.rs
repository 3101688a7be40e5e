//! Checks on requests, so that bad input fails at the door with a reason and never reaches a
//! provider. Each check names the field it rejects.

use omnigate_adapters::email::render;
use omnigate_adapters::{Content, Email};
use tonic::Status;

use crate::config::MAX_TTL;
use crate::model::Millis;

pub const MAX_IDEMPOTENCY_KEY: usize = 256;
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn content(content: &Content) -> Result<(), Status> {
    let bad = |reason: String| Err(Status::invalid_argument(reason));
    match content {
        Content::Text(t) if t.body.trim().is_empty() => bad("content.text.body is empty".into()),
        Content::Text(t) if t.body.len() > MAX_BODY_BYTES => {
            bad(format!("content.text.body is over {MAX_BODY_BYTES} bytes"))
        }
        Content::Text(_) => Ok(()),
        Content::Media(m) => {
            if m.url.is_empty() && m.provider_media_id.is_empty() {
                return bad("content.media needs a url or a provider_media_id".into());
            }
            match m.urls().find(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
                Some(url) => bad(format!("content.media url {url:?} is not an http(s) URL")),
                None => Ok(()),
            }
        }
        Content::Template(t) if t.name.is_empty() || t.language.is_empty() => {
            bad("content.template needs a name and a language".into())
        }
        Content::Template(_) => Ok(()),
        Content::Interactive(i) if i.body.trim().is_empty() => {
            bad("content.interactive.body is empty".into())
        }
        Content::Interactive(_) => Ok(()),
        Content::Location(l)
            if !(l.latitude.is_finite() && l.longitude.is_finite())
                || l.latitude.abs() > 90.0
                || l.longitude.abs() > 180.0 =>
        {
            bad("content.location needs a latitude in [-90, 90] and a longitude in [-180, 180]"
                .into())
        }
        Content::Location(_) => Ok(()),
        Content::Reaction(r) if r.provider_message_id.is_empty() => {
            bad("content.reaction.message_id is required".into())
        }
        Content::Reaction(_) => Ok(()),
        Content::Choice(_) => bad("content.choice cannot be sent".into()),
        Content::Email(e) => email(e),
    }
}

/// Text and HTML of one email together.
pub const MAX_EMAIL_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_EMAIL_HEADERS: usize = 32;
/// RFC 5322's line limit, which a subject header must fit in.
pub const MAX_SUBJECT_CHARS: usize = 900;

fn email(e: &Email) -> Result<(), Status> {
    let bad = |reason: String| Err(Status::invalid_argument(reason));
    if e.text.trim().is_empty() && e.html.trim().is_empty() && e.attachments.is_empty() {
        return bad("content.email needs text, html or an attachment".into());
    }
    // A line break in a header value would let a client inject headers.
    if e.subject.contains(['\r', '\n']) {
        return bad("content.email.subject must be one line".into());
    }
    if e.subject.chars().count() > MAX_SUBJECT_CHARS {
        return bad(format!("content.email.subject is over {MAX_SUBJECT_CHARS} characters"));
    }
    if e.text.len() + e.html.len() > MAX_EMAIL_BODY_BYTES {
        return bad(format!("content.email text and html are over {MAX_EMAIL_BODY_BYTES} bytes"));
    }
    if e.headers.len() > MAX_EMAIL_HEADERS {
        return bad(format!("content.email.headers has over {MAX_EMAIL_HEADERS} entries"));
    }
    if let Some(reason) = e.headers.iter().find_map(|(k, v)| render::header_problem(k, v)) {
        return bad(format!("content.email.headers: {reason}"));
    }
    for (i, a) in e.attachments.iter().enumerate() {
        let field = format!("content.email.attachments[{i}]");
        match (a.url.is_empty(), a.data.is_empty()) {
            (true, true) => return bad(format!("{field} needs a url or data")),
            (false, false) => return bad(format!("{field} has both a url and data")),
            (false, true) if !(a.url.starts_with("https://") || a.url.starts_with("http://")) => {
                return bad(format!("{field}.url {:?} is not an http(s) URL", a.url));
            }
            _ => {}
        }
        if a.filename.contains(['\r', '\n', '/', '\\']) {
            return bad(format!("{field}.filename must be a plain file name"));
        }
        if !a.mime_type.is_empty() && !a.mime_type.contains('/') {
            return bad(format!("{field}.mime_type {:?} is not type/subtype", a.mime_type));
        }
    }
    Ok(())
}

pub fn idempotency_key(key: &str) -> Result<(), Status> {
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Status::invalid_argument(format!(
            "idempotency_key is over {MAX_IDEMPOTENCY_KEY} bytes"
        )));
    }
    Ok(())
}

/// When a message may go: `None` for at once (also for a time already past), else a time
/// at most the longest TTL ahead, since the outbox holds it until then.
pub fn send_at(at: Option<Millis>, now: Millis) -> Result<Option<Millis>, Status> {
    match at {
        Some(at) if at > now.saturating_add(MAX_TTL.as_millis() as i64) => {
            Err(Status::invalid_argument(format!(
                "send_at is more than {} days ahead",
                MAX_TTL.as_secs() / 86_400
            )))
        }
        Some(at) if at > now => Ok(Some(at)),
        _ => Ok(None),
    }
}

pub fn metadata<'a>(
    entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), Status> {
    if entries.len() > MAX_METADATA_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "metadata has over {MAX_METADATA_ENTRIES} entries"
        )));
    }
    let bytes: usize = entries.map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(Status::invalid_argument(format!(
            "metadata is over {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}
