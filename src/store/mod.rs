//! Durable state behind one trait, so that SQLite (embedded) and PostgreSQL (a fleet) serve
//! the same callers. Every write that changes a message appends its event in the same
//! transaction; concurrent writes share transactions (group commit).
//!
//! # Layout
//! - [`sql`]: the operations, written once over a small SQL seam, with group commit.
//! - [`sqlite`]: the embedded backend (one file in WAL mode).
//! - [`postgres`]: the shared backend for a fleet of replicas.

pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use omnigate_adapters::{
    Channel, Consent, Content, InboundMessage, MessageStatus, ProviderError, StatusReport, Thread,
};
use tokio::sync::broadcast;

use crate::model::{
    Contact, Conversation, ConversationState, DeadLetter, Event, Identity, Message, Millis,
    SendOptions, Webhook, WebhookRetry, new_id, now_ms,
};

/// An outbound message to accept.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: String,
    pub idempotency_key: Option<String>,
    /// Identifies the request's content, so a reused key with another request is refused.
    pub fingerprint: String,
    pub channel: Channel,
    pub account: String,
    /// The rate-limit route within the account (the sender).
    pub route: String,
    pub from: String,
    pub to: String,
    pub conversation_id: Option<String>,
    pub content: Content,
    pub metadata: BTreeMap<String, String>,
    pub expires_at: Millis,
    pub now: Millis,
    /// Not before this time; `None`: at once.
    pub send_at: Option<Millis>,
    pub reply_to_message_id: Option<String>,
    pub send_options: SendOptions,
    /// The content may only go out this long after the person's last inbound message
    /// (Meta's service windows); outside it the message fails at once with OUTSIDE_WINDOW.
    pub window_ms: Option<Millis>,
    /// Whether this process dispatches the message (it owns the route). Otherwise the
    /// outbox entry is left unleased for the route's owner to claim, and no job is answered.
    pub dispatch_here: bool,
}

impl NewMessage {
    /// A message accepted now, due to expire after `ttl`, sent from `from` as its route,
    /// without a key, thread, metadata or options, and dispatched by this process.
    pub fn new(
        channel: Channel,
        account: &str,
        from: &str,
        to: &str,
        content: Content,
        ttl: Duration,
    ) -> Self {
        let now = now_ms();
        NewMessage {
            id: new_id("msg"),
            idempotency_key: None,
            fingerprint: String::new(),
            channel,
            account: account.to_string(),
            route: from.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            conversation_id: None,
            content,
            metadata: BTreeMap::new(),
            expires_at: now + ttl.as_millis() as i64,
            now,
            send_at: None,
            reply_to_message_id: None,
            send_options: SendOptions::default(),
            window_ms: None,
            dispatch_here: true,
        }
    }
}

#[derive(Clone, Debug)]
pub enum AcceptOutcome {
    /// Stored now; `Job` is the work to hand to the dispatcher, none when the message
    /// failed at once (outside its service window).
    Created(Message, Option<Box<Job>>),
    /// The idempotency key was used before with the same request: its first message.
    Existing(Message),
}

/// Due work: one message to (re)try.
#[derive(Clone, Debug)]
pub struct Job {
    pub message_id: String,
    pub account: String,
    pub route: String,
    pub to: String,
    pub content: Content,
    /// Attempts made so far.
    pub attempts: u32,
    /// When an attempt began whose answer was lost (it may have been sent); every later
    /// attempt first asks the provider. Kept with the outbox entry, so a restart or the
    /// replica that takes the route over asks too.
    pub unsure_since: Option<Millis>,
    pub expires_at: Millis,
    pub due_at: Millis,
    /// When the recipient's opt-outs were last read for this send (0: never, as after a
    /// restart); a send that waited longer reads them again.
    pub consent_checked_at: Millis,
    pub send_options: SendOptions,
    /// Not a send: at `due_at`, fall back unless the message was delivered by then.
    pub delivery_deadline: bool,
    /// The trace of the call that accepted it, which its sends join; empty after a restart.
    pub origin: opentelemetry::Context,
}

/// What came of one attempt to hand a message to its provider.
#[derive(Clone, Debug)]
pub enum Attempt {
    Sent {
        provider_message_id: String,
        provider_status: String,
    },
    /// Try again at `due_at` (status QUEUED).
    Retry {
        due_at: Millis,
        error: ProviderError,
        /// The job's [`Job::unsure_since`], kept for whoever makes the next attempt.
        unsure_since: Option<Millis>,
    },
    /// Give up: FAILED or EXPIRED.
    Failed {
        status: MessageStatus,
        error: ProviderError,
    },
    /// Not sent: the gateway refused it, as acceptance would have (the person opted out
    /// while it waited). FAILED, or the next channel, without counting an attempt.
    Refused {
        error: ProviderError,
    },
}

/// A contact to create (no id) or update. Identities are added, never taken from another
/// contact.
#[derive(Clone, Debug, Default)]
pub struct ContactUpdate {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub identities: Vec<Identity>,
    /// Replaces the preferences when not empty.
    pub preferences: Vec<Channel>,
}

#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    pub contact_id: Option<String>,
    pub state: Option<ConversationState>,
    pub updated_since: Option<Millis>,
    /// Continue after this (last_activity_at, id).
    pub after: Option<(Millis, String)>,
    pub limit: usize,
}

/// An inbound message to store, on the account whose webhook received it.
#[derive(Clone, Debug)]
pub struct NewInbound {
    pub id: String,
    pub channel: Channel,
    pub account: String,
    /// The sender, normalised.
    pub from: Identity,
    pub message: InboundMessage,
    pub now: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("message {id} cannot be canceled: {why}")]
    TooLate { id: String, why: String },
    #[error("identity {identity} belongs to contact {contact_id}; merge the contacts to move it")]
    IdentityTaken { identity: String, contact_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("database: {0}")]
    Database(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store is shut down or its writer could not run this write")]
    Closed,
    #[error("commit failed, nothing in this write was stored: {0}")]
    CommitFailed(String),
    #[error(
        "events after {after} up to {} were deleted by retention (retention.events_days); the oldest kept is {oldest}",
        .oldest - 1
    )]
    Purged { after: u64, oldest: u64 },
}

/// The server's own message and code, which the driver's Display leaves out.
fn postgres_detail(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl StoreError {
    /// An answer about the request (conflict, missing record), raised before a write
    /// changes anything; other errors are the database's own.
    pub fn is_domain(&self) -> bool {
        matches!(
            self,
            StoreError::IdempotencyConflict(_)
                | StoreError::NotFound(_)
                | StoreError::IdentityTaken { .. }
                | StoreError::TooLate { .. }
                | StoreError::Invalid(_)
                | StoreError::Purged { .. }
        )
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the message, its conversation link, its outbox entry and its ACCEPTED event
    /// in one transaction; answers after the commit.
    async fn accept(&self, new: NewMessage) -> Result<AcceptOutcome, StoreError>;

    /// Records the outcome of an attempt and releases or reschedules the outbox entry. A
    /// permanent failure with fallbacks left moves the message to its next channel and
    /// answers the job to dispatch there.
    async fn record_attempt(
        &self,
        message_id: &str,
        attempt: Attempt,
    ) -> Result<(Message, Option<Job>), StoreError>;

    /// Moves a message forward by a provider receipt. No message when nothing changed (a
    /// duplicate or late receipt). A receipt that outruns its send's own commit is kept
    /// and applied when that commit lands. A failure with fallbacks left answers the job
    /// to dispatch on the next channel.
    async fn apply_status(
        &self,
        account: &str,
        report: StatusReport,
    ) -> Result<(Option<Message>, Option<Job>), StoreError>;

    /// Falls back to the next channel if the message is still not delivered (its delivery
    /// deadline passed); answers the job for the next channel.
    async fn fall_back_if_undelivered(&self, message_id: &str) -> Result<Option<Job>, StoreError>;

    /// When the person last wrote to `account` from `peer`.
    async fn last_inbound(&self, account: &str, peer: &str) -> Result<Option<Millis>, StoreError>;

    /// The message `account`'s provider knows by `provider_message_id`, if any is stored.
    async fn message_by_provider_id(
        &self,
        account: &str,
        provider_message_id: &str,
    ) -> Result<Option<String>, StoreError>;

    /// The provider ids that receipts echoing our message `message_id` name, for which no
    /// message of ours is known: sends of it whose answer was lost, first seen first.
    async fn lost_sends(&self, account: &str, message_id: &str) -> Result<Vec<String>, StoreError>;

    /// Stores an inbound message in its conversation and opens the sender's service
    /// window. `None` when it is a redelivery.
    async fn receive(&self, inbound: NewInbound) -> Result<Option<Message>, StoreError>;

    /// Moves every outbound message to `peer` on `account` created up to `up_to` forward
    /// to `status` (Messenger's watermarks). Answers the messages that moved.
    async fn apply_watermark(
        &self,
        account: &str,
        peer: &str,
        status: MessageStatus,
        up_to: Millis,
    ) -> Result<Vec<Message>, StoreError>;

    async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError>;

    /// A conversation's messages in commit order, after the position `after` (0: start).
    /// Answers the messages and each one's position.
    async fn list_messages(
        &self,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError>;

    async fn events_after(&self, sequence: u64, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// The newest event's sequence (0 for an empty log).
    async fn last_sequence(&self) -> Result<u64, StoreError>;

    /// Events as they commit. A receiver that lags resumes with [`Store::events_after`].
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;

    /// Claims up to `limit` pending outbox entries whose lease is free or expired, for
    /// `owner`, until `lease` from now; only entries of the (account, route) pairs in
    /// `routes` when given.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        routes: Option<Vec<(String, String)>>,
    ) -> Result<Vec<Job>, StoreError>;

    /// Extends the lease on every outbox entry this process holds (its dispatcher still
    /// has them in hand). Answers how many.
    async fn renew_leases(&self) -> Result<u64, StoreError>;

    /// Gives up this process's lease on one outbox entry (all of them when `None`), for
    /// another replica to claim.
    async fn release(&self, message_id: Option<&str>) -> Result<(), StoreError>;

    /// Records that this process is alive; answers the live replicas' names, sorted.
    async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, StoreError>;

    /// Gives up the `unwanted` named leases, takes or renews the `wanted` ones that are free,
    /// expired or already this process's, for `ttl`; answers the wanted ones held.
    async fn hold_leases(
        &self,
        wanted: Vec<String>,
        unwanted: Vec<String>,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError>;

    async fn upsert_contact(&self, update: ContactUpdate) -> Result<Contact, StoreError>;

    /// A contact by id; a merged contact answers as the contact it was merged into.
    async fn get_contact(&self, id: &str) -> Result<Option<Contact>, StoreError>;

    async fn find_contact(&self, identity: Identity) -> Result<Option<Contact>, StoreError>;

    /// Moves identities, conversations and messages of `from` into `into`; idempotent.
    async fn merge_contacts(&self, into: &str, from: &str) -> Result<Contact, StoreError>;

    /// Erases the contact's personal data: identities, name, message content and addresses,
    /// also in the event log. Answers how many messages were erased.
    async fn forget_contact(&self, id: &str) -> Result<u64, StoreError>;

    /// The media the contact sent, by the account that received each, oldest first: what
    /// providers keep of them, to delete when they are forgotten.
    async fn media_of_contact(
        &self,
        id: &str,
    ) -> Result<Vec<(String, omnigate_adapters::Media)>, StoreError>;

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;

    async fn list_conversations(
        &self,
        filter: ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError>;

    async fn close_conversation(&self, id: &str) -> Result<Conversation, StoreError>;

    /// Records `identity`'s word on `account`'s messages (an opt-out may be of marketing
    /// alone: `marketing_only`); answers whether it changed anything, and the identity's
    /// contact (made when the address is new).
    async fn set_consent(
        &self,
        account: &str,
        identity: Identity,
        said: (Consent, bool),
        reason: String,
    ) -> Result<(bool, String), StoreError>;

    /// A page of the bars on `account`'s sends (every account's when empty), by account and
    /// then address, after the (account, address) pair `after`.
    async fn list_opt_outs(
        &self,
        account: &str,
        after: (String, String),
        limit: usize,
    ) -> Result<Vec<crate::model::OptOut>, StoreError>;

    /// Creates or replaces a webhook subscription.
    async fn save_webhook(&self, webhook: Webhook) -> Result<Webhook, StoreError>;

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError>;

    /// Answers whether it existed.
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;

    /// Schedules (or reschedules) another attempt at an event for an independently
    /// delivering subscription; answers false, scheduling nothing, when it was deleted.
    async fn schedule_webhook_retry(
        &self,
        webhook_id: &str,
        retry: WebhookRetry,
    ) -> Result<bool, StoreError>;

    /// A subscription's scheduled retries, the earliest due first.
    async fn webhook_retries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookRetry>, StoreError>;

    /// A subscription's dead letters after sequence `after`, by sequence.
    async fn webhook_dead_letters(
        &self,
        webhook_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Drops a retry: delivered, or its event no longer exists.
    async fn finish_webhook_retry(&self, webhook_id: &str, sequence: u64)
    -> Result<(), StoreError>;

    /// Replaces a stored subscription if it is still at revision `read_at`: a change
    /// through the API (which bumps the revision) or a delivery worker's progress (which
    /// keeps it) never lands over another change made meanwhile, nor brings back a deleted
    /// subscription. Answers whether it saved.
    async fn update_webhook(&self, webhook: Webhook, read_at: u64) -> Result<bool, StoreError>;

    /// Records that `sequence` was given up on (dropping its retry, if any), and moves the
    /// cursor past it; as
    /// [`Store::update_webhook`], nothing when the subscription was deleted or
    /// changed meanwhile (then answers `None`).
    async fn dead_letter(
        &self,
        webhook: Webhook,
        sequence: u64,
        error: &str,
    ) -> Result<Option<Webhook>, StoreError>;

    /// The email thread that message `message_id` continues: the Message-IDs of its
    /// conversation's earlier emails and the subject they go by.
    async fn thread_of(&self, message_id: &str) -> Result<Thread, StoreError>;

    /// The error a send from `account` to `to` fails with when that person opted out of
    /// the account's messages.
    async fn opt_out_refusal(
        &self,
        account: &str,
        to: &str,
    ) -> Result<Option<ProviderError>, StoreError>;

    /// How far an account's mailbox has been read: (UIDVALIDITY, last UID handled).
    async fn mailbox_cursor(&self, account: &str) -> Result<Option<(u32, u32)>, StoreError>;

    async fn save_mailbox_cursor(
        &self,
        account: &str,
        uid_validity: u32,
        last_uid: u32,
    ) -> Result<(), StoreError>;

    /// Records that something arrived on `account` that could not become a message, as an
    /// `inbound_rejected` event; with the person who sent it, when known, as a contact
    /// (found or made), whom forgetting scrubs from the event too.
    async fn reject_inbound(
        &self,
        account: &str,
        channel: Channel,
        reference: &str,
        from: Option<Identity>,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Moves an outbound message its provider does not have yet (ACCEPTED or QUEUED) to
    /// CANCELED and drops its outbox entry; a CANCELED one is answered as it is. The caller
    /// makes sure no send of it has started.
    async fn cancel(&self, message_id: &str) -> Result<Message, StoreError>;

    /// Asks the replica that dispatches `message_id` to cancel it (see `answer_cancel`).
    async fn request_cancel(&self, message_id: &str) -> Result<(), StoreError>;

    /// Cancellations asked of some replica and not answered yet, oldest first.
    async fn pending_cancels(&self, limit: usize) -> Result<Vec<String>, StoreError>;

    /// The dispatching replica's decision: empty when canceled, else why not.
    async fn answer_cancel(&self, message_id: &str, answer: &str) -> Result<(), StoreError>;

    /// The decision on a requested cancellation, once there is one; the request goes.
    async fn take_cancel_answer(&self, message_id: &str) -> Result<Option<String>, StoreError>;

    /// The sequence of the first event logged at or after `at`, or the newest event's when
    /// none was (0 for an empty log): where retention's deletions stop.
    async fn first_event_since(&self, at: Millis) -> Result<u64, StoreError>;

    /// Deletes, oldest first and at most `limit` of each in one transaction, what `cutoff`
    /// says has been kept long enough.
    async fn purge(&self, cutoff: Cutoff, limit: usize) -> Result<Purged, StoreError>;

    /// Flushes pending writes and stops the writer.
    async fn close(&self);
}

/// What retention deletes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cutoff {
    /// Events below this sequence, and the dead letters that pointed at them; never the
    /// newest event, whose sequence the next one follows.
    pub events_below: Option<u64>,
    /// Messages created before this time that no longer wait for their provider.
    pub messages_before: Option<Millis>,
}

/// What one purge deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub messages: u64,
}
