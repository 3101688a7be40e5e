//! The mailbox client: connect (IMAPS or STARTTLS), select, fetch by UID, wait with IDLE.
//! The caller keeps the cursor (UIDVALIDITY, last UID) and decides what to fetch next.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::{ImapConfig, Security};

/// Any byte stream a session runs on: TLS from the start, after STARTTLS, or plain.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}
pub type Stream = Box<dyn Io>;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("imap connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("imap tls: {0}")]
    Tls(String),
    #[error("imap login refused: {0}")]
    Login(async_imap::error::Error),
    #[error("imap: {0}")]
    Protocol(#[from] async_imap::error::Error),
    #[error("imap: no answer within {0:?}")]
    Timeout(Duration),
    #[error("imap: mailbox {0:?} has no UIDVALIDITY")]
    NoUidValidity(String),
    /// The mail or its mailbox is no longer what the URL named.
    #[error("imap: {0}")]
    Gone(String),
    /// The URL is not one of this mailbox's.
    #[error("imap: {0}")]
    Elsewhere(String),
}

/// Where an IMAP URL of ours points (RFC 5092, as [`Session::url`] writes it, with
/// `/;SECTION=` for one part of the mail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapUrl {
    pub host: String,
    pub mailbox: String,
    pub uid_validity: u32,
    pub uid: u32,
    /// The part's section (RFC 3501 6.4.5: `2.1` is `[2, 1]`); empty for the whole mail.
    pub section: Vec<u32>,
}

impl ImapUrl {
    pub fn parse(url: &str) -> Option<ImapUrl> {
        let (host, path) = url.strip_prefix("imap://")?.split_once('/')?;
        let mut pieces = path.split("/;");
        let (mailbox, uid_validity) = pieces.next()?.rsplit_once(";UIDVALIDITY=")?;
        let uid = pieces.next()?.strip_prefix("UID=")?.parse().ok()?;
        let section = match pieces.next() {
            Some(s) => s
                .strip_prefix("SECTION=")?
                .split('.')
                .map(|n| n.parse().ok().filter(|n| *n > 0))
                .collect::<Option<Vec<u32>>>()?,
            None => Vec::new(),
        };
        if pieces.next().is_some() || host.is_empty() || mailbox.is_empty() {
            return None;
        }
        Some(ImapUrl {
            host: host.to_string(),
            mailbox: mailbox.to_string(),
            uid_validity: uid_validity.parse().ok()?,
            uid,
            section,
        })
    }
}

/// A mail as fetched: its UID and size, and its bytes unless it is over the size limit.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub uid: u32,
    pub size: u64,
    /// `None` when the mail is over the size limit, or was expunged by another client
    /// between the two fetches.
    pub raw: Option<Vec<u8>>,
}

/// A selected mailbox's identity and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selected {
    /// UIDs are only comparable while this stays the same (RFC 3501 2.3.1.1).
    pub uid_validity: u32,
    /// The UID the next mail will get.
    pub uid_next: u32,
}

pub struct Mailbox {
    config: ImapConfig,
    tls: TlsConnector,
}

impl Mailbox {
    pub fn new(config: ImapConfig, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let tls = TlsConnector::from(crate::tls::client_config(ca_file)?);
        Ok(Mailbox { config, tls })
    }

    pub fn config(&self) -> &ImapConfig {
        &self.config
    }

    /// Connects and logs in.
    pub async fn connect(&self) -> Result<Session, ImapError> {
        let c = &self.config;
        let addr = format!("{}:{}", c.host, c.port);
        let tcp = within(c.timeout, async {
            TcpStream::connect(&addr).await.map_err(|e| ImapError::Connect(addr.clone(), e))
        })
        .await?;
        let client = within(c.timeout, async {
            match c.security {
                Security::Tls => {
                    let mut client = async_imap::Client::new(self.wrap(tcp).await?);
                    client.read_response().await.map_err(async_imap::error::Error::from)?;
                    Ok(client)
                }
                Security::StartTls => {
                    let mut client = async_imap::Client::new(tcp);
                    client.read_response().await.map_err(async_imap::error::Error::from)?;
                    client.run_command_and_check_ok("STARTTLS", None).await?;
                    // No greeting after STARTTLS (RFC 3501 6.2.1).
                    Ok(async_imap::Client::new(self.wrap(client.into_inner()).await?))
                }
                Security::None => {
                    let mut client = async_imap::Client::new(Box::new(tcp) as Stream);
                    client.read_response().await.map_err(async_imap::error::Error::from)?;
                    Ok(client)
                }
            }
        })
        .await?;
        let mut session = within(c.timeout, async {
            client.login(&c.username, &c.password).await.map_err(|(e, _)| ImapError::Login(e))
        })
        .await?;
        let idle =
            within(c.timeout, async { Ok(session.capabilities().await?.has_str("IDLE")) }).await?;
        Ok(Session { inner: session, idle, timeout: c.timeout, mailbox: c.mailbox.clone() })
    }

    /// The part `url` names, decoded from its transfer encoding, as its MIME type and bytes;
    /// with no section, the whole mail (`message/rfc822`). Only the part is fetched, and
    /// with `BODY.PEEK`, so the mail's `\Seen` flag stays as it was.
    pub async fn fetch_part(&self, url: &ImapUrl) -> Result<(String, Vec<u8>), ImapError> {
        let c = &self.config;
        if url.host != c.host || url.mailbox != c.mailbox {
            return Err(ImapError::Elsewhere(format!(
                "{}/{} is not this account's mailbox ({}/{})",
                url.host, url.mailbox, c.host, c.mailbox
            )));
        }
        let mut session = self.connect().await?;
        let fetched = session.fetch_part(url).await;
        session.logout().await;
        fetched
    }

    async fn wrap(&self, tcp: TcpStream) -> Result<Stream, ImapError> {
        let name = ServerName::try_from(self.config.host.clone())
            .map_err(|e| ImapError::Tls(format!("{}: {e}", self.config.host)))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| ImapError::Tls(e.to_string()))?;
        Ok(Box::new(tls))
    }
}

pub struct Session {
    inner: async_imap::Session<Stream>,
    idle: bool,
    timeout: Duration,
    mailbox: String,
}

impl Session {
    /// Selects the configured mailbox.
    pub async fn select(&mut self) -> Result<Selected, ImapError> {
        let mailbox = self.mailbox.clone();
        let selected =
            within(self.timeout, async { Ok(self.inner.select(&mailbox).await?) }).await?;
        Ok(Selected {
            uid_validity: selected.uid_validity.ok_or(ImapError::NoUidValidity(mailbox))?,
            uid_next: selected.uid_next.unwrap_or(1),
        })
    }

    /// Up to `limit` mails with a UID above `last_uid`, oldest first. Mails over
    /// `max_bytes` come without their bytes.
    pub async fn fetch_after(
        &mut self,
        last_uid: u32,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<Fetched>, ImapError> {
        let timeout = self.timeout;
        let range = format!("{}:*", last_uid.saturating_add(1));
        let mut sizes: Vec<(u32, u64)> = within(timeout, async {
            let stream = self.inner.uid_fetch(&range, "(UID RFC822.SIZE)").await?;
            let all: Vec<_> = stream.try_collect().await?;
            Ok(all.iter().filter_map(|f| Some((f.uid?, u64::from(f.size?)))).collect())
        })
        .await?;
        // "N:*" answers the newest mail even when its UID is below N (RFC 3501 6.4.8).
        sizes.retain(|(uid, _)| *uid > last_uid);
        sizes.sort_unstable();
        sizes.truncate(limit);
        let wanted: Vec<String> = sizes
            .iter()
            .filter(|(_, size)| *size <= max_bytes)
            .map(|(uid, _)| uid.to_string())
            .collect();
        let mut bodies = std::collections::HashMap::new();
        if !wanted.is_empty() {
            let set = wanted.join(",");
            bodies = within(timeout, async {
                let stream = self.inner.uid_fetch(&set, "(UID BODY.PEEK[])").await?;
                let all: Vec<_> = stream.try_collect().await?;
                Ok(all
                    .iter()
                    .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
                    .collect::<std::collections::HashMap<_, _>>())
            })
            .await?;
        }
        Ok(sizes
            .into_iter()
            .map(|(uid, size)| Fetched { uid, size, raw: bodies.remove(&uid) })
            .collect())
    }

    /// Waits for new mail: IDLE where the server has it (ended after `max`), else a sleep
    /// of `max` and a NOOP so the server reports what arrived.
    pub async fn wait(mut self, max: Duration) -> Result<Session, ImapError> {
        if !self.idle {
            tokio::time::sleep(max).await;
            let timeout = self.timeout;
            within(timeout, async { Ok(self.inner.noop().await?) }).await?;
            return Ok(self);
        }
        let Session { inner, idle, timeout, mailbox } = self;
        let mut handle = inner.idle();
        within(timeout, async { Ok(handle.init().await?) }).await?;
        let (wait, stop) = handle.wait_with_timeout(max);
        let woke = wait.await;
        drop(stop);
        woke?;
        let inner = within(timeout, async { Ok(handle.done().await?) }).await?;
        Ok(Session { inner, idle, timeout, mailbox })
    }

    async fn fetch_part(&mut self, url: &ImapUrl) -> Result<(String, Vec<u8>), ImapError> {
        use async_imap::imap_proto::{MessageSection, SectionPath};
        let selected = self.select().await?;
        if selected.uid_validity != url.uid_validity {
            return Err(ImapError::Gone(format!(
                "mailbox {} was recreated since (UIDVALIDITY {} is now {}), so UID {} means another mail",
                url.mailbox, url.uid_validity, selected.uid_validity, url.uid
            )));
        }
        let section = url.section.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        let items = match section.as_str() {
            "" => "(UID BODY.PEEK[])".to_string(),
            s => format!("(UID BODY.PEEK[{s}.MIME] BODY.PEEK[{s}])"),
        };
        let timeout = self.timeout;
        let uid = url.uid;
        let fetched = within(timeout, async {
            let all: Vec<_> =
                self.inner.uid_fetch(uid.to_string(), &items).await?.try_collect().await?;
            Ok(all.into_iter().find(|f| f.uid == Some(uid)))
        })
        .await?
        .ok_or_else(|| {
            ImapError::Gone(format!("mail UID {uid} is no longer in {}", url.mailbox))
        })?;
        if url.section.is_empty() {
            let raw = fetched
                .body()
                .ok_or_else(|| ImapError::Gone(format!("mail UID {uid} has no body")))?;
            return Ok(("message/rfc822".into(), raw.to_vec()));
        }
        let path = |part| SectionPath::Part(url.section.clone(), part);
        let (Some(header), Some(body)) =
            (fetched.section(&path(Some(MessageSection::Mime))), fetched.section(&path(None)))
        else {
            return Err(ImapError::Gone(format!("mail UID {uid} has no part {section}")));
        };
        // The part's own header and body make a MIME entity, which decodes as inbound mail
        // does; the header ends in its blank line (RFC 3501 6.4.5), but a server that
        // leaves it out must not make the body read as header.
        let mut entity = header.to_vec();
        if !entity.ends_with(b"\r\n\r\n") {
            entity.extend_from_slice(b"\r\n");
        }
        entity.extend_from_slice(body);
        super::parse::decode_entity(&entity).ok_or_else(|| {
            ImapError::Gone(format!("part {section} of mail UID {uid} is not a leaf part"))
        })
    }

    /// The IMAP URL of a mail (RFC 5092), for references to parts not stored inline.
    pub fn url(&self, host: &str, uid_validity: u32, uid: u32) -> String {
        format!("imap://{host}/{};UIDVALIDITY={uid_validity}/;UID={uid}", self.mailbox)
    }

    /// The underlying session, for tools and tests that append or manage mailboxes.
    pub fn inner_mut(&mut self) -> &mut async_imap::Session<Stream> {
        &mut self.inner
    }

    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.inner.logout()).await;
    }
}

async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    tokio::time::timeout(limit, work).await.map_err(|_| ImapError::Timeout(limit))?
}
