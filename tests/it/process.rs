//! The real binary as a child process, for tests that kill it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omnigate_adapters::twilio::sandbox::{self, SandboxConfig, SandboxHandle};
use omnigate_proto::v1::gateway_client::GatewayClient;

use crate::support::{SID, TOKEN};

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
    let child = Running(child);
    for _ in 0..200 {
        if let Ok(client) = GatewayClient::connect(grpc.to_string()).await {
            return (child, client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    panic!("omnigate did not start");
}

/// A Twilio sandbox for child processes to send to, answering after `latency_ms`.
pub async fn twilio_sandbox(latency_ms: u64) -> SandboxHandle {
    sandbox::start(SandboxConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
        callback_delay_ms: 10,
        latency_ms,
        rules: Vec::new(),
    })
    .await
    .expect("sandbox")
}
