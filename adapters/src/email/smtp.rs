//! The email [`Sender`]: renders MIME, submits over kept connections
//! ([`super::connections`]), and maps SMTP replies to outcomes (4xx transient, 5xx permanent; the basic and enhanced codes are
//! kept verbatim as the provider code).

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter, RcptParameter};
use lettre::transport::smtp::response::Response;
use tokio::time::timeout;

use crate::contract::{Accepted, Outbound, SendFailure, Sender, Thread};
use crate::model::{Attachment, ErrorCode, ProviderError};

use super::config::{EmailAccount, Security};
use super::connections::Connections;
use super::public_only::{PublicOnly, check_literal, redirects};
use super::render::{self, File};

pub struct EmailSender {
    account: EmailAccount,
    connections: Connections,
    http: reqwest::Client,
}

impl EmailSender {
    /// Fails on settings that can never work (an unreadable CA file, TLS without a host).
    pub fn new(account: EmailAccount) -> Result<Self, String> {
        let smtp = &account.smtp;
        let mut starttls = None;
        let mut implicit = None;
        match smtp.security {
            Security::None => {}
            Security::Tls => {
                implicit = Some(crate::tls::client_config(account.ca_file.as_deref())?)
            }
            Security::StartTls => {
                // The process's copy of the system roots rather than lettre reading its own.
                let mut params = TlsParameters::builder(smtp.host.clone())
                    .certificate_store(CertificateStore::None);
                let extra = match &account.ca_file {
                    Some(path) => crate::tls::read_pem(path)?,
                    None => Vec::new(),
                };
                for cert in crate::tls::system_certs().iter().chain(&extra) {
                    let cert = Certificate::from_der(cert.to_vec()).map_err(|e| e.to_string())?;
                    params = params.add_root_certificate(cert);
                }
                starttls = Some(params.build_rustls().map_err(|e| format!("smtp tls: {e}"))?);
            }
        }
        Ok(EmailSender {
            connections: Connections::new(smtp.clone(), starttls, implicit),
            http: {
                let public_only = !account.fetch_private_urls;
                let builder = crate::http::builder(smtp.timeout).redirect(redirects(public_only));
                crate::http::build(if public_only {
                    builder.dns_resolver(PublicOnly)
                } else {
                    builder
                })
            },
            account,
        })
    }

    /// One transaction on a kept connection, which is kept again only if it ended cleanly.
    async fn submit(
        &self,
        mime: &lettre::Message,
        message_id: &str,
    ) -> Result<Response, SendFailure> {
        let mut lent = self.connections.lend().await?;
        let outcome = self.transaction(&mut lent.conn, mime, message_id).await;
        self.connections.give_back(lent, outcome.is_ok()).await;
        outcome
    }

    /// MAIL, RCPT, DATA and the message, each step within the account's timeout. With
    /// delivery reports asked for, it carries the DSN parameters (RFC 3461): `RET=HDRS` and
    /// our Message-ID as `ENVID`, `NOTIFY` and `ORCPT` for each recipient.
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        mime: &lettre::Message,
        message_id: &str,
    ) -> Result<Response, SendFailure> {
        let smtp = &self.account.smtp;
        let raw = mime.formatted();
        let envelope = mime.envelope();
        let mut mail = Vec::new();
        if smtp.request_delivery_reports {
            for (keyword, value) in [("RET", "HDRS"), ("ENVID", message_id)] {
                mail.push(MailParameter::Other {
                    keyword: keyword.into(),
                    value: Some(value.into()),
                });
            }
        }
        let mut addresses = envelope.from().into_iter().chain(envelope.to());
        if addresses.any(|a| !AsRef::<str>::as_ref(a).is_ascii()) {
            mail.push(MailParameter::SmtpUtfEight);
        }
        if !raw.is_ascii() {
            mail.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let within = smtp.timeout;
        step(within, "MAIL", conn.command(Mail::new(envelope.from().cloned(), mail))).await?;
        for to in envelope.to() {
            let mut notify = Vec::new();
            if smtp.request_delivery_reports {
                let params =
                    [("NOTIFY", "SUCCESS,FAILURE,DELAY".into()), ("ORCPT", format!("rfc822;{to}"))];
                for (keyword, value) in params {
                    notify
                        .push(RcptParameter::Other { keyword: keyword.into(), value: Some(value) });
                }
            }
            step(within, "RCPT", conn.command(Rcpt::new(to.clone(), notify))).await?;
        }
        step(within, "DATA", conn.command(Data)).await?;
        step(within, "message", conn.message(&raw)).await
    }

    /// Fetches URL attachments and checks the total against the account's limit.
    async fn resolve(&self, attachments: &[Attachment]) -> Result<Vec<File>, SendFailure> {
        let limit = self.account.max_attachment_bytes;
        let mut total = 0u64;
        let mut files = Vec::with_capacity(attachments.len());
        for a in attachments {
            let (data, fetched_type) = if a.url.is_empty() {
                (a.data.clone(), None)
            } else {
                self.fetch(&a.url, limit - total).await?
            };
            total += data.len() as u64;
            if total > limit {
                return Err(SendFailure::permanent(too_large(limit)));
            }
            let filename = if a.filename.is_empty() {
                a.url
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("attachment")
                    .to_string()
            } else {
                a.filename.clone()
            };
            let mime_type = if a.mime_type.is_empty() {
                fetched_type.unwrap_or_else(|| "application/octet-stream".to_string())
            } else {
                a.mime_type.clone()
            };
            files.push(File { filename, mime_type, data });
        }
        Ok(files)
    }

    /// Downloads one attachment, reading no more than `budget` bytes.
    async fn fetch(
        &self,
        url: &str,
        budget: u64,
    ) -> Result<(Vec<u8>, Option<String>), SendFailure> {
        let failure = |retryable: bool, message: String| {
            let error = ProviderError {
                code: if retryable {
                    ErrorCode::ProviderUnavailable
                } else {
                    ErrorCode::InvalidContent
                },
                message,
                provider: "smtp".into(),
                provider_code: String::new(),
                retryable,
            };
            if retryable {
                SendFailure::retryable(error, None)
            } else {
                SendFailure::permanent(error)
            }
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| failure(false, format!("attachment {url}: {e}")))?;
        if !self.account.fetch_private_urls {
            check_literal(&parsed).map_err(|e| failure(false, format!("attachment {url}: {e}")))?;
        }
        let response = self.http.get(parsed).send().await.map_err(|e| {
            // A name with only private addresses is refused for good, not retried.
            let causes: Vec<String> =
                std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .map(|s| s.to_string())
                    .collect();
            let refused = causes.iter().any(|c| c.contains("public hosts only"));
            failure(!refused, format!("attachment {url}: {e}: {}", causes.join(": ")))
        })?;
        let status = response.status();
        if !status.is_success() {
            let retryable = status.is_server_error() || status.as_u16() == 429;
            return Err(failure(retryable, format!("attachment {url}: HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > budget) {
            return Err(SendFailure::permanent(too_large(self.account.max_attachment_bytes)));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut data = Vec::new();
        let mut response = response;
        while let Some(chunk) =
            response.chunk().await.map_err(|e| failure(true, format!("attachment {url}: {e}")))?
        {
            if (data.len() + chunk.len()) as u64 > budget {
                return Err(SendFailure::permanent(too_large(self.account.max_attachment_bytes)));
            }
            data.extend_from_slice(&chunk);
        }
        Ok((data, content_type))
    }
}

fn too_large(limit: u64) -> ProviderError {
    ProviderError::gateway(ErrorCode::InvalidContent, format!("attachments exceed {limit} bytes"))
}

#[async_trait]
impl Sender for EmailSender {
    fn route(&self) -> &str {
        &self.account.address
    }

    async fn send(&self, message: &Outbound) -> Result<Accepted, SendFailure> {
        let body =
            render::body_of(&message.content, &message.thread).map_err(SendFailure::permanent)?;
        let files = self.resolve(&body.attachments).await?;
        let message_id = render::message_id_for(&message.message_id, &self.account);
        let mime =
            render::compose(&self.account, &message.to, &message_id, &message.thread, &body, files)
                .map_err(SendFailure::permanent)?;
        let response = self.submit(&mime, &message_id).await?;
        let reply = response.first_line().unwrap_or_default();
        Ok(Accepted {
            provider_message_id: message_id,
            provider_status: format!("{} {reply}", response.code()).trim().to_string(),
        })
    }

    fn check(&self, message: &Outbound) -> Result<(), ProviderError> {
        let body = render::body_of(&message.content, &Thread::default())?;
        message.to.parse::<lettre::Address>().map_err(|e| {
            ProviderError::gateway(ErrorCode::InvalidRecipient, format!("invalid recipient: {e}"))
        })?;
        let inline: u64 = body.attachments.iter().map(|a| a.data.len() as u64).sum();
        if inline > self.account.max_attachment_bytes {
            return Err(too_large(self.account.max_attachment_bytes));
        }
        Ok(())
    }

    fn threads_by_reference(&self) -> bool {
        true
    }
}

/// SMTP's answer as an outcome. The provider code is the basic code and, when the server
/// sent one, the enhanced status code (RFC 3463): "550 5.1.1".
pub fn classify(e: smtp::Error) -> SendFailure {
    let text = e.to_string();
    let enhanced = enhanced_status(&text);
    let Some(code) = e.status() else {
        return unreachable(&text, e.is_timeout());
    };
    let basic = code.to_string();
    let provider_code = match enhanced {
        Some(x) => format!("{basic} {x}"),
        None => basic.clone(),
    };
    let class = enhanced.unwrap_or_default();
    let error = |code| ProviderError {
        code,
        message: text.clone(),
        provider: "smtp".into(),
        provider_code: provider_code.clone(),
        retryable: false,
    };
    if e.is_transient() {
        // 421 closes the channel and 4.7.x is policy (often throttling): slow the route.
        if basic == "421" || class.starts_with("4.7.") {
            return SendFailure::rate_limited(error(ErrorCode::RateLimited), None);
        }
        return SendFailure::retryable(error(ErrorCode::ProviderUnavailable), None);
    }
    let code = if basic == "535" { ErrorCode::Authentication } else { permanent(class) };
    SendFailure::permanent(error(code))
}

/// What a permanent failure's enhanced status code (RFC 3463) says went wrong, whether a
/// server replied it or a bounce reported it. Invalid recipients are 5.1.x but for the
/// sender's own address (5.1.7, 5.1.8), which is ours to fix: the recipient's is barred
/// as a hard bounce once the gateway reads it.
pub(super) fn permanent(enhanced: &str) -> ErrorCode {
    match enhanced {
        "5.7.8" => ErrorCode::Authentication,
        "5.1.7" | "5.1.8" => ErrorCode::Rejected,
        c if c.starts_with("5.1.") => ErrorCode::InvalidRecipient,
        "5.3.4" | "5.6.0" => ErrorCode::InvalidContent,
        c if c.starts_with("5.7.") => ErrorCode::Rejected,
        _ => ErrorCode::Undeliverable,
    }
}

/// One SMTP step, bounded by `within`: a server that stops answering is as unreachable
/// as one that never answered.
pub(super) async fn step<T>(
    within: Duration,
    name: &str,
    step: impl std::future::Future<Output = Result<T, smtp::Error>>,
) -> Result<T, SendFailure> {
    match timeout(within, step).await {
        Ok(answer) => answer.map_err(classify),
        Err(_) => Err(unreachable(&format!("SMTP {name} timed out"), true)),
    }
}

/// No reply code: the connection, TLS or the server's framing failed; all retryable.
pub(super) fn unreachable(text: &str, timed_out: bool) -> SendFailure {
    let error = ProviderError {
        code: ErrorCode::ProviderUnavailable,
        message: text.to_string(),
        provider: "smtp".into(),
        provider_code: String::new(),
        retryable: true,
    };
    SendFailure::retryable(error, timed_out.then_some(Duration::from_secs(5)))
}

/// The words of a reply or bounce text in which a status code can stand alone.
pub(super) fn status_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ':' | '(' | ')' | '#' | '-'))
        .map(|word| word.strip_suffix('.').unwrap_or(word))
}

/// The first enhanced status code ("5.1.1") in a server's reply or a bounce's text: a
/// word of its own, as in "550 5.1.1", "550-5.7.1" (a continued reply), "(#5.1.1)" (qmail)
/// or at the end of a sentence.
pub fn enhanced_status(text: &str) -> Option<&str> {
    status_words(text).find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_found_in_reply_text() {
        // Postfix's wording, as the test server answers (scripts/mail-servers.sh).
        let text = "permanent error (550): 5.1.1 <x@y.test>: Recipient address rejected";
        assert_eq!(enhanced_status(text), Some("5.1.1"));
        assert_eq!(enhanced_status("transient error (450): 4.2.0 <a@b>: busy"), Some("4.2.0"));
        assert_eq!(enhanced_status("version 1.2.3 of 6.1.1"), None);
        assert_eq!(enhanced_status("host [192.0.2.10]: 550-5.7.1 relay denied"), Some("5.7.1"));
        assert_eq!(enhanced_status("no mailbox by that name. (#5.1.1)"), Some("5.1.1"));
        assert_eq!(enhanced_status("it failed with 4.4.7."), Some("4.4.7"));
        assert_eq!(enhanced_status("from 192.0.2.1 and 5.1.1.4"), None);
        assert_eq!(enhanced_status("no code here"), None);
    }

    #[test]
    fn only_the_recipients_address_problems_are_invalid_recipients() {
        // RFC 3463 3.2: x.1.1 bad destination mailbox, x.1.2 bad destination system,
        // x.1.3 bad destination syntax, x.1.10 null MX (RFC 7505); x.1.7 and x.1.8 are the
        // sender's address.
        for status in ["5.1.1", "5.1.2", "5.1.3", "5.1.10"] {
            assert_eq!(permanent(status), ErrorCode::InvalidRecipient, "{status}");
        }
        assert_eq!(permanent("5.1.7"), ErrorCode::Rejected);
        assert_eq!(permanent("5.1.8"), ErrorCode::Rejected);
        assert_eq!(permanent("5.7.1"), ErrorCode::Rejected);
        assert_eq!(permanent("5.7.8"), ErrorCode::Authentication);
        assert_eq!(permanent("5.2.2"), ErrorCode::Undeliverable);
        assert_eq!(permanent("5.6.0"), ErrorCode::InvalidContent);
    }
}
