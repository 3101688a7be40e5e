//! Submission connections, opened here rather than by lettre's pool so that they run with
//! TCP_NODELAY. lettre 0.11.23 writes a message's body and its closing "." in two writes;
//! with Nagle's algorithm on, the second waits for the server's delayed acknowledgement of
//! the first: 40 ms a message on Linux (lettre's PR #1159 measured 42-44 ms before and
//! 1.2-2.0 ms after setting the option). Connections are kept for the next message, up to
//! the account's pool size.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::{Security, SmtpConfig};
use super::smtp::{step, unreachable};
use crate::contract::SendFailure;

/// A kept connection unused for longer is checked with NOOP before it carries a message:
/// servers close idle clients after a timeout of their own (Postfix: 300 s).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(10);

pub struct Connections {
    smtp: SmtpConfig,
    /// STARTTLS: lettre upgrades the connection after EHLO.
    starttls: Option<TlsParameters>,
    /// Implicit TLS (port 465): the connection is TLS from its first byte.
    implicit: Option<TlsConnector>,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
}

/// A connection lent for one message; [`Connections::give_back`] keeps it for the next.
pub struct Lent<'a> {
    pub conn: AsyncSmtpConnection,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Connections {
    pub fn new(
        smtp: SmtpConfig,
        starttls: Option<TlsParameters>,
        implicit: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let size = smtp.pool_size.max(1) as usize;
        Connections {
            smtp,
            starttls,
            implicit: implicit.map(TlsConnector::from),
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    /// A kept connection that still answers, else a new one; waits while all are lent.
    pub async fn lend(&self) -> Result<Lent<'_>, SendFailure> {
        let slot =
            self.slots.acquire().await.map_err(|_| unreachable("connections closed", false))?;
        while let Some((mut conn, since)) = self.take_idle() {
            if since.elapsed() < CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok(Lent { conn, _slot: slot });
            }
            conn.abort().await;
        }
        Ok(Lent { conn: self.connect().await?, _slot: slot })
    }

    /// Keeps a connection whose last transaction ended cleanly; one that failed midway is
    /// closed, since its state on the server is unknown.
    pub async fn give_back(&self, mut lent: Lent<'_>, clean: bool) {
        if !clean || lent.conn.has_broken() {
            lent.conn.abort().await;
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((lent.conn, Instant::now()));
        }
    }

    fn take_idle(&self) -> Option<(AsyncSmtpConnection, Instant)> {
        self.idle.lock().ok()?.pop()
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        let smtp = &self.smtp;
        let hello = ClientId::default();
        let target = format!("{}:{}", smtp.host, smtp.port);
        let tcp = dial(&target, smtp.timeout).await?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            Some(tls) => {
                let name = ServerName::try_from(smtp.host.clone())
                    .map_err(|e| unreachable(&format!("TLS name {}: {e}", smtp.host), false))?;
                let wrapped = tokio::time::timeout(smtp.timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| unreachable(&format!("TLS with {target} timed out"), true))?
                    .map_err(|e| unreachable(&format!("TLS with {target}: {e}"), false))?;
                Box::new(Implicit(wrapped))
            }
            None => Box::new(tcp),
        };
        let within = smtp.timeout;
        let greeted = AsyncSmtpConnection::connect_with_transport(stream, &hello);
        let mut conn = step(within, "greeting and EHLO", greeted).await?;
        if smtp.security == Security::StartTls
            && let Some(tls) = self.starttls.clone()
        {
            step(within, "STARTTLS", conn.starttls(tls, &hello)).await?;
        }
        if !smtp.username.is_empty() {
            let credentials = Credentials::new(smtp.username.clone(), smtp.password.clone());
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            step(within, "AUTH", conn.auth(&mechanisms, &credentials)).await?;
        }
        Ok(conn)
    }
}

/// A TCP connection to `target` with Nagle's algorithm off.
async fn dial(target: &str, within: Duration) -> Result<TcpStream, SendFailure> {
    let mut tcp = tokio::time::timeout(within, TcpStream::connect(target))
        .await
        .map_err(|_| unreachable(&format!("connecting to {target} timed out"), true))?
        .map_err(|e| unreachable(&format!("connecting to {target}: {e}"), false))?;
    crate::http::no_nagle(&mut tcp);
    Ok(tcp)
}

/// A TLS stream as lettre takes an existing transport.
#[derive(Debug)]
struct Implicit(TlsStream<TcpStream>);

impl AsyncTokioStream for Implicit {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Implicit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Implicit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_dialled_without_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("addr").to_string();
        let tcp = dial(&target, Duration::from_secs(5)).await.expect("dialled");
        assert!(tcp.nodelay().expect("option"), "a message's closing dot would wait 40 ms");
    }
}
