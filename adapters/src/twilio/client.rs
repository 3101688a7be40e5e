//! Sends through `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::contract::{Accepted, MediaDownload, Outbound, SendFailure, Sender};
use crate::http::MediaAuth;
use crate::model::{Channel, Content, ErrorCode, Media, ProviderError, unsupported};

use super::config::{TwilioAccount, TwilioSenderId};
use super::segments::segments;
use super::wire::{self, MessagePage, MessageResource};
use super::{PROVIDER, errors};

pub struct TwilioSender {
    account: TwilioAccount,
    url: String,
    http: reqwest::Client,
}

impl TwilioSender {
    pub fn new(account: TwilioAccount) -> Self {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            account.api_base.trim_end_matches('/'),
            account.account_sid
        );
        let http = crate::http::client(account.request_timeout);
        TwilioSender { account, url, http }
    }

    /// The form body of a create request, in Twilio's field names.
    pub fn form(&self, message: &Outbound) -> Result<Vec<(&'static str, String)>, SendFailure> {
        let mut form: Vec<(&'static str, String)> = Vec::with_capacity(6);
        form.push(("To", message.to.clone()));
        match &self.account.sender {
            TwilioSenderId::From(from) => form.push(("From", from.clone())),
            TwilioSenderId::MessagingService(sid) => {
                form.push(("MessagingServiceSid", sid.clone()))
            }
        }
        match &message.content {
            Content::Text(text) => {
                if text.body.chars().count() > wire::MAX_BODY_CHARS {
                    return Err(invalid(format!(
                        "SMS body has more than {} characters",
                        wire::MAX_BODY_CHARS
                    )));
                }
                form.push(("Body", text.body.clone()));
            }
            Content::Media(media) => {
                let urls: Vec<&str> = media.urls().collect();
                if urls.len() > wire::MAX_MEDIA_URLS {
                    return Err(invalid(format!(
                        "MMS carries at most {} media items, got {}",
                        wire::MAX_MEDIA_URLS,
                        urls.len()
                    )));
                }
                if !media.caption.is_empty() {
                    form.push(("Body", media.caption.clone()));
                }
                if urls.is_empty() {
                    return Err(invalid(
                        "MMS needs a media URL; Twilio cannot send by media id".into(),
                    ));
                }
                form.extend(urls.into_iter().map(|u| ("MediaUrl", u.to_string())));
            }
            other => return Err(SendFailure::permanent(unsupported(other, Channel::Sms))),
        }
        if let Some(url) = &message.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        if let Some(ttl) = message.remaining_ttl {
            let secs = ttl.as_secs().clamp(1, wire::MAX_VALIDITY_PERIOD_SECS);
            form.push(("ValidityPeriod", secs.to_string()));
        }
        Ok(form)
    }
}

fn invalid(message: String) -> SendFailure {
    SendFailure::permanent(ProviderError {
        code: ErrorCode::InvalidContent,
        message,
        provider: PROVIDER.into(),
        provider_code: String::new(),
        retryable: false,
    })
}

#[async_trait]
impl Sender for TwilioSender {
    fn route(&self) -> &str {
        self.account.sender.as_str()
    }

    fn check(&self, message: &Outbound) -> Result<(), ProviderError> {
        self.form(message).map(drop).map_err(|f| f.error)
    }

    fn rate_cost(&self, content: &Content) -> NonZeroU32 {
        match content {
            Content::Text(text) => NonZeroU32::new(segments(&text.body)).unwrap_or(NonZeroU32::MIN),
            // An MMS goes whole, whatever its caption's length.
            _ => NonZeroU32::MIN,
        }
    }

    async fn send(&self, message: &Outbound) -> Result<Accepted, SendFailure> {
        let form = self.form(message)?;
        let (user, password) = self.credentials();
        let response = self
            .http
            .post(&self.url)
            .basic_auth(user, Some(password))
            .form(&form)
            .send()
            .await
            .map_err(|e| errors::classify_transport(&e))?;
        let status = response.status();
        let retry_after = crate::http::retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| errors::classify_transport(&e))?;
        if !status.is_success() {
            return Err(errors::classify_http(status.as_u16(), &body, retry_after));
        }
        let resource: MessageResource = serde_json::from_slice(&body).map_err(|e| {
            // Twilio took it but we cannot read the sid: retrying could send twice, so stop.
            SendFailure::permanent(ProviderError {
                code: ErrorCode::Rejected,
                message: format!("unreadable Twilio answer ({e}); the message may have been sent"),
                provider: PROVIDER.into(),
                provider_code: status.as_u16().to_string(),
                retryable: false,
            })
        })?;
        Ok(Accepted {
            provider_message_id: resource.sid,
            provider_status: resource.status.unwrap_or_default(),
        })
    }

    /// Lists the recipient's latest messages from this sender (Twilio has no lookup by a
    /// client's key) and keeps those with the same body and media count created since the
    /// attempt began, less a minute for the clocks' disagreement. A body Twilio rewrote
    /// (smart encoding, link shortening) matches nothing, and that retry is blind.
    async fn find_sent(
        &self,
        message: &Outbound,
        since: SystemTime,
    ) -> Result<Vec<Accepted>, SendFailure> {
        let form = self.form(message)?;
        let field = |name: &str| form.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        let mut query = vec![("To", message.to.as_str()), ("PageSize", LOOKUP_PAGE)];
        query.extend(field("From").map(|from| ("From", from)));
        let url =
            format!("{}?{}", self.url, serde_urlencoded::to_string(&query).unwrap_or_default());
        let (user, password) = self.credentials();
        let response = self
            .http
            .get(url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .map_err(|e| errors::classify_transport(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| errors::classify_transport(&e))?;
        if !status.is_success() {
            return Err(errors::classify_http(status.as_u16(), &body, None));
        }
        let page: MessagePage = serde_json::from_slice(&body).map_err(|e| {
            SendFailure::retryable(
                ProviderError {
                    code: ErrorCode::ProviderUnavailable,
                    message: format!("unreadable Twilio message list: {e}"),
                    provider: PROVIDER.into(),
                    provider_code: status.as_u16().to_string(),
                    retryable: true,
                },
                None,
            )
        })?;
        let earliest = since.checked_sub(CLOCK_SKEW).unwrap_or(SystemTime::UNIX_EPOCH);
        let media = form.iter().filter(|(k, _)| *k == "MediaUrl").count().to_string();
        let found = page
            .messages
            .into_iter()
            .filter(|m| {
                m.direction.as_deref() == Some("outbound-api")
                    && m.to.as_deref() == Some(message.to.as_str())
                    && m.body.as_deref().unwrap_or_default() == field("Body").unwrap_or_default()
                    && m.num_media.as_deref().unwrap_or("0") == media
                    && match field("MessagingServiceSid") {
                        Some(service) => m.messaging_service_sid.as_deref() == Some(service),
                        None => m.from.as_deref() == field("From"),
                    }
            })
            .filter(|m| {
                m.date_created
                    .as_deref()
                    .and_then(wire::parse_date)
                    .is_some_and(|at| at >= earliest)
            })
            .map(|m| Accepted {
                provider_message_id: m.sid,
                provider_status: m.status.unwrap_or_default(),
            })
            .collect();
        Ok(found)
    }

    /// Deletes the Media resources of an inbound MMS (`DELETE .../Media/{Sid}.json`, 204;
    /// Twilio keeps media until deleted). A URL elsewhere than the account's API host is not
    /// one Twilio lets us delete; one already gone (404) is done.
    async fn delete_media(&self, media: &Media) -> Result<(), ProviderError> {
        let ours = reqwest::Url::parse(&self.account.api_base).ok().map(|u| u.origin());
        let (user, password) = self.credentials();
        for url in media.urls() {
            let on_api = reqwest::Url::parse(url).is_ok_and(|u| Some(u.origin()) == ours);
            if !on_api || !url.contains("/Media/ME") {
                continue;
            }
            let response = self
                .http
                .delete(format!("{url}.json"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(|e| errors::classify_transport(&e).error)?;
            let status = response.status();
            if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let body = response.bytes().await.map_err(|e| errors::classify_transport(&e).error)?;
            return Err(errors::classify_http(status.as_u16(), &body, None).error);
        }
        Ok(())
    }

    /// An inbound MMS's `MediaUrl{N}`, with the account's credentials when it is on the
    /// account's API host (needed once "HTTP Basic auth for media" is on; Twilio then
    /// redirects to a short-lived URL elsewhere, which gets none).
    async fn fetch_media(
        &self,
        media: &Media,
        index: usize,
    ) -> Result<MediaDownload, ProviderError> {
        let url = media.urls().nth(index).ok_or_else(|| {
            ProviderError::gateway(ErrorCode::InvalidContent, "this media has no such item")
        })?;
        let ours = |u: &str| reqwest::Url::parse(u).map(|u| u.origin()).ok();
        let (user, password) = self.credentials();
        let auth = match ours(url) {
            Some(origin) if Some(&origin) == ours(&self.account.api_base).as_ref() => {
                MediaAuth::Basic { user, password }
            }
            _ => MediaAuth::None,
        };
        crate::http::fetch_media(url, &auth, PROVIDER).await
    }
}

/// The recipient's latest messages a lookup reads: more than a sender sends one person
/// between an attempt and its retry.
const LOOKUP_PAGE: &str = "50";
/// How far Twilio's clock may be behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

impl TwilioSender {
    fn credentials(&self) -> (&str, &str) {
        match &self.account.api_key {
            Some((sid, secret)) => (sid.as_str(), secret.as_str()),
            None => (self.account.account_sid.as_str(), self.account.auth_token.as_str()),
        }
    }
}
