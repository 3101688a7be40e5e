//! One subscription's delivery loop: read events after the cursor, deliver each in order
//! with retries, move the cursor, wait for the next commit.

use std::sync::Arc;
use std::time::Duration;

use omnigate_proto::pbjson_types::Timestamp;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Deliveries, sign};
use crate::api::convert::event_to_pb;
use crate::model::{Event, Millis, Webhook, WebhookRetry, now_ms};
use crate::store::StoreError;

const PAGE: usize = 100;

enum Outcome {
    Delivered,
    /// 410: the receiver wants no more.
    Gone,
    GaveUp(String),
    /// Failed with this error, and scheduled for another attempt (independent delivery):
    /// move on.
    Retrying(String),
    Stopped,
}

/// What the receiver made of one attempt.
enum Answer {
    Delivered,
    Gone,
    Failed {
        error: String,
        /// The receiver's Retry-After, if it gave one.
        wait: Duration,
    },
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
    // Events already scheduled keep their schedule after a change to in-order delivery.
    let retries = webhook.independent || webhook.retrying > 0;
    loop {
        let next_retry = if retries {
            match retry_due(deliveries, &mut webhook, &keys, &stop).await {
                Some(next) => next,
                None => return,
            }
        } else {
            None
        };
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
                _ = until(next_retry) => continue,
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
                    disable(deliveries, &mut webhook, event.sequence).await;
                    return;
                }
                Outcome::Retrying(error) => {
                    webhook.cursor = event.sequence;
                    webhook.last_error = error;
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
    match deliveries.store.update_webhook(webhook.clone(), webhook.revision).await {
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

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn until(at: Option<Millis>) {
    match at {
        Some(at) => tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await,
        None => std::future::pending().await,
    }
}

fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// A 410 Gone: the subscription stops until a replay.
async fn disable(deliveries: &Deliveries, webhook: &mut Webhook, sequence: u64) {
    webhook.active = false;
    webhook.last_error = format!("410 Gone at event {sequence}; disabled");
    deliveries.metrics.event_deliveries(&webhook.id, "gone", 1);
    save(deliveries, webhook).await;
}

async fn deliver(
    deliveries: &Deliveries,
    webhook: &Webhook,
    keys: &sign::Keys,
    event: &Event,
    stop: &CancellationToken,
) -> Outcome {
    if webhook.independent {
        return match attempt(deliveries, webhook, keys, event).await {
            Answer::Delivered => Outcome::Delivered,
            Answer::Gone => Outcome::Gone,
            Answer::Failed { error, wait } => {
                retry_later(deliveries, webhook, event.sequence, 1, wait, error).await
            }
        };
    }
    let mut last_error = String::new();
    let delays = std::iter::once(Duration::ZERO).chain(deliveries.schedule.iter().copied());
    let mut wait = Duration::ZERO;
    for delay in delays {
        if sleep_or_stop(stop, jittered(delay).max(wait)).await {
            return Outcome::Stopped;
        }
        match attempt(deliveries, webhook, keys, event).await {
            Answer::Delivered => return Outcome::Delivered,
            Answer::Gone => return Outcome::Gone,
            Answer::Failed { error, wait: asked } => (last_error, wait) = (error, asked),
        }
    }
    Outcome::GaveUp(last_error)
}

/// Schedules the attempt after `attempts` failed ones, or gives up when the schedule has
/// none left.
async fn retry_later(
    deliveries: &Deliveries,
    webhook: &Webhook,
    sequence: u64,
    attempts: u32,
    wait: Duration,
    error: String,
) -> Outcome {
    let Some(delay) = deliveries.schedule.get(attempts as usize - 1) else {
        return Outcome::GaveUp(error);
    };
    let due_at = now_ms() + jittered(*delay).max(wait).as_millis() as Millis;
    let retry = WebhookRetry { sequence, attempts, due_at, error: error.clone() };
    match deliveries.store.schedule_webhook_retry(&webhook.id, retry).await {
        Ok(true) => Outcome::Retrying(error),
        // Deleted meanwhile: the worker's next save finds out and stops it.
        Ok(false) => Outcome::Stopped,
        Err(e) => {
            tracing::error!(webhook = %webhook.id, sequence, error = %e, "cannot schedule a webhook retry; stopping");
            Outcome::Stopped
        }
    }
}

/// Makes the attempts of an independently delivering subscription that are due. Answers
/// when the next one is due (`Some(None)`: none waits), or `None` when the worker must stop.
async fn retry_due(
    deliveries: &Deliveries,
    webhook: &mut Webhook,
    keys: &sign::Keys,
    stop: &CancellationToken,
) -> Option<Option<Millis>> {
    let store = &deliveries.store;
    let retries = match store.webhook_retries(&webhook.id, PAGE).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(webhook = %webhook.id, error = %e, "cannot read webhook retries");
            return Some(Some(now_ms() + 1_000));
        }
    };
    for retry in retries {
        if retry.due_at > now_ms() {
            return Some(Some(retry.due_at));
        }
        if stop.is_cancelled() {
            return None;
        }
        let event = match store.events_after(retry.sequence.saturating_sub(1), 1).await {
            Ok(page) => page.into_iter().next().filter(|e| e.sequence == retry.sequence),
            Err(StoreError::Purged { .. }) => None,
            Err(e) => {
                tracing::warn!(webhook = %webhook.id, error = %e, "cannot read an event to retry");
                return Some(Some(now_ms() + 1_000));
            }
        };
        let outcome = match &event {
            // Retention deleted it meanwhile.
            None => {
                deliveries.metrics.event_deliveries(&webhook.id, "missed", 1);
                webhook.missed += 1;
                Outcome::Delivered
            }
            Some(event) => match attempt(deliveries, webhook, keys, event).await {
                Answer::Delivered => {
                    deliveries.metrics.event_deliveries(&webhook.id, "delivered", 1);
                    Outcome::Delivered
                }
                Answer::Gone => Outcome::Gone,
                Answer::Failed { error, wait } => {
                    let attempts = retry.attempts.saturating_add(1);
                    retry_later(deliveries, webhook, retry.sequence, attempts, wait, error).await
                }
            },
        };
        match outcome {
            Outcome::Delivered => {
                if let Err(e) = store.finish_webhook_retry(&webhook.id, retry.sequence).await {
                    tracing::warn!(webhook = %webhook.id, error = %e, "cannot drop a finished retry");
                }
            }
            Outcome::Retrying(error) => webhook.last_error = error,
            Outcome::Gone => {
                disable(deliveries, webhook, retry.sequence).await;
                return None;
            }
            Outcome::GaveUp(error) => {
                match store.dead_letter(webhook.clone(), retry.sequence, &error).await {
                    Ok(Some(w)) => {
                        *webhook = w;
                        deliveries.metrics.event_deliveries(&webhook.id, "dead_lettered", 1);
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::error!(webhook = %webhook.id, error = %e, "cannot record a dead letter");
                        return None;
                    }
                }
            }
            Outcome::Stopped => return None,
        }
    }
    Some(None)
}

/// One POST of `event` to the subscription.
async fn attempt(
    deliveries: &Deliveries,
    webhook: &Webhook,
    keys: &sign::Keys,
    event: &Event,
) -> Answer {
    // Stable across retries, so receivers deduplicate.
    let id = format!("evt_{}", event.sequence);
    let body = body(event);
    let now = now_ms();
    let timestamp = now / 1000;
    let response = deliveries
        .http
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", keys.header(&id, timestamp, &body, now))
        .body(body)
        .send()
        .await;
    let (error, wait) = match response {
        Ok(r) if r.status().is_success() => return Answer::Delivered,
        Ok(r) if r.status().as_u16() == 410 => return Answer::Gone,
        // 429, 502 and 504 ask us to slow down; honour Retry-After when given.
        Ok(r) => (
            format!("HTTP {} from {}", r.status().as_u16(), webhook.url),
            omnigate_adapters::http::retry_after(r.headers()).unwrap_or(Duration::ZERO),
        ),
        Err(e) => (format!("{} unreachable: {e}", webhook.url), Duration::ZERO),
    };
    deliveries.metrics.event_deliveries(&webhook.id, "failed", 1);
    tracing::debug!(webhook = %webhook.id, sequence = event.sequence, error = %error, "webhook attempt failed");
    Answer::Failed { error, wait }
}
