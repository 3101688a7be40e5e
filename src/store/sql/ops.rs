//! The SQL of each store operation. Every function runs inside the writer's transaction
//! (writes) or on a reader connection (reads).

use omnigate_adapters::email::render;
use omnigate_adapters::{
    Channel, Content, ErrorCode, MessageStatus, ProviderError, StatusReport, Thread,
};

use super::db::{Db, Dialect, args};
use super::{consent, people};
use crate::model::{
    ChannelAttempt, ConversationState, Direction, Event, EventKind, Identity, Message, Millis,
    StatusChange, ids_before, now_ms,
};
use crate::store::{
    AcceptOutcome, Attempt, Cutoff, Job, NewInbound, NewMessage, Purged, StoreError,
};

/// Who holds the work a write hands to the dispatcher, and for how long.
pub struct Lease<'a> {
    pub owner: &'a str,
    pub ms: i64,
}

pub fn accept(
    db: &dyn Db,
    events: &mut Vec<Event>,
    new: &NewMessage,
    lease: &Lease<'_>,
    inactivity_ms: i64,
) -> Result<AcceptOutcome, StoreError> {
    if let Some(key) = &new.idempotency_key {
        let first = db.query_opt(
            "SELECT fingerprint, doc FROM messages WHERE idempotency_key = $1",
            args![key],
        )?;
        if let Some(row) = first {
            if row.opt_text(0)?.as_ref() != Some(&new.fingerprint) {
                return Err(StoreError::IdempotencyConflict(key.clone()));
            }
            return Ok(AcceptOutcome::Existing(row.doc(1)?));
        }
    }
    let identity = Identity { channel: new.channel, address: new.to.clone() };
    let contact = people::resolve_contact(db, &identity, new.now)?;
    let conversation_id = match &new.conversation_id {
        Some(id) => {
            let c = people::load_conversation(db, id)?
                .ok_or_else(|| StoreError::NotFound(format!("conversation {id}")))?;
            if c.contact_id != contact.id {
                return Err(StoreError::Invalid(format!(
                    "conversation {id} is with another contact than {} on {}",
                    new.to, new.channel
                )));
            }
            people::touch(db, &c, new.channel, new.now)?;
            id.clone()
        }
        None => people::thread(
            db,
            events,
            &people::Party {
                contact: &contact,
                account: &new.account,
                channel: new.channel,
                address: &new.to,
            },
            new.now,
            inactivity_ms,
        )?,
    };
    let refusal = refusal(db, new)?;
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
        contact_id: contact.id,
        send_options: new.send_options.clone(),
        channel_attempts: Vec::new(),
        send_at: new.send_at,
    };
    if let Some(error) = refusal {
        message.status = MessageStatus::Failed;
        message.history.push(StatusChange {
            status: MessageStatus::Failed,
            at: new.now,
            provider_status: String::new(),
        });
        message.error = Some(error);
    }
    let doc = serde_json::to_string(&message)?;
    db.execute_later(
        "INSERT INTO messages (seq, id, conversation_id, account, idempotency_key, fingerprint, doc, contact_id)
         VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM messages), $1, $2, $3, $4, $5, $6, $7)",
        args![
            &message.id,
            &message.conversation_id,
            &message.account,
            &new.idempotency_key,
            &new.fingerprint,
            &doc,
            &message.contact_id
        ],
    )?;
    append_status_changed(db, events, &message, &doc, None)?;
    if message.status == MessageStatus::Failed {
        // Refused here as a provider would have refused it: the next channel, if any.
        let next = fall_back(db, events, &mut message, new.now, MessageStatus::Failed, lease)?;
        return Ok(AcceptOutcome::Created(message, next.map(Box::new)));
    }
    let (owner, until) =
        if new.dispatch_here { (lease.owner, new.now + lease.ms) } else { ("", 0) };
    let due_at = new.send_at.unwrap_or(new.now);
    db.execute_later(
        "INSERT INTO outbox (message_id, account, route, due_at, lease_owner, lease_until) VALUES ($1, $2, $3, $4, $5, $6)",
        args![&message.id, &message.account, &new.route, due_at, owner, until],
    )?;
    if !new.dispatch_here {
        return Ok(AcceptOutcome::Created(message, None));
    }
    let job = Job {
        message_id: message.id.clone(),
        account: message.account.clone(),
        route: new.route.clone(),
        to: message.to.clone(),
        content: message.content.clone(),
        attempts: 0,
        unsure_since: None,
        expires_at: new.expires_at,
        due_at,
        consent_checked_at: new.now,
        send_options: new.send_options.clone(),
        delivery_deadline: false,
        origin: opentelemetry::Context::new(),
    };
    Ok(AcceptOutcome::Created(message, Some(Box::new(job))))
}

/// Why the gateway fails a message at acceptance rather than send it: the person opted out
/// of the account's messages or the address bounced, or the content needs a service window
/// that is not open.
fn refusal(db: &dyn Db, new: &NewMessage) -> Result<Option<ProviderError>, StoreError> {
    if let Some(error) = consent::bar(db, &new.account, &new.to)? {
        return Ok(Some(error));
    }
    let Some(window) = new.window_ms else { return Ok(None) };
    if last_inbound(db, &new.account, &new.to)?.is_some_and(|at| new.now - at <= window) {
        return Ok(None);
    }
    Ok(Some(ProviderError::gateway(
        ErrorCode::OutsideWindow,
        format!(
            "{} content needs the person to have written within the last {} h on {}; {}",
            new.content.kind(),
            window / 3_600_000,
            new.channel,
            beyond_window(new.channel, new.send_options.tag.as_deref())
        ),
    )))
}

/// What may still go to a person whose window has closed, by the provider's rules.
fn beyond_window(channel: Channel, tag: Option<&str>) -> &'static str {
    match (channel, tag) {
        (Channel::Whatsapp, _) => "send a template instead",
        (_, Some("HUMAN_AGENT")) => {
            "past HUMAN_AGENT's 7 days only a message tag for an update Meta allows may go"
        }
        _ => {
            "set message_tag: HUMAN_AGENT for a person's answer within 7 days, or a tag for an update Meta allows"
        }
    }
}

pub fn record_attempt(
    db: &dyn Db,
    events: &mut Vec<Event>,
    id: &str,
    attempt: &Attempt,
    lease: &Lease<'_>,
) -> Result<(Message, Option<Job>), StoreError> {
    let loaded = match attempt {
        Attempt::Sent { provider_message_id, .. } => {
            load_with_early_receipts(db, id, provider_message_id)?
        }
        _ => load(db, id)?.map(|message| (message, Vec::new())),
    };
    let (mut message, early) =
        loaded.ok_or_else(|| StoreError::NotFound(format!("message {id}")))?;
    let now = now_ms();
    let mut next = None;
    match attempt {
        Attempt::Sent { provider_message_id, provider_status } => {
            message.attempts += 1;
            message.error = None;
            message.provider_message_id = Some(provider_message_id.clone());
            // Saving the message stores its provider id too, in the column receipts find it by.
            if !advance(db, events, &mut message, MessageStatus::Sent, provider_status, now)? {
                save(db, &message)?;
            }
            remove_outbox(db, id)?;
            next = apply_early_receipts(db, events, &mut message, early, lease)?;
        }
        Attempt::Retry { due_at, error, unsure_since } => {
            message.attempts += 1;
            message.error = Some(error.clone());
            if !advance(db, events, &mut message, MessageStatus::Queued, "", now)? {
                save(db, &message)?;
            }
            db.execute_later(
                "UPDATE outbox SET due_at = $2, unsure_since = $3 WHERE message_id = $1",
                args![id, *due_at, *unsure_since],
            )?;
        }
        Attempt::Failed { status, error } => {
            // An expiry comes before any call to the provider.
            if *status == MessageStatus::Failed {
                message.attempts += 1;
            }
            consent::note_refusal(db, events, &message, error, now)?;
            return give_up(db, events, message, (*status, error), now, lease);
        }
        Attempt::Refused { error } => {
            return give_up(db, events, message, (MessageStatus::Failed, error), now, lease);
        }
    }
    Ok((message, next))
}

/// Ends the message's sending at `status` with `error`; a failure moves it to its next
/// channel instead, when it has one (the job to dispatch).
fn give_up(
    db: &dyn Db,
    events: &mut Vec<Event>,
    mut message: Message,
    (status, error): (MessageStatus, &ProviderError),
    now: Millis,
    lease: &Lease<'_>,
) -> Result<(Message, Option<Job>), StoreError> {
    message.error = Some(error.clone());
    if status == MessageStatus::Failed
        && let Some(job) = fall_back(db, events, &mut message, now, MessageStatus::Failed, lease)?
    {
        return Ok((message, Some(job)));
    }
    if !advance(db, events, &mut message, status, "", now)? {
        save(db, &message)?;
    }
    remove_outbox(db, &message.id)?;
    Ok((message, None))
}

pub fn fall_back_if_undelivered(
    db: &dyn Db,
    events: &mut Vec<Event>,
    id: &str,
    lease: &Lease<'_>,
) -> Result<Option<Job>, StoreError> {
    let Some(mut message) = load(db, id)? else { return Ok(None) };
    if message.status != MessageStatus::Sent {
        return Ok(None);
    }
    message.error = Some(ProviderError::gateway(
        ErrorCode::Undeliverable,
        "no delivery receipt before the fallback deadline",
    ));
    let left_at = message.status;
    fall_back(db, events, &mut message, now_ms(), left_at, lease)
}

/// After a permanent failure, moves the message to its next fallback route: the failed
/// channel becomes a `ChannelAttempt`, the message goes back to QUEUED on the next channel
/// (the one move against status rank, made by the gateway itself and recorded in the
/// history), and the answer is the job to dispatch. `None` when no fallback is left.
/// `left_at` is where the message stood on the channel it leaves.
fn fall_back(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &mut Message,
    now: i64,
    left_at: MessageStatus,
    lease: &Lease<'_>,
) -> Result<Option<Job>, StoreError> {
    // Fallbacks the person opted out of are passed over as channels that failed at once;
    // with none other left there is no fallback.
    let mut refused = Vec::new();
    for route in &message.send_options.fallbacks {
        match consent::bar(db, &route.account, &route.to)? {
            Some(error) => refused.push(error),
            None => break,
        }
    }
    if refused.len() == message.send_options.fallbacks.len() {
        return Ok(None);
    }
    let previous = message.status;
    let mut left_at = left_at;
    let mut next = message.send_options.fallbacks.remove(0);
    let mut refused = refused.into_iter();
    loop {
        message.channel_attempts.push(ChannelAttempt {
            channel: message.channel,
            account: message.account.clone(),
            to: message.to.clone(),
            status: left_at,
            error: message.error.take(),
            provider_message_id: message.provider_message_id.take(),
        });
        message.channel = next.channel;
        message.account = next.account.clone();
        message.from = next.from.clone();
        message.to = next.to.clone();
        let Some(refusal) = refused.next() else { break };
        (left_at, message.error) = (MessageStatus::Failed, Some(refusal));
        next = message.send_options.fallbacks.remove(0);
    }
    message.status = MessageStatus::Queued;
    message.updated_at = now;
    message.history.push(StatusChange {
        status: MessageStatus::Queued,
        at: now,
        provider_status: format!("fallback to {}", next.channel),
    });
    let doc = serde_json::to_string(&*message)?;
    db.execute(
        "UPDATE messages SET account = $2, provider_message_id = NULL, doc = $3 WHERE id = $1",
        args![&message.id, &message.account, &doc],
    )?;
    // The fallback job goes straight to the dispatcher; its lease is the caller's, like a
    // fresh message's.
    db.execute(
        "INSERT INTO outbox (message_id, account, route, due_at, lease_owner, lease_until)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (message_id) DO UPDATE SET account = excluded.account, route = excluded.route,
           due_at = excluded.due_at, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
           unsure_since = NULL",
        args![&message.id, &next.account, &next.route, now, lease.owner, now + lease.ms],
    )?;
    if let Some(c) = people::load_conversation(db, &message.conversation_id)? {
        people::touch(db, &c, next.channel, now)?;
    }
    append_status_changed(db, events, message, &doc, Some(previous))?;
    Ok(Some(Job {
        message_id: message.id.clone(),
        account: next.account,
        route: next.route,
        to: next.to,
        content: message.content.clone(),
        attempts: message.attempts,
        unsure_since: None,
        expires_at: message.expires_at.unwrap_or(i64::MAX),
        due_at: now,
        consent_checked_at: now,
        send_options: message.send_options.clone(),
        delivery_deadline: false,
        origin: opentelemetry::Context::new(),
    }))
}

pub fn apply_status(
    db: &dyn Db,
    events: &mut Vec<Event>,
    account: &str,
    report: &StatusReport,
    lease: &Lease<'_>,
) -> Result<(Option<Message>, Option<Job>), StoreError> {
    let row = db.query_opt(
        "SELECT doc FROM messages WHERE account = $1 AND provider_message_id = $2",
        args![account, &report.provider_message_id],
    )?;
    let Some(row) = row else {
        park(db, account, report, now_ms())?;
        return Ok((None, None));
    };
    let mut message: Message = row.doc(0)?;
    let (moved, job) = apply_report(db, events, &mut message, report, lease)?;
    Ok((moved.then_some(message), job))
}

fn apply_report(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &mut Message,
    report: &StatusReport,
    lease: &Lease<'_>,
) -> Result<(bool, Option<Job>), StoreError> {
    if !message.status.can_advance_to(report.status) {
        return Ok((false, None));
    }
    if let Some(error) = &report.error {
        message.error = Some(error.clone());
        consent::note_refusal(db, events, message, error, now_ms())?;
    }
    if report.status == MessageStatus::Failed
        && let Some(job) = fall_back(db, events, message, now_ms(), MessageStatus::Failed, lease)?
    {
        return Ok((true, Some(job)));
    }
    Ok((advance(db, events, message, report.status, &report.provider_status, now_ms())?, None))
}

/// The message, and the receipts parked for the provider id its send just got, in one
/// statement: on PostgreSQL, recording a send costs one round trip to read, not two.
fn load_with_early_receipts(
    db: &dyn Db,
    id: &str,
    provider_message_id: &str,
) -> Result<Option<(Message, Vec<EarlyReceipt>)>, StoreError> {
    let rows = db.query(
        "SELECT m.doc, e.report FROM messages m
         LEFT JOIN early_receipts e ON e.account = m.account AND e.provider_message_id = $2
         WHERE m.id = $1",
        args![id, provider_message_id],
    )?;
    let Some(first) = rows.first() else { return Ok(None) };
    let mut early = Vec::new();
    for row in &rows {
        if let Some(report) = row.opt_text(1)? {
            early.push(serde_json::from_str(&report)?);
        }
    }
    Ok(Some((first.doc(0)?, early)))
}

/// Applies the receipts that arrived before their send was recorded, and drops them.
fn apply_early_receipts(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &mut Message,
    early: Vec<EarlyReceipt>,
    lease: &Lease<'_>,
) -> Result<Option<Job>, StoreError> {
    if early.is_empty() {
        return Ok(None);
    }
    let Some(pid) = message.provider_message_id.clone() else { return Ok(None) };
    db.execute_later(
        "DELETE FROM early_receipts WHERE account = $1 AND provider_message_id = $2",
        args![&message.account, &pid],
    )?;
    let mut reports: Vec<StatusReport> = early.into_iter().map(|e| e.into_report(&pid)).collect();
    // Apply in the order a message lives through them, whatever order they arrived in.
    reports.sort_by_key(|r| r.status as u8);
    for report in &reports {
        if let (_, Some(job)) = apply_report(db, events, message, report, lease)? {
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
fn park(db: &dyn Db, account: &str, report: &StatusReport, now: Millis) -> Result<(), StoreError> {
    db.execute("DELETE FROM early_receipts WHERE parked_at < $1", args![now - PARK_HORIZON_MS])?;
    db.execute(
        "INSERT INTO early_receipts (account, provider_message_id, status, report, parked_at, message_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        args![
            account,
            &report.provider_message_id,
            report.status.as_str(),
            &serde_json::to_string(&EarlyReceipt::from(report))?,
            now,
            &report.message_id
        ],
    )?;
    Ok(())
}

/// The provider ids of parked receipts that echo our message `id` on `account`, first
/// parked first: sends of it whose answer was lost.
pub fn parked_sends(db: &dyn Db, account: &str, id: &str) -> Result<Vec<String>, StoreError> {
    db.query(
        "SELECT provider_message_id FROM early_receipts WHERE account = $1 AND message_id = $2
         GROUP BY provider_message_id ORDER BY MIN(parked_at), provider_message_id",
        args![account, id],
    )?
    .iter()
    .map(|row| row.text(0))
    .collect()
}

/// A receipt parked in `early_receipts`.
#[derive(serde::Serialize, serde::Deserialize)]
struct EarlyReceipt {
    status: MessageStatus,
    provider_status: String,
    error: Option<ProviderError>,
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
            message_id: None,
        }
    }
}

pub fn receive(
    db: &dyn Db,
    events: &mut Vec<Event>,
    inbound: &NewInbound,
    inactivity_ms: i64,
) -> Result<Option<Message>, StoreError> {
    let m = &inbound.message;
    if provider_message(db, &inbound.account, &m.provider_message_id)?.is_some() {
        return Ok(None);
    }
    let (contact_id, conversation_id) = match referenced_conversation(db, inbound)? {
        Some(found) => found,
        None => {
            let contact = people::resolve_contact(db, &inbound.from, inbound.now)?;
            let conversation_id = people::thread(
                db,
                events,
                &people::Party {
                    contact: &contact,
                    account: &inbound.account,
                    channel: inbound.channel,
                    address: &inbound.from.address,
                },
                inbound.now,
                inactivity_ms,
            )?;
            (contact.id, conversation_id)
        }
    };
    db.execute_later(
        "INSERT INTO windows (account, peer, last_inbound_at) VALUES ($1, $2, $3)
         ON CONFLICT (account, peer) DO UPDATE SET last_inbound_at = CASE
           WHEN windows.last_inbound_at > excluded.last_inbound_at THEN windows.last_inbound_at
           ELSE excluded.last_inbound_at END",
        args![&inbound.account, &inbound.from.address, inbound.now],
    )?;
    let reply_to_message_id = match &m.reply_to {
        Some(pid) => provider_message(db, &inbound.account, pid)?.map(|(id, _)| id),
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
        send_at: None,
    };
    db.execute_later(
        "INSERT INTO messages (seq, id, conversation_id, account, provider_message_id, doc, contact_id)
         VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM messages), $1, $2, $3, $4, $5, $6)",
        args![
            &message.id,
            &message.conversation_id,
            &message.account,
            &m.provider_message_id,
            &serde_json::to_string(&message)?,
            &contact_id
        ],
    )?;
    let carried = light(&message).unwrap_or_else(|| message.clone());
    append_event(db, events, EventKind::Received { message: carried })?;
    let contact = people::Resolved { id: contact_id.clone(), created: false };
    let party = people::Party {
        contact: &contact,
        account: &inbound.account,
        channel: inbound.channel,
        address: &inbound.from.address,
    };
    if let Some(said) = m.consent {
        let word = match &m.content {
            Content::Text(text) => text.body.trim(),
            _ => "",
        };
        let reason = format!("replied {word:?} on {}", inbound.channel);
        consent::record(
            db,
            events,
            &party,
            consent::Stand::of((said, false)),
            &reason,
            inbound.now,
        )?;
    }
    // The channels whose providers bar dead addresses (see `consent::note_refusal`).
    if matches!(inbound.channel, Channel::Email | Channel::Sms) {
        let reason = format!("wrote on {}", inbound.channel);
        consent::record(db, events, &party, consent::Stand::Reachable, &reason, inbound.now)?;
    }
    Ok(Some(message))
}

/// The open conversation of a message this one refers to (email's In-Reply-To and
/// References, newest first), or else the one it names (a plus-addressed reply's token),
/// with its contact: a reply threads where it belongs even when it comes from another
/// address of the person. A closed conversation stays closed; the reply then threads by
/// its sender as any other message.
fn referenced_conversation(
    db: &dyn Db,
    inbound: &NewInbound,
) -> Result<Option<(String, String)>, StoreError> {
    let m = &inbound.message;
    let referenced = m.reply_to.iter().chain(m.references.iter().rev()).map(|provider_id| {
        Ok::<_, StoreError>(provider_message(db, &inbound.account, provider_id)?.map(|(_, c)| c))
    });
    let named = m.conversation.iter().map(|id| Ok(Some(id.clone())));
    for found in referenced.chain(named) {
        let found = found?;
        let Some(conversation) =
            found.map(|id| people::load_conversation(db, &id)).transpose()?.flatten()
        else {
            continue;
        };
        if conversation.state == ConversationState::Open {
            people::touch(db, &conversation, inbound.channel, inbound.now)?;
            return Ok(Some((conversation.contact_id.clone(), conversation.id)));
        }
    }
    Ok(None)
}

/// The message an account's provider knows by `provider_id`: (id, conversation id).
pub fn provider_message(
    db: &dyn Db,
    account: &str,
    provider_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    db.query_opt(
        "SELECT id, conversation_id FROM messages WHERE account = $1 AND provider_message_id = $2",
        args![account, provider_id],
    )?
    .map(|r| Ok((r.text(0)?, r.text(1)?)))
    .transpose()
}

/// When the person last wrote to `account` from `peer`.
pub fn last_inbound(db: &dyn Db, account: &str, peer: &str) -> Result<Option<Millis>, StoreError> {
    db.query_opt(
        "SELECT last_inbound_at FROM windows WHERE account = $1 AND peer = $2",
        args![account, peer],
    )?
    .map(|r| r.int(0))
    .transpose()
}

/// The email thread a message continues: its conversation, the Message-IDs of that
/// conversation's earlier emails, oldest first, and the subject they go by.
pub fn thread_of(db: &dyn Db, message_id: &str) -> Result<Thread, StoreError> {
    let own =
        db.query_opt("SELECT conversation_id, seq FROM messages WHERE id = $1", args![message_id])?;
    let Some(own) = own else { return Ok(Thread::default()) };
    let conversation_id = own.text(0)?;
    let rows = db.query(
        "SELECT provider_message_id, doc FROM messages
         WHERE conversation_id = $1 AND seq < $2 AND provider_message_id IS NOT NULL
         ORDER BY seq",
        args![&conversation_id, own.int(1)?],
    )?;
    let mut earlier = Vec::new();
    for row in rows {
        let message: Message = row.doc(1)?;
        if message.channel == omnigate_adapters::Channel::Email {
            earlier.push((row.text(0)?, message.content));
        }
    }
    let explicit = earlier.iter().rev().find_map(|(_, content)| match content {
        Content::Email(email) if !email.subject.trim().is_empty() => Some(email.subject.clone()),
        _ => None,
    });
    // A thread started from plain text goes by the subject its first email was given.
    let subject = explicit.unwrap_or_else(|| match earlier.first() {
        Some((_, content)) => match first_text(content) {
            Some(text) => render::subject_for("", &Thread::default(), text),
            None => String::new(),
        },
        None => String::new(),
    });
    let references = earlier.into_iter().map(|(id, _)| id).collect();
    Ok(Thread { subject, references, conversation_id })
}

fn first_text(content: &Content) -> Option<&str> {
    match content {
        Content::Email(email) => Some(&email.text),
        Content::Text(text) => Some(&text.body),
        Content::Media(media) => Some(&media.caption),
        _ => None,
    }
}

pub fn mailbox_cursor(db: &dyn Db, account: &str) -> Result<Option<(u32, u32)>, StoreError> {
    db.query_opt(
        "SELECT uid_validity, last_uid FROM mailbox_cursors WHERE account = $1",
        args![account],
    )?
    .map(|r| Ok((uid(r.int(0)?)?, uid(r.int(1)?)?)))
    .transpose()
}

fn uid(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n)
        .map_err(|_| StoreError::Database(format!("stored IMAP UID {n} is out of range")))
}

pub fn save_mailbox_cursor(
    db: &dyn Db,
    account: &str,
    uid_validity: u32,
    last_uid: u32,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO mailbox_cursors (account, uid_validity, last_uid) VALUES ($1, $2, $3)
         ON CONFLICT (account) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid",
        args![account, uid_validity, last_uid],
    )?;
    Ok(())
}

/// How far back a watermark looks: receipts concern recent messages.
const WATERMARK_SCAN: i64 = 200;

pub fn apply_watermark(
    db: &dyn Db,
    events: &mut Vec<Event>,
    account: &str,
    peer: &str,
    status: MessageStatus,
    up_to: i64,
) -> Result<Vec<Message>, StoreError> {
    let rows = db.query(
        "SELECT m.doc FROM messages m JOIN identities i ON i.contact_id = m.contact_id
         WHERE m.account = $1 AND i.address = $2 ORDER BY m.seq DESC LIMIT $3",
        args![account, peer, WATERMARK_SCAN],
    )?;
    let mut moved = Vec::new();
    for row in rows {
        let mut message: Message = row.doc(0)?;
        if message.direction != Direction::Outbound
            || message.created_at > up_to
            || message.provider_message_id.is_none()
        {
            continue;
        }
        let word = if status == MessageStatus::Read { "read" } else { "delivered" };
        if advance(db, events, &mut message, status, word, now_ms())? {
            moved.push(message);
        }
    }
    Ok(moved)
}

pub fn get_message(db: &dyn Db, id: &str) -> Result<Option<Message>, StoreError> {
    load(db, id)
}

pub fn list_messages(
    db: &dyn Db,
    conversation_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Message)>, StoreError> {
    db.query(
        "SELECT seq, doc FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        args![conversation_id, after, limit],
    )?
    .iter()
    .map(|r| Ok((r.int(0)? as u64, r.doc(1)?)))
    .collect()
}

/// The events after `sequence`; an error, rather than a silent jump, when retention has
/// deleted some of them. Cursor 0 means "from the oldest kept".
pub fn events_after(db: &dyn Db, sequence: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
    let events = db
        .query(
            "SELECT seq, at, kind FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            args![sequence, limit],
        )?
        .iter()
        .map(|r| Ok(Event { sequence: r.int(0)? as u64, at: r.int(1)?, kind: r.doc(2)? }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    if sequence > 0 && events.first().is_some_and(|e| e.sequence > sequence + 1) {
        // The log is gap-free, so a jump past the cursor can only be retention's.
        let oldest = events[0].sequence;
        return Err(StoreError::Purged { after: sequence, oldest });
    }
    Ok(events)
}

/// How long a cancellation request is kept: far longer than anyone waits for its answer.
const CANCEL_REQUEST_MS: i64 = 3_600_000;

pub fn first_event_since(db: &dyn Db, at: Millis) -> Result<u64, StoreError> {
    let row = db.query_opt(
        "SELECT COALESCE((SELECT seq FROM events WHERE at >= $1 ORDER BY seq LIMIT 1), (SELECT MAX(seq) FROM events), 0)",
        args![at],
    )?;
    Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) as u64)
}

pub fn purge(db: &dyn Db, cutoff: &Cutoff, limit: usize) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    // A cancellation request whose asker gave up waiting, answered or not, is of no use.
    db.execute(
        "DELETE FROM cancel_requests WHERE requested_at < $1",
        args![now_ms() - CANCEL_REQUEST_MS],
    )?;
    if let Some(below) = cutoff.events_below {
        purged.events = db.execute(
            "DELETE FROM events WHERE seq IN (
                SELECT seq FROM events WHERE seq < $1 AND seq < (SELECT MAX(seq) FROM events)
                ORDER BY seq LIMIT $2)",
            args![below, limit],
        )?;
        db.execute(
            "DELETE FROM webhook_dead_letters WHERE sequence < (SELECT MIN(seq) FROM events)",
            args![],
        )?;
    }
    if let Some(before) = cutoff.messages_before {
        db.execute("DELETE FROM inbound_rejections WHERE at < $1", args![before])?;
        // Ids sort by creation time, so the unique index on id finds the old ones.
        purged.messages = db.execute(
            "DELETE FROM messages WHERE id IN (
                SELECT id FROM messages WHERE id < $1
                AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_id = messages.id)
                ORDER BY id LIMIT $2)",
            args![&ids_before("msg", before), limit],
        )?;
    }
    Ok(purged)
}

pub fn last_sequence(db: &dyn Db) -> Result<u64, StoreError> {
    match db.query_opt("SELECT COALESCE(MAX(seq), 0) FROM events", args![])? {
        Some(row) => Ok(row.int(0)? as u64),
        None => Ok(0),
    }
}

/// Claims up to `limit` outbox entries whose lease is free or expired, on the routes that
/// `routes` lets through (all when `None`), oldest due first.
pub fn claim(
    db: &dyn Db,
    lease: &Lease<'_>,
    limit: usize,
    routes: Option<&[(String, String)]>,
) -> Result<Vec<Job>, StoreError> {
    let now = now_ms();
    // Entries of routes this owner may not take are skipped, not claimed: read the free
    // entries, then lease the ones wanted. Under PostgreSQL, SKIP LOCKED lets replicas
    // claiming at the same time take disjoint entries.
    let lock = match db.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let free = db.query(
        &format!(
            "SELECT message_id, account, route, due_at, unsure_since FROM outbox WHERE lease_until <= $1
             ORDER BY due_at, message_id LIMIT $2{lock}"
        ),
        args![now, CLAIM_SCAN.max(limit)],
    )?;
    let mut jobs = Vec::with_capacity(limit.min(free.len()));
    for row in free {
        if jobs.len() == limit {
            break;
        }
        let (message_id, account, route) = (row.text(0)?, row.text(1)?, row.text(2)?);
        if let Some(routes) = routes
            && !routes.iter().any(|(a, r)| *a == account && *r == route)
        {
            continue;
        }
        let (due_at, unsure_since) = (row.int(3)?, row.opt_int(4)?);
        db.execute(
            "UPDATE outbox SET lease_owner = $2, lease_until = $3 WHERE message_id = $1",
            args![&message_id, lease.owner, now + lease.ms],
        )?;
        let Some(message) = load(db, &message_id)? else { continue };
        jobs.push(Job {
            message_id,
            account,
            route,
            to: message.to,
            content: message.content,
            attempts: message.attempts,
            unsure_since,
            expires_at: message.expires_at.unwrap_or(i64::MAX),
            due_at,
            consent_checked_at: 0,
            send_options: message.send_options,
            delivery_deadline: false,
            origin: opentelemetry::Context::new(),
        });
    }
    Ok(jobs)
}

/// How many free entries one claim looks at, so that entries of routes others own do not
/// hide the ones this owner may take.
const CLAIM_SCAN: usize = 1000;

/// Extends every lease `owner` holds, since its dispatcher still has that work in hand.
pub fn renew_leases(db: &dyn Db, lease: &Lease<'_>) -> Result<u64, StoreError> {
    db.execute(
        "UPDATE outbox SET lease_until = $2 WHERE lease_owner = $1",
        args![lease.owner, now_ms() + lease.ms],
    )
}

/// Gives one entry's lease up (every entry `owner` holds when `None`), so that whoever
/// owns its route claims it.
pub fn release(db: &dyn Db, owner: &str, message_id: Option<&str>) -> Result<(), StoreError> {
    db.execute(
        "UPDATE outbox SET lease_owner = '', lease_until = 0
         WHERE lease_owner = $1 AND (CAST($2 AS TEXT) IS NULL OR message_id = $2)",
        args![owner, message_id],
    )?;
    Ok(())
}

fn load(db: &dyn Db, id: &str) -> Result<Option<Message>, StoreError> {
    db.query_opt("SELECT doc FROM messages WHERE id = $1", args![id])?.map(|r| r.doc(0)).transpose()
}

/// Writes the message's document, and its provider id into the column that receipts and
/// replies look it up by; answers the document, for an event to embed.
fn save(db: &dyn Db, message: &Message) -> Result<String, StoreError> {
    let doc = serde_json::to_string(message)?;
    db.execute_later(
        "UPDATE messages SET doc = $2, provider_message_id = $3 WHERE id = $1",
        args![&message.id, &doc, &message.provider_message_id],
    )?;
    Ok(doc)
}

/// Moves `message` to `status` if that is forward, saving it and appending the event.
fn advance(
    db: &dyn Db,
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
    let doc = save(db, message)?;
    append_status_changed(db, events, message, &doc, Some(previous))?;
    Ok(true)
}

pub fn cancel(db: &dyn Db, events: &mut Vec<Event>, id: &str) -> Result<Message, StoreError> {
    let mut message = load(db, id)?.ok_or_else(|| StoreError::NotFound(format!("message {id}")))?;
    let why = match (message.direction, message.status) {
        (_, MessageStatus::Canceled) => return Ok(message),
        (Direction::Outbound, MessageStatus::Accepted | MessageStatus::Queued) => None,
        (Direction::Inbound, _) => Some("it is inbound".to_string()),
        (_, status) => Some(format!(
            "it is {}: its provider has it, or it ended, and a provider cannot take a message back",
            status.as_str()
        )),
    };
    if let Some(why) = why {
        return Err(StoreError::TooLate { id: id.to_string(), why });
    }
    advance(db, events, &mut message, MessageStatus::Canceled, "", now_ms())?;
    remove_outbox(db, id)?;
    Ok(message)
}

fn remove_outbox(db: &dyn Db, id: &str) -> Result<(), StoreError> {
    db.execute_later("DELETE FROM outbox WHERE message_id = $1", args![id])?;
    Ok(())
}

/// Appends an event. Its sequence is the next after the last committed one: the writer
/// runs one batch at a time (under PostgreSQL, one across all replicas), so sequences
/// are given in commit order with no gaps.
pub fn append_event(
    db: &dyn Db,
    events: &mut Vec<Event>,
    kind: EventKind,
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(&kind)?;
    insert_event(db, events, kind, &doc)
}

/// A status change's event, with its document written around the message's document that
/// was just stored: each status change serializes its message once, not twice (a tenth of
/// the store's instructions per acceptance were JSON). The shape is serde's for
/// `EventKind` (externally tagged), which `status_changed_documents_are_serdes` checks.
fn append_status_changed(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &Message,
    message_doc: &str,
    previous: Option<MessageStatus>,
) -> Result<(), StoreError> {
    if let Some(light) = light(message) {
        let doc = status_changed_doc(&serde_json::to_string(&light)?, previous)?;
        return insert_event(
            db,
            events,
            EventKind::StatusChanged { message: light, previous },
            &doc,
        );
    }
    let doc = status_changed_doc(message_doc, previous)?;
    insert_event(db, events, EventKind::StatusChanged { message: message.clone(), previous }, &doc)
}

/// The message as events carry it: without the bytes of inline attachments (their name,
/// type and size stay), which each event would copy again, into the log, to every CRM, and
/// to stream consumers that read gRPC's customary 4 MiB at most (a larger event would stop
/// them at it for good); `GetMessage` and `GetMedia` have them. `None` when there are none.
fn light(message: &Message) -> Option<Message> {
    let content = message.content.without_inline_data()?;
    Some(Message { content, ..message.clone() })
}

fn status_changed_doc(
    message_doc: &str,
    previous: Option<MessageStatus>,
) -> Result<String, StoreError> {
    let previous = serde_json::to_string(&previous)?;
    Ok(format!(r#"{{"status_changed":{{"message":{message_doc},"previous":{previous}}}}}"#))
}

fn insert_event(
    db: &dyn Db,
    events: &mut Vec<Event>,
    kind: EventKind,
    doc: &str,
) -> Result<(), StoreError> {
    let at = now_ms();
    let contact_id = match &kind {
        EventKind::StatusChanged { message, .. } | EventKind::Received { message } => {
            message.contact_id.as_str()
        }
        EventKind::ConversationOpened { conversation }
        | EventKind::ConversationClosed { conversation } => conversation.contact_id.as_str(),
        EventKind::ContactMerged { contact, .. } => contact.id.as_str(),
        EventKind::ContactForgotten { contact_id }
        | EventKind::ConsentChanged { contact_id, .. }
        | EventKind::InboundRejected { contact_id, .. } => contact_id.as_str(),
    };
    // Given here rather than by the database, so that the insert needs no answer and a
    // PostgreSQL batch sends it with what follows; and so that SQLite builds no temporary
    // b-tree for an INSERT ... SELECT from the table it fills.
    let tail = db.event_tail();
    let sequence = match tail.get() {
        Some(last) => last,
        None => last_sequence(db)?,
    } + 1;
    db.execute_later(
        "INSERT INTO events (seq, at, kind, contact_id) VALUES ($1, $2, $3, $4)",
        args![sequence, at, doc, contact_id],
    )?;
    tail.set(Some(sequence));
    events.push(Event { sequence, at, kind });
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
/// Something that arrived on an account but could not become a message.
pub struct Rejected {
    pub account: String,
    pub channel: Channel,
    /// Where it is at the provider: an IMAP URL, a provider message id.
    pub reference: String,
    pub from: Option<Identity>,
    pub reason: String,
}

/// Reports `rejected` as an event, once per reference: a provider's redelivery (or a
/// mailbox read again) is not news. With its sender, their contact is found or made, so
/// that the product can answer them and forgetting them scrubs the event.
pub fn reject_inbound(
    db: &dyn Db,
    events: &mut Vec<Event>,
    rejected: Rejected,
    now: Millis,
) -> Result<(), StoreError> {
    let added = db.execute(
        "INSERT INTO inbound_rejections (account, reference, at) VALUES ($1, $2, $3)
         ON CONFLICT (account, reference) DO NOTHING",
        args![&rejected.account, &rejected.reference, now],
    )?;
    if added == 0 {
        return Ok(());
    }
    let (from, contact_id) = match &rejected.from {
        Some(identity) => {
            (identity.address.clone(), people::resolve_contact(db, identity, now)?.id)
        }
        None => (String::new(), String::new()),
    };
    let kind = EventKind::InboundRejected {
        account: rejected.account,
        channel: rejected.channel,
        reference: rejected.reference,
        reason: rejected.reason,
        from,
        contact_id,
    };
    append_event(db, events, kind)
}

pub fn media_of_contact(
    db: &dyn Db,
    contact_id: &str,
) -> Result<Vec<(String, omnigate_adapters::Media)>, StoreError> {
    let rows =
        db.query("SELECT doc FROM messages WHERE contact_id = $1 ORDER BY seq", args![contact_id])?;
    let mut media = Vec::new();
    for row in rows {
        let m: Message = row.doc(0)?;
        if let (Direction::Inbound, Content::Media(item)) = (m.direction, m.content) {
            media.push((m.account, item));
        }
    }
    Ok(media)
}

pub fn scrub_contact_messages(db: &dyn Db, contact_id: &str) -> Result<u64, StoreError> {
    let rows = db.query("SELECT doc FROM messages WHERE contact_id = $1", args![contact_id])?;
    let count = rows.len() as u64;
    for row in rows {
        let mut m: Message = row.doc(0)?;
        erase(&mut m);
        save(db, &m)?;
    }
    let logged =
        db.query("SELECT seq, kind FROM events WHERE contact_id = $1", args![contact_id])?;
    for row in logged {
        let mut kind: EventKind = row.doc(1)?;
        match &mut kind {
            EventKind::StatusChanged { message, .. } | EventKind::Received { message } => {
                erase(message)
            }
            EventKind::ContactMerged { contact, .. } => {
                contact.display_name.clear();
                contact.identities.clear();
                contact.opt_outs.clear();
            }
            EventKind::ConsentChanged { address, .. } => address.clear(),
            EventKind::InboundRejected { from, .. } => from.clear(),
            _ => continue,
        }
        db.execute(
            "UPDATE events SET kind = $2 WHERE seq = $1",
            args![row.int(0)?, &serde_json::to_string(&kind)?],
        )?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use omnigate_adapters::{MessageStatus, StatusReport};

    use super::{Lease, PARK_HORIZON_MS, accept, park, record_attempt};
    use crate::model::Event;
    use crate::store::sql::db::{Conn, Db, args};
    use crate::store::sqlite::SqliteConn;
    use crate::store::{Attempt, NewMessage};

    fn parked(db: &dyn Db) -> Vec<String> {
        let rows = db
            .query("SELECT provider_message_id FROM early_receipts ORDER BY parked_at", args![])
            .expect("rows");
        rows.iter().map(|r| r.text(0).expect("id")).collect()
    }

    /// Status events are written around the message's stored document rather than by serde:
    /// what is stored must be what serde writes for the event, and read back as it.
    #[test]
    fn status_changed_documents_are_serdes() {
        let mut conn = SqliteConn::in_memory().expect("db");
        let lease = Lease { owner: "node-a", ms: 60_000 };
        let new = NewMessage::new(
            omnigate_adapters::Channel::Sms,
            "sms",
            "+15005550006",
            "+14155550100",
            omnigate_adapters::Content::text("a \"quoted\" line\nand a break"),
            std::time::Duration::from_secs(60),
        );
        let mut events: Vec<Event> = Vec::new();
        conn.read(|db| {
            accept(db, &mut events, &new, &lease, 3_600_000)?;
            let sent = Attempt::Sent {
                provider_message_id: "SM1".into(),
                provider_status: "queued".into(),
            };
            record_attempt(db, &mut events, &new.id, &sent, &lease)?;
            let stored = db.query("SELECT seq, kind FROM events ORDER BY seq", args![])?;
            let previous: Vec<_> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    crate::model::EventKind::StatusChanged { previous, .. } => Some(*previous),
                    _ => None,
                })
                .collect();
            assert_eq!(previous, [None, Some(MessageStatus::Accepted)], "both shapes covered");
            assert_eq!(stored.len(), events.len());
            for (row, event) in stored.iter().zip(&events) {
                assert_eq!(row.int(0)? as u64, event.sequence);
                assert_eq!(row.text(1)?, serde_json::to_string(&event.kind)?);
                assert_eq!(row.doc::<crate::model::EventKind>(1)?, event.kind);
            }
            Ok(())
        })
        .expect("accept and send");
    }

    #[test]
    fn receipts_for_messages_that_never_appear_are_dropped_after_the_horizon() {
        let mut conn = SqliteConn::in_memory().expect("db");
        let report = |pid: &str| StatusReport {
            provider_message_id: pid.into(),
            status: MessageStatus::Delivered,
            provider_status: "delivered".into(),
            error: None,
            message_id: None,
        };
        conn.read(|db| {
            park(db, "sms", &report("SMold"), 1_000)?;
            park(db, "sms", &report("SMrecent"), 1_000 + PARK_HORIZON_MS)?;
            assert_eq!(parked(db), ["SMold", "SMrecent"], "both within the horizon");
            park(db, "sms", &report("SMnew"), 1_001 + PARK_HORIZON_MS)?;
            assert_eq!(parked(db), ["SMrecent", "SMnew"], "the oldest is past it");
            Ok(())
        })
        .expect("park");
    }
}
