//! Metrics, named once here, as Prometheus text on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{Event, EventKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub channel: &'static str,
    /// The status a message moved to: accepted, sent, delivered, read, failed, expired,
    /// canceled...; received for an inbound message.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// A method of omnigate.v1.Gateway
    pub method: &'static str,
    /// The gRPC status, as in OK, NOT_FOUND, UNAVAILABLE
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabel {
    pub webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub webhook: String,
    /// delivered, failed (an attempt, retried unless it was the last), dead_lettered, gone,
    /// missed (deleted by retention before delivery)
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// events, messages
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub account: String,
    /// sent, retry, rate_limited, failed, expired, canceled (dropped before it started)
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub account: String,
    /// ok, rejected, malformed, unavailable
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    accepted: Family<ChannelLabel, Counter>,
    statuses: Family<StatusLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    webhook_ignored: Family<WebhookLabels, Counter>,
    mail: Family<WebhookLabels, Counter>,
    store_commits: Counter,
    store_writes: Counter,
    store_writer_busy: Counter<f64, AtomicU64>,
    sends_shed: Counter,
    retention_deleted: Family<KindLabel, Counter>,
    send_seconds: Histogram,
    grpc_calls: Family<CallLabels, Counter>,
    grpc_seconds: Family<MethodLabel, Histogram, fn() -> Histogram>,
    event_deliveries: Family<DeliveryLabels, Counter>,
    event_lag: Family<SubscriptionLabel, Gauge>,
    in_flight: Gauge,
    waiting: Family<AccountLabel, Gauge>,
    live_replicas: Gauge,
    leases_held: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("omnigate");
        let accepted = Family::<ChannelLabel, Counter>::default();
        let statuses = Family::<StatusLabels, Counter>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let webhook_ignored = Family::<WebhookLabels, Counter>::default();
        let mail = Family::<WebhookLabels, Counter>::default();
        let store_commits = Counter::default();
        let store_writes = Counter::default();
        let store_writer_busy = Counter::<f64, AtomicU64>::default();
        let sends_shed = Counter::default();
        let retention_deleted = Family::<KindLabel, Counter>::default();
        let send_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let grpc_calls = Family::<CallLabels, Counter>::default();
        let grpc_seconds =
            Family::<MethodLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            });
        let event_deliveries = Family::<DeliveryLabels, Counter>::default();
        let event_lag = Family::<SubscriptionLabel, Gauge>::default();
        let in_flight = Gauge::default();
        let waiting = Family::<AccountLabel, Gauge>::default();
        let live_replicas = Gauge::default();
        let leases_held = Gauge::default();
        registry.register(
            "fleet_live_replicas",
            "Replicas seen alive in the shared database at this replica's last heartbeat",
            live_replicas.clone(),
        );
        registry.register(
            "fleet_leases_held",
            "Named leases (routes, webhook deliveries, mailboxes) this replica holds",
            leases_held.clone(),
        );
        registry.register(
            "messages_accepted",
            "Outbound messages durably accepted",
            accepted.clone(),
        );
        registry.register(
            "message_statuses",
            "Message status changes this replica stored, by channel and new status: the \
             ratios of delivered, failed and expired to sent are the delivery rates",
            statuses.clone(),
        );
        registry.register(
            "send_attempts",
            "Attempts to hand a message to its provider, by outcome",
            attempts.clone(),
        );
        registry.register("webhooks", "Provider webhook requests, by result", webhooks.clone());
        registry.register(
            "webhook_parts_ignored",
            "Webhook parts skipped as unknown or unreadable (the rest of the batch is kept)",
            webhook_ignored.clone(),
        );
        registry.register(
            "mailbox_mails",
            "Mails read from email accounts' mailboxes, by result (ok, ignored, rejected), and reader errors",
            mail.clone(),
        );
        registry.register(
            "store_commits",
            "Store transactions committed (group commits)",
            store_commits.clone(),
        );
        registry.register(
            "store_writes",
            "Store writes committed; writes / commits is the group size",
            store_writes.clone(),
        );
        registry.register(
            "store_writer_busy_seconds",
            "Time the store's single writer spent on batches; its rate near 1 means writes queue",
            store_writer_busy.clone(),
        );
        registry.register(
            "sends_shed",
            "SendMessage calls answered UNAVAILABLE because server.max_pending_sends were waiting",
            sends_shed.clone(),
        );
        registry.register(
            "retention_deleted",
            "Events and messages deleted by retention (retention.events_days, messages_days)",
            retention_deleted.clone(),
        );
        registry.register(
            "send_duration_seconds",
            "Time a provider took to answer a send",
            send_seconds.clone(),
        );
        registry.register(
            "grpc_requests",
            "Calls to the Gateway API, by method and gRPC status",
            grpc_calls.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a Gateway call's arrival to its answer (for StreamEvents, to the stream's start)",
            grpc_seconds.clone(),
        );
        registry.register(
            "event_deliveries",
            "Event deliveries to CRM webhook subscriptions, by result",
            event_deliveries.clone(),
        );
        registry.register(
            "event_delivery_lag",
            "Events committed that a webhook subscription has not yet delivered or passed over",
            event_lag.clone(),
        );
        registry.register(
            "sends_in_flight",
            "Sends waiting for their provider's answer",
            in_flight.clone(),
        );
        registry.register(
            "sends_waiting",
            "Sends held in memory by this replica's dispatcher for their time (a retry, a schedule), their route's rate or a free send slot",
            waiting.clone(),
        );
        Metrics {
            registry,
            accepted,
            statuses,
            attempts,
            webhooks,
            webhook_ignored,
            mail,
            store_commits,
            store_writes,
            store_writer_busy,
            sends_shed,
            retention_deleted,
            send_seconds,
            grpc_calls,
            grpc_seconds,
            event_deliveries,
            event_lag,
            in_flight,
            waiting,
            live_replicas,
            leases_held,
        }
    }
}

impl Metrics {
    pub fn accepted(&self, channel: &str) {
        self.accepted.get_or_create(&ChannelLabel { channel: channel.to_string() }).inc();
    }

    /// Counts the statuses a committed batch stored (each replica its own batches, so the
    /// fleet's sum counts each change once).
    pub fn committed(&self, events: &[Event]) {
        for event in events {
            let (EventKind::StatusChanged { message, .. } | EventKind::Received { message }) =
                &event.kind
            else {
                continue;
            };
            let labels =
                StatusLabels { channel: message.channel.as_str(), status: message.status.as_str() };
            self.statuses.get_or_create(&labels).inc();
        }
    }

    pub fn attempt(&self, account: &str, outcome: &str, seconds: f64) {
        self.attempt_not_made(account, outcome);
        self.send_seconds.observe(seconds);
    }

    /// An attempt that ended before reaching the provider, so took no send time.
    pub fn attempt_not_made(&self, account: &str, outcome: &str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                account: account.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn grpc_call(&self, method: &'static str, code: &'static str, took: std::time::Duration) {
        self.grpc_calls.get_or_create(&CallLabels { method, code }).inc();
        self.grpc_seconds.get_or_create(&MethodLabel { method }).observe(took.as_secs_f64());
    }

    pub fn event_deliveries(&self, webhook: &str, result: &'static str, events: u64) {
        let labels = DeliveryLabels { webhook: webhook.to_string(), result };
        self.event_deliveries.get_or_create(&labels).inc_by(events);
    }

    pub fn event_lag(&self, webhook: &str, behind: u64) {
        let labels = SubscriptionLabel { webhook: webhook.to_string() };
        self.event_lag.get_or_create(&labels).set(i64::try_from(behind).unwrap_or(i64::MAX));
    }

    pub fn forget_event_lag(&self, webhook: &str) {
        self.event_lag.remove(&SubscriptionLabel { webhook: webhook.to_string() });
    }

    pub fn mailbox(&self, account: &str, result: &str) {
        self.mail
            .get_or_create(&WebhookLabels {
                account: account.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn webhook(&self, account: &str, result: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                account: account.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn webhook_ignored(&self, account: &str, parts: usize) {
        self.webhook_ignored
            .get_or_create(&WebhookLabels {
                account: account.to_string(),
                result: "ignored".to_string(),
            })
            .inc_by(parts as u64);
    }

    pub fn store_commit(&self, writes: usize) {
        self.store_commits.inc();
        self.store_writes.inc_by(writes as u64);
    }

    /// A batch's time on the writer, from taking it to answering it, committed or not.
    pub fn store_writer_busy(&self, spent: std::time::Duration) {
        self.store_writer_busy.inc_by(spent.as_secs_f64());
    }

    pub fn send_shed(&self) {
        self.sends_shed.inc();
    }

    pub fn retention_deleted(&self, kind: &str, count: u64) {
        self.retention_deleted.get_or_create(&KindLabel { kind: kind.to_string() }).inc_by(count);
    }

    /// What the last heartbeat and lease round found.
    pub fn fleet(&self, live_replicas: usize, leases_held: usize) {
        self.live_replicas.set(live_replicas as i64);
        self.leases_held.set(leases_held as i64);
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The count of `account`'s sends waiting in the dispatcher, to move without a look-up.
    pub fn dispatch_waiting(&self, account: &str) -> Gauge {
        self.waiting.get_or_create(&AccountLabel { account: account.to_string() }).clone()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
