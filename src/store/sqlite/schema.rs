//! The SQLite schema, applied in numbered steps so that a file from an older release
//! upgrades in place. Messages are stored as one JSON document each, with the columns that
//! queries select on beside it.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL
);
CREATE INDEX conversations_open ON conversations (account, peer) WHERE state = 'open';

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    account TEXT NOT NULL,
    provider_message_id TEXT,
    idempotency_key TEXT,
    fingerprint TEXT,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_idempotency ON messages (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX messages_provider ON messages (account, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_conversation ON messages (conversation_id, seq);

-- Work not yet handed to a provider. A row lives from acceptance to the final attempt.
CREATE TABLE outbox (
    message_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (lease_until, due_at);

-- Receipts that arrived before the send that caused them was committed.
CREATE TABLE early_receipts (
    account TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (account, provider_message_id, status)
);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL
);
"#,
    r#"
-- When each person last wrote to each account: Meta's service windows start there.
CREATE TABLE windows (
    account TEXT NOT NULL,
    peer TEXT NOT NULL,
    last_inbound_at INTEGER NOT NULL,
    PRIMARY KEY (account, peer)
);
"#,
    r#"
-- One person across channels: a contact holds identities (channel + normalised address).
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    merged_into TEXT,
    forgotten INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE identities (
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    PRIMARY KEY (channel, address)
);
CREATE INDEX identities_contact ON identities (contact_id);
ALTER TABLE conversations ADD COLUMN contact_id TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN channels TEXT NOT NULL DEFAULT '[]';
CREATE INDEX conversations_contact ON conversations (contact_id, state, last_activity_at);
ALTER TABLE messages ADD COLUMN contact_id TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_contact ON messages (contact_id, seq);
-- Which person an event concerns, so that forgetting them can scrub the log too.
ALTER TABLE events ADD COLUMN contact_id TEXT NOT NULL DEFAULT '';
CREATE INDEX events_contact ON events (contact_id) WHERE contact_id != '';
"#,
    r#"
-- CRM webhook subscriptions, each with its delivery cursor in the event log.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
-- Events a subscription gave up on after its last retry.
CREATE TABLE webhook_dead_letters (
    webhook_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    error TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, sequence)
);
"#,
    r#"
-- How far each email account's mailbox has been read: a UID is only meaningful with its
-- mailbox's UIDVALIDITY (RFC 3501 2.3.1.1).
CREATE TABLE mailbox_cursors (
    account TEXT PRIMARY KEY,
    uid_validity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL
);
"#,
    r#"
-- When a receipt was parked, so receipts for messages that never appear (sent by another
-- system on the same number or mailbox) are dropped instead of kept forever.
ALTER TABLE early_receipts ADD COLUMN parked_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX early_receipts_age ON early_receipts (parked_at);
"#,
    r#"
-- Claims by route (account + sender), and what replicas sharing a database need; the
-- schema stays the same on both backends.
ALTER TABLE outbox ADD COLUMN account TEXT NOT NULL DEFAULT '';
UPDATE outbox SET account = (SELECT account FROM messages WHERE messages.id = outbox.message_id);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_at INTEGER NOT NULL
);
"#,
    r#"
-- Fewer b-trees for each accepted message to write, since every one a commit touches costs
-- at least a page in the WAL. Threading finds open conversations by contact
-- (conversations_contact), so this index of the pre-contact threading only cost writes.
DROP INDEX conversations_open;
-- Keyed by message_id itself rather than by a rowid and an index on message_id.
CREATE TABLE outbox_keyed (
    message_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    account TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
INSERT INTO outbox_keyed (message_id, route, due_at, lease_owner, lease_until, account)
    SELECT message_id, route, due_at, lease_owner, lease_until, account FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_keyed RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (lease_until, due_at);
"#,
    r#"
-- CancelMessage requests that reached a replica other than the one dispatching the
-- message, for that one to decide; `answer` is empty when it canceled, else its reason.
CREATE TABLE cancel_requests (
    message_id TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL,
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
    at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (account, address)
) WITHOUT ROWID;
"#,
    r#"
-- When a send began whose answer was lost: its retry asks the provider first, also after
-- a restart or on another replica.
ALTER TABLE outbox ADD COLUMN unsure_since INTEGER;
"#,
    r#"
-- An opt-out of marketing messages alone (WhatsApp's 131050): kept and reported, but no
-- bar at acceptance, which cannot tell a marketing template from others.
ALTER TABLE opt_outs ADD COLUMN marketing_only INTEGER NOT NULL DEFAULT 0;
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
ALTER TABLE opt_outs ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- What arrived but could not become a message, by where it is at the provider: a
-- provider's redelivery (or a mailbox read again) reports it once.
CREATE TABLE inbound_rejections (
    account TEXT NOT NULL,
    reference TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (account, reference)
) WITHOUT ROWID;
"#,
    r#"
-- Events that a subscription delivering each event on its own (not in order) failed to
-- deliver and tries again on its schedule, so that its cursor moves on past them.
CREATE TABLE webhook_retries (
    webhook_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (webhook_id, sequence)
);
CREATE INDEX webhook_retries_due ON webhook_retries (webhook_id, due_at);
"#,
];

/// Applies every migration this file has not seen; answers the resulting version.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len())
}

/// Settings for every connection: WAL so readers never block the writer, and FULL sync so
/// that a commit survives power loss, not only a crash; group commit pays for it.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MIGRATIONS, migrate};
    use rusqlite::Connection;

    /// `.cargo/config.toml` builds the bundled SQLite without memory statistics and without
    /// memory management, whose global mutexes every allocation and page fetch took: 4% of
    /// the writer's instructions per acceptance.
    #[test]
    fn bundled_sqlite_is_built_without_its_global_allocation_mutexes() {
        let conn = Connection::open_in_memory().expect("db");
        let mut options = conn.prepare("PRAGMA compile_options").expect("pragma");
        let options: Vec<String> = options
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|o| o.expect("option"))
            .collect();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    #[test]
    fn the_keyed_outbox_keeps_work_queued_before_the_upgrade() {
        let mut conn = Connection::open_in_memory().expect("db");
        for step in &MIGRATIONS[..7] {
            conn.execute_batch(step).expect("older step");
        }
        conn.pragma_update(None, "user_version", 7).expect("version");
        conn.execute(
            "INSERT INTO outbox (message_id, route, due_at, lease_owner, lease_until, account)
             VALUES ('msg_1', '+15005550006', 42, 'node-a', 99, 'sms')",
            [],
        )
        .expect("queued work");

        assert_eq!(migrate(&mut conn).expect("upgrade"), MIGRATIONS.len());
        let row: (String, i64, String, i64, String) = conn
            .query_row(
                "SELECT route, due_at, lease_owner, lease_until, account FROM outbox WHERE message_id = 'msg_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("the entry survives");
        assert_eq!(row, ("+15005550006".into(), 42, "node-a".into(), 99, "sms".into()));
        let keyed: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'outbox'", [], |r| r.get(0))
            .expect("schema");
        assert!(keyed.contains("WITHOUT ROWID"), "{keyed}");
        let duplicate = conn.execute(
            "INSERT INTO outbox (message_id, route, due_at, lease_owner, lease_until) VALUES ('msg_1', 'r', 0, '', 0)",
            [],
        );
        assert!(duplicate.is_err(), "message_id stays the key");
    }
}
