//! The email [`Sender`]: renders MIME, submits over a pooled lettre transport, and maps
//! SMTP replies to outcomes (4xx transient, 5xx permanent; the basic and enhanced codes are
//! kept verbatim as the provider code).

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{
    ClientId, MailBodyParameter, MailParameter, RcptParameter,
};
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::contract::{Accepted, Outbound, SendFailure, Sender, Thread};
use crate::model::{Attachment, ErrorCode, ProviderError};

use super::config::{EmailAccount, Security};
use super::public_only::{PublicOnly, check_literal, redirects};
use super::render::{self, File};

pub struct EmailSender {
    account: EmailAccount,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// TLS settings for connections opened outside the pool (delivery reports).
    tls: Option<TlsParameters>,
    http: reqwest::Client,
}

impl EmailSender {
    /// Fails on settings that can never work (an unreadable CA file, TLS without a host).
    pub fn new(account: EmailAccount) -> Result<Self, String> {
        let smtp = &account.smtp;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(smtp.timeout))
            .pool_config(PoolConfig::new().max_size(smtp.pool_size.max(1)));
        let mut tls = None;
        if smtp.security != Security::None {
            let mut params = TlsParameters::builder(smtp.host.clone());
            if let Some(path) = &account.ca_file {
                for cert in super::tls::read_pem(path)? {
                    let cert = Certificate::from_der(cert.to_vec()).map_err(|e| e.to_string())?;
                    params = params.add_root_certificate(cert);
                }
            }
            let params = params.build_rustls().map_err(|e| format!("smtp tls: {e}"))?;
            tls = Some(params.clone());
            builder = builder.tls(match smtp.security {
                Security::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if !smtp.username.is_empty() {
            builder = builder
                .credentials(Credentials::new(smtp.username.clone(), smtp.password.clone()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(EmailSender {
            tls,
            transport: builder.build(),
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

    /// One submission on a connection of its own, asking for delivery status notifications
    /// (RFC 3461) for the recipient, identified by our Message-ID (ENVID).
    async fn send_with_reports(
        &self,
        mime: &lettre::Message,
        message_id: &str,
    ) -> Result<Response, smtp::Error> {
        let smtp = &self.account.smtp;
        let hello = ClientId::default();
        let implicit = (smtp.security == Security::Tls).then(|| self.tls.clone()).flatten();
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (smtp.host.as_str(), smtp.port),
            Some(smtp.timeout),
            &hello,
            implicit,
            None,
        )
        .await?;
        if smtp.security == Security::StartTls
            && let Some(tls) = self.tls.clone()
        {
            conn.starttls(tls, &hello).await?;
        }
        if !smtp.username.is_empty() {
            let credentials = Credentials::new(smtp.username.clone(), smtp.password.clone());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await?;
        }
        let param = |keyword: &str, value: String| MailParameter::Other {
            keyword: keyword.into(),
            value: Some(value),
        };
        let raw = mime.formatted();
        let mut mail = vec![param("RET", "HDRS".into()), param("ENVID", message_id.into())];
        if !raw.is_ascii() {
            mail.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let envelope = mime.envelope();
        conn.command(Mail::new(envelope.from().cloned(), mail)).await?;
        for to in envelope.to() {
            let notify = vec![
                RcptParameter::Other {
                    keyword: "NOTIFY".into(),
                    value: Some("SUCCESS,FAILURE,DELAY".into()),
                },
                RcptParameter::Other {
                    keyword: "ORCPT".into(),
                    value: Some(format!("rfc822;{to}")),
                },
            ];
            conn.command(Rcpt::new(to.clone(), notify)).await?;
        }
        conn.command(Data).await?;
        let response = conn.message(&raw).await?;
        let _ = conn.quit().await;
        Ok(response)
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
        let response = if self.account.smtp.request_delivery_reports {
            self.send_with_reports(&mime, &message_id).await
        } else {
            self.transport.send(mime).await
        }
        .map_err(classify)?;
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
        // No reply code: the connection, TLS or the server's framing failed; all retryable.
        let error = ProviderError {
            code: ErrorCode::ProviderUnavailable,
            message: text,
            provider: "smtp".into(),
            provider_code: String::new(),
            retryable: true,
        };
        return SendFailure::retryable(error, e.is_timeout().then_some(Duration::from_secs(5)));
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
    let code = match (basic.as_str(), class) {
        ("535", _) | (_, "5.7.8") => ErrorCode::Authentication,
        (_, c) if c.starts_with("5.1.") => ErrorCode::InvalidRecipient,
        (_, "5.3.4") | (_, "5.6.0") => ErrorCode::InvalidContent,
        (_, c) if c.starts_with("5.7.") => ErrorCode::Rejected,
        _ => ErrorCode::Undeliverable,
    };
    SendFailure::permanent(error(code))
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
}
