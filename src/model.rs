//! The gateway's own records: stored messages, status history and events. Content,
//! statuses and errors are the adapters' canonical model.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use omnigate_adapters::{Channel, Content, MessageStatus, ProviderError};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Lower-case hexadecimal, for digests in ids and fingerprints.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A new id: the prefix, then a UUIDv7, whose first 48 bits are the time it was made in
/// Unix milliseconds, in lowercase hex; so ids sort by the time they were made.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The bound below which sort exactly the ids `new_id(prefix)` made before `at`, so that
/// "made before" is a range on an id's index.
pub fn ids_before(prefix: &str, at: Millis) -> String {
    format!("{prefix}_{:012x}", at.clamp(0, (1 << 48) - 1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: MessageStatus,
    pub at: Millis,
    /// The provider's word, when a callback caused the change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub channel: Channel,
    pub direction: Direction,
    pub account: String,
    pub from: String,
    pub to: String,
    pub content: Content,
    pub status: MessageStatus,
    pub history: Vec<StatusChange>,
    pub error: Option<ProviderError>,
    pub provider_message_id: Option<String>,
    pub attempts: u32,
    pub metadata: BTreeMap<String, String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
    /// The omnigate id of the message this one replies to (quotes), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<String>,
    /// The person on the other side; empty only in records from before contacts existed.
    #[serde(default)]
    pub contact_id: String,
    /// What the adapter needs to send it that the canonical message does not show.
    #[serde(default, skip_serializing_if = "SendOptions::is_empty")]
    pub send_options: SendOptions,
    /// Earlier channels it fell back from, first tried first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_attempts: Vec<ChannelAttempt>,
    /// Not to be sent before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<Millis>,
}

/// Where a message can go: a channel, the account on it, and the person's address there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub channel: Channel,
    pub account: String,
    /// The rate-limit route within the account (the sender).
    pub route: String,
    pub from: String,
    pub to: String,
}

/// A channel a message was tried on before it fell back to the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelAttempt {
    pub channel: Channel,
    pub account: String,
    pub to: String,
    pub status: MessageStatus,
    pub error: Option<ProviderError>,
    pub provider_message_id: Option<String>,
}

/// Per-message sending details kept for retries and recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOptions {
    /// The provider's id of the message quoted in a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_provider_id: Option<String>,
    /// A channel message tag (Messenger `HUMAN_AGENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Where to go next after a permanent failure, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Route>,
}

impl SendOptions {
    pub fn is_empty(&self) -> bool {
        self.reply_to_provider_id.is_none() && self.tag.is_none() && self.fallbacks.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, gap-free in commit order.
    pub sequence: u64,
    pub at: Millis,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `previous` is empty on the first status, ACCEPTED.
    StatusChanged {
        message: Message,
        previous: Option<MessageStatus>,
    },
    Received {
        message: Message,
    },
    ConversationOpened {
        conversation: Conversation,
    },
    ConversationClosed {
        conversation: Conversation,
    },
    ContactMerged {
        contact: Contact,
        merged_contact_id: String,
    },
    ContactForgotten {
        contact_id: String,
    },
    /// Something arrived that could not become a message (malformed or oversized mail, a
    /// message of a kind the canonical model lacks).
    InboundRejected {
        account: String,
        channel: Channel,
        /// Where it is at the provider (an IMAP URL, a provider message id).
        reference: String,
        reason: String,
        /// Who sent it, when known.
        #[serde(default)]
        from: String,
        #[serde(default)]
        contact_id: String,
    },
    /// A person opted out of an account's messages, or back in.
    ConsentChanged {
        contact_id: String,
        account: String,
        channel: Channel,
        address: String,
        opted_out: bool,
        reason: String,
        /// Events from before marketing-only opt-outs lack it.
        #[serde(default)]
        marketing_only: bool,
        /// A hard bounce barred the address, or mail from it lifted one.
        #[serde(default)]
        bounced: bool,
    },
}

impl EventKind {
    /// Every name [`EventKind::name`] answers, for checking client filters.
    pub const NAMES: [&'static str; 8] = [
        "message_status_changed",
        "message_received",
        "conversation_opened",
        "conversation_closed",
        "contact_merged",
        "contact_forgotten",
        "inbound_rejected",
        "consent_changed",
    ];

    /// The name clients filter on in `StreamEvents.kinds`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::StatusChanged { .. } => "message_status_changed",
            EventKind::Received { .. } => "message_received",
            EventKind::ConversationOpened { .. } => "conversation_opened",
            EventKind::ConversationClosed { .. } => "conversation_closed",
            EventKind::ContactMerged { .. } => "contact_merged",
            EventKind::ContactForgotten { .. } => "contact_forgotten",
            EventKind::InboundRejected { .. } => "inbound_rejected",
            EventKind::ConsentChanged { .. } => "consent_changed",
        }
    }
}

/// A channel address, normalised (see [`crate::contacts::normalize`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub channel: Channel,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub display_name: String,
    pub identities: Vec<Identity>,
    pub preferences: Vec<Channel>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Read with the contact, never written through it (events before opt-outs lack it).
    #[serde(default)]
    pub opt_outs: Vec<OptOut>,
}

/// An account the person told to stop, on one of their addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    pub account: String,
    pub address: String,
    pub reason: String,
    pub at: Millis,
    /// Marketing messages alone: reported, not a bar at acceptance.
    pub marketing_only: bool,
    /// Not the person's word but their mail server's: the address does not exist.
    #[serde(default)]
    pub bounced: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Open,
    Closed,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Open => "open",
            ConversationState::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub contact_id: String,
    pub channels: Vec<Channel>,
    pub state: ConversationState,
    pub created_at: Millis,
    pub last_activity_at: Millis,
}

/// A CRM webhook subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// `whsec_` + base64 of the HMAC key.
    pub secret: String,
    /// Event kind names delivered; empty: all.
    pub kinds: Vec<String>,
    /// False once the receiver answered 410 Gone.
    pub active: bool,
    /// The last sequence handled (delivered or dead-lettered).
    pub cursor: u64,
    pub dead_letters: u64,
    pub last_error: String,
    /// Events retention deleted before this subscription delivered them.
    #[serde(default)]
    pub missed: u64,
    /// The secret before the last rotation, while it still signs beside `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecret>,
    /// Counts changes through the API (replays, rotations). A delivery worker saves its
    /// progress only over the revision it started from, so that in a fleet the replica
    /// that delivers never writes a change made through another one back to what it was.
    #[serde(default)]
    pub revision: u64,
    /// Delivers each event on its own: one that fails is retried on the schedule while the
    /// later ones go on, so order is not kept. Otherwise events go one at a time, in order.
    #[serde(default)]
    pub independent: bool,
    /// Events waiting for a retry (independent delivery); filled when listed, not stored.
    #[serde(skip)]
    pub retrying: u64,
}

/// An event a subscription gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub sequence: u64,
    pub error: String,
    pub at: Millis,
}

/// An event an independently delivering subscription tries again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRetry {
    pub sequence: u64,
    /// Attempts made so far.
    pub attempts: u32,
    pub due_at: Millis,
    pub error: String,
}

impl Webhook {
    /// A new active subscription, delivering in order after `cursor`.
    pub fn new(id: String, url: String, secret: String, kinds: Vec<String>, cursor: u64) -> Self {
        Webhook {
            id,
            url,
            secret,
            kinds,
            active: true,
            cursor,
            dead_letters: 0,
            last_error: String::new(),
            missed: 0,
            previous: None,
            revision: 0,
            independent: false,
            retrying: 0,
        }
    }
}

/// A rotated-out webhook secret and when it stops signing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: Millis,
}

#[cfg(test)]
mod tests {
    use super::{SendOptions, hex, ids_before, new_id, now_ms};

    #[test]
    fn hex_is_two_lower_case_digits_a_byte_high_nibble_first() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xf0, 0xff]), "000fa5f0ff");
        assert_eq!(hex(&[]), "");
    }

    /// Send options ride in the stored document only when there are any, so that most
    /// messages' documents stay as small as they were.
    #[test]
    fn send_options_are_stored_only_when_set() {
        assert!(SendOptions::default().is_empty());
        let tagged = SendOptions { tag: Some("HUMAN_AGENT".into()), ..SendOptions::default() };
        let replying =
            SendOptions { reply_to_provider_id: Some("wamid.X".into()), ..SendOptions::default() };
        for set in [tagged, replying] {
            assert!(!set.is_empty(), "{set:?}");
        }
    }

    #[test]
    fn ids_sort_below_the_bound_of_any_later_time_and_above_an_earlier_one() {
        let before = now_ms();
        let id = new_id("msg");
        let after = now_ms();
        assert!(id.as_str() >= ids_before("msg", before).as_str(), "{id}");
        assert!(id.as_str() < ids_before("msg", after + 1).as_str(), "{id}");
        assert_eq!(ids_before("msg", 0x0190_0000_0001), "msg_019000000001");
    }
}
