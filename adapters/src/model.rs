//! The canonical message model: what every channel's messages are translated to and from.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Messenger,
    Instagram,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 5] =
        [Channel::Sms, Channel::Whatsapp, Channel::Messenger, Channel::Instagram, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Messenger => "messenger",
            Channel::Instagram => "instagram",
            Channel::Email => "email",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
    /// Ask the channel to render a preview of the first link (WhatsApp `preview_url`).
    #[serde(default)]
    pub preview_url: bool,
}

/// What a media item is; `Auto` lets the adapter infer it from the MIME type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    #[default]
    Auto,
    Image,
    Audio,
    Video,
    Document,
    Sticker,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Where the provider fetches it; empty when only `provider_media_id` is known.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub caption: String,
    /// Further items where the channel carries several in one message (MMS: ten in all).
    #[serde(default)]
    pub extra_urls: Vec<String>,
    #[serde(default)]
    pub kind: MediaKind,
    /// Shown for documents.
    #[serde(default)]
    pub filename: String,
    /// A provider's own media id (WhatsApp uploads, inbound media).
    #[serde(default)]
    pub provider_media_id: String,
}

impl Media {
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str())
            .filter(|u| !u.is_empty())
            .chain(self.extra_urls.iter().map(String::as_str))
    }

    /// How many items a provider can be asked for ([`crate::Sender::fetch_media`]): each
    /// URL, or else the one item a provider's media id names.
    pub fn item_count(&self) -> usize {
        match self.urls().count() {
            0 if !self.provider_media_id.is_empty() => 1,
            n => n,
        }
    }

    /// The kind, inferred from the MIME type when `Auto`.
    pub fn resolved_kind(&self) -> MediaKind {
        if self.kind != MediaKind::Auto {
            return self.kind;
        }
        match self.mime_type.split('/').next().unwrap_or_default() {
            "image" if self.mime_type == "image/webp" => MediaKind::Sticker,
            "image" => MediaKind::Image,
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => MediaKind::Document,
        }
    }
}

/// A pre-approved template (WhatsApp), the one kind allowed outside the service window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    /// A language and locale code, `en_US`.
    pub language: String,
    #[serde(default)]
    pub components: Vec<TemplateComponent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateComponent {
    /// `header`, `body` or `button`.
    pub kind: String,
    /// For buttons: `quick_reply` or `url`.
    #[serde(default)]
    pub sub_type: String,
    /// For buttons: the button's position.
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateParameter {
    Text(String),
    /// A quick-reply button's payload.
    Payload(String),
    Image {
        url: String,
    },
    Video {
        url: String,
    },
    Document {
        url: String,
        filename: String,
    },
    Currency {
        fallback: String,
        code: String,
        amount_1000: i64,
    },
    DateTime {
        fallback: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    #[serde(default)]
    pub header: String,
    pub body: String,
    #[serde(default)]
    pub footer: String,
    pub action: InteractiveAction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractiveAction {
    /// Up to three reply buttons.
    Buttons(Vec<Choice>),
    /// A menu opened by `button`, with titled sections of rows.
    List { button: String, sections: Vec<Section> },
    /// Chips under the message (Messenger, Instagram); `Choice.id` is the payload.
    QuickReplies(Vec<Choice>),
}

impl Default for InteractiveAction {
    fn default() -> Self {
        InteractiveAction::Buttons(Vec::new())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Choice>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The provider's id of the message reacted to.
    pub provider_message_id: String,
    /// Empty removes a reaction.
    pub emoji: String,
}

/// A file carried by an email: fetched from `url` at send time, or carried inline in
/// `data`. Inbound attachments over the inline limit keep only a reference in `url`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<u8>,
    /// The size in bytes, also when only a reference is kept.
    #[serde(default)]
    pub size: u64,
}

/// An email's own content. Other kinds sent on email are rendered into one of these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Empty: derived from the conversation ("Re: " its last subject) or the text.
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub html: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Inbound: the new part of `text`, with quoted earlier messages trimmed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply_text: String,
    /// Outbound: extra headers (`List-Unsubscribe`, `X-Campaign`); the ones the gateway
    /// sets itself are refused. Inbound: the headers the fields above do not carry.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Inbound: mail a program sent (an out-of-office reply, a list's mail): a program that
    /// answered it automatically could start a loop of replies (RFC 3834).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automatic: bool,
}

/// Headers the gateway writes itself (or the transport adds), which content may not set.
pub const RESERVED_EMAIL_HEADERS: [&str; 17] = [
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "return-path",
    "received",
    "user-agent",
];

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(Text),
    Media(Media),
    Template(Template),
    Interactive(Interactive),
    Location(Location),
    Reaction(Reaction),
    /// A person's answer to buttons, a list or quick replies (inbound).
    Choice(Choice),
    Email(Email),
}

impl Content {
    /// The kind's name, for errors that say which kind a channel cannot carry.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text(_) => "text",
            Content::Media(_) => "media",
            Content::Template(_) => "template",
            Content::Interactive(_) => "interactive",
            Content::Location(_) => "location",
            Content::Reaction(_) => "reaction",
            Content::Choice(_) => "choice",
            Content::Email(_) => "email",
        }
    }

    pub fn text(body: impl Into<String>) -> Content {
        Content::Text(Text { body: body.into(), preview_url: false })
    }

    /// A copy without the bytes of inline attachments (their name, type and size stay), or
    /// None when there are none to leave out.
    pub fn without_inline_data(&self) -> Option<Content> {
        let Content::Email(email) = self else { return None };
        if email.attachments.iter().all(|a| a.data.is_empty()) {
            return None;
        }
        let mut light = email.clone();
        for attachment in &mut light.attachments {
            attachment.size = attachment.size.max(attachment.data.len() as u64);
            attachment.data = Vec::new();
        }
        Some(Content::Email(light))
    }
}

/// An error for content a channel cannot carry, naming both.
pub fn unsupported(content: &Content, channel: Channel) -> ProviderError {
    ProviderError::gateway(
        ErrorCode::InvalidContent,
        format!("{} content cannot be sent on {channel}", content.kind()),
    )
}

/// Where a message is in its life. Statuses only move forward; see [`MessageStatus::can_advance_to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Accepted,
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Canceled,
    Expired,
    Received,
}

impl MessageStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MessageStatus::Read
                | MessageStatus::Failed
                | MessageStatus::Canceled
                | MessageStatus::Expired
                | MessageStatus::Received
        )
    }

    /// Position on the way to the handset; all terminal failures share the top rank.
    fn rank(self) -> u8 {
        match self {
            MessageStatus::Accepted => 0,
            MessageStatus::Queued => 1,
            MessageStatus::Sent => 2,
            MessageStatus::Delivered => 3,
            MessageStatus::Read => 4,
            MessageStatus::Failed
            | MessageStatus::Canceled
            | MessageStatus::Expired
            | MessageStatus::Received => 5,
        }
    }

    /// Callbacks arrive late, twice and out of order, so a status only moves forward: a late
    /// `sent` never overwrites `delivered`, nothing leaves a terminal status, and a failure
    /// cannot undo a delivery the handset already confirmed.
    pub fn can_advance_to(self, next: MessageStatus) -> bool {
        if self.is_terminal() || next == MessageStatus::Received {
            return false;
        }
        match next {
            MessageStatus::Failed | MessageStatus::Canceled | MessageStatus::Expired => {
                self.rank() <= MessageStatus::Sent.rank()
            }
            _ => next.rank() > self.rank(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Canceled => "canceled",
            MessageStatus::Expired => "expired",
            MessageStatus::Received => "received",
        }
    }
}

/// The canonical error classes; the provider's own code travels beside them verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRecipient,
    RecipientOptedOut,
    InvalidContent,
    Authentication,
    RateLimited,
    ProviderUnavailable,
    Undeliverable,
    Expired,
    Rejected,
    AttemptsExhausted,
    OutsideWindow,
}

/// An error as a provider reported it, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{provider} error {provider_code}: {message}")]
pub struct ProviderError {
    pub code: ErrorCode,
    pub message: String,
    /// "twilio", "meta", "smtp"; empty when the gateway itself raised it.
    pub provider: String,
    /// The provider's own code, verbatim ("21211"); empty when it gave none.
    pub provider_code: String,
    pub retryable: bool,
}

impl ProviderError {
    pub fn gateway(code: ErrorCode, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            provider: String::new(),
            provider_code: String::new(),
            retryable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;

    #[test]
    fn late_callbacks_never_move_a_status_back() {
        assert!(Sent.can_advance_to(Delivered));
        assert!(Delivered.can_advance_to(Read));
        assert!(!Delivered.can_advance_to(Sent));
        assert!(!Read.can_advance_to(Delivered));
        assert!(!Delivered.can_advance_to(Failed));
        assert!(Sent.can_advance_to(Failed));
        assert!(Queued.can_advance_to(Expired));
        assert!(!Failed.can_advance_to(Delivered));
        assert!(!Sent.can_advance_to(Sent));
        assert!(!Accepted.can_advance_to(Received));
    }
}
