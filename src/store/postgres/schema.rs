//! The PostgreSQL schema: the same tables and columns as the SQLite one (see
//! `store::sqlite::schema`), so that one set of statements serves both. Steps are numbered
//! as there; a replica migrates under an advisory lock, so replicas starting together do
//! not race.

use postgres::Client;

use crate::store::StoreError;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    contact_id TEXT NOT NULL DEFAULT '',
    channels TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX conversations_open ON conversations (account, peer) WHERE state = 'open';
CREATE INDEX conversations_contact ON conversations (contact_id, state, last_activity_at);

-- seq is given under the batch lock (see the store's writer), so it follows commit order.
CREATE TABLE messages (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    account TEXT NOT NULL,
    provider_message_id TEXT,
    idempotency_key TEXT,
    fingerprint TEXT,
    doc TEXT NOT NULL,
    contact_id TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX messages_idempotency ON messages (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX messages_provider ON messages (account, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_conversation ON messages (conversation_id, seq);
CREATE INDEX messages_contact ON messages (contact_id, seq);

CREATE TABLE outbox (
    message_id TEXT PRIMARY KEY,
    account TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (lease_until, due_at);
CREATE INDEX outbox_owner ON outbox (lease_owner);

CREATE TABLE early_receipts (
    account TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT NOT NULL,
    parked_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, provider_message_id, status)
);
CREATE INDEX early_receipts_age ON early_receipts (parked_at);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    contact_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_contact ON events (contact_id) WHERE contact_id <> '';

CREATE TABLE windows (
    account TEXT NOT NULL,
    peer TEXT NOT NULL,
    last_inbound_at BIGINT NOT NULL,
    PRIMARY KEY (account, peer)
);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    merged_into TEXT,
    forgotten BIGINT NOT NULL DEFAULT 0
);
-- Named after SQLite's implicit rowid: identities list in the order they were added.
CREATE TABLE identities (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    PRIMARY KEY (channel, address)
);
CREATE INDEX identities_contact ON identities (contact_id);

CREATE TABLE webhooks (
    id TEXT COLLATE "C" PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE webhook_dead_letters (
    webhook_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    error TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, sequence)
);

CREATE TABLE mailbox_cursors (
    account TEXT PRIMARY KEY,
    uid_validity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL
);

CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_at BIGINT NOT NULL
);
"#,
    r#"
-- Threading finds open conversations by contact (conversations_contact); this index of the
-- pre-contact threading only cost a write per conversation.
DROP INDEX IF EXISTS conversations_open;
"#,
    r#"
-- CancelMessage requests that reached a replica other than the one dispatching the
-- message, for that one to decide; `answer` is empty when it canceled, else its reason.
CREATE TABLE cancel_requests (
    message_id TEXT PRIMARY KEY,
    requested_at BIGINT NOT NULL,
    answer TEXT
);
"#,
    r#"
-- People who told an account's sender to stop (an SMS STOP, or the provider refusing a
-- send for it): sends from that account to that address fail at acceptance until they
-- opt back in.
CREATE TABLE opt_outs (
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (account, address)
);
"#,
    r#"
-- When a send began whose answer was lost: its retry asks the provider first, also after
-- a restart or on another replica.
ALTER TABLE outbox ADD COLUMN unsure_since BIGINT;
"#,
    r#"
-- An opt-out of marketing messages alone (WhatsApp's 131050): kept and reported, but no
-- bar at acceptance, which cannot tell a marketing template from others.
ALTER TABLE opt_outs ADD COLUMN marketing_only BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- Our id of the message a parked receipt names, when the provider echoes it (WhatsApp's
-- biz_opaque_callback_data): how the retry of a send whose answer was lost finds it.
ALTER TABLE early_receipts ADD COLUMN message_id TEXT;
CREATE INDEX early_receipts_message ON early_receipts (message_id) WHERE message_id IS NOT NULL;
"#,
    r#"
-- An email address whose server said it does not exist (a hard bounce, 5.1.x): the same
-- bar at acceptance as an opt-out, so that mail to dead addresses stops costing the
-- sender's reputation; mail from the address, or an opt-in, lifts it.
ALTER TABLE opt_outs ADD COLUMN bounced BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- What arrived but could not become a message, by where it is at the provider: a
-- provider's redelivery (or a mailbox read again) reports it once.
CREATE TABLE inbound_rejections (
    account TEXT NOT NULL,
    reference TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (account, reference)
);
"#,
    r#"
-- Events that a subscription delivering each event on its own (not in order) failed to
-- deliver and tries again on its schedule, so that its cursor moves on past them.
CREATE TABLE webhook_retries (
    webhook_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (webhook_id, sequence)
);
CREATE INDEX webhook_retries_due ON webhook_retries (webhook_id, due_at);
"#,
];

/// Fails unless the database is at this release's schema version (when migrations are a
/// separate deploy step).
pub fn check(client: &mut Client) -> Result<(), StoreError> {
    // No schema table at all reads as version 0.
    let version: i64 = client
        .query_opt("SELECT max(version) FROM omnigate_schema", &[])
        .ok()
        .flatten()
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    if version != MIGRATIONS.len() as i64 {
        return Err(StoreError::Invalid(format!(
            "the database is at schema version {version}, this release needs {}: run `omnigate migrate` (or set store.migrate_on_start)",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

/// Serialises migrations across replicas.
const MIGRATE_LOCK: i64 = 0x006f_6d6e_696d_6967;

/// Applies every step the database has not seen; answers the resulting version.
pub fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS omnigate_schema (version BIGINT NOT NULL);
         INSERT INTO omnigate_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM omnigate_schema)",
    )?;
    let current: i64 = tx.query_one("SELECT max(version) FROM omnigate_schema", &[])?.get(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the database is at schema version {current}, newer than this release knows ({}); upgrade omnigate",
            MIGRATIONS.len()
        )));
    }
    for step in &MIGRATIONS[current..] {
        tx.batch_execute(step)?;
    }
    tx.execute("UPDATE omnigate_schema SET version = $1", &[&(MIGRATIONS.len() as i64)])?;
    tx.commit()?;
    Ok(MIGRATIONS.len())
}
