//! The embedded store: one SQLite file in WAL mode. Writes go through one writer thread
//! that commits them in batches (see [`writer`]); reads use a small pool of connections,
//! which WAL lets run beside the writer.
//!
//! A file belongs to one gateway process at a time; at open, leases left by an earlier
//! process are void, since that process is gone.

mod ops;
mod people;
mod schema;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use omnigate_adapters::StatusReport;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot};

use super::{
    AcceptOutcome, Attempt, ContactUpdate, ConversationFilter, Job, NewInbound, NewMessage, Store,
    StoreError,
};
use crate::model::{Contact, Conversation, Event, Identity, Message, Webhook, now_ms};
use crate::telemetry::Metrics;

const READERS: usize = 4;
/// A conversation quiet for longer than this is closed when the person comes back.
pub const DEFAULT_INACTIVITY: Duration = Duration::from_secs(7 * 86_400);
const EVENT_BUFFER: usize = 4096;

pub struct SqliteStore {
    writes: Mutex<Option<std::sync::mpsc::Sender<writer::WriteFn>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    events: broadcast::Sender<Arc<Event>>,
    owner: String,
    lease: Duration,
    inactivity_ms: i64,
}

impl SqliteStore {
    /// Opens (creating and migrating) the file at `path`. `owner` names this process on
    /// the leases of the work it accepts.
    pub fn open(
        path: &str,
        owner: &str,
        lease: Duration,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&mut conn)?;
        conn.execute("UPDATE outbox SET lease_owner = '', lease_until = 0", [])?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                c.busy_timeout(Duration::from_secs(5))?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (writes, handle) =
            writer::spawn(conn, max_batch, events.clone(), metrics).map_err(|e| {
                StoreError::CommitFailed(format!("cannot start the writer thread: {e}"))
            })?;
        Ok(SqliteStore {
            writes: Mutex::new(Some(writes)),
            writer_thread: Mutex::new(Some(handle)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            events,
            owner: owner.to_string(),
            lease,
            inactivity_ms: DEFAULT_INACTIVITY.as_millis() as i64,
        })
    }

    /// How long a conversation may be quiet before the next message opens a new one.
    pub fn with_inactivity(mut self, inactivity: Duration) -> Self {
        self.inactivity_ms = inactivity.as_millis() as i64;
        self
    }

    /// Runs `f` in the next group commit; answers after that commit.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<Event>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let write: writer::WriteFn = Box::new(move |conn, events| {
            let result = f(conn, events);
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
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().map_err(|_| StoreError::Closed)?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(&self, new: NewMessage) -> Result<AcceptOutcome, StoreError> {
        let owner = self.owner.clone();
        let lease_ms = self.lease.as_millis() as i64;
        let inactivity = self.inactivity_ms;
        self.write(move |conn, events| {
            ops::accept(conn, events, &new, &owner, lease_ms, inactivity)
        })
        .await
    }

    async fn record_attempt(
        &self,
        message_id: &str,
        attempt: Attempt,
    ) -> Result<(Message, Option<Job>), StoreError> {
        let id = message_id.to_string();
        self.write(move |conn, events| ops::record_attempt(conn, events, &id, &attempt)).await
    }

    async fn fall_back_if_undelivered(&self, message_id: &str) -> Result<Option<Job>, StoreError> {
        let id = message_id.to_string();
        self.write(move |conn, events| ops::fall_back_if_undelivered(conn, events, &id)).await
    }

    async fn last_inbound(
        &self,
        account: &str,
        peer: &str,
    ) -> Result<Option<crate::model::Millis>, StoreError> {
        let (account, peer) = (account.to_string(), peer.to_string());
        self.read(move |conn| {
            use rusqlite::OptionalExtension;
            Ok(conn
                .prepare_cached(
                    "SELECT last_inbound_at FROM windows WHERE account = ?1 AND peer = ?2",
                )?
                .query_row([&account, &peer], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn apply_status(
        &self,
        account: &str,
        report: StatusReport,
    ) -> Result<(Option<Message>, Option<Job>), StoreError> {
        let account = account.to_string();
        self.write(move |conn, events| ops::apply_status(conn, events, &account, &report)).await
    }

    async fn receive(&self, inbound: NewInbound) -> Result<Option<Message>, StoreError> {
        let inactivity = self.inactivity_ms;
        self.write(move |conn, events| ops::receive(conn, events, &inbound, inactivity)).await
    }

    async fn apply_watermark(
        &self,
        account: &str,
        peer: &str,
        status: omnigate_adapters::MessageStatus,
        up_to: crate::model::Millis,
    ) -> Result<Vec<Message>, StoreError> {
        let (account, peer) = (account.to_string(), peer.to_string());
        self.write(move |conn, events| {
            ops::apply_watermark(conn, events, &account, &peer, status, up_to)
        })
        .await
    }

    async fn thread_of(&self, message_id: &str) -> Result<omnigate_adapters::Thread, StoreError> {
        let id = message_id.to_string();
        self.read(move |conn| ops::thread_of(conn, &id)).await
    }

    async fn mailbox_cursor(&self, account: &str) -> Result<Option<(u32, u32)>, StoreError> {
        let account = account.to_string();
        self.read(move |conn| ops::mailbox_cursor(conn, &account)).await
    }

    async fn save_mailbox_cursor(
        &self,
        account: &str,
        uid_validity: u32,
        last_uid: u32,
    ) -> Result<(), StoreError> {
        let account = account.to_string();
        self.write(move |conn, _| ops::save_mailbox_cursor(conn, &account, uid_validity, last_uid))
            .await
    }

    async fn reject_inbound(
        &self,
        account: &str,
        channel: omnigate_adapters::Channel,
        reference: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let kind = crate::model::EventKind::InboundRejected {
            account: account.to_string(),
            channel,
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        self.write(move |conn, events| ops::append_event(conn, events, kind)).await
    }

    async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| ops::get_message(conn, &id)).await
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        let id = conversation_id.to_string();
        self.read(move |conn| ops::list_messages(conn, &id, after, limit)).await
    }

    async fn events_after(&self, sequence: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(move |conn| ops::events_after(conn, sequence, limit)).await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get::<_, i64>(0))?
                as u64)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let owner = owner.to_string();
        let lease_ms = lease.as_millis() as i64;
        self.write(move |conn, _| ops::claim(conn, &owner, lease_ms, limit)).await
    }

    async fn upsert_contact(&self, update: ContactUpdate) -> Result<Contact, StoreError> {
        self.write(move |conn, _| people::upsert_contact(conn, &update, now_ms())).await
    }

    async fn get_contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| people::load_contact(conn, &id)).await
    }

    async fn find_contact(&self, identity: Identity) -> Result<Option<Contact>, StoreError> {
        self.read(move |conn| match people::owner_of(conn, &identity)? {
            Some(id) => people::load_contact(conn, &id),
            None => Ok(None),
        })
        .await
    }

    async fn merge_contacts(&self, into: &str, from: &str) -> Result<Contact, StoreError> {
        let (into, from) = (into.to_string(), from.to_string());
        self.write(move |conn, events| people::merge_contacts(conn, events, &into, &from, now_ms()))
            .await
    }

    async fn forget_contact(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.write(move |conn, events| people::forget_contact(conn, events, &id, now_ms())).await
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| people::load_conversation(conn, &id)).await
    }

    async fn list_conversations(
        &self,
        filter: ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.read(move |conn| people::list_conversations(conn, &filter)).await
    }

    async fn close_conversation(&self, id: &str) -> Result<Conversation, StoreError> {
        let id = id.to_string();
        self.write(move |conn, events| people::close(conn, events, &id)).await
    }

    async fn save_webhook(&self, webhook: Webhook) -> Result<Webhook, StoreError> {
        self.write(move |conn, _| {
            conn.prepare_cached("INSERT INTO webhooks (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc")?
                .execute(rusqlite::params![webhook.id, serde_json::to_string(&webhook)?])?;
            Ok(webhook)
        })
        .await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read(|conn| {
            let docs: Vec<String> = conn
                .prepare_cached("SELECT doc FROM webhooks ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn, _| {
            Ok(conn.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?.execute([&id])? > 0)
        })
        .await
    }

    async fn dead_letter(
        &self,
        mut webhook: Webhook,
        sequence: u64,
        error: &str,
    ) -> Result<Webhook, StoreError> {
        let error = error.to_string();
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO webhook_dead_letters (webhook_id, sequence, error, at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![webhook.id, sequence as i64, error, now_ms()])?;
            webhook.dead_letters += 1;
            webhook.cursor = webhook.cursor.max(sequence);
            webhook.last_error = error;
            conn.prepare_cached("UPDATE webhooks SET doc = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![webhook.id, serde_json::to_string(&webhook)?])?;
            Ok(webhook)
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
    }
}
