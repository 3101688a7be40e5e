//! The dispatch loop and the send. Jobs arrive from the acceptor right after commit (and
//! from recovery at start-up); those not yet due wait in a timer queue; due ones go to
//! their route's queue, where a worker waits for the route's rate and a free send slot.
//! Every outcome is written to the store before the job is forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use omnigate_adapters::{
    ErrorCode, FailureClass, MessageStatus, Outbound, ProviderError, SendFailure, Sender, Thread,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::backoff::Backoff;
use super::cancel::{Marks, Start};
use super::route::AccountRoute;
use super::unsure;
use crate::fleet::Ownership;
use crate::model::{Message, Millis, now_ms};
use crate::store::{Attempt, Job, Store, StoreError};
use crate::telemetry::Metrics;

/// How long a due send waits for a cancellation of it to be decided.
const CANCELING_WAIT_MS: i64 = 20;

/// How long after acceptance (or the last look) a send trusts that its recipient has not
/// opted out: within it the send goes without a store read; a send that waited (a retry,
/// a scheduled time, a route's backlog, a restart) looks again.
const CONSENT_FRESH_MS: i64 = 1_000;

/// How long a route pauses on a throttling answer that says nothing of when to come back.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

pub struct Policy {
    /// Fall back when a message with fallbacks is not DELIVERED this long after SENT.
    pub fallback_after: Option<Duration>,
    pub backoff: Backoff,
    pub max_attempts: u32,
    pub max_in_flight: usize,
}

struct Shared {
    store: Arc<dyn Store>,
    ownership: Arc<Ownership>,
    accounts: HashMap<String, AccountRoute>,
    policy: Policy,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    outlet: Outlet,
    stop: CancellationToken,
    sends: TaskTracker,
}

/// Where jobs enter the dispatcher, and cancellations meet the sends. Cheap to clone.
#[derive(Clone)]
pub struct Outlet {
    jobs: mpsc::UnboundedSender<Job>,
    marks: Arc<Marks>,
    /// Sends waiting in this dispatcher for their time, their route's rate or a send slot,
    /// by account: made once at start, so that counting takes no lock.
    waiting: Arc<HashMap<String, Gauge>>,
}

impl Outlet {
    /// Queues a committed job. After shutdown the job stays in the store for the next start.
    pub fn submit(&self, job: Job) {
        if !job.delivery_deadline {
            self.waiting(&job, Gauge::inc);
        }
        let _ = self.jobs.send(job);
    }

    /// A submitted send stopped waiting: it starts, or this dispatcher lets it go.
    fn leave(&self, job: &Job) {
        self.waiting(job, Gauge::dec);
    }

    fn waiting(&self, job: &Job, count: fn(&Gauge) -> i64) {
        if let Some(gauge) = self.waiting.get(&job.account) {
            count(gauge);
        }
    }

    /// Cancels a message in `store` unless a send of it has started; its job, wherever it
    /// waits in this dispatcher, is then dropped instead of sent.
    pub async fn cancel(&self, store: &dyn Store, id: &str) -> Result<Message, StoreError> {
        if !self.marks.begin_cancel(id) {
            let why = "its send to the provider is under way; its outcome decides".to_string();
            return Err(StoreError::TooLate { id: id.to_string(), why });
        }
        let canceled = store.cancel(id).await;
        self.marks.end_cancel(id, canceled.is_ok());
        canceled
    }
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    main: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    pub fn start(
        store: Arc<dyn Store>,
        ownership: Arc<Ownership>,
        accounts: HashMap<String, AccountRoute>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        let waiting = accounts.keys().map(|a| (a.clone(), metrics.dispatch_waiting(a))).collect();
        let shared = Arc::new(Shared {
            store,
            ownership,
            accounts,
            slots: Arc::new(Semaphore::new(policy.max_in_flight)),
            policy,
            metrics,
            outlet: Outlet { jobs, marks: Arc::default(), waiting: Arc::new(waiting) },
            stop: CancellationToken::new(),
            sends: TaskTracker::new(),
        });
        let main = tokio::spawn(run(shared.clone(), rx));
        Dispatcher { shared, main }
    }

    pub fn outlet(&self) -> Outlet {
        self.shared.outlet.clone()
    }

    /// Stops taking work, lets in-flight sends finish and record their outcome (up to
    /// `timeout`), and answers whether all of them did. Queued work stays in the store.
    pub async fn drain(self, timeout: Duration) -> bool {
        self.shared.stop.cancel();
        let _ = self.main.await;
        self.shared.sends.close();
        tokio::time::timeout(timeout, self.shared.sends.wait()).await.is_ok()
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut later: DelayQueue<Job> = DelayQueue::new();
    let mut routes: HashMap<(String, String), mpsc::UnboundedSender<Job>> = HashMap::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            Some(job) = rx.recv() => {
                let wait = job.due_at - now_ms();
                if wait > 0 {
                    later.insert(job, Duration::from_millis(wait as u64));
                    continue;
                }
                job
            }
            Some(expired) = later.next() => expired.into_inner(),
        };
        if job.delivery_deadline {
            let shared = shared.clone();
            tokio::spawn(async move {
                match shared.store.fall_back_if_undelivered(&job.message_id).await {
                    Ok(Some(next)) => shared.outlet.submit(next),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(message_id = %job.message_id, error = %e, "delivery deadline not applied")
                    }
                }
            });
            continue;
        }
        let key = (job.account.clone(), job.route.clone());
        let queue = routes.entry(key).or_insert_with(|| spawn_route(shared.clone(), &job));
        if let Err(mpsc::error::SendError(job)) = queue.send(job) {
            // Its route stopped (an unconfigured account): the job stays in the outbox.
            shared.outlet.leave(&job);
        }
    }
}

fn spawn_route(shared: Arc<Shared>, first: &Job) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let (account, route) = (first.account.clone(), first.route.clone());
    let owned = crate::fleet::route_key(&account, &route);
    tokio::spawn(async move {
        let Some(target) = shared.accounts.get(&account) else {
            tracing::error!(account, "jobs for an unconfigured account stay in the outbox");
            return;
        };
        loop {
            let job = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return,
                job = rx.recv() => match job { Some(job) => job, None => return },
            };
            // The route moved to another replica: hand the work over rather than break
            // the route's rate limit.
            if !shared.ownership.owns(&owned) {
                shared.outlet.leave(&job);
                shared.outlet.marks.finish(&job.message_id);
                if let Err(e) = shared.store.release(Some(&job.message_id)).await {
                    tracing::warn!(message_id = %job.message_id, error = %e, "cannot hand work over; its lease expires instead");
                }
                continue;
            }
            // A recipient still inside its pair limit waits in the timer queue, not here,
            // so the route keeps moving for everyone else.
            if let Some(wait) = target.pair_wait(&job.to) {
                shared.outlet.leave(&job);
                let mut job = job;
                job.due_at = now_ms() + wait.as_millis() as i64 + 1;
                shared.outlet.submit(job);
                continue;
            }
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return,
                _ = target.ready(&route, target.sender.rate_cost(&job.content)) => {}
            }
            let Ok(slot) = shared.slots.clone().acquire_owned().await else { return };
            shared.outlet.leave(&job);
            let shared2 = shared.clone();
            let span = send_span(&job);
            shared.sends.spawn(
                async move {
                    attempt(&shared2, job).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
    });
    tx
}

/// A span for one attempt, in the trace of the call that accepted the message.
fn send_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "send",
        otel.name = "send",
        otel.kind = "client",
        omnigate.message_id = %job.message_id,
        omnigate.account = %job.account,
        omnigate.attempt = job.attempts + 1,
        omnigate.outcome = Empty,
        omnigate.error_code = Empty,
        omnigate.provider_code = Empty,
        otel.status_code = Empty,
    );
    let _ = span.set_parent(job.origin.clone());
    span
}

/// One attempt, unless the message was canceled before it started.
async fn attempt(shared: &Shared, mut job: Job) {
    let marks = &shared.outlet.marks;
    match marks.start(&job.message_id) {
        Start::Go => {}
        Start::Drop => return shared.metrics.attempt_not_made(&job.account, "canceled"),
        Start::Later => {
            job.due_at = now_ms() + CANCELING_WAIT_MS;
            shared.outlet.submit(job);
            return;
        }
    }
    let id = job.message_id.clone();
    send(shared, job).await;
    marks.finish(&id);
}

async fn send(shared: &Shared, mut job: Job) {
    let Some(target) = shared.accounts.get(&job.account) else { return };
    let now = now_ms();
    if now >= job.expires_at {
        let error = ProviderError::gateway(
            ErrorCode::Expired,
            "time-to-live passed before the provider took the message",
        );
        record(
            shared,
            &job,
            Attempt::Failed { status: MessageStatus::Expired, error },
            "expired",
            0.0,
        )
        .await;
        return;
    }
    let started = Instant::now();
    let ready = match recheck_consent(shared, &mut job, now).await {
        Ok(None) => thread_for(shared, target.sender.as_ref(), &job).await,
        Ok(Some(error)) => {
            record(shared, &job, Attempt::Refused { error }, "refused", 0.0).await;
            return;
        }
        Err(failure) => Err(failure),
    };
    let result = match ready {
        Ok(thread) => {
            let outbound = Outbound {
                message_id: job.message_id.clone(),
                to: job.to.clone(),
                content: job.content.clone(),
                status_callback: target.status_callback.clone(),
                remaining_ttl: Some(Duration::from_millis((job.expires_at - now) as u64)),
                reply_to: job.send_options.reply_to_provider_id.clone(),
                tag: job.send_options.tag.clone(),
                thread,
            };
            shared.metrics.in_flight().inc();
            let (store, sender) = (shared.store.as_ref(), target.sender.as_ref());
            let result =
                unsure::send(store, sender, &job.account, &outbound, job.unsure_since).await;
            shared.metrics.in_flight().dec();
            result
        }
        Err(failure) => Err(failure),
    };
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok((accepted, outcome)) => {
            let sent = Attempt::Sent {
                provider_message_id: accepted.provider_message_id,
                provider_status: accepted.provider_status,
            };
            if let Some(after) = shared.policy.fallback_after
                && !job.send_options.fallbacks.is_empty()
            {
                // Timers are in memory: after a restart, a message already SENT waits for
                // its receipt without this deadline.
                let deadline = Job {
                    delivery_deadline: true,
                    due_at: now_ms() + after.as_millis() as i64,
                    ..job.clone()
                };
                shared.outlet.submit(deadline);
            }
            record(shared, &job, sent, outcome, seconds).await;
        }
        Err(SendFailure { class: FailureClass::Permanent, error }) => {
            record(
                shared,
                &job,
                Attempt::Failed { status: MessageStatus::Failed, error },
                "failed",
                seconds,
            )
            .await;
        }
        Err(SendFailure { class, error }) => {
            let (retry_after, outcome) = match class {
                FailureClass::RateLimited { retry_after } => {
                    target.pause(&job.route, retry_after.unwrap_or(DEFAULT_THROTTLE_PAUSE));
                    (retry_after, "rate_limited")
                }
                FailureClass::Retryable { retry_after } => (retry_after, "retry"),
                FailureClass::Unsure => {
                    job.unsure_since.get_or_insert(now);
                    (target.sender.unsure_wait(), "unsure")
                }
                FailureClass::Permanent => (None, "failed"),
            };
            job.attempts += 1;
            let delay = shared.policy.backoff.delay(job.attempts, retry_after, fastrand::f64());
            job.due_at = now_ms() + delay.as_millis() as i64;
            let give_up = if job.attempts >= shared.policy.max_attempts {
                Some((
                    MessageStatus::Failed,
                    ErrorCode::AttemptsExhausted,
                    format!("gave up after {} attempts", job.attempts),
                ))
            } else if job.due_at >= job.expires_at {
                Some((
                    MessageStatus::Expired,
                    ErrorCode::Expired,
                    "time-to-live passes before the next attempt".into(),
                ))
            } else {
                None
            };
            if let Some((status, code, why)) = give_up {
                // The last provider error stays, code and all, under the reason we stopped.
                let error = ProviderError {
                    code,
                    message: format!("{why}; last: {}", error.message),
                    retryable: false,
                    ..error
                };
                record(shared, &job, Attempt::Failed { status, error }, status.as_str(), seconds)
                    .await;
                return;
            }
            let retry =
                Attempt::Retry { due_at: job.due_at, error, unsure_since: job.unsure_since };
            if record(shared, &job, retry, outcome, seconds).await {
                shared.outlet.submit(job);
            }
        }
    }
}

/// The refusal a send gets when its recipient opted out since its consent was last read
/// (more than [`CONSENT_FRESH_MS`] ago). A store that cannot answer makes the attempt
/// retry rather than send to someone who may have said stop.
async fn recheck_consent(
    shared: &Shared,
    job: &mut Job,
    now: Millis,
) -> Result<Option<ProviderError>, SendFailure> {
    if now - job.consent_checked_at <= CONSENT_FRESH_MS {
        return Ok(None);
    }
    let refusal = shared
        .store
        .opt_out_refusal(&job.account, &job.to)
        .await
        .map_err(|e| store_unreadable("the opt-out list", e))?;
    job.consent_checked_at = now;
    Ok(refusal)
}

/// A send that needs the store's answer and cannot have it: retried.
pub(super) fn store_unreadable(what: &str, e: StoreError) -> SendFailure {
    let error =
        ProviderError::gateway(ErrorCode::ProviderUnavailable, format!("cannot read {what}: {e}"));
    SendFailure::retryable(ProviderError { retryable: true, ..error }, None)
}

/// The conversation so far, for senders that thread by reference (email). Without it a
/// reply would start a new thread in the person's mail client, so a store that cannot
/// answer makes the attempt retry rather than send unthreaded.
async fn thread_for(
    shared: &Shared,
    sender: &dyn Sender,
    job: &Job,
) -> Result<Thread, SendFailure> {
    if !sender.threads_by_reference() {
        return Ok(Thread::default());
    }
    shared
        .store
        .thread_of(&job.message_id)
        .await
        .map_err(|e| store_unreadable("the conversation's thread", e))
}

/// Writes an outcome; answers whether it was stored. An outcome that cannot be stored
/// leaves the outbox entry, so the message is tried again after a restart (at least once).
async fn record(shared: &Shared, job: &Job, attempt: Attempt, outcome: &str, seconds: f64) -> bool {
    shared.metrics.attempt(&job.account, outcome, seconds);
    let span = tracing::Span::current();
    span.record("omnigate.outcome", outcome);
    if let Attempt::Failed { error, .. }
    | Attempt::Retry { error, .. }
    | Attempt::Refused { error } = &attempt
    {
        span.record("omnigate.error_code", tracing::field::debug(error.code));
        span.record("omnigate.provider_code", error.provider_code.as_str());
    }
    if let Attempt::Failed { .. } | Attempt::Refused { .. } = attempt {
        span.record("otel.status_code", "error");
    }
    match shared.store.record_attempt(&job.message_id, attempt).await {
        Ok((_, fallback)) => {
            // A permanent failure moved the message to its next channel.
            if let Some(next) = fallback {
                shared.outlet.submit(next);
            }
            true
        }
        Err(e) => {
            tracing::error!(message_id = %job.message_id, error = %e, "could not record a send outcome");
            false
        }
    }
}
