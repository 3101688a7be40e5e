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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use omnigate_adapters::{Attachment, Location, Media, Reaction, Template, Text};

    use super::*;

    fn refused(result: Result<(), Status>) -> String {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_string()
    }

    #[test]
    fn text_is_refused_when_blank_or_over_its_limit_at_the_byte() {
        let text = |body: String| content(&Content::Text(Text { body, ..Text::default() }));
        assert!(refused(text(" \n".into())).contains("empty"));
        // The documented limits, by value: clients size their requests by them.
        let limits = (MAX_BODY_BYTES, MAX_METADATA_BYTES, MAX_EMAIL_BODY_BYTES);
        assert_eq!(limits, (65_536, 8_192, 1_048_576));
        assert!(text("x".repeat(MAX_BODY_BYTES)).is_ok());
        assert!(refused(text("x".repeat(MAX_BODY_BYTES + 1))).contains("bytes"));
    }

    #[test]
    fn media_needs_a_web_url_or_a_provider_id_for_every_item() {
        let media = |url: &str, extra: &[&str], id: &str| {
            content(&Content::Media(Media {
                url: url.into(),
                extra_urls: extra.iter().map(|u| u.to_string()).collect(),
                provider_media_id: id.into(),
                ..Media::default()
            }))
        };
        assert!(
            media("https://cdn.example.test/a.png", &["http://cdn.example.test/b"], "").is_ok()
        );
        assert!(media("", &[], "1013859600285441").is_ok());
        assert!(refused(media("", &[], "")).contains("url or a provider_media_id"));
        let ftp = refused(media("https://a.test/x", &["ftp://a.test/y"], ""));
        assert!(ftp.contains("ftp://a.test/y"), "the item named: {ftp}");
        assert!(refused(media("file:///etc/passwd", &[], "")).contains("not an http(s) URL"));
    }

    #[test]
    fn locations_stay_on_the_globe_edges_included() {
        let at = |latitude: f64, longitude: f64| {
            content(&Content::Location(Location { latitude, longitude, ..Location::default() }))
        };
        assert!(at(90.0, -180.0).is_ok() && at(-90.0, 180.0).is_ok());
        for (lat, lon) in [(90.5, 0.0), (0.0, -180.5), (f64::NAN, 0.0), (0.0, f64::INFINITY)] {
            assert!(refused(at(lat, lon)).contains("latitude"), "{lat} {lon}");
        }
    }

    #[test]
    fn templates_reactions_and_choices_say_what_they_miss() {
        let template = |name: &str, language: &str| {
            content(&Content::Template(Template {
                name: name.into(),
                language: language.into(),
                ..Template::default()
            }))
        };
        assert!(template("order_update", "en_US").is_ok());
        assert!(refused(template("", "en_US")).contains("name and a language"));
        assert!(refused(template("order_update", "")).contains("name and a language"));
        let reaction = |id: &str| {
            content(&Content::Reaction(Reaction {
                provider_message_id: id.into(),
                emoji: "👍".into(),
            }))
        };
        assert!(reaction("wamid.X").is_ok());
        assert!(refused(reaction("")).contains("message_id"));
        let interactive = |body: &str| {
            content(&Content::Interactive(omnigate_adapters::Interactive {
                body: body.into(),
                ..omnigate_adapters::Interactive::default()
            }))
        };
        assert!(interactive("Pick a slot").is_ok());
        assert!(refused(interactive(" ")).contains("interactive.body is empty"));
        let choice = Content::Choice(omnigate_adapters::Choice::default());
        assert!(refused(content(&choice)).contains("cannot be sent"));
    }

    #[test]
    fn emails_are_checked_field_by_field() {
        let ok =
            Email { subject: "Your order".into(), text: "Shipped.".into(), ..Email::default() };
        let check = |e: &Email| content(&Content::Email(e.clone()));
        assert!(check(&ok).is_ok());
        let only_html = Email { text: String::new(), html: "<p>Shipped</p>".into(), ..ok.clone() };
        assert!(check(&only_html).is_ok());
        assert!(refused(check(&Email { text: " ".into(), ..ok.clone() })).contains("text, html"));
        let injected = Email { subject: "Hi\r\nBcc: x@y.test".into(), ..ok.clone() };
        assert!(refused(check(&injected)).contains("one line"));
        let at_limit = Email { subject: "s".repeat(MAX_SUBJECT_CHARS), ..ok.clone() };
        assert!(check(&at_limit).is_ok());
        let long = Email { subject: "s".repeat(MAX_SUBJECT_CHARS + 1), ..ok.clone() };
        assert!(refused(check(&long)).contains("subject is over"));
        let half = MAX_EMAIL_BODY_BYTES / 2;
        let full = Email { text: "t".repeat(half), html: "h".repeat(half), ..ok.clone() };
        assert!(check(&full).is_ok());
        let over = Email { html: "h".repeat(half + 1), ..full };
        assert!(refused(check(&over)).contains("text and html are over"));
        let headers = |n: usize| -> BTreeMap<String, String> {
            (0..n).map(|i| (format!("X-H{i}"), "v".to_string())).collect()
        };
        assert!(check(&Email { headers: headers(MAX_EMAIL_HEADERS), ..ok.clone() }).is_ok());
        let many = Email { headers: headers(MAX_EMAIL_HEADERS + 1), ..ok.clone() };
        assert!(refused(check(&many)).contains("entries"));
        let bcc = Email { headers: [("Bcc".into(), "x@y.test".into())].into(), ..ok.clone() };
        assert!(refused(check(&bcc)).starts_with("content.email.headers: "));
    }

    #[test]
    fn each_email_attachment_is_a_url_or_data_with_a_plain_name() {
        let with = |a: Attachment| {
            content(&Content::Email(Email {
                text: "t".into(),
                attachments: vec![a],
                ..Email::default()
            }))
        };
        let data =
            Attachment { filename: "a.txt".into(), data: b"x".to_vec(), ..Attachment::default() };
        assert!(with(data.clone()).is_ok());
        let linked =
            Attachment { url: "https://a.test/x.pdf".into(), data: Vec::new(), ..data.clone() };
        assert!(with(linked.clone()).is_ok());
        assert!(with(Attachment { url: "http://a.test/x".into(), ..linked.clone() }).is_ok());
        for (bad, why) in [
            (Attachment { data: Vec::new(), ..data.clone() }, "needs a url or data"),
            (Attachment { url: "https://a.test/x".into(), ..data.clone() }, "both a url and data"),
            (Attachment { url: "ftp://a.test/x".into(), ..linked.clone() }, "not an http(s) URL"),
            (Attachment { filename: "../etc/passwd".into(), ..data.clone() }, "plain file name"),
            (Attachment { filename: "a\r\nb".into(), ..data.clone() }, "plain file name"),
            (Attachment { filename: "a\\b".into(), ..data.clone() }, "plain file name"),
            (Attachment { mime_type: "pdf".into(), ..data.clone() }, "type/subtype"),
        ] {
            let reason = refused(with(bad));
            assert!(
                reason.starts_with("content.email.attachments[0]") && reason.contains(why),
                "{reason}"
            );
        }
        assert!(with(Attachment { mime_type: "application/pdf".into(), ..data }).is_ok());
    }

    #[test]
    fn idempotency_keys_and_metadata_are_bounded_at_their_limits() {
        assert!(idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY)).is_ok());
        assert!(refused(idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1))).contains("bytes"));
        let entries = |n: usize, value: usize| -> BTreeMap<String, String> {
            (0..n).map(|i| (format!("{i:02}"), "v".repeat(value))).collect()
        };
        assert!(metadata(entries(MAX_METADATA_ENTRIES, 1).iter()).is_ok());
        let many = entries(MAX_METADATA_ENTRIES + 1, 1);
        assert!(refused(metadata(many.iter())).contains("entries"));
        // Two-character keys: 8 entries of 1022-byte values make 8 KiB exactly.
        let exact = entries(8, MAX_METADATA_BYTES / 8 - 2);
        assert!(metadata(exact.iter()).is_ok());
        let mut over = exact;
        over.insert("xx".into(), String::new());
        assert!(refused(metadata(over.iter())).contains("bytes"));
    }

    #[test]
    fn send_at_is_now_when_past_and_at_most_the_longest_ttl_ahead() {
        let now = 1_700_000_000_000;
        let max = MAX_TTL.as_millis() as i64;
        assert_eq!(send_at(None, now).expect("now"), None);
        assert_eq!(send_at(Some(now - 1), now).expect("past"), None);
        assert_eq!(send_at(Some(now), now).expect("this instant"), None);
        assert_eq!(send_at(Some(now + 1), now).expect("later"), Some(now + 1));
        assert_eq!(send_at(Some(now + max), now).expect("the edge"), Some(now + max));
        let status = send_at(Some(now + max + 1), now).expect_err("too far");
        assert!(status.message().contains("30 days"), "{status:?}");
    }
}
