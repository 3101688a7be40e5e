//! Deletes what has been kept long enough (`[retention]`): events older than
//! `events_days`, and messages older than `messages_days` that no longer wait for their
//! provider. In a fleet one replica does it, holding the `retention` lease. It deletes in
//! small transactions, so the writer never holds acceptances back for long.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fleet::Ownership;
use crate::model::now_ms;
use crate::store::{Cutoff, Purged, Store, StoreError};
use crate::telemetry::Metrics;

/// The name of the retention lease.
pub const RETENTION: &str = "retention";

/// Rows of each kind per transaction.
const BATCH: usize = 1000;

/// Passes come at least this often, and at most a quarter of the shortest retention apart,
/// so nothing outlives its retention by much.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Retention {
    pub events: Option<Duration>,
    pub messages: Option<Duration>,
}

impl Retention {
    /// Starts the periodic passes; nothing to start when everything is kept for ever.
    pub fn spawn(
        self,
        store: Arc<dyn Store>,
        ownership: Arc<Ownership>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let shortest = self.events.into_iter().chain(self.messages).min()?;
        let interval = (shortest / 4).clamp(MIN_INTERVAL, MAX_INTERVAL);
        Some(tokio::spawn(async move {
            loop {
                if ownership.owns(RETENTION) {
                    match self.pass(store.as_ref(), &stop).await {
                        Ok(purged) => {
                            metrics.retention_deleted("events", purged.events);
                            metrics.retention_deleted("messages", purged.messages);
                            if purged != Purged::default() {
                                tracing::info!(
                                    events = purged.events,
                                    messages = purged.messages,
                                    "retention deleted what was kept long enough"
                                );
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "retention pass failed; next pass retries")
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }))
    }

    /// Deletes, batch after batch, everything past its retention now.
    pub async fn pass(
        &self,
        store: &dyn Store,
        stop: &CancellationToken,
    ) -> Result<Purged, StoreError> {
        let now = now_ms();
        let before = |keep: Duration| now - keep.as_millis() as i64;
        let cutoff = Cutoff {
            events_below: match self.events {
                Some(keep) => Some(store.first_event_since(before(keep)).await?),
                None => None,
            },
            messages_before: self.messages.map(before),
        };
        let mut total = Purged::default();
        loop {
            let purged = store.purge(cutoff, BATCH).await?;
            total.events += purged.events;
            total.messages += purged.messages;
            let more = purged.events == BATCH as u64 || purged.messages == BATCH as u64;
            if !more || stop.is_cancelled() {
                return Ok(total);
            }
        }
    }
}
