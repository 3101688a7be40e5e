//! The single writer: it takes write closures from a channel and runs as many as are waiting
//! in one transaction (group commit), so that durability costs one fsync per batch. Each
//! closure runs in its own savepoint, so one failed write does not undo its neighbours.
//! Replies go out only after the commit, and committed events are then broadcast in order.

use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::broadcast;

use crate::model::Event;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// Runs after the commit with its outcome; sends the caller its answer.
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One write: runs inside the batch's transaction, pushes the events it appended.
pub type WriteFn = Box<dyn FnOnce(&Connection, &mut Vec<Event>) -> Completion + Send>;

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
            Err((completions, e)) => {
                tracing::error!(error = %e, "store commit failed; the batch's writes are lost and reported");
                let reason = e.to_string();
                completions
                    .into_iter()
                    .for_each(|c| c(Err(StoreError::CommitFailed(reason.clone()))));
            }
        }
    }
}

type BatchResult = Result<Vec<Completion>, (Vec<Completion>, rusqlite::Error)>;

fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<WriteFn>,
    appended: &mut Vec<Event>,
) -> BatchResult {
    let writes = std::mem::take(batch);
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the writes drops their reply channels: each caller learns its write
            // did not run.
            drop(writes);
            return Err((Vec::new(), e));
        }
    };
    let mut completions = Vec::with_capacity(writes.len());
    for write in writes {
        completions.push(write(&tx, appended));
    }
    match tx.commit() {
        Ok(()) => Ok(completions),
        Err(e) => {
            appended.clear();
            Err((completions, e))
        }
    }
}

/// Runs `f` inside a savepoint, rolling back just its own changes and events on error.
pub fn isolated<R>(
    conn: &Connection,
    events: &mut Vec<Event>,
    f: impl FnOnce(&Connection, &mut Vec<Event>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let mark = events.len();
    conn.execute_batch("SAVEPOINT write")?;
    match f(conn, events) {
        Ok(r) => {
            conn.execute_batch("RELEASE write")?;
            Ok(r)
        }
        Err(e) => {
            events.truncate(mark);
            conn.execute_batch("ROLLBACK TO write; RELEASE write")?;
            Err(e)
        }
    }
}
