//! An in-process SMTP listener for `omnigate demo` and the load generator: it speaks
//! enough SMTP (RFC 5321: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for lettre, keeps what
//! it accepted in memory, and answers RCPT with a configured reply for chosen recipients,
//! or takes their mail and drops the connection before its reply.
//! The email tests use real servers instead (scripts/mail-servers.sh).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::sandbox_rules::{Rule, RuleSet, loopback_any};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSandboxConfig {
    #[serde(default = "loopback_any")]
    pub addr: SocketAddr,
    /// Faults for recipients by prefix.
    #[serde(default)]
    pub rules: Vec<Rule<Fault>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Fault {
    /// The RCPT reply, as a full reply line: "550 5.1.1 No such user".
    Reply(String),
    Other(OtherFault),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum OtherFault {
    /// Keeps the mail, then closes the connection instead of replying to its data, as a
    /// server that fails right after queuing: the sender cannot tell that it went.
    LostAnswer,
}

impl Default for SmtpSandboxConfig {
    fn default() -> Self {
        SmtpSandboxConfig { addr: loopback_any(), rules: Vec::new() }
    }
}

/// One accepted mail.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Clone)]
pub struct SmtpSandbox {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    sessions: Arc<AtomicUsize>,
}

impl SmtpSandbox {
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// Mails longer than this are refused with 552, as a real server's size limit would.
const MAX_DATA: usize = 32 << 20;

pub async fn start(config: SmtpSandboxConfig) -> std::io::Result<SmtpSandbox> {
    let listener = TcpListener::bind(config.addr).await?;
    let sandbox = SmtpSandbox {
        addr: listener.local_addr()?,
        accepted: Arc::new(Mutex::new(Vec::new())),
        sessions: Arc::new(AtomicUsize::new(0)),
    };
    let rules = Arc::new(RuleSet::new(config.rules));
    let (accepted, sessions) = (sandbox.accepted.clone(), sandbox.sessions.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            sessions.fetch_add(1, Ordering::Relaxed);
            let (rules, accepted) = (rules.clone(), accepted.clone());
            tokio::spawn(async move {
                if let Err(e) = session(socket, &rules, &accepted).await {
                    tracing::debug!(error = %e, "smtp sandbox session ended");
                }
            });
        }
    });
    Ok(sandbox)
}

async fn session(
    socket: TcpStream,
    rules: &RuleSet<Fault>,
    accepted: &Mutex<Vec<Accepted>>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 omnigate-sandbox ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut lose_answer = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                "250-omnigate-sandbox\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432".into()
            }
            "HELO" => "250 omnigate-sandbox".into(),
            "MAIL" => {
                from = address(&line);
                to.clear();
                lose_answer = false;
                "250 2.1.0 Ok".into()
            }
            "RCPT" => {
                let rcpt = address(&line);
                match rules.fault_for(&rcpt) {
                    Some(Fault::Reply(reply)) => reply.clone(),
                    fault => {
                        lose_answer |= matches!(fault, Some(Fault::Other(OtherFault::LostAnswer)));
                        to.push(rcpt);
                        "250 2.1.5 Ok".into()
                    }
                }
            }
            "DATA" if to.is_empty() => "554 5.5.1 No valid recipients".into(),
            "DATA" => {
                write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                match read_data(&mut lines).await? {
                    Some(data) => {
                        let mut all =
                            accepted.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                        all.push(Accepted {
                            from: from.clone(),
                            to: std::mem::take(&mut to),
                            data,
                        });
                        if lose_answer {
                            return Ok(());
                        }
                        format!("250 2.0.0 Ok: queued as S{}", all.len())
                    }
                    None => "552 5.3.4 Message too big".into(),
                }
            }
            "RSET" => {
                to.clear();
                lose_answer = false;
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        // One write per reply: a reply split over two small writes waits, under Nagle's
        // algorithm, for the client's delayed acknowledgement of the first (40 ms).
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The lines up to the lone ".", dot-unstuffed; `None` when over [`MAX_DATA`].
async fn read_data(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((data.len() <= MAX_DATA).then_some(data));
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() <= MAX_DATA {
            data.extend_from_slice(unstuffed);
        }
    }
}

/// The address in "MAIL FROM:<a@b> SIZE=1" or "RCPT TO:<a@b>".
fn address(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(addr, _)| addr.to_ascii_lowercase())
        .unwrap_or_default()
}
