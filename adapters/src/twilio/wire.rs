//! Twilio's wire format: the Messages.json form fields we send, the JSON it answers, and its
//! status words. Field names follow `twilio_api_v2010.json` (CreateMessageRequest,
//! `api.v2010.account.message`).

use serde::{Deserialize, Serialize};

use crate::model::MessageStatus;

/// Twilio's own queue drops messages older than this (`ValidityPeriod`, 1..=36000 s).
pub const MAX_VALIDITY_PERIOD_SECS: u64 = 36_000;
/// `MediaUrl` may repeat up to ten times.
pub const MAX_MEDIA_URLS: usize = 10;
/// `Body` holds at most 1600 characters (error 21617 beyond).
pub const MAX_BODY_CHARS: usize = 1600;

/// The 201 answer to a create, and the resource a fetch returns; only what we read.
#[derive(Debug, Deserialize)]
pub struct MessageResource {
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
    // What a lookup after an unsure send compares.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub num_media: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
    /// RFC 2822, in GMT: `Thu, 24 Aug 2023 05:01:45 +0000`.
    #[serde(default)]
    pub date_created: Option<String>,
}

/// A page of `GET .../Messages.json`.
#[derive(Debug, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<MessageResource>,
}

/// Twilio's `date_created` and the like: RFC 2822 in GMT.
pub fn parse_date(value: &str) -> Option<std::time::SystemTime> {
    let gmt = value.strip_suffix("+0000")?;
    httpdate::parse_http_date(&format!("{gmt}GMT")).ok()
}

/// The v2010 error body: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub more_info: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
}

/// Twilio's status words (the spec's `message_enum_status`) to canonical statuses. Twilio
/// holding the message in its own queue is SENT for us: the provider has it.
pub fn status_from_twilio(word: &str) -> Option<MessageStatus> {
    Some(match word {
        "accepted" | "scheduled" | "queued" | "sending" | "sent" => MessageStatus::Sent,
        "delivered" | "partially_delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" | "undelivered" => MessageStatus::Failed,
        "canceled" => MessageStatus::Canceled,
        "receiving" | "received" => MessageStatus::Received,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::twilio::tests_spec::spec;

    #[test]
    fn every_status_word_in_the_spec_maps() {
        let spec = spec();
        let words = spec["components"]["schemas"]["message_enum_status"]["enum"]
            .as_array()
            .expect("message_enum_status has an enum");
        assert_eq!(words.len(), 13);
        for word in words {
            let word = word.as_str().expect("enum values are strings");
            assert!(status_from_twilio(word).is_some(), "unmapped status {word}");
        }
        assert_eq!(status_from_twilio("undelivered"), Some(MessageStatus::Failed));
        assert_eq!(status_from_twilio("bogus"), None);
    }
}
