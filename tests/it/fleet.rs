//! Three replicas of the real binary on one PostgreSQL database, one killed with SIGKILL
//! under load: every accepted message reaches the provider, each route's rate holds across
//! the fleet, duplicates stay within what the dead replica had in flight, and the event log
//! stays gap-free. Also: a receipt or inbound message may reach any replica.

use std::path::Path;
use std::time::Duration;

use omnigate::fleet::{owner_of, route_key};
use omnigate_adapters::twilio::sandbox::SandboxHandle;
use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_client::GatewayClient;

use crate::pg::TestDb;
use crate::process::{Running, free_port, spawn, status_of, twilio_sandbox, until_sent};
use crate::support::{SID, TOKEN, post_signed, text_request};

type Client = GatewayClient<tonic::transport::Channel>;

const ROUTES: [(&str, &str); 3] =
    [("sms-a", "+15005550101"), ("sms-b", "+15005550102"), ("sms-c", "+15005550103")];
const RATE: f64 = 15.0;
const BURST: u32 = 3;
const MAX_IN_FLIGHT: usize = 4;
const NODES: [&str; 3] = ["r1", "r2", "r3"];
/// Messages sent before the kill, and in all.
const FIRST: usize = 150;
const TOTAL: usize = 210;

struct Replica {
    node: &'static str,
    config: std::path::PathBuf,
    grpc: String,
    http: String,
}

impl Replica {
    fn new(dir: &Path, node: &'static str, db: &TestDb, sandbox: &SandboxHandle) -> Replica {
        let (grpc, http) = (free_port(), free_port());
        let mut accounts = String::new();
        for (id, from) in ROUTES {
            accounts.push_str(&format!(
                r#"
[[accounts]]
type = "twilio"
id = "{id}"
api_base = "{api}"
account_sid = "{SID}"
auth_token = "{TOKEN}"
from = "{from}"
rate_limit = {{ per_second = {RATE}, burst = {BURST} }}
"#,
                api = sandbox.api_base()
            ));
        }
        let config = dir.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[server]
node_id = "{node}"
grpc_addr = "127.0.0.1:{grpc}"
http_addr = "127.0.0.1:{http}"
drain_timeout_secs = 5

[store]
url = "{url}"
lease_secs = 2

[dispatch]
max_in_flight = {MAX_IN_FLIGHT}
backoff_initial_ms = 50
backoff_max_ms = 500
{accounts}"#,
                url = db.url,
            ),
        )
        .expect("write config");
        Replica {
            node,
            config,
            grpc: format!("http://127.0.0.1:{grpc}"),
            http: format!("http://127.0.0.1:{http}"),
        }
    }

    /// Two replicas, r1 and r2.
    fn pair(dir: &Path, db: &TestDb, sandbox: &SandboxHandle) -> (Replica, Replica) {
        (Replica::new(dir, "r1", db, sandbox), Replica::new(dir, "r2", db, sandbox))
    }

    async fn start(&self) -> (Running, Client) {
        spawn(&self.config, &self.grpc).await
    }
}

/// The route leases, read off the async workers; none before the schema exists.
async fn leases(db: &TestDb) -> Vec<(String, String)> {
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query("SELECT name, owner FROM leases WHERE owner <> ''", &[])
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default()
    })
    .await
    .expect("join")
}

/// Which replica holds a message's outbox entry.
async fn claimed_by(db: &TestDb, message_id: &str) -> Option<String> {
    let (url, id) = (db.url.clone(), message_id.to_string());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let row = c.query_opt("SELECT lease_owner FROM outbox WHERE message_id = $1", &[&id]);
        row.ok().flatten().map(|r| r.get(0))
    })
    .await
    .expect("join")
}

/// Waits until every route is held by the replica rendezvous hashing gives it to.
async fn settled(db: &TestDb, live: &[String]) {
    for _ in 0..200 {
        let leases = leases(db).await;
        let right = ROUTES.iter().all(|(id, from)| {
            let name = route_key(id, from);
            let want = owner_of(&name, live).expect("owner");
            leases.iter().any(|(n, o)| *n == name && o == want)
        });
        if right {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("routes never settled on their owners");
}

fn request(i: usize) -> pb::SendMessageRequest {
    let (account, _) = ROUTES[i % ROUTES.len()];
    pb::SendMessageRequest {
        account: account.into(),
        ..text_request(&format!("+1415557{i:04}"), &format!("fleet {i}"))
    }
}

/// Sends `request(i)` for every `i` in `range`, spread over `clients` that send at once;
/// answers the accepted messages' ids.
async fn send_in_parallel(clients: &[Client], range: std::ops::Range<usize>) -> Vec<String> {
    let mut load = Vec::new();
    for (part, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let mine: Vec<usize> = range.clone().skip(part).step_by(clients.len()).collect();
        load.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in mine {
                let m = client.send_message(request(i)).await.expect("accepted").into_inner();
                ids.push(m.message.expect("message").id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for part in load {
        ids.extend(part.await.expect("load"));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_sigkill_under_load() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(30).await;
    let replicas: Vec<Replica> =
        NODES.iter().map(|n| Replica::new(dir.path(), n, &db, &sandbox)).collect();
    let mut running = Vec::new();
    for r in &replicas {
        running.push(Some(r.start().await));
    }
    let all: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    settled(&db, &all).await;

    // The victim owns the first route; the load goes to every replica, most of it to ones
    // that do not own the message's route.
    let victim_node = owner_of(&route_key(ROUTES[0].0, ROUTES[0].1), &all).expect("owner");
    let victim = NODES.iter().position(|n| *n == victim_node).expect("victim");
    let clients: Vec<Client> =
        running.iter().map(|slot| slot.as_ref().expect("running").1.clone()).collect();
    let mut accepted = send_in_parallel(&clients, 0..FIRST).await;
    let (mut child, _) = running[victim].take().expect("victim running");
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    let sent_before_kill = sandbox.sent_count();
    assert!(sent_before_kill < FIRST, "the kill came under load ({sent_before_kill} sent)");

    // More load on the survivors while they take the dead replica's routes over.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    for i in FIRST..TOTAL {
        let (_, client) = running[survivors[i % 2]].as_mut().expect("running");
        let m = client.send_message(request(i)).await.expect("accepted").into_inner();
        accepted.push(m.message.expect("message").id);
    }

    let (_, reader) = running[survivors[0]].as_mut().expect("running");
    until_sent(reader, &accepted, Duration::from_secs(90)).await;

    let sent = sandbox.sent();
    let mut recipients: Vec<&str> = sent.iter().filter_map(|s| s.field("To")).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), TOTAL, "every accepted message reached the provider");
    assert!(
        sent.len() <= TOTAL + MAX_IN_FLIGHT,
        "{} sends for {TOTAL} messages: more duplicates than the dead replica had in flight",
        sent.len()
    );

    // Per route, no one-second window holds more than a bucket's worth plus the rate,
    // with one more bucket for the handover (the new owner starts with a full one).
    for (_, from) in ROUTES {
        let mut times: Vec<_> =
            sent.iter().filter(|s| s.field("From") == Some(from)).map(|s| s.at).collect();
        times.sort();
        let most = times
            .iter()
            .enumerate()
            .map(|(i, start)| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let bound = 2 * BURST as usize + RATE as usize + 1;
        assert!(most <= bound, "{from}: {most} sends in one second, limit {bound}");
    }

    // One log for the fleet: sequences 1..=N with no gap, one ACCEPTED event per message.
    let url = db.url.clone();
    let (sequences, accepted_events) = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let seqs: Vec<i64> = c
            .query("SELECT seq FROM events ORDER BY seq", &[])
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let accepted: i64 = c
            .query_one("SELECT count(*) FROM events WHERE kind LIKE '%\"previous\":null%'", &[])
            .expect("count")
            .get(0);
        (seqs, accepted)
    })
    .await
    .expect("join");
    assert_eq!(sequences, (1..=sequences.len() as i64).collect::<Vec<_>>(), "gap-free");
    assert_eq!(accepted_events, TOTAL as i64, "each message was accepted once");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_inbound_reach_any_replica_and_every_stream() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    // Callbacks are posted by the test, to the replica it picks.
    let sandbox = twilio_sandbox(0).await;
    let (a, b) = Replica::pair(dir.path(), &db, &sandbox);
    // The same CRM subscription in both replicas' configs: one replica delivers it.
    let (crm, crm_url) = crate::webhooks::receiver().await;
    for r in [&a, &b] {
        let mut config = std::fs::read_to_string(&r.config).expect("config");
        config.push_str(&format!(
            "\n[[webhooks.subscriptions]]\nurl = \"{crm_url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        ));
        std::fs::write(&r.config, config).expect("write");
    }
    let (_ra, mut client_a) = a.start().await;
    let (_rb, mut client_b) = b.start().await;
    settled(&db, &[a.node.to_string(), b.node.to_string()]).await;

    // A stream on replica A, from the start of the log.
    let mut stream = client_a
        .stream_events(pb::StreamEventsRequest { from_sequence: 0, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();

    let m = client_b.send_message(request(0)).await.expect("accepted").into_inner();
    let id = m.message.expect("message").id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let sid = loop {
        let m = client_a.get_message(pb::GetMessageRequest { id: id.clone() }).await.expect("get");
        let m = m.into_inner().message.expect("message");
        if !m.provider_message_id.is_empty() {
            break m.provider_message_id;
        }
        assert!(tokio::time::Instant::now() < deadline, "never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The receipt, posted to A whichever replica sent the message.
    let url = format!("{}/webhooks/twilio/{}/status", a.http, ROUTES[0].0);
    let (code, body) = post_signed(
        &url,
        &[("MessageSid", &sid), ("MessageStatus", "delivered"), ("AccountSid", SID)],
        TOKEN,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // An inbound message posted to B.
    let url_b = format!("{}/webhooks/twilio/{}/inbound", b.http, ROUTES[0].0);
    let (code, body) = post_signed(
        &url_b,
        &[
            ("MessageSid", "SMfleetinbound0000000000000000000"),
            ("AccountSid", SID),
            ("From", "+14155570000"),
            ("To", ROUTES[0].1),
            ("Body", "hello from the fleet"),
        ],
        TOKEN,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status_of(&mut client_b, &id).await, pb::MessageStatus::Delivered);

    // A's stream carries B's inbound message and the delivery, in sequence order.
    let mut last = 0;
    let (mut delivered, mut inbound) = (false, false);
    while !(delivered && inbound) {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("open");
        assert!(event.sequence > last, "sequence {} after {last}", event.sequence);
        last = event.sequence;
        match event.kind {
            Some(pb::event::Kind::MessageStatusChanged(c)) => {
                let m = c.message.expect("message");
                delivered |= m.id == id && m.status == pb::MessageStatus::Delivered as i32;
            }
            Some(pb::event::Kind::MessageReceived(r)) => {
                let m = r.message.expect("message");
                inbound |= m.from == "+14155570000";
            }
            _ => {}
        }
    }

    // The CRM got every event of the log once, in order, whichever replica wrote it.
    let expected: Vec<String> = (1..=last).map(|n| format!("evt_{n}")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids: Vec<String> =
            crm.got.lock().expect("got").iter().map(|(id, ..)| id.clone()).collect();
        if ids.len() >= expected.len() {
            assert_eq!(ids[..expected.len()], expected[..], "each event once, in order");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "CRM got {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each replica reports the fleet it sees and its share of the names.
    let mut held = 0;
    for r in [&a, &b] {
        let metrics = reqwest::get(format!("{}/metrics", r.http))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        let value = |name: &str| {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<i64>().ok())
        };
        assert_eq!(value("omnigate_fleet_live_replicas "), Some(2), "{metrics}");
        held += value("omnigate_fleet_leases_held ").expect("leases gauge");
    }
    assert_eq!(held, ROUTES.len() as i64 + 2, "every route, the webhooks and retention, once");
    let all: Vec<String> = crm.got.lock().expect("got").iter().map(|(id, ..)| id.clone()).collect();
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(all, unique, "no event delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_as_a_separate_step_when_start_up_does_not() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(0).await;
    let replica = Replica::new(dir.path(), "r1", &db, &sandbox);
    let config = std::fs::read_to_string(&replica.config).expect("config");
    let config = config.replace("lease_secs = 2", "lease_secs = 2\nmigrate_on_start = false");
    std::fs::write(&replica.config, config).expect("write");
    let serve = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
            .args(args)
            .arg("--config")
            .arg(&replica.config)
            .env("RUST_LOG", "error")
            .output()
            .expect("run omnigate")
    };
    let refused = serve(&["serve"]);
    assert!(!refused.status.success(), "an unmigrated database is refused");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("omnigate migrate"), "the error says what to do: {why}");

    let migrated = serve(&["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let (_running, mut client) = replica.start().await;
    let m = client.send_message(request(0)).await.expect("accepted after migrate");
    assert!(m.into_inner().message.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_takes_its_routes_over_without_duplicates() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(20).await;
    let first: Vec<String> = ["r1", "r2"].map(String::from).to_vec();
    // A newcomer that rendezvous hashing gives at least one route.
    let newcomer = ["r3", "r4", "r5", "r6", "r7"]
        .into_iter()
        .find(|n| {
            let live = [first.clone(), vec![n.to_string()]].concat();
            ROUTES.iter().any(|(id, from)| owner_of(&route_key(id, from), &live) == Some(*n))
        })
        .expect("some name wins a route");
    let (r1, r2) = (
        Replica::new(dir.path(), "r1", &db, &sandbox),
        Replica::new(dir.path(), "r2", &db, &sandbox),
    );
    let (_a, mut client) = r1.start().await;
    let (_b, _) = r2.start().await;
    settled(&db, &first).await;

    // Eight seconds of work per route at its rate, queued on the two first replicas.
    let queued = ROUTES.len() * 8 * RATE as usize;
    let mut ids = send_in_parallel(&vec![client.clone(); 4], 0..queued).await;
    // Its free ports picked just before it starts: picked earlier, another test running
    // meanwhile may take one.
    let r3 = Replica::new(dir.path(), newcomer, &db, &sandbox);
    let (_c, _) = r3.start().await;
    settled(&db, &[first, vec![newcomer.to_string()]].concat()).await;
    // And work accepted after the join, which the newcomer's routes now take.
    let total = queued + 30;
    for i in queued..total {
        let m = client.send_message(request(i)).await.expect("accepted").into_inner();
        ids.push(m.message.expect("message").id);
    }
    until_sent(&mut client, &ids, Duration::from_secs(60)).await;
    let sent = sandbox.sent();
    assert_eq!(sent.len(), total, "a clean handover sends nothing twice");
    // Each send names its sender's callback URL: the newcomer sent its routes' share.
    let by_newcomer = sent
        .iter()
        .filter(|s| s.field("StatusCallback").is_some_and(|u| u.starts_with(&r3.http)))
        .count();
    let urls: std::collections::BTreeSet<&str> =
        sent.iter().filter_map(|s| s.field("StatusCallback")).collect();
    assert!(by_newcomer > 0, "the newcomer took its routes over and sent: {urls:?} {}", r3.http);
}

/// A cancellation that reaches a replica other than the one dispatching the message is
/// decided by that one (which alone knows whether the send started): the waiting message
/// is canceled and never sent; one already sent is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_through_another_replica_is_decided_by_the_dispatching_one() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(0).await;
    let live: Vec<String> = ["r1", "r2"].map(String::from).to_vec();
    let (r1, r2) = (
        Replica::new(dir.path(), "r1", &db, &sandbox),
        Replica::new(dir.path(), "r2", &db, &sandbox),
    );
    let (_a, client1) = r1.start().await;
    let (_b, client2) = r2.start().await;
    settled(&db, &live).await;
    let (account, from) = ROUTES[0];
    let owner = owner_of(&route_key(account, from), &live).expect("owner");
    let mut client = if owner == "r1" { client2 } else { client1 };

    // Three seconds of work at the route's rate: the last message waits its turn.
    let count = 3 * RATE as usize;
    let mut ids = Vec::new();
    for i in 0..count {
        let request = pb::SendMessageRequest {
            account: account.into(),
            ..text_request(&format!("+1415558{i:04}"), "queued")
        };
        let m = client.send_message(request).await.expect("accepted").into_inner();
        ids.push(m.message.expect("message").id);
    }
    let last = ids.pop().expect("last");
    // The dispatching replica holds it in memory by now, waiting for the route's rate.
    for _ in 0..100 {
        if claimed_by(&db, &last).await.as_deref() == Some(owner) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(claimed_by(&db, &last).await.as_deref(), Some(owner), "never claimed");
    let request = pb::CancelMessageRequest { id: last.clone() };
    let canceled = client.cancel_message(request).await.expect("canceled").into_inner();
    assert_eq!(canceled.message.expect("message").status, pb::MessageStatus::Canceled as i32);
    // The route is first in, first out: once a message accepted after the cancellation is
    // sent, the canceled one's turn has passed.
    let marker = pb::SendMessageRequest {
        account: account.into(),
        ..text_request("+14155589999", "after the cancellation")
    };
    let m = client.send_message(marker).await.expect("accepted").into_inner();
    ids.push(m.message.expect("message").id);

    until_sent(&mut client, &ids, Duration::from_secs(60)).await;
    let last_to = format!("+1415558{:04}", count - 1);
    assert_eq!(sandbox.sent().len(), count, "everything but the canceled message");
    assert!(sandbox.sent().iter().all(|s| s.field("To") != Some(last_to.as_str())));
    assert_eq!(status_of(&mut client, &last).await, pb::MessageStatus::Canceled);

    let request = pb::CancelMessageRequest { id: ids[0].clone() };
    let refused = client.cancel_message(request).await.expect_err("already sent");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
}

/// Subscription changes made through a replica that does not deliver the CRM webhooks
/// reach the one that does: after a rotation the next deliveries are signed with the new
/// secret (the deliverer's cursor saves do not write the old one back), after an update
/// they go to the new URL alone, and a subscription deleted there stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_changes_through_any_replica_reach_the_one_that_delivers() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = twilio_sandbox(0).await;
    let (a, b) = Replica::pair(dir.path(), &db, &sandbox);
    let (_ra, client_a) = a.start().await;
    let (_rb, client_b) = b.start().await;
    settled(&db, &[a.node.to_string(), b.node.to_string()]).await;
    let mut deliverer = None;
    for _ in 0..100 {
        let leases = leases(&db).await;
        deliverer = leases.into_iter().find(|(name, _)| name == omnigate::fleet::WEBHOOKS);
        if deliverer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, owner) = deliverer.expect("a replica delivers the webhooks");
    let (mut other, sender) =
        if owner == a.node { (client_b, client_a) } else { (client_a, client_b) };

    let (crm, url) = crate::webhooks::receiver().await;
    let subscription = pb::CreateWebhookRequest { url, from_now: true, ..Default::default() };
    let hook = other.create_webhook(subscription).await.expect("created").into_inner();
    // Events keep coming while the test waits for what the CRM gets.
    let load = tokio::spawn(async move {
        let mut sender = sender;
        for i in 0.. {
            let _ = sender.send_message(request(i)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let signed_with = |secret: &str| {
        let got = crm.got.lock().expect("got");
        got.iter()
            .filter(|(id, ts, sig, body)| crate::webhooks::verify(secret, id, ts, sig, body))
            .count()
    };
    crate::webhooks::until("a delivery by the other replica", || signed_with(&hook.secret) > 0)
        .await;

    let rotation = pb::RotateWebhookSecretRequest {
        id: hook.id.clone(),
        secret: String::new(),
        grace: Some(omnigate_proto::pbjson_types::Duration { seconds: 0, nanos: 0 }),
    };
    let rotated = other.rotate_webhook_secret(rotation).await.expect("rotated").into_inner();
    crate::webhooks::until("deliveries signed with the new secret", || {
        signed_with(&rotated.secret) >= 3
    })
    .await;
    let before = crm.got.lock().expect("got").len();
    crate::webhooks::until("more deliveries", || crm.got.lock().expect("got").len() >= before + 3)
        .await;
    let later: Vec<_> = crm.got.lock().expect("got")[before..].to_vec();
    for (id, ts, sig, body) in &later {
        assert!(
            crate::webhooks::verify(&rotated.secret, id, ts, sig, body),
            "{id} with the new secret"
        );
        assert!(
            !crate::webhooks::verify(&hook.secret, id, ts, sig, body),
            "{id} not with the old one"
        );
    }

    let (moved_crm, moved_url) = crate::webhooks::receiver().await;
    let moved = pb::Webhook { id: hook.id.clone(), url: moved_url, ..Default::default() };
    let update = pb::UpdateWebhookRequest { webhook: Some(moved), update_mask: None };
    other.update_webhook(update).await.expect("moved");
    crate::webhooks::until("deliveries at the new URL", || {
        moved_crm.got.lock().expect("got").len() >= 3
    })
    .await;
    let left = crm.got.lock().expect("got").len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(crm.got.lock().expect("got").len(), left, "nothing more at the old URL");

    other.delete_webhook(pb::DeleteWebhookRequest { id: hook.id.clone() }).await.expect("deleted");
    // A few reconciliations (every lease_secs / 3) while deliveries would go on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listed = other.list_webhooks(pb::ListWebhooksRequest {}).await.expect("list");
    assert!(listed.into_inner().webhooks.is_empty(), "the deleted subscription stays deleted");
    let stopped = moved_crm.got.lock().expect("got").len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(moved_crm.got.lock().expect("got").len(), stopped, "and nothing more is delivered");
    load.abort();
}
