//! Follows the event log for the live feed: every replica's commits, in sequence order.
//! A NOTIFY from any replica's batch wakes it; a short timeout bounds how late it reads
//! if a notification is lost with a broken connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::broadcast;

use super::{EVENTS_CHANNEL, PgConn, Target, connect};
use crate::model::Event;
use crate::store::StoreError;
use crate::store::sql::db::Conn;
use crate::store::sql::{events_after, last_sequence};

/// How long the follower waits for a notification before it looks anyway.
const IDLE_LOOK: Duration = Duration::from_millis(250);
const PAGE: usize = 1000;

pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Follower {
    /// Stops following; returns once the thread ended.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Starts following from the log's current end.
pub fn spawn(
    target: &Target,
    events: broadcast::Sender<Arc<Event>>,
) -> Result<Follower, StoreError> {
    let mut conn = listen(target)?;
    let last = conn.reader.read(last_sequence)?;
    let stop = Arc::new(AtomicBool::new(false));
    let target = target.clone();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("omnigate-event-follower".into())
            .spawn(move || run(&target, conn, last, &events, &stop))
            .map_err(|e| StoreError::Database(format!("cannot start the event follower: {e}")))?
    };
    Ok(Follower { stop, thread })
}

/// Two connections: one that only waits for notifications, one that reads the log.
struct Follow {
    listener: Client,
    reader: PgConn,
}

fn listen(target: &Target) -> Result<Follow, StoreError> {
    let mut listener = connect(target)?;
    listener.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))?;
    Ok(Follow { listener, reader: PgConn::connect(target)? })
}

fn run(
    target: &Target,
    mut conn: Follow,
    mut last: u64,
    events: &broadcast::Sender<Arc<Event>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        // A connection opened again has lost its LISTEN.
        if conn.listener.is_closed() {
            match listen(target) {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "event follower cannot reconnect; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        match read_new(&mut conn.reader, &mut last, events) {
            Ok(()) => {
                // Any notification means "look again"; several fold into one look.
                let mut notes = conn.listener.notifications();
                let _ = notes.timeout_iter(IDLE_LOOK).next();
                while let Ok(Some(_)) = notes.iter().next() {}
            }
            Err(e) => {
                tracing::warn!(error = %e, "event follower cannot read the log; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Broadcasts every event after `last`, in order.
fn read_new(
    conn: &mut PgConn,
    last: &mut u64,
    events: &broadcast::Sender<Arc<Event>>,
) -> Result<(), StoreError> {
    loop {
        let page = conn.read(|db| events_after(db, *last, PAGE))?;
        let full = page.len() == PAGE;
        for event in page {
            *last = event.sequence;
            let _ = events.send(Arc::new(event));
        }
        if !full {
            return Ok(());
        }
    }
}
