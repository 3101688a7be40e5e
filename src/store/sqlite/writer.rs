//! The single writer: it takes write closures from a channel and runs as many as are waiting
//! in one transaction (group commit), so that durability costs one fsync per batch.
//! Replies go out only after the commit, and committed events are then broadcast in order.
//!
//! Writes do not get savepoints of their own: those cost a sub-journal copy of every page a
//! write touches. Instead a write must detect its domain errors (a conflicting idempotency
//! key, a missing record) before it changes anything; any other error (the database's own)
//! rolls back the whole batch and every write in it is answered with that error, so nothing
//! is acknowledged that was not stored.

use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::broadcast;

use crate::model::Event;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// Runs after the commit with its outcome; sends the caller its answer.
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One write: runs inside the batch's transaction and pushes the events it appended.
/// Answers its completion, and whether it failed in a way that spoils the batch.
pub type WriteFn = Box<dyn FnOnce(&Connection, &mut Vec<Event>) -> (Completion, bool) + Send>;

pub fn spawn(
    mut conn: Connection,
    max_batch: usize,
    events: broadcast::Sender<Arc<Event>>,
    metrics: Arc<Metrics>,
) -> std::io::Result<(mpsc::Sender<WriteFn>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<WriteFn>();
    let handle = std::thread::Builder::new()
        .name("omnigate-sqlite-writer".into())
        .spawn(move || run(&mut conn, &rx, max_batch, &events, &metrics))?;
    Ok((tx, handle))
}

fn run(
    conn: &mut Connection,
    rx: &mpsc::Receiver<WriteFn>,
    max_batch: usize,
    events: &broadcast::Sender<Arc<Event>>,
    metrics: &Metrics,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut appended = Vec::new();
        let outcome = commit_batch(conn, &mut batch, &mut appended);
        match outcome {
            Ok(completions) => {
                metrics.store_commit(completions.len());
                for event in appended {
                    let _ = events.send(Arc::new(event));
                }
                completions.into_iter().for_each(|c| c(Ok(())));
            }
            Err((completions, reason)) => {
                tracing::error!(error = %reason, "store batch not committed; each of its writes is answered with the error");
                for c in completions {
                    c(Err(StoreError::CommitFailed(reason.clone())));
                }
            }
        }
    }
}

type BatchResult = Result<Vec<Completion>, (Vec<Completion>, String)>;

fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<WriteFn>,
    appended: &mut Vec<Event>,
) -> BatchResult {
    let writes = std::mem::take(batch);
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        // Dropping the writes drops their reply channels: each caller learns its write
        // did not run.
        Err(e) => return Err((Vec::new(), e.to_string())),
    };
    let mut completions = Vec::with_capacity(writes.len());
    let mut spoiled = false;
    for write in writes {
        let (completion, spoils) = write(&tx, appended);
        completions.push(completion);
        spoiled |= spoils;
    }
    if spoiled {
        appended.clear();
        let rollback = tx.rollback().err().map(|e| format!(" (rollback: {e})")).unwrap_or_default();
        return Err((
            completions,
            format!("a write in this batch failed, so none was stored{rollback}"),
        ));
    }
    match tx.commit() {
        Ok(()) => Ok(completions),
        Err(e) => {
            appended.clear();
            Err((completions, e.to_string()))
        }
    }
}
