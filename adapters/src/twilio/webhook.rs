//! Status callbacks and inbound messages, verified with `X-Twilio-Signature` and parsed from
//! their form-encoded bodies. Unknown parameters are kept for the signature and ignored
//! otherwise, since Twilio adds parameters without notice.

use bytes::Bytes;

use crate::contract::{
    Consent, InboundMessage, Parsed, StatusReport, WebhookAck, WebhookError, WebhookEvent,
    WebhookHandler, WebhookRequest,
};
use crate::model::{Content, Media};

use super::{errors, signature, wire};

/// Empty TwiML: acknowledges an inbound message without replying to it.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

pub struct TwilioWebhooks {
    auth_token: String,
}

impl TwilioWebhooks {
    pub fn new(auth_token: impl Into<String>) -> Self {
        TwilioWebhooks { auth_token: auth_token.into() }
    }
}

impl WebhookHandler for TwilioWebhooks {
    fn handle(&self, request: &WebhookRequest) -> Result<Parsed, WebhookError> {
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body)
            .map_err(|e| WebhookError::Malformed(format!("form body: {e}")))?;
        let signature = request
            .header("x-twilio-signature")
            .ok_or(WebhookError::Signature("missing X-Twilio-Signature"))?;
        if !signature::verify(&self.auth_token, &request.public_url, &params, signature) {
            return Err(WebhookError::Signature("X-Twilio-Signature does not match"));
        }
        let event = match request.hook.as_str() {
            "status" => WebhookEvent::Status(parse_status(&params)?),
            "inbound" => WebhookEvent::Inbound(parse_inbound(&params)?),
            other => return Err(WebhookError::UnknownHook(other.to_string())),
        };
        let ack = WebhookAck {
            content_type: "text/xml",
            body: Bytes::from_static(EMPTY_TWIML.as_bytes()),
        };
        Ok(Parsed { events: vec![event], ack, ignored: 0 })
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, WebhookError> {
    param(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| WebhookError::Malformed(format!("missing {name}")))
}

fn parse_status(params: &[(String, String)]) -> Result<StatusReport, WebhookError> {
    let sid = required(params, "MessageSid")?;
    let word = param(params, "MessageStatus")
        .or_else(|| param(params, "SmsStatus"))
        .ok_or_else(|| WebhookError::Malformed("missing MessageStatus".into()))?;
    let status = wire::status_from_twilio(word)
        .ok_or_else(|| WebhookError::Malformed(format!("unknown MessageStatus {word:?}")))?;
    let error = matches!(word, "failed" | "undelivered")
        .then(|| errors::callback_error(param(params, "ErrorCode"), word));
    Ok(StatusReport {
        provider_message_id: sid.to_string(),
        status,
        provider_status: word.to_string(),
        error,
        message_id: None,
    })
}

fn parse_inbound(params: &[(String, String)]) -> Result<InboundMessage, WebhookError> {
    let sid = required(params, "MessageSid")?;
    let from = required(params, "From")?;
    let to = required(params, "To")?;
    let body = param(params, "Body").unwrap_or_default();
    let num_media: usize = param(params, "NumMedia")
        .unwrap_or("0")
        .parse()
        .map_err(|_| WebhookError::Malformed("NumMedia is not a number".into()))?;
    let content = if num_media == 0 {
        Content::text(body)
    } else {
        let mut urls = (0..num_media.min(wire::MAX_MEDIA_URLS))
            .filter_map(|i| param(params, &format!("MediaUrl{i}")).map(str::to_string));
        let url = urls
            .next()
            .ok_or_else(|| WebhookError::Malformed("NumMedia > 0 without MediaUrl0".into()))?;
        Content::Media(Media {
            url,
            mime_type: param(params, "MediaContentType0").unwrap_or_default().to_string(),
            caption: body.to_string(),
            extra_urls: urls.collect(),
            ..Media::default()
        })
    };
    Ok(InboundMessage {
        provider_message_id: sid.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        content,
        reply_to: None,
        references: Vec::new(),
        consent: consent(param(params, "OptOutType"), body),
        conversation: None,
    })
}

/// Twilio answers `STOP` and `START` itself and bars the sender in between, then posts
/// the message anyway: with `OptOutType` where Advanced Opt-Out is on (which also knows an
/// account's own keywords), else the default keywords, as the whole body, tell.
fn consent(opt_out_type: Option<&str>, body: &str) -> Option<Consent> {
    let (word, out, in_): (&str, &[&str], &[&str]) = match opt_out_type {
        Some(kind) => (kind, &["STOP"], &["START"]),
        None => (
            body,
            &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"],
            &["START", "YES", "UNSTOP"],
        ),
    };
    let said = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(word.trim()));
    if said(out) {
        Some(Consent::OptedOut)
    } else if said(in_) {
        Some(Consent::OptedIn)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ErrorCode, MessageStatus};
    use std::collections::BTreeMap;

    const URL: &str = "https://gw.example.com/webhooks/twilio/main/status";

    fn request(hook: &str, params: &[(&str, &str)], token: &str) -> WebhookRequest {
        let owned: Vec<(String, String)> =
            params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut headers = BTreeMap::new();
        headers.insert("x-twilio-signature".into(), signature::sign(token, URL, &owned));
        WebhookRequest {
            public_url: URL.into(),
            hook: hook.into(),
            headers,
            body: serde_urlencoded::to_string(&owned).expect("form").into(),
        }
    }

    #[test]
    fn undelivered_callback_keeps_the_error_code() {
        let h = TwilioWebhooks::new("tok");
        let req = request(
            "status",
            &[
                ("MessageSid", "SM0123"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
                ("NewParam", "x"),
            ],
            "tok",
        );
        let Parsed { events, ack, .. } = h.handle(&req).expect("valid");
        let WebhookEvent::Status(s) = &events[0] else { panic!("not a status") };
        assert_eq!(s.status, MessageStatus::Failed);
        let e = s.error.as_ref().expect("error");
        assert_eq!((e.code, e.provider_code.as_str()), (ErrorCode::Undeliverable, "30003"));
        assert_eq!(ack.content_type, "text/xml");
    }

    #[test]
    fn wrong_token_and_missing_fields_are_rejected() {
        let h = TwilioWebhooks::new("tok");
        let forged =
            request("status", &[("MessageSid", "SM1"), ("MessageStatus", "delivered")], "other");
        assert!(matches!(h.handle(&forged), Err(WebhookError::Signature(_))));
        let incomplete = request("status", &[("MessageStatus", "delivered")], "tok");
        assert!(matches!(h.handle(&incomplete), Err(WebhookError::Malformed(_))));
    }

    #[test]
    fn inbound_mms_becomes_media() {
        let h = TwilioWebhooks::new("tok");
        let req = request(
            "inbound",
            &[
                ("MessageSid", "MM1"),
                ("From", "+15551230000"),
                ("To", "+15005550006"),
                ("Body", "look"),
                ("NumMedia", "2"),
                ("MediaUrl0", "https://a/1"),
                ("MediaContentType0", "image/jpeg"),
                ("MediaUrl1", "https://a/2"),
            ],
            "tok",
        );
        let events = h.handle(&req).expect("valid").events;
        let WebhookEvent::Inbound(m) = &events[0] else { panic!("not inbound") };
        let Content::Media(media) = &m.content else { panic!("not media") };
        assert_eq!(media.urls().collect::<Vec<_>>(), ["https://a/1", "https://a/2"]);
        // DETAILS.md 1.3: `MediaContentType{N}` beside each `MediaUrl{N}`.
        assert_eq!(media.mime_type, "image/jpeg");
        assert_eq!(media.caption, "look");
    }

    // shared/providers/DETAILS.md 1.3: "carriers and Twilio handle STOP/START/HELP keywords
    // (defaults: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT; START/YES/UNSTOP). The
    // inbound webhook is still sent"; README: `OptOutType` (STOP, START, HELP) where
    // advanced opt-out is on.
    #[test]
    fn opt_out_keywords_and_opt_out_type_carry_consent() {
        let h = TwilioWebhooks::new("tok");
        let consent = |extra: &[(&str, &str)]| {
            let mut params =
                vec![("MessageSid", "SM9"), ("From", "+15551230000"), ("To", "+15005550006")];
            params.extend_from_slice(extra);
            let events = h.handle(&request("inbound", &params, "tok")).expect("valid").events;
            let WebhookEvent::Inbound(m) = &events[0] else { panic!("not inbound") };
            m.consent
        };
        assert_eq!(consent(&[("Body", " stop ")]), Some(Consent::OptedOut));
        assert_eq!(consent(&[("Body", "Unsubscribe")]), Some(Consent::OptedOut));
        assert_eq!(consent(&[("Body", "UNSTOP")]), Some(Consent::OptedIn));
        assert_eq!(consent(&[("Body", "please stop texting me")]), None, "only the whole body");
        assert_eq!(consent(&[("Body", "HELP")]), None);
        // Advanced Opt-Out names the kind, whatever the account's own keyword was.
        assert_eq!(consent(&[("Body", "arrêt"), ("OptOutType", "STOP")]), Some(Consent::OptedOut));
        assert_eq!(consent(&[("Body", "go"), ("OptOutType", "START")]), Some(Consent::OptedIn));
        assert_eq!(consent(&[("Body", "STOP"), ("OptOutType", "HELP")]), None);
    }

    /// Fuzz-style property: whatever a signed body holds, parsing answers Ok or a clear
    /// error and never panics.
    #[test]
    fn arbitrary_signed_bodies_never_panic() {
        let h = TwilioWebhooks::new("tok");
        let names = [
            "MessageSid",
            "MessageStatus",
            "SmsStatus",
            "ErrorCode",
            "From",
            "To",
            "Body",
            "NumMedia",
            "MediaUrl0",
            "MediaUrl1",
            "MediaContentType0",
            "OptOutType",
            "x",
        ];
        let values = [
            "",
            "SM1",
            "delivered",
            "failed",
            "30003",
            "-1",
            "99999999999999999999",
            "2",
            "\u{0}",
            "é",
            "https://a/b",
            "%ZZ",
            "STOP",
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for round in 0..5_000 {
            let hook = if round % 2 == 0 { "status" } else { "inbound" };
            let pairs: Vec<(&str, &str)> = (0..next(8))
                .map(|_| (names[next(names.len())], values[next(values.len())]))
                .collect();
            let _ = h.handle(&request(hook, &pairs, "tok"));
            let raw: Vec<u8> = (0..next(64)).map(|_| next(256) as u8).collect();
            let mut req = request(hook, &[], "tok");
            req.body = raw.into();
            let _ = h.handle(&req);
        }
    }
}
