//! The real binary as a child process, for tests that kill it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omnigate_adapters::twilio::sandbox::{self, SandboxConfig, SandboxHandle};
use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_client::GatewayClient;

use crate::support::{FROM, SID, TOKEN};

/// A spawned gateway that is killed when dropped, so a failing test leaves no process
/// behind (one would hold the test runner's output open).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts `omnigate serve --config CONFIG` and connects to its gRPC address `grpc`.
pub async fn spawn(
    config: &Path,
    grpc: &str,
) -> (Running, GatewayClient<tonic::transport::Channel>) {
    let child = Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn omnigate");
    let mut child = Running(child);
    for _ in 0..200 {
        if let Ok(client) = GatewayClient::connect(grpc.to_string()).await {
            return (child, client);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("omnigate exited at start ({status}): a port of its config taken meanwhile?");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    panic!("omnigate did not start");
}

/// A Twilio sandbox for child processes to send to, answering after `latency_ms`.
pub async fn twilio_sandbox(latency_ms: u64) -> SandboxHandle {
    twilio_sandbox_with(latency_ms, Vec::new()).await
}

/// A Twilio sandbox for child processes, applying fault `rules`.
pub async fn twilio_sandbox_with(latency_ms: u64, rules: Vec<sandbox::Rule>) -> SandboxHandle {
    sandbox::start(SandboxConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
        callback_delay_ms: 10,
        latency_ms,
        rules,
    })
    .await
    .expect("sandbox")
}

/// A config file for the binary: SQLite in `dir`, one Twilio account on `sandbox`, and
/// `extra` TOML sections after it.
pub struct Binary {
    pub config: std::path::PathBuf,
    pub grpc: String,
}

impl Binary {
    pub fn new(dir: &Path, sandbox: &SandboxHandle, max_in_flight: usize, extra: &str) -> Binary {
        let (grpc, http) = (free_port(), free_port());
        let config = dir.join("omnigate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
grpc_addr = "127.0.0.1:{grpc}"
http_addr = "127.0.0.1:{http}"
drain_timeout_secs = 20

[store]
url = "sqlite://{db}"

[dispatch]
max_in_flight = {max_in_flight}
backoff_initial_ms = 50
backoff_max_ms = 500

[[accounts]]
type = "twilio"
id = "sms"
api_base = "{api}"
account_sid = "{SID}"
auth_token = "{TOKEN}"
from = "{FROM}"
rate_limit = {{ per_second = 1000, burst = 1000 }}

{extra}
"#,
                db = dir.join("omnigate.db").display(),
                api = sandbox.api_base(),
            ),
        )
        .expect("write config");
        Binary { config, grpc: format!("http://127.0.0.1:{grpc}") }
    }

    pub async fn spawn(&self) -> (Running, GatewayClient<tonic::transport::Channel>) {
        spawn(&self.config, &self.grpc).await
    }
}

pub async fn status_of(
    client: &mut GatewayClient<tonic::transport::Channel>,
    id: &str,
) -> pb::MessageStatus {
    let m = client.get_message(pb::GetMessageRequest { id: id.into() }).await.expect("get");
    pb::MessageStatus::try_from(m.into_inner().message.expect("message").status).expect("status")
}

/// Waits until the provider has every message of `ids` (SENT or beyond), for at most
/// `within`.
pub async fn until_sent(
    client: &mut GatewayClient<tonic::transport::Channel>,
    ids: &[String],
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    for id in ids {
        while !matches!(
            status_of(client, id).await,
            pb::MessageStatus::Sent | pb::MessageStatus::Delivered
        ) {
            assert!(tokio::time::Instant::now() < deadline, "{id} never reached the provider");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends SIGTERM and answers the exit code.
pub fn terminate(child: &mut Running) -> Option<i32> {
    let status =
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
    assert!(status.success());
    child.0.wait().expect("exit").code()
}
