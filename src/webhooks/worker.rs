//! One subscription's delivery loop: read events after the cursor, deliver each in order
//! with retries, move the cursor, wait for the next commit.

use std::sync::Arc;
use std::time::Duration;

use omnigate_proto::pbjson_types::Timestamp;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Deliveries, sign};
use crate::api::convert::event_to_pb;
use crate::model::{Event, Webhook};
use crate::store::StoreError;

const PAGE: usize = 100;

enum Outcome {
    Delivered,
    /// 410: the receiver wants no more.
    Gone,
    GaveUp(String),
    Stopped,
}

pub async fn run(deliveries: Arc<Deliveries>, webhook: Webhook, stop: CancellationToken) {
    let id = webhook.id.clone();
    follow(&deliveries, webhook, stop).await;
    // This replica no longer delivers for it: its lag is another's to report, or none's.
    deliveries.metrics.forget_event_lag(&id);
}

async fn follow(deliveries: &Deliveries, mut webhook: Webhook, stop: CancellationToken) {
    let keys = match sign::Keys::of(&webhook) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(webhook = %webhook.id, error = %e, "webhook secret unusable; not delivering");
            return;
        }
    };
    let store = deliveries.store.clone();
    let mut live = store.subscribe();
    let mut lag = Lag { head: store.last_sequence().await.unwrap_or(0) };
    loop {
        let page = match store.events_after(webhook.cursor, PAGE).await {
            Ok(page) => page,
            Err(StoreError::Purged { oldest, .. }) => {
                // Retention outran this subscription: count what it missed, then go on.
                webhook.last_error = format!(
                    "events {} to {} were deleted by retention before delivery",
                    webhook.cursor + 1,
                    oldest - 1
                );
                tracing::warn!(webhook = %webhook.id, error = %webhook.last_error, "events skipped");
                let missed = oldest - 1 - webhook.cursor;
                deliveries.metrics.event_deliveries(&webhook.id, "missed", missed);
                webhook.missed += missed;
                webhook.cursor = oldest - 1;
                if !save(deliveries, &webhook).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(webhook = %webhook.id, error = %e, "cannot read the event log; retrying");
                if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        lag.catch_up(&mut live, page.last());
        deliveries.metrics.event_lag(&webhook.id, lag.behind(webhook.cursor));
        if page.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                // New commits (or a lagging feed) mean there may be more to read.
                _ = live.recv() => continue,
            }
        }
        let before = webhook.cursor;
        for event in page {
            let wanted =
                webhook.kinds.is_empty() || webhook.kinds.iter().any(|k| k == event.kind.name());
            if !wanted {
                webhook.cursor = event.sequence;
                continue;
            }
            match deliver(deliveries, &webhook, &keys, &event, &stop).await {
                Outcome::Delivered => {
                    webhook.cursor = event.sequence;
                    webhook.last_error.clear();
                    deliveries.metrics.event_deliveries(&webhook.id, "delivered", 1);
                }
                Outcome::Gone => {
                    webhook.active = false;
                    webhook.last_error = format!("410 Gone at event {}; disabled", event.sequence);
                    deliveries.metrics.event_deliveries(&webhook.id, "gone", 1);
                    save(deliveries, &webhook).await;
                    return;
                }
                Outcome::GaveUp(error) => {
                    match store.dead_letter(webhook.clone(), event.sequence, &error).await {
                        Ok(Some(w)) => {
                            webhook = w;
                            deliveries.metrics.event_deliveries(&webhook.id, "dead_lettered", 1);
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::error!(webhook = %webhook.id, error = %e, "cannot record a dead letter");
                            return;
                        }
                    }
                }
                Outcome::Stopped => {
                    save(deliveries, &webhook).await;
                    return;
                }
            }
            deliveries.metrics.event_lag(&webhook.id, lag.behind(webhook.cursor));
        }
        if webhook.cursor != before && !save(deliveries, &webhook).await {
            return;
        }
    }
}

/// The newest event committed, as far as this worker has heard: from the store at start,
/// then from the pages it reads and the commits' feed, read between pages without waiting.
struct Lag {
    head: u64,
}

impl Lag {
    fn catch_up(&mut self, live: &mut broadcast::Receiver<Arc<Event>>, read: Option<&Event>) {
        self.head = self.head.max(read.map_or(0, |e| e.sequence));
        loop {
            match live.try_recv() {
                Ok(event) => self.head = self.head.max(event.sequence),
                // Skipped events are older than those still in the feed.
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    }

    fn behind(&self, cursor: u64) -> u64 {
        self.head.saturating_sub(cursor)
    }
}

/// Saves the worker's progress; answers false when the subscription was deleted or changed
/// since this worker started (through another replica), and the worker must stop: the
/// fleet's next reconciliation starts one from what is stored, if anything.
async fn save(deliveries: &Deliveries, webhook: &Webhook) -> bool {
    match deliveries.store.save_webhook_progress(webhook.clone()).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(webhook = %webhook.id, "subscription changed or deleted elsewhere; its worker stops");
            false
        }
        Err(e) => {
            tracing::error!(webhook = %webhook.id, error = %e, "cannot save the webhook cursor; events may be sent again");
            true
        }
    }
}

/// Answers true when stopped.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// The body: `{"type", "timestamp", "data"}` with the event as proto3 JSON.
pub fn body(event: &Event) -> Vec<u8> {
    let at = Timestamp {
        seconds: event.at.div_euclid(1000),
        nanos: (event.at.rem_euclid(1000) * 1_000_000) as i32,
    };
    let payload = serde_json::json!({
        "type": event.kind.name(),
        "timestamp": at,
        "data": event_to_pb(event),
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

async fn deliver(
    deliveries: &Deliveries,
    webhook: &Webhook,
    keys: &sign::Keys,
    event: &Event,
    stop: &CancellationToken,
) -> Outcome {
    // Stable across retries, so receivers deduplicate.
    let id = format!("evt_{}", event.sequence);
    let body = body(event);
    let mut last_error = String::new();
    let delays = std::iter::once(Duration::ZERO).chain(deliveries.schedule.iter().copied());
    let mut wait = Duration::ZERO;
    for delay in delays {
        let jittered = delay.mul_f64(0.9 + 0.2 * fastrand::f64()).max(wait);
        if sleep_or_stop(stop, jittered).await {
            return Outcome::Stopped;
        }
        let now = crate::model::now_ms();
        let timestamp = now / 1000;
        let response = deliveries
            .http
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", keys.header(&id, timestamp, &body, now))
            .body(body.clone())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => return Outcome::Delivered,
            Ok(r) if r.status().as_u16() == 410 => return Outcome::Gone,
            Ok(r) => {
                // 429, 502 and 504 ask us to slow down; honour Retry-After when given.
                wait = omnigate_adapters::http::retry_after(r.headers()).unwrap_or(Duration::ZERO);
                last_error = format!("HTTP {} from {}", r.status().as_u16(), webhook.url);
            }
            Err(e) => {
                wait = Duration::ZERO;
                last_error = format!("{} unreachable: {e}", webhook.url);
            }
        }
        deliveries.metrics.event_deliveries(&webhook.id, "failed", 1);
        tracing::debug!(webhook = %webhook.id, sequence = event.sequence, error = %last_error, "webhook attempt failed");
    }
    Outcome::GaveUp(last_error)
}
