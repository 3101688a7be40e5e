//! Who does what when replicas share one database. Work that must happen once at a time
//! is named: each route (so its rate limit holds across the fleet), the CRM webhook
//! deliveries, each mailbox. Every name has one owner, picked by rendezvous hashing over
//! the live replicas and held through a lease in the store, so ownership moves when
//! replicas join or leave and a replica that dies loses its names when its leases expire.
//!
//! The keeper also renews the leases on this replica's outbox entries and claims entries
//! that are free (accepted on another replica, released, or left by a dead one) on the
//! routes this replica owns. On the embedded store the one process owns everything and
//! the keeper only renews.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Outlet;
use crate::store::Store;
use crate::webhooks::Deliveries;

/// The name of a route's lease.
pub fn route_key(account: &str, route: &str) -> String {
    format!("route:{account}:{route}")
}

/// The name of the CRM webhook deliveries' lease.
pub const WEBHOOKS: &str = "webhooks";

/// The name of an email account's mailbox reader lease.
pub fn mailbox_key(account: &str) -> String {
    format!("mailbox:{account}")
}

/// What this replica owns now.
pub struct Ownership {
    everything: bool,
    owned: watch::Sender<HashSet<String>>,
}

impl Ownership {
    /// A process alone on its store.
    pub fn everything() -> Arc<Self> {
        Arc::new(Ownership { everything: true, owned: watch::Sender::new(HashSet::new()) })
    }

    /// A replica in a fleet, owning nothing until the keeper takes its share.
    pub fn shared() -> Arc<Self> {
        Arc::new(Ownership { everything: false, owned: watch::Sender::new(HashSet::new()) })
    }

    pub fn is_shared(&self) -> bool {
        !self.everything
    }

    pub fn owns(&self, name: &str) -> bool {
        self.everything || self.owned.borrow().contains(name)
    }

    pub fn owns_route(&self, account: &str, route: &str) -> bool {
        self.everything || self.owns(&route_key(account, route))
    }

    /// Waits until this replica owns `name`.
    pub async fn until_owned(&self, name: &str) {
        if self.everything {
            return;
        }
        let mut rx = self.owned.subscribe();
        let _ = rx.wait_for(|owned| owned.contains(name)).await;
    }

    /// Waits until this replica no longer owns `name`.
    pub async fn until_lost(&self, name: &str) {
        if self.everything {
            return std::future::pending().await;
        }
        let mut rx = self.owned.subscribe();
        let _ = rx.wait_for(|owned| !owned.contains(name)).await;
    }

    fn set(&self, held: HashSet<String>) {
        self.owned.send_if_modified(|owned| {
            let changed = *owned != held;
            *owned = held;
            changed
        });
    }
}

/// The replica that should own `name`: the highest rendezvous score.
pub fn owner_of<'a>(name: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas.iter().max_by_key(|r| score(name, r)).map(String::as_str)
}

fn score(name: &str, replica: &str) -> [u8; 8] {
    let digest =
        Sha256::new().chain_update(name).chain_update([0]).chain_update(replica).finalize();
    let mut score = [0; 8];
    score.copy_from_slice(&digest[..8]);
    score
}

/// What the keeper looks after.
pub struct Keeper {
    pub store: Arc<dyn Store>,
    pub ownership: Arc<Ownership>,
    /// Every route: its lease name and (account, route).
    pub routes: HashMap<String, (String, String)>,
    /// Every other name (webhooks, mailboxes).
    pub names: Vec<String>,
    pub node: String,
    pub lease: Duration,
    pub outlet: Outlet,
    pub deliveries: Arc<Deliveries>,
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// How often a replica looks for free work on its routes.
const CLAIM_EVERY: Duration = Duration::from_millis(200);
const CLAIM_PAGE: usize = 500;

impl Keeper {
    pub fn spawn(self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { self.run(stop).await })
    }

    async fn run(self, stop: CancellationToken) {
        let renew_every = self.lease / 3;
        let mut renew = tokio::time::interval(renew_every);
        let mut claim = tokio::time::interval(CLAIM_EVERY);
        claim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = renew.tick() => self.renew().await,
                _ = claim.tick(), if self.ownership.is_shared() => {
                    self.claim().await;
                    self.answer_cancels().await;
                }
            }
        }
        if self.ownership.is_shared() {
            self.step_down().await;
        }
    }

    async fn renew(&self) {
        if let Err(e) = self.store.renew_leases().await {
            tracing::error!(error = %e, "cannot renew outbox leases; others may take this replica's work");
        }
        if self.ownership.is_shared()
            && let Err(e) = self.rebalance().await
        {
            tracing::error!(error = %e, "cannot renew route leases");
        }
    }

    /// Takes this replica's share of the names and gives up the rest.
    async fn rebalance(&self) -> Result<(), crate::store::StoreError> {
        let live = self.store.heartbeat(self.lease).await?;
        let all = self.routes.keys().chain(self.names.iter());
        let (wanted, unwanted): (Vec<String>, Vec<String>) =
            all.cloned().partition(|name| owner_of(name, &live) == Some(self.node.as_str()));
        let had_webhooks = self.ownership.owns(WEBHOOKS);
        // Stop delivering before the lease is free for the next owner, who resumes from
        // the cursor the workers save as they stop: no event goes out twice.
        if had_webhooks && !wanted.iter().any(|n| n == WEBHOOKS) {
            self.deliveries.shutdown().await;
        }
        let held: HashSet<String> =
            self.store.hold_leases(wanted, unwanted, self.lease).await?.into_iter().collect();
        let has_webhooks = held.contains(WEBHOOKS);
        self.metrics.fleet(live.len(), held.len());
        self.ownership.set(held);
        match (had_webhooks, has_webhooks) {
            (false, true) => {
                tracing::info!(node = %self.node, "this replica delivers the CRM webhooks now");
                self.deliveries.resume().await?;
            }
            // Subscriptions made or removed through another replica.
            (true, true) => self.deliveries.reconcile().await?,
            (true, false) => self.deliveries.shutdown().await,
            (false, false) => {}
        }
        Ok(())
    }

    async fn claim(&self) {
        let routes: Vec<(String, String)> = self
            .routes
            .iter()
            .filter(|(name, _)| self.ownership.owns(name))
            .map(|(_, pair)| pair.clone())
            .collect();
        if routes.is_empty() {
            return;
        }
        match self.store.claim(&self.node, self.lease, CLAIM_PAGE, Some(routes)).await {
            Ok(jobs) => jobs.into_iter().for_each(|job| self.outlet.submit(job)),
            Err(e) => tracing::error!(error = %e, "cannot claim outbox work"),
        }
    }

    /// Decides the cancellations other replicas were asked for messages whose route this
    /// one dispatches: only its dispatcher knows whether their send has started.
    async fn answer_cancels(&self) {
        let pending = match self.store.pending_cancels(CLAIM_PAGE).await {
            Ok(pending) => pending,
            Err(e) => return tracing::error!(error = %e, "cannot read cancellation requests"),
        };
        for id in pending {
            let answer = match self.store.get_message(&id).await {
                Ok(None) => format!("message {id} not found"),
                Ok(Some(message)) if !self.dispatches(&message.account) => continue,
                Ok(Some(_)) => match self.outlet.cancel(self.store.as_ref(), &id).await {
                    Ok(_) => String::new(),
                    Err(e) if e.is_domain() => e.to_string(),
                    Err(e) => {
                        tracing::error!(message_id = %id, error = %e, "cannot cancel; next round retries");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "cannot read a message to cancel");
                    continue;
                }
            };
            if let Err(e) = self.store.answer_cancel(&id, &answer).await {
                tracing::error!(message_id = %id, error = %e, "cannot answer a cancellation request");
            }
        }
    }

    /// Whether this replica holds the route of `account`.
    fn dispatches(&self, account: &str) -> bool {
        self.routes.iter().any(|(name, (a, _))| a == account && self.ownership.owns(name))
    }

    /// On the way out: gives every name and every unsent entry back at once, so the
    /// others need not wait for the leases to expire.
    async fn step_down(&self) {
        let all: Vec<String> = self.routes.keys().chain(self.names.iter()).cloned().collect();
        if let Err(e) = self.store.hold_leases(Vec::new(), all, self.lease).await {
            tracing::warn!(error = %e, "cannot give up route leases; they expire");
        }
        if let Err(e) = self.store.release(None).await {
            tracing::warn!(error = %e, "cannot give up outbox leases; they expire");
        }
        self.ownership.set(HashSet::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lease names are stored and compared across replicas, also across versions during a
    /// rolling upgrade: their spelling is part of the schema.
    #[test]
    fn lease_names_keep_their_spelling() {
        assert_eq!(route_key("sms-1", "+15005550006"), "route:sms-1:+15005550006");
        assert_eq!(mailbox_key("support"), "mailbox:support");
        assert_ne!(route_key("sms-1", "+15005550006"), route_key("sms-1", "+15005550007"));
    }

    /// A process alone owns every name and never loses one; a replica owns what the keeper
    /// last set, and those waiting for a name to come or go are woken when it does.
    #[tokio::test]
    async fn ownership_follows_what_the_keeper_holds() {
        let alone = Ownership::everything();
        assert!(!alone.is_shared());
        assert!(alone.owns(WEBHOOKS) && alone.owns_route("sms", "+15005550006"));
        alone.until_owned("anything").await;
        let never = tokio::time::timeout(Duration::from_millis(50), alone.until_lost(WEBHOOKS));
        assert!(never.await.is_err(), "a process alone never loses a name");

        let replica = Ownership::shared();
        assert!(replica.is_shared());
        let route = route_key("sms", "+15005550006");
        assert!(!replica.owns(&route) && !replica.owns_route("sms", "+15005550006"));
        let waiting = tokio::spawn({
            let replica = replica.clone();
            let route = route.clone();
            async move { replica.until_owned(&route).await }
        });
        replica.set(HashSet::from([route.clone(), WEBHOOKS.to_string()]));
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("task");
        assert!(replica.owns_route("sms", "+15005550006") && replica.owns(WEBHOOKS));
        assert!(!replica.owns_route("sms", "+15005550007"));

        let losing = tokio::spawn({
            let replica = replica.clone();
            async move { replica.until_lost(WEBHOOKS).await }
        });
        replica.set(HashSet::from([route.clone()]));
        tokio::time::timeout(Duration::from_secs(5), losing).await.expect("woken").expect("task");
        assert!(!replica.owns(WEBHOOKS) && replica.owns(&route));
    }

    #[test]
    fn rendezvous_moves_only_the_names_of_a_replica_that_leaves() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let names: Vec<String> = (0..300).map(|i| format!("route:sms:+1555000{i:04}")).collect();
        let mut per_replica = HashMap::new();
        for name in &names {
            let before = owner_of(name, &three).expect("owner");
            *per_replica.entry(before).or_insert(0) += 1;
            let after = owner_of(name, &two).expect("owner");
            if before != "b" {
                assert_eq!(before, after, "{name} moved though its owner stayed");
            }
        }
        for (replica, count) in per_replica {
            assert!((50..=150).contains(&count), "{replica} owns {count} of 300: unbalanced");
        }
        assert_eq!(owner_of("x", &[]), None);
    }
}
