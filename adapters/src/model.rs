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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub url: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub caption: String,
    /// Further items where the channel carries several in one message (MMS: ten in all).
    #[serde(default)]
    pub extra_urls: Vec<String>,
}

impl Media {
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.extra_urls.iter().map(String::as_str))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(Text),
    Media(Media),
}

impl Content {
    /// The kind's name, for errors that say which kind a channel cannot carry.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text(_) => "text",
            Content::Media(_) => "media",
        }
    }
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
