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

use super::db::{Conn, Db, Verdict};
use crate::model::Event;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// Runs after the commit with its outcome; sends the caller its answer.
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One write: runs inside the batch's transaction and pushes the events it appended.
/// Answers its completion, and whether it failed in a way that spoils the batch.
pub type WriteFn = Box<dyn FnOnce(&dyn Db, &mut Vec<Event>) -> (Completion, bool) + Send>;
/// Gets each committed batch's events, in order.
pub type OnCommit = Box<dyn Fn(Vec<Event>) + Send>;

pub fn spawn<C: Conn>(
    mut conn: C,
    max_batch: usize,
    on_commit: OnCommit,
    metrics: Arc<Metrics>,
) -> std::io::Result<(mpsc::Sender<WriteFn>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<WriteFn>();
    let handle = std::thread::Builder::new()
        .name("omnigate-store-writer".into())
        .spawn(move || run(&mut conn, &rx, max_batch, &on_commit, &metrics))?;
    Ok((tx, handle))
}

fn run<C: Conn>(
    conn: &mut C,
    rx: &mpsc::Receiver<WriteFn>,
    max_batch: usize,
    on_commit: &OnCommit,
    metrics: &Metrics,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        let started = std::time::Instant::now();
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
                metrics.committed(&appended);
                on_commit(appended);
                completions.into_iter().for_each(|c| c(Ok(())));
            }
            Err((completions, reason)) => {
                tracing::error!(error = %reason, "store batch not committed; each of its writes is answered with the error");
                for c in completions {
                    c(Err(StoreError::CommitFailed(reason.clone())));
                }
            }
        }
        metrics.store_writer_busy(started.elapsed());
    }
}

type BatchResult = Result<Vec<Completion>, (Vec<Completion>, String)>;

fn commit_batch<C: Conn>(
    conn: &mut C,
    batch: &mut Vec<WriteFn>,
    appended: &mut Vec<Event>,
) -> BatchResult {
    let mut writes = Some(std::mem::take(batch));
    let mut completions = Vec::new();
    let outcome = conn.transaction(&mut |db| {
        let mut spoiled = false;
        for write in writes.take().into_iter().flatten() {
            let (completion, spoils) = write(db, appended);
            completions.push(completion);
            spoiled |= spoils;
        }
        if spoiled { Verdict::Rollback } else { Verdict::Commit { events: !appended.is_empty() } }
    });
    match outcome {
        Ok(true) => Ok(completions),
        Ok(false) => {
            appended.clear();
            Err((completions, "a write in this batch failed, so none was stored".into()))
        }
        // Writes that never ran are dropped with their reply channels: each caller
        // learns its write did not run.
        Err(e) => {
            appended.clear();
            Err((completions, e))
        }
    }
}
