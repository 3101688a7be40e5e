//! The load generator: the real gateway (SQLite, group commit, Twilio sandbox over loopback)
//! against a bare tonic unary echo server measured in the same run on the same machine,
//! then one and three replicas sharing a PostgreSQL database.
//!
//! `cargo bench --bench loadgen` (or `-- --messages 20000 --concurrency 64`). Reports
//! accepted durable messages/s, end-to-end messages/s (to DELIVERED), p50/p99 accept
//! latency and peak RSS, each gateway rate also as a ratio of the echo rate, beside the rate
//! of an SMS's network exchanges alone (the most end to end could reach). `--people N`
//! sends to N people in turn instead of a new person each message. The PostgreSQL runs use a fresh database on the server `OMNIGATE_TEST_POSTGRES` names
//! (default: the one `scripts/postgres.sh` starts), as the tests do; `--no-postgres`
//! skips them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omnigate::{Config, Gateway};

/// The tests' fresh-database helper: the same server and the same rules.
#[path = "../tests/it/pg.rs"]
#[allow(dead_code)]
mod pg;
use omnigate_proto::bench::v1 as echo;
use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_client::GatewayClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

struct EchoService;

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: Request<echo::EchoRequest>,
    ) -> Result<Response<echo::EchoReply>, Status> {
        let r = request.into_inner();
        Ok(Response::new(echo::EchoReply { id: format!("{}:{}", r.to, r.body.len()) }))
    }
}

struct Args {
    messages: usize,
    concurrency: usize,
    /// Run one phase alone (`accept`, or `fleetN` for N replicas), for profiling.
    only: Option<String>,
    postgres: bool,
    /// Distinct recipients the messages cycle over: by default each message goes to a new
    /// person (the costliest acceptance: a contact, an identity and a conversation each).
    people: usize,
}

fn args() -> Args {
    let mut a =
        Args { messages: 20_000, concurrency: 64, only: None, postgres: true, people: usize::MAX };
    let argv: Vec<String> = std::env::args().collect();
    a.postgres = !argv.iter().any(|a| a == "--no-postgres");
    for pair in argv.windows(2) {
        match pair[0].as_str() {
            "--messages" => a.messages = pair[1].parse().unwrap_or(a.messages),
            "--concurrency" => a.concurrency = pair[1].parse().unwrap_or(a.concurrency),
            "--only" => a.only = Some(pair[1].clone()),
            "--people" => a.people = pair[1].parse().unwrap_or(a.people).max(1),
            _ => {}
        }
    }
    a
}

/// Runs `total` calls over `concurrency` workers; answers the wall time and sorted latencies.
async fn drive<F, Fut>(total: usize, concurrency: usize, call: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (elapsed, all)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn channels(addr: String, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Endpoint::from_shared(addr.clone()).expect("uri").connect().await.expect("connect"),
        );
    }
    out
}

/// CPU time this process has used (user + system), from /proc: less noisy than wall time
/// on a shared machine, for comparing the cost of one message between changes.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A bare echo server; answers channels to it.
async fn start_echo() -> Vec<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo::echo_server::EchoServer::new(EchoService))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    channels(format!("http://{addr}"), 4).await
}

async fn echo_call(channel: Channel) {
    let r = echo::EchoRequest { to: "+14155550100".into(), body: "benchmark message".into() };
    echo::echo_client::EchoClient::new(channel).echo(r).await.expect("echo");
}

async fn echo_baseline(args: &Args) -> (f64, Duration, Duration) {
    let chans = start_echo().await;
    let (elapsed, lat) =
        drive(args.messages, args.concurrency, move |i| echo_call(chans[i % chans.len()].clone()))
            .await;
    (args.messages as f64 / elapsed.as_secs_f64(), pct(&lat, 0.5), pct(&lat, 0.99))
}

/// The exchanges of one SMS end to end with nothing else: an echo call (the send request),
/// then three form POSTs over the HTTP stacks the gateway and the sandbox use (reqwest to
/// axum, pooled HTTP/1.1), standing for the provider API call and its `sent` and
/// `delivered` callbacks. No store, no signatures, no events: SMS end to end cannot pass
/// this rate on the same machine, whatever the gateway does.
async fn exchanges_ceiling(args: &Args) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(|form: String| async move {
            (axum::http::StatusCode::CREATED, format!("{{\"sid\":\"SM{}\"}}", form.len()))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = omnigate_adapters::http::client(Duration::from_secs(30));
    let chans = start_echo().await;
    let form = [("To", "+14155550100"), ("From", "+15005550006"), ("Body", "benchmark message")];
    let (elapsed, _) = drive(args.messages, args.concurrency, move |i| {
        let (http, url, channel) = (http.clone(), url.clone(), chans[i % chans.len()].clone());
        async move {
            echo_call(channel).await;
            for _ in 0..3 {
                let answer = http.post(&url).form(&form).send().await.expect("post");
                answer.bytes().await.expect("answer");
            }
        }
    })
    .await;
    args.messages as f64 / elapsed.as_secs_f64()
}

fn gateway_config(dir: &std::path::Path, per_second: u32) -> Config {
    let store = format!("[store]\nurl = \"sqlite://{}\"", dir.join("bench.db").display());
    config_with(&store, per_second, "")
}

/// The bench accounts on `store`, with `extra` TOML appended.
fn config_with(store: &str, per_second: u32, extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[server]
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
{store}
[dispatch]
max_in_flight = 256
[log]
level = "warn"
[sandbox.twilio]
account_sid = "AC00000000000000000000000000000000"
auth_token = "bench"
callback_delay_ms = 0
[[accounts]]
type = "twilio"
id = "sms"
api_base = "sandbox"
account_sid = "AC00000000000000000000000000000000"
auth_token = "bench"
from = "+15005550006"
rate_limit = {{ per_second = {per_second}, burst = {per_second} }}
[sandbox.meta]
access_token = "bench"
app_secret = "bench"
callback_delay_ms = 0
[[accounts]]
type = "whatsapp"
id = "wa"
api_base = "sandbox"
endpoint_id = "106540352242922"
access_token = "bench"
app_secret = "bench"
verify_token = "bench"
rate_limit = {{ per_second = {per_second}, burst = {per_second} }}
[sandbox.email]
[[accounts]]
type = "email"
id = "email"
address = "shop@omnigate.example"
smtp = {{ host = "sandbox", pool_size = 32 }}
rate_limit = {{ per_second = {per_second}, burst = {per_second} }}
{extra}
"#,
    ))
    .expect("bench config")
}

struct GatewayRun {
    accepted_per_s: f64,
    e2e_per_s: f64,
    p50: Duration,
    p99: Duration,
    store: StoreStats,
}

/// How the gateways' store writers were used, from their metrics.
struct StoreStats {
    /// Writes per store commit: the group commit's average batch.
    group: f64,
    /// The share of the run each writer spent on batches (averaged over replicas): near 1,
    /// the single writer is what limits the rate.
    writer_busy: f64,
}

fn store_stats(gateways: &[Gateway], elapsed: Duration) -> StoreStats {
    let (mut writes, mut commits, mut busy) = (0.0, 0.0, 0.0);
    for gateway in gateways {
        let metrics = gateway.state().metrics.encode();
        let value = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        writes += value("omnigate_store_writes_total");
        commits += value("omnigate_store_commits_total");
        busy += value("omnigate_store_writer_busy_seconds_total");
    }
    StoreStats {
        group: writes / commits.max(1.0),
        writer_busy: busy / (gateways.len() as f64 * elapsed.as_secs_f64()),
    }
}

/// Accepts as fast as clients send while the route is paced at 10 messages/s, so the
/// provider side is idle: the gateway's durable acceptance capacity (a burst that queues).
async fn accept_run(args: &Args) -> (f64, Duration, Duration, StoreStats) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Gateway::start(gateway_config(dir.path(), 10)).await.expect("gateway");
    let chans = channels(format!("http://{}", gateway.grpc_addr), 4).await;
    let people = args.people;
    let (elapsed, lat) = drive(args.messages, args.concurrency, move |i| {
        let mut client = GatewayClient::new(chans[i % chans.len()].clone());
        async move {
            client.send_message(sms(i % people)).await.expect("accepted");
        }
    })
    .await;
    let store = store_stats(std::slice::from_ref(&gateway), elapsed);
    gateway.shutdown().await.expect("shutdown");
    (args.messages as f64 / elapsed.as_secs_f64(), pct(&lat, 0.5), pct(&lat, 0.99), store)
}

/// The embedded store alone, opened as the gateway opens it but without gRPC: `concurrency`
/// tasks accept SMS straight into it, each to a new number as in the gateway runs. The
/// ceiling the gateway's acceptance works under.
async fn store_run(args: &Args) -> (f64, Duration, Duration) {
    use omnigate::store::NewMessage;
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(omnigate::telemetry::Metrics::default());
    let store = omnigate::app::open_store(&gateway_config(dir.path(), 10), "bench", metrics, true)
        .await
        .expect("store");
    let people = args.people;
    let (elapsed, lat) = drive(args.messages, args.concurrency, move |i| {
        let store = store.clone();
        async move {
            let new = NewMessage::new(
                omnigate_adapters::Channel::Sms,
                "sms",
                "+15005550006",
                &format!("+1415{:07}", i % people % 10_000_000),
                omnigate_adapters::Content::text("benchmark message"),
                Duration::from_secs(60),
            );
            store.accept(new).await.expect("accepted");
        }
    })
    .await;
    (args.messages as f64 / elapsed.as_secs_f64(), pct(&lat, 0.5), pct(&lat, 0.99))
}

fn sms(person: usize) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        channel: pb::Channel::Sms as i32,
        to: format!("+1415{:07}", person % 10_000_000),
        content: Some(pb::Content {
            kind: Some(pb::content::Kind::Text(pb::Text {
                body: "benchmark message".into(),
                preview_url: false,
            })),
        }),
        ..Default::default()
    }
}

/// A WhatsApp template (allowed outside the service window) to `person`.
fn whatsapp(person: usize) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        channel: pb::Channel::Whatsapp as i32,
        to: format!("+1631{:07}", person % 10_000_000),
        content: Some(pb::Content {
            kind: Some(pb::content::Kind::Template(pb::Template {
                name: "order_update".into(),
                language: "en_US".into(),
                components: vec![],
            })),
        }),
        ..Default::default()
    }
}

/// An email with a subject, text and HTML to `person` (SMTP sandbox).
fn email(person: usize) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        channel: pb::Channel::Email as i32,
        to: format!("person{person}@example.com"),
        content: Some(pb::Content {
            kind: Some(pb::content::Kind::Email(pb::Email {
                subject: "Your order".into(),
                text: "benchmark message".into(),
                html: "<p>benchmark message</p>".into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// A channel's load: what a message to person N is, and the status at which it counts as done.
type Load = (fn(usize) -> pb::SendMessageRequest, pb::MessageStatus);
const SMS: Load = (sms, pb::MessageStatus::Delivered);
const WHATSAPP: Load = (whatsapp, pb::MessageStatus::Delivered);
/// Email has no receipts: SENT (the server's 250) is as far as it goes.
const EMAIL: Load = (email, pb::MessageStatus::Sent);

/// Sends with an unpaced route: every message goes through its sandbox (and, for SMS and
/// WhatsApp, the status callbacks), and counts when it reaches its load's done status in
/// the event stream.
async fn gateway_run(args: &Args, (request, done): Load) -> GatewayRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Gateway::start(gateway_config(dir.path(), 1_000_000)).await.expect("gateway");
    let run = measure(args, std::slice::from_ref(&gateway), request, done).await;
    gateway.shutdown().await.expect("shutdown");
    run
}

/// Drives `request`s over every gateway's gRPC address and counts, on the first one's
/// event stream (which carries every replica's events), those that reach `done`.
async fn measure(
    args: &Args,
    gateways: &[Gateway],
    request: fn(usize) -> pb::SendMessageRequest,
    done: pb::MessageStatus,
) -> GatewayRun {
    let addrs: Vec<String> = gateways.iter().map(|g| format!("http://{}", g.grpc_addr)).collect();
    let mut events = GatewayClient::connect(addrs[0].clone())
        .await
        .expect("connect")
        .stream_events(pb::StreamEventsRequest { from_sequence: 0, ..Default::default() })
        .await
        .expect("stream")
        .into_inner();
    let total = args.messages;
    let delivered = tokio::spawn(async move {
        let mut n = 0;
        while let Some(e) = events.message().await.expect("event") {
            if let Some(pb::event::Kind::MessageStatusChanged(c)) = e.kind
                && c.message.is_some_and(|m| m.status == done as i32)
            {
                n += 1;
                if n == total {
                    return Instant::now();
                }
            }
        }
        Instant::now()
    });
    let mut chans = Vec::new();
    for addr in addrs {
        chans.extend(channels(addr, 4).await);
    }
    let started = Instant::now();
    let people = args.people;
    let (elapsed, lat) = drive(total, args.concurrency, move |i| {
        let mut client = GatewayClient::new(chans[i % chans.len()].clone());
        async move {
            client.send_message(request(i % people)).await.expect("accepted");
        }
    })
    .await;
    let done = delivered.await.expect("delivered");
    let e2e = done.duration_since(started);
    GatewayRun {
        accepted_per_s: total as f64 / elapsed.as_secs_f64(),
        e2e_per_s: total as f64 / e2e.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        store: store_stats(gateways, e2e),
    }
}

/// SMS routes of the fleet runs: one account each, so replicas share the sending.
const FLEET_ROUTES: usize = 3;

fn fleet_sms(person: usize) -> pb::SendMessageRequest {
    pb::SendMessageRequest { account: format!("sms-{}", person % FLEET_ROUTES), ..sms(person) }
}

/// SMS end to end through `replicas` gateways on one fresh PostgreSQL database.
async fn fleet_run(args: &Args, replicas: usize) -> GatewayRun {
    let db = pg::TestDb::create();
    let accounts: String = (0..FLEET_ROUTES)
        .map(|i| {
            format!(
                r#"
[[accounts]]
type = "twilio"
id = "sms-{i}"
api_base = "sandbox"
account_sid = "AC00000000000000000000000000000000"
auth_token = "bench"
from = "+1500555010{i}"
rate_limit = {{ per_second = 1000000, burst = 1000000 }}
"#
            )
        })
        .collect();
    let mut gateways = Vec::new();
    for r in 0..replicas {
        let store = format!("[store]\nurl = \"{}\"\nlease_secs = 5", db.url);
        let mut config = config_with(&store, 1_000_000, &accounts);
        config.server.node_id = format!("bench-{r}");
        gateways.push(Gateway::start(config).await.expect("replica"));
    }
    // Measure once every route has its owner.
    let keys: Vec<String> = (0..FLEET_ROUTES)
        .map(|i| omnigate::fleet::route_key(&format!("sms-{i}"), &format!("+1500555010{i}")))
        .collect();
    let settled = || {
        keys.iter().all(|k| gateways.iter().filter(|g| g.state().ownership.owns(k)).count() == 1)
    };
    while !settled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = measure(args, &gateways, fleet_sms, pb::MessageStatus::Delivered).await;
    for gateway in gateways {
        gateway.shutdown().await.expect("shutdown");
    }
    run
}

fn main() {
    // Quiet unless RUST_LOG asks (the gateway's own logs, for a failing run).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args = args();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        if let Some(only) = args.only.as_deref() {
            let cpu = cpu_seconds();
            // CPU time of the whole process per message, since the run started.
            let cpu_each = || (cpu_seconds() - cpu) / args.messages as f64 * 1e6;
            match only {
                "store" => {
                    let (rate, p50, p99) = store_run(&args).await;
                    println!("store accepted {rate:.0}/s p50 {p50:.2?} p99 {p99:.2?}, {:.0} us CPU each", cpu_each());
                }
                "echo" => {
                    let (rate, p50, p99) = echo_baseline(&args).await;
                    println!("echo {rate:.0}/s p50 {p50:.2?} p99 {p99:.2?}");
                }
                "ceiling" => {
                    let rate = exchanges_ceiling(&args).await;
                    println!("an SMS's exchanges alone {rate:.0}/s, {:.0} us CPU each", cpu_each());
                }
                "accept" => {
                    let (rate, p50, p99, store) = accept_run(&args).await;
                    println!("accepted {rate:.0}/s p50 {p50:.2?} p99 {p99:.2?} batch {:.1}, writer busy {:.0}%", store.group, store.writer_busy * 100.0);
                }
                "sms" | "whatsapp" | "email" => {
                    let g = match only {
                        "sms" => gateway_run(&args, SMS).await,
                        "whatsapp" => gateway_run(&args, WHATSAPP).await,
                        _ => gateway_run(&args, EMAIL).await,
                    };
                    println!("accepted {:.0}/s end to end {:.0}/s p50 {:.2?} p99 {:.2?} batch {:.1}, writer busy {:.0}%, {:.0} us CPU each", g.accepted_per_s, g.e2e_per_s, g.p50, g.p99, g.store.group, g.store.writer_busy * 100.0, cpu_each());
                }
                fleet if fleet.starts_with("fleet") => {
                    let f = fleet_run(&args, fleet["fleet".len()..].parse().unwrap_or(3)).await;
                    println!("accepted {:.0}/s end to end {:.0}/s p50 {:.2?} p99 {:.2?} batch {:.1}, writer busy {:.0}%", f.accepted_per_s, f.e2e_per_s, f.p50, f.p99, f.store.group, f.store.writer_busy * 100.0);
                }
                other => {
                    eprintln!("--only {other:?}: expected store, echo, ceiling, accept, sms, whatsapp, email or fleetN");
                    std::process::exit(2);
                }
            }
            return;
        }
        // Warm both paths once (connections, page cache) before measuring.
        let warm = Args { messages: 2_000, only: None, postgres: false, ..args };
        echo_baseline(&warm).await;
        gateway_run(&warm, SMS).await;

        let (echo_rate, echo_p50, echo_p99) = echo_baseline(&args).await;
        let ceiling = exchanges_ceiling(&args).await;
        let (accept_rate, accept_p50, accept_p99, accept_store) = accept_run(&args).await;
        let g = gateway_run(&args, SMS).await;
        let w = gateway_run(&args, WHATSAPP).await;
        let e = gateway_run(&args, EMAIL).await;
        let fleets = if args.postgres {
            vec![(1, fleet_run(&args, 1).await), (3, fleet_run(&args, 3).await)]
        } else {
            Vec::new()
        };
        println!("omnigate load generator: {} messages, {} concurrent clients, {} cores", args.messages, args.concurrency,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        println!("| run | rate (/s) | vs echo | p50 | p99 |");
        println!("|---|---:|---:|---:|---:|");
        println!("| bare tonic echo (baseline) | {echo_rate:.0} | 1.00 | {echo_p50:.2?} | {echo_p99:.2?} |");
        println!("| an SMS's exchanges alone (1 echo call + 3 HTTP POSTs, no gateway) | {ceiling:.0} | {:.2} | | |", ceiling / echo_rate);
        println!("| SMS accepted, route paced (durable, SQLite) | {accept_rate:.0} | {:.2} | {accept_p50:.2?} | {accept_p99:.2?} |", accept_rate / echo_rate);
        println!("| SMS accepted while delivering | {:.0} | {:.2} | {:.2?} | {:.2?} |", g.accepted_per_s, g.accepted_per_s / echo_rate, g.p50, g.p99);
        println!("| SMS end to end (to DELIVERED) | {:.0} | {:.2} | | |", g.e2e_per_s, g.e2e_per_s / echo_rate);
        println!("| WhatsApp accepted while delivering | {:.0} | {:.2} | {:.2?} | {:.2?} |", w.accepted_per_s, w.accepted_per_s / echo_rate, w.p50, w.p99);
        println!("| WhatsApp end to end (to DELIVERED) | {:.0} | {:.2} | | |", w.e2e_per_s, w.e2e_per_s / echo_rate);
        println!("| Email accepted while sending (SMTP sandbox) | {:.0} | {:.2} | {:.2?} | {:.2?} |", e.accepted_per_s, e.accepted_per_s / echo_rate, e.p50, e.p99);
        println!("| Email end to end (to SENT, SMTP 250) | {:.0} | {:.2} | | |", e.e2e_per_s, e.e2e_per_s / echo_rate);
        for (n, f) in &fleets {
            println!("| SMS accepted, {n} replica(s) on PostgreSQL, {FLEET_ROUTES} routes | {:.0} | {:.2} | {:.2?} | {:.2?} |", f.accepted_per_s, f.accepted_per_s / echo_rate, f.p50, f.p99);
            println!("| SMS end to end, {n} replica(s) on PostgreSQL | {:.0} | {:.2} | | |", f.e2e_per_s, f.e2e_per_s / echo_rate);
        }
        println!("store writes per commit (group commit batch): {:.1} SMS, {:.1} WhatsApp, {:.1} email", g.store.group, w.store.group, e.store.group);
        let busy = |s: &StoreStats| format!("{:.0}%", s.writer_busy * 100.0);
        let fleet_busy: Vec<String> = fleets.iter().map(|(n, f)| format!("{} ({n} replica(s) on PostgreSQL)", busy(&f.store))).collect();
        println!("store writer busy: {} paced acceptance, {} SMS, {} WhatsApp, {} email; {}", busy(&accept_store), busy(&g.store), busy(&w.store), busy(&e.store), fleet_busy.join(", "));
        println!("peak RSS of the whole run (clients, sandbox and gateway): {:.0} MiB", peak_rss_mib());
    });
}
