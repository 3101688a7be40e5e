//! Copies committed pages from the WAL into the database file on a thread of its own.
//!
//! SQLite's automatic checkpoint runs on the connection that commits, so the single writer
//! would stop accepting while it copies and syncs pages. Here a second connection does that
//! work after commits, without blocking the writer (a PASSIVE checkpoint). The writer keeps
//! SQLite's automatic checkpoint as the bound on the WAL: a passive checkpoint never catches
//! up with a writer that commits meanwhile, and the log restarts from its beginning only
//! after a checkpoint that did; the writer's, finding nearly every page already copied,
//! is short.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// WAL pages after which the writer checkpoints itself (SQLite's default is 1,000): a
/// longer log makes those pauses rarer, and the checkpointer leaves them little to copy.
pub const WRITER_BOUND: u32 = 4_000;

/// Commits between checkpoints share one: each checkpoint syncs the database file, and a
/// page rewritten by several commits is copied once.
const PAUSE: Duration = Duration::from_millis(20);

/// Wakes the checkpointer; nudges while it works fold into one.
pub struct Nudge(SyncSender<()>);

impl Nudge {
    pub fn after_commit(&self) {
        // Full: a checkpoint is already due. Disconnected: the checkpointer could not
        // start or has stopped, and the writer's automatic checkpoint does its work.
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpointer on `conn`; it stops when the [`Nudge`] is dropped.
pub fn spawn(conn: Connection) -> std::io::Result<(Nudge, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("omnigate-store-checkpoint".into())
        .spawn(move || run(&conn, &rx))?;
    Ok((Nudge(tx), handle))
}

fn run(conn: &Connection, nudges: &Receiver<()>) {
    while nudges.recv().is_ok() {
        // Busy (the writer's own checkpoint is running) or failed: the writer's automatic
        // checkpoint still bounds the WAL, so a missed one costs nothing but time.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
        std::thread::sleep(PAUSE);
    }
}
