//! Replicas sharing one database: each one's heartbeat, and named leases (a route, the CRM
//! webhook deliveries, a mailbox) that one replica holds at a time and renews while alive.

use super::db::{Db, args};
use crate::model::Millis;
use crate::store::StoreError;

/// Records that `me` is alive; answers the replicas seen within `ttl_ms`, `me` included,
/// sorted. Replicas gone for long are forgotten.
pub fn heartbeat(
    db: &dyn Db,
    me: &str,
    ttl_ms: Millis,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    db.execute(
        "INSERT INTO replicas (id, seen_at) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        args![me, now],
    )?;
    db.execute("DELETE FROM replicas WHERE seen_at < $1", args![now - 100 * ttl_ms])?;
    db.query("SELECT id FROM replicas WHERE seen_at >= $1 ORDER BY id", args![now - ttl_ms])?
        .iter()
        .map(|r| r.text(0))
        .collect()
}

/// Gives up the `unwanted` leases `me` holds, takes or renews each `wanted` lease that is
/// free, expired or already `me`'s, and answers the wanted ones `me` now holds.
pub fn hold(
    db: &dyn Db,
    me: &str,
    wanted: &[String],
    unwanted: &[String],
    ttl_ms: Millis,
    now: Millis,
) -> Result<Vec<String>, StoreError> {
    for name in unwanted {
        db.execute(
            "UPDATE leases SET owner = '', until_at = 0 WHERE name = $1 AND owner = $2",
            args![name, me],
        )?;
    }
    let mut held = Vec::with_capacity(wanted.len());
    for name in wanted {
        let taken = db.execute(
            "INSERT INTO leases (name, owner, until_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_at = excluded.until_at
             WHERE leases.owner = excluded.owner OR leases.until_at < $4",
            args![name, me, now + ttl_ms, now],
        )?;
        if taken > 0 {
            held.push(name.clone());
        }
    }
    Ok(held)
}
