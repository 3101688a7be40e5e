//! The SQL of each store operation. Every function runs inside the writer's transaction
//! (writes) or on a reader connection (reads).

use omnigate_adapters::email::render;
use omnigate_adapters::{MessageStatus, StatusReport, Thread};
use rusqlite::{Connection, OptionalExtension, params};

use super::people;
use crate::model::{
    ChannelAttempt, ConversationState, Direction, Event, EventKind, Identity, Message, Millis,
    StatusChange, now_ms,
};
use crate::store::{AcceptOutcome, Attempt, Job, NewInbound, NewMessage, StoreError};

pub fn accept(
    conn: &Connection,
    events: &mut Vec<Event>,
    new: &NewMessage,
    owner: &str,
    lease_ms: i64,
    inactivity_ms: i64,
) -> Result<AcceptOutcome, StoreError> {
    if let Some(key) = &new.idempotency_key {
        let first: Option<(String, String)> = conn
            .prepare_cached("SELECT fingerprint, doc FROM messages WHERE idempotency_key = ?1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((fingerprint, doc)) = first {
            if fingerprint != new.fingerprint {
                return Err(StoreError::IdempotencyConflict(key.clone()));
            }
            return Ok(AcceptOutcome::Existing(serde_json::from_str(&doc)?));
        }
    }
    let identity = Identity { channel: new.channel, address: new.to.clone() };
    let contact_id = people::resolve_contact(conn, &identity, new.now)?;
    let conversation_id = match &new.conversation_id {
        Some(id) => {
            let c = people::load_conversation(conn, id)?
                .ok_or_else(|| StoreError::NotFound(format!("conversation {id}")))?;
            if c.contact_id != contact_id {
                return Err(StoreError::Invalid(format!(
                    "conversation {id} is with another contact than {} on {}",
                    new.to, new.channel
                )));
            }
            people::touch(conn, &c, new.channel, new.now)?;
            id.clone()
        }
        None => people::thread(
            conn,
            events,
            &people::Party {
                contact_id: &contact_id,
                account: &new.account,
                channel: new.channel,
                address: &new.to,
            },
            new.now,
            inactivity_ms,
        )?,
    };
    let outside_window = match new.window_ms {
        Some(window) => {
            let last: Option<i64> = conn
                .prepare_cached(
                    "SELECT last_inbound_at FROM windows WHERE account = ?1 AND peer = ?2",
                )?
                .query_row([&new.account, &new.to], |r| r.get(0))
                .optional()?;
            last.is_none_or(|at| new.now - at > window)
        }
        None => false,
    };
    let mut message = Message {
        id: new.id.clone(),
        conversation_id,
        channel: new.channel,
        direction: Direction::Outbound,
        account: new.account.clone(),
        from: new.from.clone(),
        to: new.to.clone(),
        content: new.content.clone(),
        status: MessageStatus::Accepted,
        history: vec![StatusChange {
            status: MessageStatus::Accepted,
            at: new.now,
            provider_status: String::new(),
        }],
        error: None,
        provider_message_id: None,
        attempts: 0,
        metadata: new.metadata.clone(),
        created_at: new.now,
        updated_at: new.now,
        expires_at: Some(new.expires_at),
        reply_to_message_id: new.reply_to_message_id.clone(),
        contact_id: contact_id.clone(),
        send_options: new.send_options.clone(),
        channel_attempts: Vec::new(),
    };
    if outside_window {
        let hours = new.window_ms.unwrap_or_default() / 3_600_000;
        message.status = MessageStatus::Failed;
        message.history.push(StatusChange {
            status: MessageStatus::Failed,
            at: new.now,
            provider_status: String::new(),
        });
        message.error = Some(omnigate_adapters::ProviderError::gateway(
            omnigate_adapters::ErrorCode::OutsideWindow,
            format!(
                "{} content needs the person to have written within the last {hours} h on {}; send a template instead",
                message.content.kind(),
                message.channel
            ),
        ));
    }
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, account, idempotency_key, fingerprint, doc, contact_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        message.id,
        message.conversation_id,
        message.account,
        new.idempotency_key,
        new.fingerprint,
        serde_json::to_string(&message)?,
        contact_id
    ])?;
    append_event(
        conn,
        events,
        EventKind::StatusChanged { message: message.clone(), previous: None },
    )?;
    if outside_window {
        return Ok(AcceptOutcome::Created(message, None));
    }
    conn.prepare_cached(
        "INSERT INTO outbox (message_id, route, due_at, lease_owner, lease_until) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![message.id, new.route, new.now, owner, new.now + lease_ms])?;
    let job = Job {
        message_id: message.id.clone(),
        account: message.account.clone(),
        route: new.route.clone(),
        to: message.to.clone(),
        content: message.content.clone(),
        attempts: 0,
        expires_at: new.expires_at,
        due_at: new.now,
        send_options: new.send_options.clone(),
        delivery_deadline: false,
    };
    Ok(AcceptOutcome::Created(message, Some(Box::new(job))))
}

pub fn record_attempt(
    conn: &Connection,
    events: &mut Vec<Event>,
    id: &str,
    attempt: &Attempt,
) -> Result<(Message, Option<Job>), StoreError> {
    let mut message =
        load(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("message {id}")))?;
    let now = now_ms();
    let mut next = None;
    match attempt {
        Attempt::Sent { provider_message_id, provider_status } => {
            message.attempts += 1;
            message.error = None;
            message.provider_message_id = Some(provider_message_id.clone());
            if !advance(conn, events, &mut message, MessageStatus::Sent, provider_status, now)? {
                save(conn, &message)?;
            }
            conn.prepare_cached("UPDATE messages SET provider_message_id = ?2 WHERE id = ?1")?
                .execute(params![id, provider_message_id])?;
            remove_outbox(conn, id)?;
            next = apply_early_receipts(conn, events, &mut message)?;
        }
        Attempt::Retry { due_at, error } => {
            message.attempts += 1;
            message.error = Some(error.clone());
            if !advance(conn, events, &mut message, MessageStatus::Queued, "", now)? {
                save(conn, &message)?;
            }
            conn.prepare_cached("UPDATE outbox SET due_at = ?2 WHERE message_id = ?1")?
                .execute(params![id, due_at])?;
        }
        Attempt::Failed { status, error } => {
            if *status == MessageStatus::Failed {
                message.attempts += 1;
            }
            message.error = Some(error.clone());
            if *status == MessageStatus::Failed
                && let Some(job) =
                    fall_back(conn, events, &mut message, now, MessageStatus::Failed)?
            {
                return Ok((message, Some(job)));
            }
            if !advance(conn, events, &mut message, *status, "", now)? {
                save(conn, &message)?;
            }
            remove_outbox(conn, id)?;
        }
    }
    Ok((message, next))
}

pub fn fall_back_if_undelivered(
    conn: &Connection,
    events: &mut Vec<Event>,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let Some(mut message) = load(conn, id)? else { return Ok(None) };
    if message.status != MessageStatus::Sent {
        return Ok(None);
    }
    message.error = Some(omnigate_adapters::ProviderError::gateway(
        omnigate_adapters::ErrorCode::Undeliverable,
        "no delivery receipt before the fallback deadline",
    ));
    let left_at = message.status;
    fall_back(conn, events, &mut message, now_ms(), left_at)
}

/// After a permanent failure, moves the message to its next fallback route: the failed
/// channel becomes a `ChannelAttempt`, the message goes back to QUEUED on the next channel
/// (the one move against status rank, made by the gateway itself and recorded in the
/// history), and the answer is the job to dispatch. `None` when no fallback is left.
/// `left_at` is where the message stood on the channel it leaves.
fn fall_back(
    conn: &Connection,
    events: &mut Vec<Event>,
    message: &mut Message,
    now: i64,
    left_at: MessageStatus,
) -> Result<Option<Job>, StoreError> {
    if message.send_options.fallbacks.is_empty() {
        return Ok(None);
    }
    let next = message.send_options.fallbacks.remove(0);
    message.channel_attempts.push(ChannelAttempt {
        channel: message.channel,
        account: message.account.clone(),
        to: message.to.clone(),
        status: left_at,
        error: message.error.take(),
        provider_message_id: message.provider_message_id.take(),
    });
    let previous = message.status;
    message.channel = next.channel;
    message.account = next.account.clone();
    message.from = next.from.clone();
    message.to = next.to.clone();
    message.status = MessageStatus::Queued;
    message.updated_at = now;
    message.history.push(StatusChange {
        status: MessageStatus::Queued,
        at: now,
        provider_status: format!("fallback to {}", next.channel),
    });
    conn.prepare_cached(
        "UPDATE messages SET account = ?2, provider_message_id = NULL, doc = ?3 WHERE id = ?1",
    )?
    .execute(params![message.id, message.account, serde_json::to_string(&*message)?])?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO outbox (message_id, route, due_at, lease_owner, lease_until) VALUES (?1, ?2, ?3, 'fallback', ?4)",
    )?
    .execute(params![message.id, next.route, now, now + 60_000])?;
    if let Some(c) = people::load_conversation(conn, &message.conversation_id)? {
        people::touch(conn, &c, next.channel, now)?;
    }
    append_event(
        conn,
        events,
        EventKind::StatusChanged { message: message.clone(), previous: Some(previous) },
    )?;
    Ok(Some(Job {
        message_id: message.id.clone(),
        account: next.account,
        route: next.route,
        to: next.to,
        content: message.content.clone(),
        attempts: message.attempts,
        expires_at: message.expires_at.unwrap_or(i64::MAX),
        due_at: now,
        send_options: message.send_options.clone(),
        delivery_deadline: false,
    }))
}

pub fn apply_status(
    conn: &Connection,
    events: &mut Vec<Event>,
    account: &str,
    report: &StatusReport,
) -> Result<(Option<Message>, Option<Job>), StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM messages WHERE account = ?1 AND provider_message_id = ?2")?
        .query_row([account, &report.provider_message_id], |r| r.get(0))
        .optional()?;
    let Some(doc) = doc else {
        park(conn, account, report, now_ms())?;
        return Ok((None, None));
    };
    let mut message: Message = serde_json::from_str(&doc)?;
    let (moved, job) = apply_report(conn, events, &mut message, report)?;
    Ok((moved.then_some(message), job))
}

fn apply_report(
    conn: &Connection,
    events: &mut Vec<Event>,
    message: &mut Message,
    report: &StatusReport,
) -> Result<(bool, Option<Job>), StoreError> {
    if !message.status.can_advance_to(report.status) {
        return Ok((false, None));
    }
    if report.error.is_some() {
        message.error = report.error.clone();
    }
    if report.status == MessageStatus::Failed
        && let Some(job) = fall_back(conn, events, message, now_ms(), MessageStatus::Failed)?
    {
        return Ok((true, Some(job)));
    }
    Ok((advance(conn, events, message, report.status, &report.provider_status, now_ms())?, None))
}

fn apply_early_receipts(
    conn: &Connection,
    events: &mut Vec<Event>,
    message: &mut Message,
) -> Result<Option<Job>, StoreError> {
    let Some(pid) = message.provider_message_id.clone() else { return Ok(None) };
    let early: Vec<String> = conn
        .prepare_cached("DELETE FROM early_receipts WHERE account = ?1 AND provider_message_id = ?2 RETURNING report")?
        .query_map([&message.account, &pid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut reports: Vec<StatusReport> = early
        .iter()
        .map(|r| serde_json::from_str::<EarlyReceipt>(r).map(|e| e.into_report(&pid)))
        .collect::<Result<_, _>>()?;
    // Apply in the order a message lives through them, whatever order they arrived in.
    reports.sort_by_key(|r| r.status as u8);
    for report in &reports {
        if let (_, Some(job)) = apply_report(conn, events, message, report)? {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// How long a parked receipt waits for its message. A send's commit follows its provider's
/// answer within moments; a receipt still unmatched after this concerns a message this
/// gateway never sent.
pub const PARK_HORIZON_MS: Millis = 3_600_000;

/// Keeps a receipt whose message is not (yet) known, and drops those past the horizon.
fn park(
    conn: &Connection,
    account: &str,
    report: &StatusReport,
    now: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM early_receipts WHERE parked_at < ?1")?
        .execute([now - PARK_HORIZON_MS])?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO early_receipts (account, provider_message_id, status, report, parked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        account,
        report.provider_message_id,
        report.status.as_str(),
        serde_json::to_string(&EarlyReceipt::from(report))?,
        now
    ])?;
    Ok(())
}

/// A receipt parked in `early_receipts`.
#[derive(serde::Serialize, serde::Deserialize)]
struct EarlyReceipt {
    status: MessageStatus,
    provider_status: String,
    error: Option<omnigate_adapters::ProviderError>,
}

impl From<&StatusReport> for EarlyReceipt {
    fn from(r: &StatusReport) -> Self {
        EarlyReceipt {
            status: r.status,
            provider_status: r.provider_status.clone(),
            error: r.error.clone(),
        }
    }
}

impl EarlyReceipt {
    fn into_report(self, provider_message_id: &str) -> StatusReport {
        StatusReport {
            provider_message_id: provider_message_id.to_string(),
            status: self.status,
            provider_status: self.provider_status,
            error: self.error,
        }
    }
}

pub fn receive(
    conn: &Connection,
    events: &mut Vec<Event>,
    inbound: &NewInbound,
    inactivity_ms: i64,
) -> Result<Option<Message>, StoreError> {
    let m = &inbound.message;
    let seen = conn
        .prepare_cached("SELECT 1 FROM messages WHERE account = ?1 AND provider_message_id = ?2")?
        .exists([&inbound.account, &m.provider_message_id])?;
    if seen {
        return Ok(None);
    }
    let (contact_id, conversation_id) = match referenced_conversation(conn, inbound)? {
        Some(found) => found,
        None => {
            let contact_id = people::resolve_contact(conn, &inbound.from, inbound.now)?;
            let conversation_id = people::thread(
                conn,
                events,
                &people::Party {
                    contact_id: &contact_id,
                    account: &inbound.account,
                    channel: inbound.channel,
                    address: &inbound.from.address,
                },
                inbound.now,
                inactivity_ms,
            )?;
            (contact_id, conversation_id)
        }
    };
    conn.prepare_cached(
        "INSERT INTO windows (account, peer, last_inbound_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, peer) DO UPDATE SET last_inbound_at = max(last_inbound_at, excluded.last_inbound_at)",
    )?
    .execute(params![inbound.account, inbound.from.address, inbound.now])?;
    let reply_to_message_id = match &m.reply_to {
        Some(pid) => conn
            .prepare_cached(
                "SELECT id FROM messages WHERE account = ?1 AND provider_message_id = ?2",
            )?
            .query_row([&inbound.account, pid], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let message = Message {
        id: inbound.id.clone(),
        conversation_id,
        channel: inbound.channel,
        direction: Direction::Inbound,
        account: inbound.account.clone(),
        from: inbound.from.address.clone(),
        to: m.to.clone(),
        content: m.content.clone(),
        status: MessageStatus::Received,
        history: vec![StatusChange {
            status: MessageStatus::Received,
            at: inbound.now,
            provider_status: String::new(),
        }],
        error: None,
        provider_message_id: Some(m.provider_message_id.clone()),
        attempts: 0,
        metadata: Default::default(),
        created_at: inbound.now,
        updated_at: inbound.now,
        expires_at: None,
        reply_to_message_id,
        contact_id: contact_id.clone(),
        send_options: Default::default(),
        channel_attempts: Vec::new(),
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, account, provider_message_id, doc, contact_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        message.id,
        message.conversation_id,
        message.account,
        m.provider_message_id,
        serde_json::to_string(&message)?,
        contact_id
    ])?;
    append_event(conn, events, EventKind::Received { message: message.clone() })?;
    Ok(Some(message))
}

/// The open conversation of a message this one refers to (email's In-Reply-To and
/// References, newest first), with its contact: a reply threads where it belongs even when
/// it comes from another address of the person. A closed conversation stays closed; the
/// reply then threads by its sender as any other message.
fn referenced_conversation(
    conn: &Connection,
    inbound: &NewInbound,
) -> Result<Option<(String, String)>, StoreError> {
    let m = &inbound.message;
    let candidates = m.reply_to.iter().chain(m.references.iter().rev());
    for provider_id in candidates {
        let found: Option<String> = conn
            .prepare_cached(
                "SELECT conversation_id FROM messages WHERE account = ?1 AND provider_message_id = ?2",
            )?
            .query_row([&inbound.account, provider_id], |r| r.get(0))
            .optional()?;
        let Some(conversation) =
            found.map(|id| people::load_conversation(conn, &id)).transpose()?.flatten()
        else {
            continue;
        };
        if conversation.state == ConversationState::Open {
            people::touch(conn, &conversation, inbound.channel, inbound.now)?;
            return Ok(Some((conversation.contact_id.clone(), conversation.id)));
        }
    }
    Ok(None)
}

/// The email thread a message continues: Message-IDs of the earlier emails of its
/// conversation, oldest first, and the subject they go by.
pub fn thread_of(conn: &Connection, message_id: &str) -> Result<Thread, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT provider_message_id, json_extract(doc, '$.content.email.subject'),
                    coalesce(json_extract(doc, '$.content.email.text'),
                             json_extract(doc, '$.content.text.body'),
                             json_extract(doc, '$.content.media.caption'))
             FROM messages
             WHERE conversation_id = (SELECT conversation_id FROM messages WHERE id = ?1)
               AND seq < (SELECT seq FROM messages WHERE id = ?1)
               AND provider_message_id IS NOT NULL
               AND json_extract(doc, '$.channel') = 'email'
             ORDER BY seq",
        )?
        .query_map([message_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let explicit = rows
        .iter()
        .rev()
        .find_map(|(_, subject, _)| subject.clone().filter(|s| !s.trim().is_empty()));
    // A thread started from plain text goes by the subject its first email was given.
    let subject = explicit.unwrap_or_else(|| match rows.first() {
        Some((_, _, Some(text))) => render::subject_for("", &Thread::default(), text),
        _ => String::new(),
    });
    Ok(Thread { subject, references: rows.into_iter().map(|(id, _, _)| id).collect() })
}

pub fn mailbox_cursor(conn: &Connection, account: &str) -> Result<Option<(u32, u32)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT uid_validity, last_uid FROM mailbox_cursors WHERE account = ?1")?
        .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub fn save_mailbox_cursor(
    conn: &Connection,
    account: &str,
    uid_validity: u32,
    last_uid: u32,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO mailbox_cursors (account, uid_validity, last_uid) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid",
    )?
    .execute(params![account, uid_validity, last_uid])?;
    Ok(())
}

/// How far back a watermark looks: receipts concern recent messages.
const WATERMARK_SCAN: i64 = 200;

pub fn apply_watermark(
    conn: &Connection,
    events: &mut Vec<Event>,
    account: &str,
    peer: &str,
    status: MessageStatus,
    up_to: i64,
) -> Result<Vec<Message>, StoreError> {
    let docs: Vec<String> = conn
        .prepare_cached(
            "SELECT m.doc FROM messages m JOIN identities i ON i.contact_id = m.contact_id
             WHERE m.account = ?1 AND i.address = ?2 ORDER BY m.seq DESC LIMIT ?3",
        )?
        .query_map(params![account, peer, WATERMARK_SCAN], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut moved = Vec::new();
    for doc in docs {
        let mut message: Message = serde_json::from_str(&doc)?;
        if message.direction != Direction::Outbound
            || message.created_at > up_to
            || message.provider_message_id.is_none()
        {
            continue;
        }
        let word = if status == MessageStatus::Read { "read" } else { "delivered" };
        if advance(conn, events, &mut message, status, word, now_ms())? {
            moved.push(message);
        }
    }
    Ok(moved)
}

pub fn get_message(conn: &Connection, id: &str) -> Result<Option<Message>, StoreError> {
    load(conn, id)
}

pub fn list_messages(
    conn: &Connection,
    conversation_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Message)>, StoreError> {
    let rows: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, doc FROM messages WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?
        .query_map(params![conversation_id, after as i64, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(|(seq, doc)| Ok((seq as u64, serde_json::from_str(&doc)?))).collect()
}

pub fn events_after(
    conn: &Connection,
    sequence: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<(i64, i64, String)> = conn
        .prepare_cached("SELECT seq, at, kind FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![sequence as i64, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(seq, at, kind)| {
            Ok(Event { sequence: seq as u64, at, kind: serde_json::from_str(&kind)? })
        })
        .collect()
}

pub fn claim(
    conn: &Connection,
    owner: &str,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let now = now_ms();
    let claimed: Vec<(String, String, i64)> = conn
        .prepare_cached(
            "UPDATE outbox SET lease_owner = ?1, lease_until = ?2
             WHERE message_id IN (SELECT message_id FROM outbox WHERE lease_until <= ?3 ORDER BY due_at LIMIT ?4)
             RETURNING message_id, route, due_at",
        )?
        .query_map(params![owner, now + lease_ms, now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut jobs = Vec::with_capacity(claimed.len());
    for (message_id, route, due_at) in claimed {
        let Some(message) = load(conn, &message_id)? else { continue };
        jobs.push(Job {
            message_id,
            account: message.account,
            route,
            to: message.to,
            content: message.content,
            attempts: message.attempts,
            expires_at: message.expires_at.unwrap_or(i64::MAX),
            due_at,
            send_options: message.send_options,
            delivery_deadline: false,
        });
    }
    jobs.sort_by(|a, b| (a.due_at, &a.message_id).cmp(&(b.due_at, &b.message_id)));
    Ok(jobs)
}

fn load(conn: &Connection, id: &str) -> Result<Option<Message>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM messages WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

fn save(conn: &Connection, message: &Message) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE messages SET doc = ?2 WHERE id = ?1")?
        .execute(params![message.id, serde_json::to_string(message)?])?;
    Ok(())
}

/// Moves `message` to `status` if that is forward, saving it and appending the event.
fn advance(
    conn: &Connection,
    events: &mut Vec<Event>,
    message: &mut Message,
    status: MessageStatus,
    provider_status: &str,
    now: i64,
) -> Result<bool, StoreError> {
    if !message.status.can_advance_to(status) {
        return Ok(false);
    }
    let previous = message.status;
    message.status = status;
    message.updated_at = now;
    message.history.push(StatusChange {
        status,
        at: now,
        provider_status: provider_status.to_string(),
    });
    save(conn, message)?;
    append_event(
        conn,
        events,
        EventKind::StatusChanged { message: message.clone(), previous: Some(previous) },
    )?;
    Ok(true)
}

fn remove_outbox(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM outbox WHERE message_id = ?1")?.execute([id])?;
    Ok(())
}

pub fn append_event(
    conn: &Connection,
    events: &mut Vec<Event>,
    kind: EventKind,
) -> Result<(), StoreError> {
    let at = now_ms();
    let contact_id = match &kind {
        EventKind::StatusChanged { message, .. } | EventKind::Received { message } => {
            message.contact_id.as_str()
        }
        EventKind::ConversationOpened { conversation }
        | EventKind::ConversationClosed { conversation } => conversation.contact_id.as_str(),
        EventKind::ContactMerged { contact, .. } => contact.id.as_str(),
        EventKind::ContactForgotten { contact_id } => contact_id.as_str(),
        EventKind::InboundRejected { .. } => "",
    };
    conn.prepare_cached("INSERT INTO events (at, kind, contact_id) VALUES (?1, ?2, ?3)")?
        .execute(params![at, serde_json::to_string(&kind)?, contact_id])?;
    events.push(Event { sequence: conn.last_insert_rowid() as u64, at, kind });
    Ok(())
}

/// What an erased message keeps: its id, timing, statuses, channel and account.
fn erase(message: &mut Message) {
    message.content = omnigate_adapters::Content::text("[erased]");
    match message.direction {
        Direction::Outbound => message.to.clear(),
        Direction::Inbound => message.from.clear(),
    }
    message.metadata.clear();
    message.send_options = Default::default();
}

/// Erases a contact's messages, and the copies of them in the event log.
pub fn scrub_contact_messages(conn: &Connection, contact_id: &str) -> Result<u64, StoreError> {
    let docs: Vec<(String, String)> = conn
        .prepare_cached("SELECT id, doc FROM messages WHERE contact_id = ?1")?
        .query_map([contact_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let count = docs.len() as u64;
    for (_, doc) in docs {
        let mut m: Message = serde_json::from_str(&doc)?;
        erase(&mut m);
        save(conn, &m)?;
    }
    let logged: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, kind FROM events WHERE contact_id = ?1")?
        .query_map([contact_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, kind) in logged {
        let mut kind: EventKind = serde_json::from_str(&kind)?;
        match &mut kind {
            EventKind::StatusChanged { message, .. } | EventKind::Received { message } => {
                erase(message)
            }
            EventKind::ContactMerged { contact, .. } => {
                contact.display_name.clear();
                contact.identities.clear();
            }
            _ => continue,
        }
        conn.prepare_cached("UPDATE events SET kind = ?2 WHERE seq = ?1")?
            .execute(params![seq, serde_json::to_string(&kind)?])?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use omnigate_adapters::{MessageStatus, StatusReport};
    use rusqlite::Connection;

    use super::{PARK_HORIZON_MS, park};

    fn parked(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT provider_message_id FROM early_receipts ORDER BY parked_at")
            .expect("query");
        stmt.query_map([], |r| r.get(0)).expect("rows").collect::<Result<_, _>>().expect("ids")
    }

    #[test]
    fn receipts_for_messages_that_never_appear_are_dropped_after_the_horizon() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let report = |pid: &str| StatusReport {
            provider_message_id: pid.into(),
            status: MessageStatus::Delivered,
            provider_status: "delivered".into(),
            error: None,
        };
        park(&conn, "sms", &report("SMold"), 1_000).expect("park");
        park(&conn, "sms", &report("SMrecent"), 1_000 + PARK_HORIZON_MS).expect("park");
        assert_eq!(parked(&conn), ["SMold", "SMrecent"], "both within the horizon");
        park(&conn, "sms", &report("SMnew"), 1_001 + PARK_HORIZON_MS).expect("park");
        assert_eq!(parked(&conn), ["SMrecent", "SMnew"], "the oldest is past it");
    }
}
