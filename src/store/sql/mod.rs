//! The SQL store: the operations of [`Store`](crate::store::Store) written once over the
//! [`db`] seam, served by a backend's connections. Writes go through one writer thread
//! that commits them in batches (see [`writer`]); reads use a small pool of connections.
//!
//! # Layout
//! - [`db`]: statements, arguments and rows, the one interface the backends implement.
//! - [`writer`]: group commit.
//! - [`ops`]: messages, receipts, the outbox and the event log.
//! - [`people`]: contacts, identities and conversations.
//! - [`consent`]: opt-outs, which acceptance honours.
//! - [`fleet`]: replica heartbeats and named leases, for replicas sharing one database.

mod consent;
pub mod db;
mod fleet;
mod ops;
mod people;
mod writer;

pub use ops::{PARK_HORIZON_MS, events_after, last_sequence};
pub use writer::OnCommit;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use omnigate_adapters::StatusReport;
use tokio::sync::broadcast;
use tokio::sync::oneshot;

use self::db::{Conn, Db};
use self::ops::Lease;
use super::{
    AcceptOutcome, Attempt, ContactUpdate, ConversationFilter, Cutoff, Job, NewInbound, NewMessage,
    Purged, Store, StoreError,
};
use crate::model::{
    Contact, Conversation, DeadLetter, Event, Identity, Message, Millis, Webhook, WebhookRetry,
    now_ms,
};
use crate::telemetry::Metrics;

/// A conversation quiet for longer than this is closed when the person comes back.
pub const DEFAULT_INACTIVITY: Duration = Duration::from_secs(7 * 86_400);
pub const EVENT_BUFFER: usize = 4096;

pub struct SqlStore<C: Conn> {
    writes: Mutex<Option<std::sync::mpsc::Sender<writer::WriteFn>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Vec<Mutex<C>>>,
    next_reader: AtomicUsize,
    events: broadcast::Sender<Arc<Event>>,
    owner: String,
    lease: Duration,
    inactivity_ms: i64,
    /// Run at close, after the writer stopped (a backend's own threads).
    on_close: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

/// What every backend's store is started with.
pub struct Settings {
    /// Names this process on the leases of the work it accepts.
    pub owner: String,
    pub lease: Duration,
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
}

impl<C: Conn> SqlStore<C> {
    /// Starts the writer. `events` is the live feed [`Store::subscribe`] hands out, and
    /// `on_commit` what a commit does with its events: the embedded store broadcasts its
    /// own; a shared database's store follows the log instead, which has every replica's.
    pub fn start(
        writer: C,
        readers: Vec<C>,
        settings: Settings,
        events: broadcast::Sender<Arc<Event>>,
        on_commit: OnCommit,
    ) -> Result<Self, StoreError> {
        let (writes, handle) =
            writer::spawn(writer, settings.max_batch, on_commit, settings.metrics).map_err(
                |e| StoreError::CommitFailed(format!("cannot start the writer thread: {e}")),
            )?;
        Ok(SqlStore {
            writes: Mutex::new(Some(writes)),
            writer_thread: Mutex::new(Some(handle)),
            readers: Arc::new(readers.into_iter().map(Mutex::new).collect()),
            next_reader: AtomicUsize::new(0),
            events,
            owner: settings.owner,
            lease: settings.lease,
            inactivity_ms: DEFAULT_INACTIVITY.as_millis() as i64,
            on_close: Mutex::new(Vec::new()),
        })
    }

    /// How long a conversation may be quiet before the next message opens a new one.
    pub fn with_inactivity(mut self, inactivity: Duration) -> Self {
        self.inactivity_ms = inactivity.as_millis() as i64;
        self
    }

    pub fn into_arc(self) -> Arc<dyn Store> {
        Arc::new(self)
    }

    /// Runs `f` when the store closes.
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        if let Ok(mut list) = self.on_close.lock() {
            list.push(Box::new(f));
        }
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Runs `f` in the next group commit; answers after that commit. `f` gets this store's
    /// lease for the work it hands out.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Db, &mut Vec<Event>, &Lease<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let (owner, ms) = (self.owner.clone(), self.lease_ms());
        let write: writer::WriteFn = Box::new(move |db, events| {
            let result = f(db, events, &Lease { owner: &owner, ms });
            let spoils = matches!(&result, Err(e) if !e.is_domain());
            let completion: writer::Completion = Box::new(move |commit: Result<(), StoreError>| {
                // A write that failed answers with its own error, not the batch's.
                let _ = reply.send(result.and_then(|r| commit.map(|()| r)));
            });
            (completion, spoils)
        });
        let sender = self.writes.lock().map_err(|_| StoreError::Closed)?.clone();
        sender.ok_or(StoreError::Closed)?.send(write).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let mut conn = readers[i].lock().map_err(|_| StoreError::Closed)?;
            conn.read(f)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl<C: Conn> Store for SqlStore<C> {
    async fn accept(&self, new: NewMessage) -> Result<AcceptOutcome, StoreError> {
        let inactivity = self.inactivity_ms;
        self.write(move |db, events, lease| ops::accept(db, events, &new, lease, inactivity)).await
    }

    async fn record_attempt(
        &self,
        message_id: &str,
        attempt: Attempt,
    ) -> Result<(Message, Option<Job>), StoreError> {
        let id = message_id.to_string();
        self.write(move |db, events, lease| ops::record_attempt(db, events, &id, &attempt, lease))
            .await
    }

    async fn fall_back_if_undelivered(&self, message_id: &str) -> Result<Option<Job>, StoreError> {
        let id = message_id.to_string();
        self.write(move |db, events, lease| ops::fall_back_if_undelivered(db, events, &id, lease))
            .await
    }

    async fn last_inbound(
        &self,
        account: &str,
        peer: &str,
    ) -> Result<Option<crate::model::Millis>, StoreError> {
        let (account, peer) = (account.to_string(), peer.to_string());
        self.read(move |db| ops::last_inbound(db, &account, &peer)).await
    }

    async fn lost_sends(&self, account: &str, message_id: &str) -> Result<Vec<String>, StoreError> {
        let (account, id) = (account.to_string(), message_id.to_string());
        self.read(move |db| ops::parked_sends(db, &account, &id)).await
    }

    async fn message_by_provider_id(
        &self,
        account: &str,
        provider_message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let (account, pid) = (account.to_string(), provider_message_id.to_string());
        self.read(move |db| Ok(ops::provider_message(db, &account, &pid)?.map(|(id, _)| id))).await
    }

    async fn apply_status(
        &self,
        account: &str,
        report: StatusReport,
    ) -> Result<(Option<Message>, Option<Job>), StoreError> {
        let account = account.to_string();
        self.write(move |db, events, lease| ops::apply_status(db, events, &account, &report, lease))
            .await
    }

    async fn receive(&self, inbound: NewInbound) -> Result<Option<Message>, StoreError> {
        let inactivity = self.inactivity_ms;
        self.write(move |db, events, _| ops::receive(db, events, &inbound, inactivity)).await
    }

    async fn apply_watermark(
        &self,
        account: &str,
        peer: &str,
        status: omnigate_adapters::MessageStatus,
        up_to: crate::model::Millis,
    ) -> Result<Vec<Message>, StoreError> {
        let (account, peer) = (account.to_string(), peer.to_string());
        self.write(move |db, events, _| {
            ops::apply_watermark(db, events, &account, &peer, status, up_to)
        })
        .await
    }

    async fn thread_of(&self, message_id: &str) -> Result<omnigate_adapters::Thread, StoreError> {
        let id = message_id.to_string();
        self.read(move |db| ops::thread_of(db, &id)).await
    }

    async fn opt_out_refusal(
        &self,
        account: &str,
        to: &str,
    ) -> Result<Option<omnigate_adapters::ProviderError>, StoreError> {
        let (account, to) = (account.to_string(), to.to_string());
        self.read(move |db| consent::bar(db, &account, &to)).await
    }

    async fn mailbox_cursor(&self, account: &str) -> Result<Option<(u32, u32)>, StoreError> {
        let account = account.to_string();
        self.read(move |db| ops::mailbox_cursor(db, &account)).await
    }

    async fn save_mailbox_cursor(
        &self,
        account: &str,
        uid_validity: u32,
        last_uid: u32,
    ) -> Result<(), StoreError> {
        let account = account.to_string();
        self.write(move |db, _, _| ops::save_mailbox_cursor(db, &account, uid_validity, last_uid))
            .await
    }

    async fn reject_inbound(
        &self,
        account: &str,
        channel: omnigate_adapters::Channel,
        reference: &str,
        from: Option<Identity>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let rejected = ops::Rejected {
            account: account.to_string(),
            channel,
            reference: reference.to_string(),
            from,
            reason: reason.to_string(),
        };
        self.write(move |db, events, _| ops::reject_inbound(db, events, rejected, now_ms())).await
    }

    async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_string();
        self.read(move |db| ops::get_message(db, &id)).await
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        let id = conversation_id.to_string();
        self.read(move |db| ops::list_messages(db, &id, after, limit)).await
    }

    async fn events_after(&self, sequence: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(move |db| ops::events_after(db, sequence, limit)).await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.read(ops::last_sequence).await
    }

    async fn cancel(&self, message_id: &str) -> Result<Message, StoreError> {
        let id = message_id.to_string();
        self.write(move |db, events, _| ops::cancel(db, events, &id)).await
    }

    async fn request_cancel(&self, message_id: &str) -> Result<(), StoreError> {
        let id = message_id.to_string();
        self.write(move |db, _, _| {
            db.execute(
                "INSERT INTO cancel_requests (message_id, requested_at) VALUES ($1, $2)
                 ON CONFLICT (message_id) DO NOTHING",
                db::args![&id, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn pending_cancels(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |db| {
            db.query(
                "SELECT message_id FROM cancel_requests WHERE answer IS NULL ORDER BY requested_at LIMIT $1",
                db::args![limit],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        })
        .await
    }

    async fn answer_cancel(&self, message_id: &str, answer: &str) -> Result<(), StoreError> {
        let (id, answer) = (message_id.to_string(), answer.to_string());
        self.write(move |db, _, _| {
            db.execute(
                "UPDATE cancel_requests SET answer = $2 WHERE message_id = $1",
                db::args![&id, &answer],
            )?;
            Ok(())
        })
        .await
    }

    async fn take_cancel_answer(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        // The asker polls: look on a reader, and take the writer (under PostgreSQL, the
        // fleet's batch lock) only once there is an answer to take.
        let id = message_id.to_string();
        let answered = self
            .read(move |db| {
                db.query_opt(
                    "SELECT 1 FROM cancel_requests WHERE message_id = $1 AND answer IS NOT NULL",
                    db::args![&id],
                )
            })
            .await?;
        if answered.is_none() {
            return Ok(None);
        }
        let id = message_id.to_string();
        self.write(move |db, _, _| {
            let answer = db.query_opt(
                "DELETE FROM cancel_requests WHERE message_id = $1 AND answer IS NOT NULL RETURNING answer",
                db::args![&id],
            )?;
            answer.map(|r| r.text(0)).transpose()
        })
        .await
    }

    async fn first_event_since(&self, at: Millis) -> Result<u64, StoreError> {
        self.read(move |db| ops::first_event_since(db, at)).await
    }

    async fn purge(&self, cutoff: Cutoff, limit: usize) -> Result<Purged, StoreError> {
        self.write(move |db, _, _| ops::purge(db, &cutoff, limit)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        routes: Option<Vec<(String, String)>>,
    ) -> Result<Vec<Job>, StoreError> {
        let owner = owner.to_string();
        let ms = lease.as_millis() as i64;
        self.write(move |db, _, _| {
            ops::claim(db, &Lease { owner: &owner, ms }, limit, routes.as_deref())
        })
        .await
    }

    async fn renew_leases(&self) -> Result<u64, StoreError> {
        self.write(|db, _, lease| ops::renew_leases(db, lease)).await
    }

    async fn release(&self, message_id: Option<&str>) -> Result<(), StoreError> {
        let id = message_id.map(str::to_string);
        self.write(move |db, _, lease| ops::release(db, lease.owner, id.as_deref())).await
    }

    async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, StoreError> {
        let ttl = ttl.as_millis() as i64;
        self.write(move |db, _, lease| fleet::heartbeat(db, lease.owner, ttl, now_ms())).await
    }

    async fn hold_leases(
        &self,
        wanted: Vec<String>,
        unwanted: Vec<String>,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let ttl = ttl.as_millis() as i64;
        self.write(move |db, _, lease| {
            fleet::hold(db, lease.owner, &wanted, &unwanted, ttl, now_ms())
        })
        .await
    }

    async fn upsert_contact(&self, update: ContactUpdate) -> Result<Contact, StoreError> {
        self.write(move |db, _, _| people::upsert_contact(db, &update, now_ms())).await
    }

    async fn get_contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let id = id.to_string();
        self.read(move |db| people::load_contact(db, &id)).await
    }

    async fn find_contact(&self, identity: Identity) -> Result<Option<Contact>, StoreError> {
        self.read(move |db| match people::owner_of(db, &identity)? {
            Some(id) => people::load_contact(db, &id),
            None => Ok(None),
        })
        .await
    }

    async fn merge_contacts(&self, into: &str, from: &str) -> Result<Contact, StoreError> {
        let (into, from) = (into.to_string(), from.to_string());
        self.write(move |db, events, _| people::merge_contacts(db, events, &into, &from, now_ms()))
            .await
    }

    async fn forget_contact(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.write(move |db, events, _| people::forget_contact(db, events, &id, now_ms())).await
    }

    async fn media_of_contact(
        &self,
        id: &str,
    ) -> Result<Vec<(String, omnigate_adapters::Media)>, StoreError> {
        let id = id.to_string();
        self.read(move |db| ops::media_of_contact(db, &id)).await
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = id.to_string();
        self.read(move |db| people::load_conversation(db, &id)).await
    }

    async fn list_conversations(
        &self,
        filter: ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.read(move |db| people::list_conversations(db, &filter)).await
    }

    async fn close_conversation(&self, id: &str) -> Result<Conversation, StoreError> {
        let id = id.to_string();
        self.write(move |db, events, _| people::close(db, events, &id)).await
    }

    async fn set_consent(
        &self,
        account: &str,
        identity: Identity,
        said: (omnigate_adapters::Consent, bool),
        reason: String,
    ) -> Result<(bool, String), StoreError> {
        let account = account.to_string();
        self.write(move |db, events, _| {
            let stand = consent::Stand::of(said);
            consent::set(db, events, &account, &identity, stand, &reason, now_ms())
        })
        .await
    }

    async fn list_opt_outs(
        &self,
        account: &str,
        after: (String, String),
        limit: usize,
    ) -> Result<Vec<crate::model::OptOut>, StoreError> {
        let account = account.to_string();
        self.read(move |db| consent::list(db, &account, &after, limit)).await
    }

    async fn save_webhook(&self, webhook: Webhook) -> Result<Webhook, StoreError> {
        self.write(move |db, _, _| {
            db.execute(
                "INSERT INTO webhooks (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                db::args![&webhook.id, &serde_json::to_string(&webhook)?],
            )?;
            Ok(webhook)
        })
        .await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read(|db| {
            let retrying = db.query(
                "SELECT webhook_id, COUNT(*) FROM webhook_retries GROUP BY webhook_id",
                db::args![],
            )?;
            let mut all = Vec::new();
            for row in db.query("SELECT doc FROM webhooks ORDER BY id", db::args![])? {
                let mut webhook: Webhook = row.doc(0)?;
                for r in &retrying {
                    if r.text(0)? == webhook.id {
                        webhook.retrying = r.int(1)? as u64;
                    }
                }
                all.push(webhook);
            }
            Ok(all)
        })
        .await
    }

    async fn schedule_webhook_retry(
        &self,
        webhook_id: &str,
        retry: WebhookRetry,
    ) -> Result<bool, StoreError> {
        let id = webhook_id.to_string();
        self.write(move |db, _, _| {
            if db.query_opt("SELECT 1 FROM webhooks WHERE id = $1", db::args![&id])?.is_none() {
                return Ok(false);
            }
            db.execute(
                "INSERT INTO webhook_retries (webhook_id, sequence, attempts, due_at, error) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (webhook_id, sequence) DO UPDATE
                 SET attempts = excluded.attempts, due_at = excluded.due_at, error = excluded.error",
                db::args![&id, retry.sequence, retry.attempts, retry.due_at, &retry.error],
            )?;
            Ok(true)
        })
        .await
    }

    async fn webhook_retries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookRetry>, StoreError> {
        let id = webhook_id.to_string();
        self.read(move |db| {
            db.query(
                "SELECT sequence, attempts, due_at, error FROM webhook_retries WHERE webhook_id = $1
                 ORDER BY due_at LIMIT $2",
                db::args![&id, limit],
            )?
            .iter()
            .map(|r| {
                Ok(WebhookRetry {
                    sequence: r.int(0)? as u64,
                    attempts: u32::try_from(r.int(1)?).unwrap_or(u32::MAX),
                    due_at: r.int(2)?,
                    error: r.text(3)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn webhook_dead_letters(
        &self,
        webhook_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let id = webhook_id.to_string();
        self.read(move |db| {
            db.query(
                "SELECT sequence, error, at FROM webhook_dead_letters WHERE webhook_id = $1 AND sequence > $2
                 ORDER BY sequence LIMIT $3",
                db::args![&id, after, limit],
            )?
            .iter()
            .map(|r| Ok(DeadLetter { sequence: r.int(0)? as u64, error: r.text(1)?, at: r.int(2)? }))
            .collect()
        })
        .await
    }

    async fn finish_webhook_retry(
        &self,
        webhook_id: &str,
        sequence: u64,
    ) -> Result<(), StoreError> {
        let id = webhook_id.to_string();
        self.write(move |db, _, _| {
            db.execute(
                "DELETE FROM webhook_retries WHERE webhook_id = $1 AND sequence = $2",
                db::args![&id, sequence],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |db, _, _| {
            db.execute("DELETE FROM webhook_retries WHERE webhook_id = $1", db::args![&id])?;
            Ok(db.execute("DELETE FROM webhooks WHERE id = $1", db::args![&id])? > 0)
        })
        .await
    }

    async fn update_webhook(&self, webhook: Webhook, read_at: u64) -> Result<bool, StoreError> {
        self.write(move |db, _, _| {
            if !at_revision(db, &webhook.id, read_at)? {
                return Ok(false);
            }
            db.execute(
                "UPDATE webhooks SET doc = $2 WHERE id = $1",
                db::args![&webhook.id, &serde_json::to_string(&webhook)?],
            )?;
            Ok(true)
        })
        .await
    }

    async fn dead_letter(
        &self,
        mut webhook: Webhook,
        sequence: u64,
        error: &str,
    ) -> Result<Option<Webhook>, StoreError> {
        let error = error.to_string();
        self.write(move |db, _, _| {
            if !at_revision(db, &webhook.id, webhook.revision)? {
                return Ok(None);
            }
            db.execute(
                "DELETE FROM webhook_retries WHERE webhook_id = $1 AND sequence = $2",
                db::args![&webhook.id, sequence],
            )?;
            db.execute(
                "INSERT INTO webhook_dead_letters (webhook_id, sequence, error, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (webhook_id, sequence) DO UPDATE SET error = excluded.error, at = excluded.at",
                db::args![&webhook.id, sequence, &error, now_ms()],
            )?;
            webhook.dead_letters += 1;
            webhook.cursor = webhook.cursor.max(sequence);
            webhook.last_error = error;
            db.execute(
                "UPDATE webhooks SET doc = $2 WHERE id = $1",
                db::args![&webhook.id, &serde_json::to_string(&webhook)?],
            )?;
            Ok(Some(webhook))
        })
        .await
    }

    async fn close(&self) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let closers = self.on_close.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        // They may join threads: off the async workers.
        let _ = tokio::task::spawn_blocking(move || closers.into_iter().for_each(|close| close()))
            .await;
    }
}

/// Whether subscription `id` is stored at `revision`.
fn at_revision(db: &dyn Db, id: &str, revision: u64) -> Result<bool, StoreError> {
    let stored = db.query_opt("SELECT doc FROM webhooks WHERE id = $1", db::args![id])?;
    Ok(match stored {
        Some(row) => row.doc::<Webhook>(0)?.revision == revision,
        None => false,
    })
}
