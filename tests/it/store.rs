//! The store conformance suite: what every backend must do, run against each one.

use std::sync::Arc;
use std::time::Duration;

use crate::pg::TestDb;
use omnigate::model::Identity;
use omnigate::model::{EventKind, Webhook, new_id, now_ms};
use omnigate::store::sql::Settings;
use omnigate::store::{
    AcceptOutcome, Attempt, ContactUpdate, NewInbound, NewMessage, Store, StoreError,
};
use omnigate_adapters::{
    Channel, Consent, Content, Email, ErrorCode, InboundMessage, MessageStatus, ProviderError,
    StatusReport, Thread,
};

fn settings() -> Settings {
    Settings {
        owner: "node-a".into(),
        lease: Duration::from_secs(60),
        max_batch: 64,
        metrics: Default::default(),
    }
}

fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let path = dir.path().join("conformance.db");
    omnigate::store::sqlite::open(path.to_str().expect("utf-8"), settings())
        .expect("open")
        .into_arc()
}

async fn postgres(db: &TestDb) -> Arc<dyn Store> {
    let url = db.url.clone();
    let target = omnigate::store::postgres::Target::new(&url, None).expect("target");
    tokio::task::spawn_blocking(move || omnigate::store::postgres::open(&target, settings(), true))
        .await
        .expect("join")
        .expect("open")
        .into_arc()
}

fn new_message(to: &str, key: Option<&str>, body: &str) -> NewMessage {
    NewMessage {
        idempotency_key: key.map(str::to_string),
        fingerprint: format!("fp-{body}"),
        ..NewMessage::new(
            Channel::Sms,
            "sms",
            "+15005550006",
            to,
            Content::text(body),
            Duration::from_secs(60),
        )
    }
}

fn report(pid: &str, status: MessageStatus) -> StatusReport {
    StatusReport {
        provider_message_id: pid.into(),
        status,
        provider_status: status.as_str().into(),
        error: None,
        message_id: None,
    }
}

async fn accept(store: &dyn Store, new: NewMessage) -> omnigate::model::Message {
    match store.accept(new).await.expect("accept") {
        AcceptOutcome::Created(m, _) => m,
        AcceptOutcome::Existing(m) => panic!("unexpected existing {}", m.id),
    }
}

#[tokio::test]
async fn sqlite_conforms() {
    for (name, case) in CASES {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sqlite(&dir);
        case(store.clone()).await;
        store.close().await;
        eprintln!("sqlite: {name} ok");
    }
}

/// Commits reach the database file itself (not only the WAL) soon after they are made,
/// long before the WAL reaches the writer's own checkpoint bound: a background checkpoint
/// copied them.
/// A second gateway on an embedded store's file is refused, since it would void the first
/// one's leases and send its messages again; once the first closes, the file is free.
#[tokio::test]
async fn an_embedded_store_serves_one_gateway_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = sqlite(&dir);
    let path = dir.path().join("conformance.db");
    let path = path.to_str().expect("utf-8");
    let Err(e) = omnigate::store::sqlite::open(path, settings()) else {
        panic!("a second store opened a file in use");
    };
    assert!(e.to_string().contains("in use by another omnigate process"), "{e}");
    first.close().await;
    drop(first);
    let second = omnigate::store::sqlite::open(path, settings()).expect("free again").into_arc();
    second.close().await;
}

#[tokio::test]
async fn sqlite_checkpoints_off_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(&dir);
    let file = dir.path().join("conformance.db");
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    // Let any checkpoint of the schema's own commits finish before taking the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = size();
    for i in 0..200 {
        accept(&*store, new_message(&format!("+1415555{i:04}"), None, "hello")).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while size() <= before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(size() > before, "200 messages still only in the WAL: file stays at {before} bytes");
    store.close().await;
}

/// Retention's dead letters go with the events they pointed at.
#[tokio::test]
async fn retention_takes_the_dead_letters_of_deleted_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(&dir);
    retention(store.clone()).await;
    store.close().await;
    assert_eq!(rows(&dir, "webhook_dead_letters"), 0, "a dead letter outlived its event");
}

/// How many rows a table of the closed conformance database holds.
fn rows(dir: &tempfile::TempDir, table: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.path().join("conformance.db")).expect("open");
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// A cancellation request nobody took (its asker gave up) goes with retention's next pass.
#[tokio::test]
async fn retention_drops_cancellation_requests_nobody_took() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(&dir);
    store.request_cancel("msg_fresh").await.expect("request");
    let path = dir.path().join("conformance.db");
    let db = rusqlite::Connection::open(&path).expect("open");
    db.execute(
        "INSERT INTO cancel_requests (message_id, requested_at, answer) VALUES ('msg_old', 0, '')",
        [],
    )
    .expect("an old request");
    store.purge(omnigate::store::Cutoff::default(), 10).await.expect("purge");
    store.close().await;
    let mut left = db.prepare("SELECT message_id FROM cancel_requests").expect("select");
    let left: Vec<String> =
        left.query_map([], |r| r.get(0)).expect("rows").map(|r| r.expect("row")).collect();
    assert_eq!(left, ["msg_fresh"]);
}

/// A parked receipt is gone once its send is recorded and the receipt applied: the read
/// that finds it and the delete that drops it are separate statements.
#[tokio::test]
async fn applied_early_receipts_leave_the_parking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(&dir);
    early_receipts(store.clone()).await;
    store.close().await;
    assert_eq!(rows(&dir, "early_receipts"), 0, "applied receipts still parked");
}

#[tokio::test]
async fn postgres_conforms() {
    for (name, case) in CASES {
        let db = TestDb::create();
        let store = postgres(&db).await;
        case(store.clone()).await;
        store.close().await;
        eprintln!("postgres: {name} ok");
    }
}

/// Statements held to share a round trip with the next one still run in order, and one
/// that fails fails its whole batch: nothing of it is stored.
#[tokio::test]
async fn postgres_held_statements_keep_order_and_fail_their_batch() {
    use omnigate::store::sql::db::{Conn, Db, Value, Verdict};
    let db = TestDb::create();
    postgres(&db).await.close().await;
    let target = omnigate::store::postgres::Target::new(&db.url, None).expect("target");
    tokio::task::spawn_blocking(move || {
        let mut conn = omnigate::store::postgres::PgConn::connect(&target).expect("connect");
        let lease = |db: &dyn Db, name: &str, owner: &str| {
            db.execute_later(
                &format!(
                    "INSERT INTO leases (name, owner, until_at) VALUES ('{name}', '{owner}', 1)"
                ),
                &[],
            )
        };
        let mut seen = None;
        let committed = conn
            .transaction(&mut |db| {
                lease(db, "first", "a").expect("held");
                db.execute_later("UPDATE leases SET owner = 'b' WHERE name = 'first'", &[])
                    .expect("held");
                seen = db.query("SELECT owner FROM leases WHERE name = 'first'", &[]).ok();
                Verdict::Commit { events: false }
            })
            .expect("commit");
        assert!(committed);
        let owner = seen.and_then(|rows| rows.into_iter().next()).map(|row| row.0);
        assert_eq!(owner, Some(vec![Value::Text("b".into())]), "the update ran after the insert");

        let failed = conn.transaction(&mut |db| {
            lease(db, "second", "a").expect("held");
            // Breaks the primary key, but only the commit finds out.
            lease(db, "first", "c").expect("held");
            Verdict::Commit { events: false }
        });
        assert!(failed.is_err(), "a failed held statement must fail the commit: {failed:?}");
        let count = conn
            .read(|db| db.query("SELECT count(*) FROM leases WHERE name = 'second'", &[]))
            .expect("read");
        assert_eq!(count[0].0, vec![Value::Int(0)], "nothing of the failed batch is stored");
        // The connection is usable after the failed batch.
        assert!(
            conn.transaction(&mut |db| {
                lease(db, "third", "a").expect("held");
                Verdict::Commit { events: false }
            })
            .expect("commit")
        );
    })
    .await
    .expect("join");
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server() {
    let db = TestDb::create();
    let url = format!("{}?sslmode=require", db.url);
    let open = |ca: Option<std::path::PathBuf>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let target = omnigate::store::postgres::Target::new(&url, ca.as_deref())?;
            omnigate::store::postgres::open(&target, settings(), true)
        })
    };
    let refused = open(None).await.expect("join").err().expect("an unknown CA is refused");
    assert!(refused.to_string().contains("certificate"), "{refused}");

    let store = open(Some(crate::pg::ca_file())).await.expect("join").expect("trusted").into_arc();
    let m = accept(store.as_ref(), new_message("+14155550601", None, "over tls")).await;
    assert_eq!(store.get_message(&m.id).await.expect("read").expect("stored").id, m.id);
    let name = db.name.clone();
    let (tls, plain): (i64, i64) = crate::pg::with_admin(move |c| {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
                &[&name],
            )
            .expect("pg_stat_ssl");
        (row.get(0), row.get(1))
    });
    assert!(tls >= 6, "writer, readers and follower all on TLS ({tls})");
    assert_eq!(plain, 0);
    store.close().await;
}

#[tokio::test]
async fn postgres_connections_come_back_after_the_server_drops_them() {
    let db = TestDb::create();
    let store = postgres(&db).await;
    let mut live = store.subscribe();
    let before = accept(store.as_ref(), new_message("+14155550701", None, "before")).await;

    // The server ends every session of this database, as a restart or failover would.
    let name = db.name.clone();
    let ended: i64 = crate::pg::with_admin(move |c| {
        c.query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
            &[&name],
        )
        .expect("terminate")
        .get(0)
    });
    assert!(ended >= 6, "writer, readers and follower were connected ({ended})");

    // The first write or read on a dropped connection may fail; the next ones reconnect.
    let mut after = None;
    for _ in 0..5 {
        match store.accept(new_message("+14155550702", None, "after")).await {
            Ok(AcceptOutcome::Created(m, _)) => {
                after = Some(m);
                break;
            }
            Ok(AcceptOutcome::Existing(_)) => panic!("new message"),
            Err(e) => assert!(!e.is_domain(), "a connection error, not a refusal: {e}"),
        }
    }
    let after = after.expect("writes work again");
    let mut read = None;
    for _ in 0..8 {
        if let Ok(found) = store.get_message(&before.id).await {
            read = found;
            break;
        }
    }
    assert_eq!(read.expect("reads work again and nothing was lost").id, before.id);
    // The follower listens again: the new message's event reaches subscribers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, live.recv())
            .await
            .expect("the feed resumed")
            .expect("event");
        if matches!(&event.kind, EventKind::StatusChanged { message, .. } if message.id == after.id)
        {
            break;
        }
    }
    store.close().await;
}

type Case = fn(Arc<dyn Store>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

const CASES: &[(&str, Case)] = &[
    ("idempotency", |s| Box::pin(idempotency(s))),
    ("status ranks", |s| Box::pin(status_ranks(s))),
    ("early receipts", |s| Box::pin(early_receipts(s))),
    ("leases", |s| Box::pin(leases(s))),
    ("event sequence", |s| Box::pin(event_sequence(s))),
    ("conversations", |s| Box::pin(conversations(s))),
    ("email threads", |s| Box::pin(email_threads(s))),
    ("mailbox cursors and rejections", |s| Box::pin(mailbox_cursors(s))),
    ("contacts", |s| Box::pin(contacts(s))),
    ("fleet leases and route claims", |s| Box::pin(fleet_leases(s))),
    ("retention", |s| Box::pin(retention(s))),
    ("cancellation", |s| Box::pin(cancellation(s))),
    ("opt-outs", |s| Box::pin(opt_outs(s))),
    ("unsure retries", |s| Box::pin(unsure_retries(s))),
    ("hard bounces", |s| Box::pin(hard_bounces(s))),
    ("webhook progress", |s| Box::pin(webhook_progress(s))),
];

/// A delivery worker's saves land only on the revision it started from: a change made
/// meanwhile (through another replica, in a fleet) is not written back to what it was,
/// and a deleted subscription does not come back.
async fn webhook_progress(store: Arc<dyn Store>) {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = Webhook::new("whk_p".into(), "http://127.0.0.1:9/".into(), secret.into(), vec![], 0);
    let stored = || async { store.list_webhooks().await.expect("list") };
    let worker = store.save_webhook(hook.clone()).await.expect("created");
    assert!(store.update_webhook(Webhook { cursor: 5, ..worker.clone() }, 0).await.expect("saved"));
    let changed = Webhook { secret: "whsec_new".into(), cursor: 2, revision: 1, ..worker.clone() };
    assert!(store.update_webhook(changed.clone(), 0).await.expect("changed"), "read at 0");
    let stale = Webhook { cursor: 9, ..worker.clone() };
    assert!(!store.update_webhook(stale.clone(), 0).await.expect("answered"), "stale");
    assert!(store.dead_letter(stale, 9, "HTTP 500").await.expect("answered").is_none());
    assert_eq!(stored().await, vec![changed.clone()], "the change stands");
    let moved = store.dead_letter(changed.clone(), 3, "HTTP 500").await.expect("answered");
    assert_eq!(moved.map(|w| (w.cursor, w.dead_letters)), Some((3, 1)), "current: recorded");

    // Retries of independent delivery: by due time, rescheduled in place, dropped when
    // delivered or given up on, and with their subscription.
    let retry = |sequence: u64, attempts: u32, due_at: i64| omnigate::model::WebhookRetry {
        sequence,
        attempts,
        due_at,
        error: format!("HTTP 500 #{attempts}"),
    };
    for r in [retry(7, 1, 300), retry(5, 1, 100), retry(6, 1, 200)] {
        assert!(store.schedule_webhook_retry("whk_p", r).await.expect("scheduled"));
    }
    assert!(store.schedule_webhook_retry("whk_p", retry(5, 2, 400)).await.expect("again"));
    let due = store.webhook_retries("whk_p", 10).await.expect("retries");
    assert_eq!(due, vec![retry(6, 1, 200), retry(7, 1, 300), retry(5, 2, 400)]);
    assert_eq!(store.webhook_retries("whk_p", 1).await.expect("retries").len(), 1, "limit");
    assert_eq!(stored().await[0].retrying, 3, "counted when listed");
    store.finish_webhook_retry("whk_p", 6).await.expect("finished");
    let current =
        Webhook { cursor: 3, dead_letters: 1, last_error: "HTTP 500".into(), ..changed.clone() };
    store.dead_letter(current, 7, "HTTP 500").await.expect("dead letter").expect("current");
    let left = store.webhook_retries("whk_p", 10).await.expect("retries");
    assert_eq!(left, vec![retry(5, 2, 400)], "a dead letter drops its retry");
    assert!(!store.schedule_webhook_retry("whk_none", retry(1, 1, 1)).await.expect("answered"));
    let dead = |after: u64, limit: usize| {
        let store = store.clone();
        async move {
            let page = store.webhook_dead_letters("whk_p", after, limit).await.expect("dead");
            page.into_iter().map(|d| (d.sequence, d.error)).collect::<Vec<_>>()
        }
    };
    let both = vec![(3, "HTTP 500".to_string()), (7, "HTTP 500".to_string())];
    assert_eq!(dead(0, 10).await, both, "by sequence");
    assert_eq!(dead(3, 10).await, both[1..], "after a sequence");
    assert_eq!(dead(0, 1).await, both[..1], "limited");
    assert!(store.delete_webhook("whk_p").await.expect("deleted"));
    assert!(store.webhook_retries("whk_p", 10).await.expect("retries").is_empty());
    assert!(!store.update_webhook(changed.clone(), 1).await.expect("answered"), "deleted");
    assert!(stored().await.is_empty(), "deleted stays deleted");
}

/// A mail server's "no such address" bars the address as an opt-out does, with its own
/// error; the person's own word outranks it, and mail from the address lifts it alone.
async fn hard_bounces(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let bounce = |provider: &str, code: ErrorCode| Attempt::Failed {
        status: MessageStatus::Failed,
        error: ProviderError {
            code,
            message: "User unknown".into(),
            provider: provider.into(),
            provider_code: "550 5.1.1".into(),
            retryable: false,
        },
    };
    let to = "gone@example.test";
    let email = || new_email(to, Content::text("hi"));
    let identity = || Identity { channel: Channel::Email, address: to.into() };
    let bars = || async {
        let contact = store.find_contact(identity()).await.expect("find").expect("a contact");
        contact.opt_outs.into_iter().map(|o| (o.bounced, o.reason)).collect::<Vec<_>>()
    };
    // Neither the gateway's own check nor a refusal that is not about the address bars it.
    let first = accept(s, email()).await;
    s.record_attempt(&first.id, bounce("", ErrorCode::InvalidRecipient)).await.expect("failed");
    let second = accept(s, email()).await;
    s.record_attempt(&second.id, bounce("smtp", ErrorCode::Rejected)).await.expect("failed");
    assert_eq!(bars().await, []);
    let third = accept(s, email()).await;
    assert_eq!(third.status, MessageStatus::Accepted);
    s.record_attempt(&third.id, bounce("smtp", ErrorCode::InvalidRecipient)).await.expect("failed");
    let bounced = (true, "smtp bounced a send with 550 5.1.1".to_string());
    assert_eq!(bars().await, std::slice::from_ref(&bounced));
    let start = (String::new(), String::new());
    let listed = s.list_opt_outs("mail", start, 10).await.expect("list");
    let listed: Vec<_> = listed.iter().map(|o| (o.address.as_str(), o.bounced)).collect();
    assert_eq!(listed, [(to, true)]);
    let after = s.list_opt_outs("", ("mail".into(), to.into()), 10).await.expect("list");
    assert_eq!(after, [], "a page starts after the pair it is given");
    let refused = accept(s, email()).await;
    assert_eq!(refused.status, MessageStatus::Failed);
    assert_eq!(refused.error.as_ref().map(|e| e.code), Some(ErrorCode::InvalidRecipient));
    assert_eq!(
        s.opt_out_refusal("mail", to).await.expect("read").map(|e| e.code),
        Some(ErrorCode::InvalidRecipient),
        "the dispatcher's check before a send reads the same bar"
    );
    // The person's opt-out replaces the bounce; a later bounce does not replace theirs.
    let said = |consent| (consent, false);
    let set = |consent| store.set_consent("mail", identity(), said(consent), "form".into());
    assert!(set(Consent::OptedOut).await.expect("opt out").0);
    let sent_anyway = accept(s, email()).await;
    assert_eq!(sent_anyway.error.as_ref().map(|e| e.code), Some(ErrorCode::RecipientOptedOut));
    assert_eq!(bars().await, [(false, "form".to_string())]);
    // Mail from the address lifts a bounce only: the opt-out stands.
    let wrote = |pid: &str| s.receive(email_inbound(to, pid, &[]));
    wrote("w1@example.test").await.expect("received");
    assert_eq!(bars().await, [(false, "form".to_string())]);
    assert!(set(Consent::OptedIn).await.expect("opt in").0, "an opt-in clears every bar");
    let again = accept(s, email()).await;
    s.record_attempt(&again.id, bounce("smtp", ErrorCode::InvalidRecipient)).await.expect("failed");
    assert_eq!(bars().await, [bounced]);
    wrote("w2@example.test").await.expect("received");
    assert_eq!(bars().await, []);
    assert_eq!(accept(s, email()).await.status, MessageStatus::Accepted);
}

/// A retry after a lost answer keeps its marker in the outbox, for whoever claims it next.
async fn unsure_retries(store: Arc<dyn Store>) {
    let m = accept(store.as_ref(), new_message("+14155550520", None, "code 1234")).await;
    let retry = Attempt::Retry {
        due_at: now_ms(),
        error: omnigate_adapters::ProviderError::gateway(
            omnigate_adapters::ErrorCode::ProviderUnavailable,
            "timed out",
        ),
        unsure_since: Some(1_700_000_000_000),
    };
    store.record_attempt(&m.id, retry).await.expect("retry");
    store.release(Some(&m.id)).await.expect("release");
    let jobs = store.claim("node-b", Duration::from_secs(60), 10, None).await.expect("claim");
    let job = jobs.iter().find(|j| j.message_id == m.id).expect("claimed");
    assert_eq!(job.unsure_since, Some(1_700_000_000_000));
    // Receipts that echo our id (WhatsApp's biz_opaque_callback_data) name the sends of it
    // whose answer was lost, first parked first; once applied they name none.
    let lost = accept(store.as_ref(), new_message("+14155550305", None, "z")).await;
    for (pid, status) in [
        ("wamid.L1", MessageStatus::Sent),
        ("wamid.L1", MessageStatus::Delivered),
        ("wamid.L2", MessageStatus::Sent),
    ] {
        let echoing = StatusReport { message_id: Some(lost.id.clone()), ..report(pid, status) };
        store.apply_status("sms", echoing).await.expect("parked");
    }
    assert_eq!(store.lost_sends("sms", &lost.id).await.expect("read"), ["wamid.L1", "wamid.L2"]);
    let none = Vec::<String>::new();
    assert_eq!(store.lost_sends("wa", &lost.id).await.expect("read"), none, "by account");
    let found =
        Attempt::Sent { provider_message_id: "wamid.L1".into(), provider_status: "".into() };
    let (sent, _) = store.record_attempt(&lost.id, found).await.expect("sent");
    assert_eq!(sent.status, MessageStatus::Delivered, "its parked receipts applied");
    assert_eq!(store.lost_sends("sms", &lost.id).await.expect("read"), ["wamid.L2"]);
}

fn sms_said(from: &str, pid: &str, body: &str, consent: Consent) -> NewInbound {
    NewInbound {
        id: new_id("msg"),
        from: sms_identity(from),
        channel: Channel::Sms,
        account: "sms".into(),
        message: InboundMessage {
            provider_message_id: pid.into(),
            from: from.into(),
            to: "+15005550006".into(),
            content: Content::text(body),
            reply_to: None,
            references: Vec::new(),
            consent: Some(consent),
            conversation: None,
        },
        now: now_ms(),
    }
}

/// Whether acceptance refused the message for an opt-out (and so handed out no work).
async fn refused_for_opt_out(store: &dyn Store, to: &str) -> bool {
    match store.accept(new_message(to, None, "offer")).await.expect("accept") {
        AcceptOutcome::Created(m, job) => {
            let refused = m.error.is_some_and(|e| e.code == ErrorCode::RecipientOptedOut);
            assert_eq!(refused, job.is_none() && m.status == MessageStatus::Failed);
            refused
        }
        AcceptOutcome::Existing(m) => panic!("unexpected existing {}", m.id),
    }
}

async fn opt_outs(store: Arc<dyn Store>) {
    let s = store.as_ref();
    store
        .receive(sms_said("+14155550501", "SMstop", "STOP", Consent::OptedOut))
        .await
        .expect("stop");
    assert!(refused_for_opt_out(s, "+14155550501").await);
    assert!(!refused_for_opt_out(s, "+14155550502").await, "only the one who said it");
    // The person's contact lists it.
    let person = store.find_contact(sms_identity("+14155550501")).await.expect("find");
    let listed = person.expect("a contact").opt_outs;
    assert_eq!(
        listed.iter().map(|o| (o.account.as_str(), o.address.as_str())).collect::<Vec<_>>(),
        [("sms", "+14155550501")]
    );
    assert!(listed[0].reason.contains("STOP") && listed[0].at > 0, "{listed:?}");
    store
        .receive(sms_said("+14155550501", "SMstart", "START", Consent::OptedIn))
        .await
        .expect("start");
    assert!(!refused_for_opt_out(s, "+14155550501").await);
    let person = store.find_contact(sms_identity("+14155550501")).await.expect("find");
    assert_eq!(person.expect("a contact").opt_outs, []);

    // Twilio refusing a send for an opt-out (21610) records one; WhatsApp's 131050, which
    // concerns only marketing templates, records an opt-out of marketing that bars nothing.
    let refused_by = |provider: &str, code: &str| Attempt::Failed {
        status: MessageStatus::Failed,
        error: ProviderError {
            code: ErrorCode::RecipientOptedOut,
            message: "opted out".into(),
            provider: provider.into(),
            provider_code: code.into(),
            retryable: false,
        },
    };
    let sms = accept(s, new_message("+14155550503", None, "1")).await;
    store.record_attempt(&sms.id, refused_by("twilio", "21610")).await.expect("failed");
    assert!(refused_for_opt_out(s, "+14155550503").await);
    // Erasing the person keeps them off the list of whom to message.
    store.forget_contact(&sms.contact_id).await.expect("forget");
    assert!(refused_for_opt_out(s, "+14155550503").await, "an erased opt-out still holds");
    // What the dispatcher reads before a send that waited, and how its refusal is kept.
    let waited = accept(s, new_message("+14155550507", None, "waited")).await;
    assert_eq!(store.opt_out_refusal("sms", "+14155550507").await.expect("read"), None);
    let refusal = store.opt_out_refusal("sms", "+14155550503").await.expect("read");
    let refusal = refusal.expect("opted out");
    assert_eq!(refusal.code, ErrorCode::RecipientOptedOut);
    let (kept, next) =
        store.record_attempt(&waited.id, Attempt::Refused { error: refusal }).await.expect("kept");
    assert_eq!((kept.status, kept.attempts, next.is_none()), (MessageStatus::Failed, 0, true));
    let claimed = store.claim("node-r", Duration::from_secs(60), 100, None).await.expect("claim");
    assert!(claimed.iter().all(|j| j.message_id != waited.id), "out of the outbox");
    let whatsapp = accept(
        s,
        NewMessage {
            channel: Channel::Whatsapp,
            account: "wa".into(),
            ..new_message("+14155550504", None, "1")
        },
    )
    .await;
    store.record_attempt(&whatsapp.id, refused_by("meta", "131050")).await.expect("failed");
    let again = accept(
        s,
        NewMessage {
            channel: Channel::Whatsapp,
            account: "wa".into(),
            ..new_message("+14155550504", None, "2")
        },
    )
    .await;
    assert_eq!(again.status, MessageStatus::Accepted);
    let listed = |address: &'static str| {
        let store = store.clone();
        async move {
            let identity = Identity { channel: Channel::Whatsapp, address: address.into() };
            let contact = store.find_contact(identity).await.expect("find").expect("a contact");
            contact.opt_outs.into_iter().map(|o| (o.account, o.marketing_only)).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("+14155550504").await, [("wa".to_string(), true)]);
    // A full opt-out replaces it (and bars); one of marketing alone never replaces a full one.
    let whatsapp_504 = || Identity { channel: Channel::Whatsapp, address: "+14155550504".into() };
    let said = |marketing_only| (Consent::OptedOut, marketing_only);
    let set = |marketing_only| {
        store.set_consent("wa", whatsapp_504(), said(marketing_only), "form".into())
    };
    assert!(set(false).await.expect("full").0, "a full opt-out replaces the marketing one");
    assert!(!set(true).await.expect("marketing").0, "and is not replaced by one");
    assert_eq!(listed("+14155550504").await, [("wa".to_string(), false)]);
    let barred = accept(
        s,
        NewMessage {
            channel: Channel::Whatsapp,
            account: "wa".into(),
            ..new_message("+14155550504", None, "3")
        },
    )
    .await;
    assert_eq!(barred.status, MessageStatus::Failed);

    // Each change is an event of the person's; the repeated and the void ones are not.
    store
        .receive(sms_said("+14155550503", "SMstop2", "STOP", Consent::OptedOut))
        .await
        .expect("stop");
    store
        .receive(sms_said("+14155550505", "SMstart2", "START", Consent::OptedIn))
        .await
        .expect("start");
    let changes: Vec<(String, bool, String, bool)> = store
        .events_after(0, 1_000)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConsentChanged { address, opted_out, reason, marketing_only, .. } => {
                Some((address, opted_out, reason, marketing_only))
            }
            _ => None,
        })
        .collect();
    let change =
        |address: &str, out: bool, reason: &str| (address.into(), out, reason.into(), false);
    assert_eq!(
        changes,
        [
            change("+14155550501", true, r#"replied "STOP" on sms"#),
            change("+14155550501", false, r#"replied "START" on sms"#),
            // Forgetting the person scrubbed the address from the log.
            change("", true, "twilio refused a send with 21610"),
            ("+14155550504".into(), true, "meta refused a send with 131050".into(), true),
            change("+14155550504", true, "form"),
        ]
    );
}

fn sms_identity(address: &str) -> Identity {
    Identity { channel: Channel::Sms, address: address.into() }
}

async fn contacts(store: Arc<dyn Store>) {
    let out = accept(store.as_ref(), new_message("+14155550401", None, "hi")).await;
    let ana = store.find_contact(sms_identity("+14155550401")).await.expect("find").expect("made");
    assert_eq!(ana.id, out.contact_id, "sending made a contact for the recipient");
    let email = Identity { channel: Channel::Email, address: "ana@example.com".into() };
    let ana = store
        .upsert_contact(ContactUpdate {
            id: Some(ana.id.clone()),
            display_name: Some("Ana".into()),
            identities: vec![email.clone()],
            preferences: vec![Channel::Email],
        })
        .await
        .expect("update");
    assert_eq!(ana.display_name, "Ana");
    assert_eq!(ana.identities, [sms_identity("+14155550401"), email.clone()], "in order added");
    let other = store
        .upsert_contact(ContactUpdate {
            identities: vec![sms_identity("+14155550402")],
            ..Default::default()
        })
        .await
        .expect("create");
    let taken = store
        .upsert_contact(ContactUpdate {
            id: Some(other.id.clone()),
            identities: vec![email.clone()],
            ..Default::default()
        })
        .await
        .expect_err("another contact's identity");
    assert!(matches!(taken, StoreError::IdentityTaken { .. }), "{taken}");

    let merged = store.merge_contacts(&ana.id, &other.id).await.expect("merge");
    assert_eq!(merged.identities.len(), 3);
    let via_old = store.get_contact(&other.id).await.expect("get").expect("answers");
    assert_eq!(via_old.id, ana.id, "a merged contact answers as the one it joined");
    assert_eq!(store.merge_contacts(&ana.id, &other.id).await.expect("again").id, ana.id);

    let erased = store.forget_contact(&ana.id).await.expect("forget");
    assert_eq!(erased, 1, "the one message to Ana");
    let m = store.get_message(&out.id).await.expect("get").expect("kept");
    assert!(m.to.is_empty() && m.content == Content::text("[erased]"), "{m:?}");
    assert!(store.find_contact(email).await.expect("find").is_none());
    let logged = store.events_after(0, 100).await.expect("events");
    assert!(
        !serde_json::to_string(&logged.iter().map(|e| &e.kind).collect::<Vec<_>>())
            .expect("json")
            .contains("+14155550401"),
        "the log is scrubbed too"
    );
}

async fn fleet_leases(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(30);
    assert_eq!(store.heartbeat(ttl).await.expect("heartbeat"), ["node-a"]);
    let names = vec!["route:sms:+1".to_string(), "webhooks".to_string()];
    let held = store.hold_leases(names.clone(), Vec::new(), ttl).await.expect("hold");
    assert_eq!(held, names);
    assert_eq!(store.hold_leases(names.clone(), Vec::new(), ttl).await.expect("renew"), names);
    let held =
        store.hold_leases(vec![names[1].clone()], vec![names[0].clone()], ttl).await.expect("give");
    assert_eq!(held, [names[1].clone()]);

    // Accepted where the route is owned elsewhere: unleased, for the route's owner.
    let here = accept(store.as_ref(), new_message("+14155550501", None, "here")).await;
    let there = {
        let mut new = new_message("+14155550502", None, "there");
        new.dispatch_here = false;
        new.account = "sms-b".into();
        match store.accept(new).await.expect("accept") {
            AcceptOutcome::Created(m, job) => {
                assert!(job.is_none(), "not this process's to dispatch");
                m
            }
            AcceptOutcome::Existing(_) => panic!("new"),
        }
    };
    let only_a = Some(vec![("sms".to_string(), "+15005550006".to_string())]);
    assert!(
        store.claim("node-b", ttl, 10, only_a).await.expect("claim").is_empty(),
        "route sms's entry is leased to its acceptor and the free one is on another route"
    );
    let only_b = Some(vec![("sms-b".to_string(), "+15005550006".to_string())]);
    let claimed = store.claim("node-b", ttl, 10, only_b.clone()).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|j| j.message_id.as_str()).collect::<Vec<_>>(),
        [there.id.as_str()]
    );
    assert!(store.claim("node-b", ttl, 10, only_b).await.expect("claim").is_empty(), "leased now");

    assert_eq!(store.renew_leases().await.expect("renew"), 1, "node-a holds one entry");
    store.release(Some(&there.id)).await.expect("not node-a's: nothing to release");
    assert_eq!(store.renew_leases().await.expect("renew"), 1);
    store.release(Some(&here.id)).await.expect("release one");
    assert_eq!(store.renew_leases().await.expect("renew"), 0, "given up");
    let again = store.claim("node-a", ttl, 10, None).await.expect("claim");
    assert_eq!(again.len(), 1, "free again");
    store.release(None).await.expect("release");
    let all = store.claim("node-c", ttl, 10, None).await.expect("claim");
    assert_eq!(all.iter().map(|j| j.message_id.as_str()).collect::<Vec<_>>(), [here.id.as_str()]);
}

async fn idempotency(store: Arc<dyn Store>) {
    let first = accept(store.as_ref(), new_message("+14155550301", Some("k1"), "a")).await;
    match store.accept(new_message("+14155550301", Some("k1"), "a")).await.expect("same request") {
        AcceptOutcome::Existing(m) => assert_eq!(m.id, first.id),
        AcceptOutcome::Created(..) => panic!("created twice"),
    }
    let conflict = store.accept(new_message("+14155550301", Some("k1"), "b")).await;
    assert!(matches!(conflict, Err(StoreError::IdempotencyConflict(k)) if k == "k1"));
    // A refused write leaves no trace: the batch it shared still commits.
    let other = accept(store.as_ref(), new_message("+14155550302", Some("k2"), "c")).await;
    assert!(store.get_message(&other.id).await.expect("read").is_some());
}

async fn status_ranks(store: Arc<dyn Store>) {
    let m = accept(store.as_ref(), new_message("+14155550303", None, "x")).await;
    let sent =
        Attempt::Sent { provider_message_id: "SM1".into(), provider_status: "queued".into() };
    store.record_attempt(&m.id, sent).await.expect("sent");
    let delivered =
        store.apply_status("sms", report("SM1", MessageStatus::Delivered)).await.expect("ok");
    assert_eq!(delivered.0.expect("advanced").status, MessageStatus::Delivered);
    for late in [MessageStatus::Sent, MessageStatus::Delivered, MessageStatus::Failed] {
        assert!(
            store.apply_status("sms", report("SM1", late)).await.expect("ok").0.is_none(),
            "{late:?}"
        );
    }
    let m = store.get_message(&m.id).await.expect("read").expect("exists");
    let history: Vec<_> = m.history.iter().map(|c| c.status).collect();
    assert_eq!(history, [MessageStatus::Accepted, MessageStatus::Sent, MessageStatus::Delivered]);
    assert_eq!(m.attempts, 1);
}

async fn early_receipts(store: Arc<dyn Store>) {
    assert!(
        store
            .apply_status("sms", report("SM2", MessageStatus::Delivered))
            .await
            .expect("kept")
            .0
            .is_none()
    );
    assert!(
        store
            .apply_status("sms", report("SM2", MessageStatus::Sent))
            .await
            .expect("kept")
            .0
            .is_none()
    );
    let m = accept(store.as_ref(), new_message("+14155550304", None, "y")).await;
    let sent =
        Attempt::Sent { provider_message_id: "SM2".into(), provider_status: "queued".into() };
    let (m, _) = store.record_attempt(&m.id, sent).await.expect("sent");
    assert_eq!(
        m.status,
        MessageStatus::Delivered,
        "the parked receipt applied on the send's commit"
    );
}

async fn leases(store: Arc<dyn Store>) {
    let a = accept(store.as_ref(), new_message("+14155550305", None, "1")).await;
    // Accepted work is leased to its acceptor: nobody else claims it.
    assert!(
        store.claim("node-b", Duration::from_secs(60), 10, None).await.expect("claim").is_empty()
    );
    let retry = Attempt::Retry {
        due_at: now_ms() + 5_000,
        error: omnigate_adapters::ProviderError::gateway(
            omnigate_adapters::ErrorCode::ProviderUnavailable,
            "503",
        ),
        unsure_since: None,
    };
    let (queued, _) = store.record_attempt(&a.id, retry).await.expect("retry");
    assert_eq!((queued.status, queued.attempts), (MessageStatus::Queued, 1));
    let failed = Attempt::Failed {
        status: MessageStatus::Failed,
        error: omnigate_adapters::ProviderError::gateway(
            omnigate_adapters::ErrorCode::Rejected,
            "no",
        ),
    };
    store.record_attempt(&a.id, failed).await.expect("failed");
    let b = accept(store.as_ref(), new_message("+14155550306", None, "2")).await;
    drop(b);
    assert!(
        store.claim("node-b", Duration::ZERO, 10, None).await.expect("claim").is_empty(),
        "lease still held"
    );
}

async fn event_sequence(store: Arc<dyn Store>) {
    let mut live = store.subscribe();
    let mut writers = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            accept(store.as_ref(), new_message(&format!("+1415557{i:04}"), None, "e")).await
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let events = store.events_after(0, 1000).await.expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    // Each message to a new person opens a conversation too: two events each.
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>(), "strictly increasing, gap-free");
    for expected in 1..=100 {
        assert_eq!(
            live.recv().await.expect("live").sequence,
            expected,
            "live feed in commit order"
        );
    }
    assert_eq!(store.events_after(98, 10).await.expect("tail").len(), 2);
}

async fn conversations(store: Arc<dyn Store>) {
    let out = accept(store.as_ref(), new_message("+14155550307", None, "out")).await;
    let inbound = NewInbound {
        id: new_id("msg"),
        from: omnigate::model::Identity { channel: Channel::Sms, address: "+14155550307".into() },
        channel: Channel::Sms,
        account: "sms".into(),
        message: InboundMessage {
            provider_message_id: "SMin1".into(),
            from: "+14155550307".into(),
            to: "+15005550006".into(),
            content: Content::text("reply"),
            reply_to: None,
            references: Vec::new(),
            consent: None,
            conversation: None,
        },
        now: now_ms(),
    };
    let reply = store.receive(inbound.clone()).await.expect("stored").expect("new");
    assert_eq!(reply.conversation_id, out.conversation_id);
    assert!(
        store.receive(NewInbound { id: new_id("msg"), ..inbound }).await.expect("ok").is_none(),
        "redelivery"
    );
    let listed = store.list_messages(&out.conversation_id, 0, 10).await.expect("list");
    assert_eq!(
        listed.iter().map(|(_, m)| m.id.clone()).collect::<Vec<_>>(),
        [out.id, reply.id.clone()]
    );
    let events = store.events_after(0, 100).await.expect("events");
    assert!(
        matches!(&events.last().expect("event").kind, EventKind::Received { message } if message.id == reply.id)
    );
}

fn new_email(to: &str, content: Content) -> NewMessage {
    NewMessage {
        channel: Channel::Email,
        account: "mail".into(),
        route: "shop@omnigate.test".into(),
        from: "shop@omnigate.test".into(),
        content,
        ..new_message(to, None, "email")
    }
}

fn email_inbound(from: &str, pid: &str, references: &[&str]) -> NewInbound {
    NewInbound {
        id: new_id("msg"),
        from: omnigate::model::Identity { channel: Channel::Email, address: from.into() },
        channel: Channel::Email,
        account: "mail".into(),
        message: InboundMessage {
            provider_message_id: pid.into(),
            from: from.into(),
            to: "shop@omnigate.test".into(),
            content: Content::Email(Email {
                subject: "Re: Order".into(),
                text: "ok".into(),
                ..Email::default()
            }),
            reply_to: references.last().map(|r| r.to_string()),
            references: references.iter().map(|r| r.to_string()).collect(),
            consent: None,
            conversation: None,
        },
        now: now_ms(),
    }
}

async fn sent(store: &dyn Store, id: &str, pid: &str) {
    let attempt = Attempt::Sent { provider_message_id: pid.into(), provider_status: "250".into() };
    store.record_attempt(id, attempt).await.expect("sent");
}

/// Email threading: a reply finds its conversation by References even from another
/// address; the thread lists earlier Message-IDs and the subject they go by.
async fn email_threads(store: Arc<dyn Store>) {
    let first = accept(
        store.as_ref(),
        new_email(
            "ann@example.test",
            Content::Email(Email {
                subject: "Order 42".into(),
                text: "shipped".into(),
                ..Email::default()
            }),
        ),
    )
    .await;
    assert_eq!(
        store.thread_of(&first.id).await.expect("thread"),
        Thread { conversation_id: first.conversation_id.clone(), ..Thread::default() },
        "nothing before the first"
    );
    sent(store.as_ref(), &first.id, "m1@omnigate.test").await;
    let reply = store
        .receive(email_inbound("ann.work@example.test", "r1@example.test", &["m1@omnigate.test"]))
        .await
        .expect("stored")
        .expect("new");
    assert_eq!(reply.conversation_id, first.conversation_id, "threaded by References");
    assert_eq!(reply.contact_id, first.contact_id, "under the conversation's contact");
    assert_eq!(reply.reply_to_message_id.as_deref(), Some(first.id.as_str()));
    let second = accept(
        store.as_ref(),
        NewMessage {
            conversation_id: Some(first.conversation_id.clone()),
            ..new_email("ann@example.test", Content::text("Friday works"))
        },
    )
    .await;
    let thread = store.thread_of(&second.id).await.expect("thread");
    assert_eq!(thread.references, ["m1@omnigate.test", "r1@example.test"]);
    assert_eq!(thread.subject, "Re: Order", "the latest subject");
    // An unknown reference threads by sender, as any message.
    let stranger = store
        .receive(email_inbound("bob@example.test", "b1@example.test", &["nope@x.test"]))
        .await
        .expect("stored")
        .expect("new");
    assert_ne!(stranger.conversation_id, first.conversation_id);
    // A reply without references that names its conversation (a plus-addressed Reply-To)
    // joins it; one naming no conversation there is threads by sender.
    let named = |from: &str, pid: &str, conversation: &str| {
        let mut inbound = email_inbound(from, pid, &[]);
        inbound.message.conversation = Some(conversation.to_string());
        store.receive(inbound)
    };
    let home = named("ann.home@example.test", "h1@example.test", &first.conversation_id);
    let home = home.await.expect("stored").expect("new");
    assert_eq!(
        (home.conversation_id.as_str(), home.contact_id.as_str()),
        (first.conversation_id.as_str(), first.contact_id.as_str())
    );
    let lost = named("dan@example.test", "d1@example.test", "cnv_0000");
    let lost = lost.await.expect("stored").expect("new");
    assert_ne!(lost.conversation_id, first.conversation_id);
    // A thread started from plain text goes by the subject its first email was given.
    let plain = accept(
        store.as_ref(),
        new_email("cid@example.test", Content::text("Where is my parcel?\nThanks")),
    )
    .await;
    sent(store.as_ref(), &plain.id, "p1@omnigate.test").await;
    let next = accept(
        store.as_ref(),
        NewMessage {
            conversation_id: Some(plain.conversation_id.clone()),
            ..new_email("cid@example.test", Content::text("again"))
        },
    )
    .await;
    let thread = store.thread_of(&next.id).await.expect("thread");
    assert_eq!(
        (thread.subject.as_str(), thread.references.as_slice()),
        ("Where is my parcel?", &["p1@omnigate.test".to_string()][..])
    );
}

async fn mailbox_cursors(store: Arc<dyn Store>) {
    assert_eq!(store.mailbox_cursor("mail").await.expect("read"), None);
    store.save_mailbox_cursor("mail", 7, 41).await.expect("save");
    store.save_mailbox_cursor("mail", 7, 42).await.expect("save");
    store.save_mailbox_cursor("other", 1, 3).await.expect("save");
    assert_eq!(store.mailbox_cursor("mail").await.expect("read"), Some((7, 42)));
    store.save_mailbox_cursor("mail", 9, 0).await.expect("new validity");
    assert_eq!(store.mailbox_cursor("mail").await.expect("read"), Some((9, 0)));
    assert_eq!(store.mailbox_cursor("other").await.expect("read"), Some((1, 3)));
    let url = "imap://h/INBOX;UIDVALIDITY=9/;UID=1";
    store.reject_inbound("mail", Channel::Email, url, None, "no sender").await.expect("event");
    let events = store.events_after(0, 10).await.expect("events");
    assert!(matches!(
        &events.last().expect("event").kind,
        EventKind::InboundRejected { account, reason, from, .. }
            if account == "mail" && reason == "no sender" && from.is_empty()
    ));

    // With its sender: their contact is found or made, and forgetting them scrubs the event.
    let person_again = || Identity { channel: Channel::Whatsapp, address: "+14155550777".into() };
    let person = person_again();
    let card = "a contact card";
    store
        .reject_inbound("wa", Channel::Whatsapp, "wamid.CARD", Some(person.clone()), card)
        .await
        .expect("event");
    let contact = store.find_contact(person).await.expect("read").expect("made");
    let last = |events: Vec<omnigate::model::Event>| events.into_iter().last().expect("event").kind;
    let EventKind::InboundRejected { from, contact_id, reference, .. } =
        last(store.events_after(0, 100).await.expect("events"))
    else {
        panic!("not a rejection")
    };
    assert_eq!(
        (from.as_str(), contact_id.as_str(), reference.as_str()),
        ("+14155550777", contact.id.as_str(), "wamid.CARD")
    );
    // Reported again (a provider's redelivery): once is enough.
    store
        .reject_inbound("wa", Channel::Whatsapp, "wamid.CARD", Some(person_again()), card)
        .await
        .expect("again");
    let cards = store.events_after(0, 100).await.expect("events");
    let cards = cards.iter().filter(|e| {
        matches!(&e.kind,
        EventKind::InboundRejected { reference, .. } if reference == "wamid.CARD")
    });
    assert_eq!(cards.count(), 1);
    store.forget_contact(&contact.id).await.expect("forget");
    let scrubbed = store.events_after(0, 100).await.expect("events");
    assert!(scrubbed.iter().any(|e| matches!(&e.kind,
        EventKind::InboundRejected { reference, from, .. } if reference == "wamid.CARD" && from.is_empty())));
}

/// Retention deletes old events oldest first but never the newest (the sequence goes on
/// from it), old messages but never one still waiting for its provider, at most `limit` a
/// transaction; and a reader behind what was deleted is told, not silently moved on.
async fn retention(store: Arc<dyn Store>) {
    let old_sent = accept(store.as_ref(), new_message("+14155550501", None, "a")).await;
    sent(store.as_ref(), &old_sent.id, "SM501").await;
    let old_waiting = accept(store.as_ref(), new_message("+14155550502", None, "b")).await;
    let old_failed = accept(store.as_ref(), new_message("+14155550503", None, "c")).await;
    let error = omnigate_adapters::ProviderError::gateway(
        omnigate_adapters::ErrorCode::InvalidRecipient,
        "no such number",
    );
    store
        .record_attempt(&old_failed.id, Attempt::Failed { status: MessageStatus::Failed, error })
        .await
        .expect("failed");
    let (old_mail, young_mail) =
        ("imap://h/INBOX;UIDVALIDITY=1/;UID=1", "imap://h/INBOX;UIDVALIDITY=1/;UID=2");
    let reject = |reference: &'static str| {
        let store = store.clone();
        async move { store.reject_inbound("mail", Channel::Email, reference, None, "unreadable").await }
    };
    reject(old_mail).await.expect("rejected");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let young = accept(store.as_ref(), new_message("+14155550504", None, "d")).await;
    sent(store.as_ref(), &young.id, "SM504").await;
    reject(young_mail).await.expect("rejected");
    let hook =
        Webhook::new("whk_r".into(), "http://127.0.0.1:9/".into(), "whsec_AAAA".into(), vec![], 0);
    let hook = store.save_webhook(hook).await.expect("webhook");
    store.dead_letter(hook, 1, "HTTP 500").await.expect("dead letter");

    let newest = store.last_sequence().await.expect("last");
    assert_eq!(store.first_event_since(now_ms() + 60_000).await.expect("since"), newest);
    let first_young = store.first_event_since(cutoff).await.expect("since");
    assert!(first_young > 1 && first_young < newest, "{first_young} of {newest}");

    let cut =
        omnigate::store::Cutoff { events_below: Some(newest + 10), messages_before: Some(cutoff) };
    let first = store.purge(cut, 1).await.expect("purge");
    assert_eq!((first.events, first.messages), (1, 1), "at most the limit of each");
    let rest = store.purge(cut, 100).await.expect("purge");
    assert_eq!(rest.events, newest - 2, "all but the newest event, whatever the cutoff says");
    assert_eq!(rest.messages, 1, "the other old message no longer waiting");
    assert_eq!(store.purge(cut, 100).await.expect("purge"), Default::default(), "nothing left");

    for (id, kept) in
        [(&old_sent.id, false), (&old_waiting.id, true), (&old_failed.id, false), (&young.id, true)]
    {
        let found = store.get_message(id).await.expect("get").is_some();
        assert_eq!(found, kept, "{id}");
    }
    let left = store.events_after(0, 100).await.expect("from the oldest kept");
    assert_eq!(left.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![newest]);
    match store.events_after(1, 100).await {
        Err(StoreError::Purged { after: 1, oldest }) => assert_eq!(oldest, newest),
        other => panic!("a cursor behind retention must fail, got {other:?}"),
    }
    assert_eq!(store.events_after(newest - 1, 100).await.expect("just before").len(), 1);
    let next = accept(store.as_ref(), new_message("+14155550505", None, "e")).await;
    let after = store.events_after(newest, 100).await.expect("after");
    assert_eq!(after.first().map(|e| e.sequence), Some(newest + 1), "the sequence goes on");
    assert!(store.get_message(&next.id).await.expect("get").is_some());

    // The record of a rejection ages out with the messages: news again after that only.
    let last = store.last_sequence().await.expect("last");
    reject(old_mail).await.expect("rejected");
    reject(young_mail).await.expect("rejected");
    assert_eq!(store.last_sequence().await.expect("last"), last + 1, "only the old one again");
}

/// Canceling takes a message out of the outbox for good, once; a message the provider has,
/// and an inbound one, cannot be canceled.
async fn cancellation(store: Arc<dyn Store>) {
    let waiting = accept(store.as_ref(), new_message("+14155550801", None, "a")).await;
    let canceled = store.cancel(&waiting.id).await.expect("cancel");
    assert_eq!(canceled.status, MessageStatus::Canceled);
    let after = store.last_sequence().await.expect("last");
    let again = store.cancel(&waiting.id).await.expect("again");
    assert_eq!(again.history.len(), 2, "accepted, canceled");
    assert_eq!(store.last_sequence().await.expect("last"), after, "no second event");
    let claimed = store.claim("node-b", Duration::ZERO, 10, None).await.expect("claim");
    assert!(claimed.is_empty(), "a canceled message is no longer work: {claimed:?}");
    let events = store.events_after(after - 1, 10).await.expect("events");
    match &events[0].kind {
        EventKind::StatusChanged { message, .. } => {
            assert_eq!(
                (message.id.as_str(), message.status),
                (waiting.id.as_str(), MessageStatus::Canceled)
            )
        }
        other => panic!("expected the cancellation's event, got {other:?}"),
    }

    let handed = accept(store.as_ref(), new_message("+14155550802", None, "b")).await;
    sent(store.as_ref(), &handed.id, "SM802").await;
    match store.cancel(&handed.id).await {
        Err(StoreError::TooLate { why, .. }) => assert!(why.contains("sent"), "{why}"),
        other => panic!("a sent message must not be canceled, got {other:?}"),
    }
    let inbound = NewInbound {
        id: new_id("msg"),
        from: Identity { channel: Channel::Sms, address: "+14155550803".into() },
        channel: Channel::Sms,
        account: "sms".into(),
        message: InboundMessage {
            provider_message_id: "SMin803".into(),
            from: "+14155550803".into(),
            to: "+15005550006".into(),
            content: Content::text("hi"),
            reply_to: None,
            references: Vec::new(),
            consent: None,
            conversation: None,
        },
        now: now_ms(),
    };
    let received = store.receive(inbound).await.expect("stored").expect("new");
    assert!(matches!(store.cancel(&received.id).await, Err(StoreError::TooLate { .. })));
    assert!(matches!(store.cancel("msg_none").await, Err(StoreError::NotFound(_))));

    // Requests between replicas: asked once, answered once, taken once.
    store.request_cancel("msg_x").await.expect("request");
    store.request_cancel("msg_x").await.expect("asking twice is one request");
    assert_eq!(store.pending_cancels(10).await.expect("pending"), ["msg_x"]);
    assert_eq!(store.take_cancel_answer("msg_x").await.expect("take"), None, "not answered yet");
    store.answer_cancel("msg_x", "it is sent").await.expect("answer");
    assert!(store.pending_cancels(10).await.expect("pending").is_empty());
    let answer = store.take_cancel_answer("msg_x").await.expect("take");
    assert_eq!(answer.as_deref(), Some("it is sent"));
    assert_eq!(store.take_cancel_answer("msg_x").await.expect("take"), None, "taken once");
}

/// `omnigate backup` copies the store a running gateway writes to: the copy holds what was
/// committed before it, opens as a store of its own, and the gateway goes on undisturbed;
/// an existing file is never overwritten.
#[tokio::test]
async fn a_backup_copies_the_store_of_a_running_gateway() {
    let mut t = crate::support::gateway().start().await;
    let before = t.send("+14155550901", "before the backup").await;
    let before = t.wait_for(&before.id, omnigate_proto::v1::MessageStatus::Delivered).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("omnigate.toml");
    std::fs::write(&config, format!("[store]\nurl = \"{}\"\n", t.config.store.url))
        .expect("config");
    let copy = dir.path().join("copy.db");
    let backup = |to: &std::path::Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
            .args(["backup", "--config"])
            .arg(&config)
            .arg("--to")
            .arg(to)
            .output()
    };
    let out = backup(&copy).await.expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied to"), "{out:?}");
    let after = t.send("+14155550902", "after the backup").await;

    let again = backup(&copy).await.expect("runs");
    assert!(!again.status.success(), "an existing file is kept");
    assert!(String::from_utf8_lossy(&again.stderr).contains("overwrites none"), "{again:?}");

    let copied = omnigate::store::sqlite::open(copy.to_str().expect("utf-8"), settings())
        .expect("the copy is a store")
        .into_arc();
    let kept = copied.get_message(&before.id).await.expect("read").expect("copied");
    assert_eq!(kept.status, MessageStatus::Delivered);
    assert_eq!(kept.history.len(), before.status_history.len());
    assert!(copied.get_message(&after.id).await.expect("read").is_none(), "sent after the copy");
    copied.close().await;
    let running = t.wait_for(&after.id, omnigate_proto::v1::MessageStatus::Delivered).await;
    assert_eq!(running.id, after.id);
}
