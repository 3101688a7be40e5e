//! CRM webhooks: every event, delivered to each subscription as a Standard Webhook, in
//! sequence order, retried on a schedule, dead-lettered after the last attempt, and stopped
//! by 410 Gone. One worker per subscription follows the event log from its cursor, so a
//! restart resumes where delivery stopped.
//!
//! # Layout
//! - [`sign`]: secrets and signatures.
//! - [`worker`]: one subscription's delivery loop.

pub mod sign;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fleet::Ownership;
use crate::model::Webhook;
use crate::store::Store;
use crate::telemetry::Metrics;

/// The Standard Webhooks reference schedule after the first attempt: 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 10 h (about 28 h in all), each with jitter.
pub const DEFAULT_SCHEDULE_SECS: [f64; 7] = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];

/// A running delivery loop, and the revision of the subscription it started from.
struct Worker {
    stop: CancellationToken,
    handle: JoinHandle<()>,
    revision: u64,
}

pub struct Deliveries {
    store: Arc<dyn Store>,
    /// Only the replica that owns [`crate::fleet::WEBHOOKS`] delivers.
    ownership: Arc<Ownership>,
    http: reqwest::Client,
    schedule: Vec<Duration>,
    metrics: Arc<Metrics>,
    workers: Mutex<HashMap<String, Worker>>,
    /// Set by [`Deliveries::close`]: no worker starts after it.
    closed: std::sync::atomic::AtomicBool,
}

impl Deliveries {
    pub fn new(
        store: Arc<dyn Store>,
        ownership: Arc<Ownership>,
        schedule: Vec<Duration>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Deliveries {
            store,
            ownership,
            http: omnigate_adapters::http::client(timeout),
            schedule,
            metrics,
            workers: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts a worker for every active subscription.
    pub async fn resume(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        for webhook in self.store.list_webhooks().await? {
            if webhook.active {
                self.run(webhook).await;
            }
        }
        Ok(())
    }

    /// Starts workers for active subscriptions made through another replica, restarts
    /// those of subscriptions changed there (a replay, a new secret), and stops those of
    /// subscriptions removed or disabled there.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        let stored = self.store.list_webhooks().await?;
        let running: Vec<(String, u64)> =
            self.workers.lock().await.iter().map(|(id, w)| (id.clone(), w.revision)).collect();
        for (id, _) in &running {
            if !stored.iter().any(|w| &w.id == id && w.active) {
                self.stop(id).await;
            }
        }
        for webhook in stored {
            let current = running.iter().any(|(id, r)| *id == webhook.id && *r == webhook.revision);
            if webhook.active && !current {
                self.run(webhook).await;
            }
        }
        Ok(())
    }

    /// (Re)starts `webhook`'s worker from its cursor, after the previous one has stopped.
    /// A replica that does not deliver webhooks only stops its own worker.
    pub async fn run(self: &Arc<Self>, webhook: Webhook) {
        self.stop(&webhook.id).await;
        if !self.ownership.owns(crate::fleet::WEBHOOKS)
            || self.closed.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let stop = CancellationToken::new();
        let (id, revision) = (webhook.id.clone(), webhook.revision);
        let handle = tokio::spawn(worker::run(self.clone(), webhook, stop.clone()));
        self.workers.lock().await.insert(id, Worker { stop, handle, revision });
    }

    /// Stops a worker and waits until it has written its last cursor.
    pub async fn stop(&self, id: &str) {
        let running = self.workers.lock().await.remove(id);
        if let Some(worker) = running {
            worker.stop.cancel();
            let _ = worker.handle.await;
        }
    }

    /// Stops every worker for good: the gateway is stopping.
    pub async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        self.shutdown().await;
    }

    /// Stops every worker, saving their cursors; [`Deliveries::resume`] starts them again.
    pub async fn shutdown(&self) {
        let all: Vec<_> = self.workers.lock().await.drain().collect();
        for (_, worker) in all {
            worker.stop.cancel();
            let _ = worker.handle.await;
        }
    }
}
