//! The [`Sender`] for WhatsApp, Messenger and Instagram: encode per channel, POST through
//! the shared Graph client, read the id.

use std::time::Duration;

use async_trait::async_trait;

use crate::contract::{Accepted, MediaDownload, Outbound, SendFailure, Sender, TemplatePage};
use crate::http::MediaAuth;
use crate::model::{Channel, Content, ErrorCode, Media, ProviderError};

use super::config::MetaAccount;
use super::graph::GraphClient;
use super::{PROVIDER, messenger, whatsapp};

/// The customer-service window: free-form messages within 24 h of the person's last one.
pub const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Messenger's and Instagram's HUMAN_AGENT tag: a person may answer for 7 days.
pub const HUMAN_AGENT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct MetaSender {
    account: MetaAccount,
    graph: GraphClient,
    path: String,
}

impl MetaSender {
    pub fn new(account: MetaAccount) -> Self {
        let graph = GraphClient::new(&account);
        let path = format!("{}/messages", account.endpoint_id);
        MetaSender { account, graph, path }
    }

    pub fn encode(&self, message: &Outbound) -> Result<serde_json::Value, ProviderError> {
        match self.account.channel {
            Channel::Whatsapp => {
                let mut body =
                    whatsapp::encode(&message.to, &message.content, message.reply_to.as_deref())?;
                // Echoed in the status webhooks, so a send whose answer was lost is still
                // known by its receipts.
                if message.message_id.len() <= whatsapp::MAX_CALLBACK_DATA {
                    body["biz_opaque_callback_data"] = message.message_id.as_str().into();
                }
                Ok(body)
            }
            channel => {
                if message.reply_to.is_some() {
                    return Err(ProviderError::gateway(
                        ErrorCode::InvalidContent,
                        format!("replies that quote a message cannot be sent on {channel}"),
                    ));
                }
                let mut body = messenger::encode(
                    channel,
                    &message.to,
                    &message.content,
                    message.tag.as_deref(),
                )?;
                // Echoed in `message_echoes` (Messenger only; a reaction has no message).
                if channel == Channel::Messenger
                    && body["message"].is_object()
                    && message.message_id.len() <= messenger::MAX_METADATA
                {
                    body["message"]["metadata"] = message.message_id.as_str().into();
                }
                Ok(body)
            }
        }
    }
}

#[async_trait]
impl Sender for MetaSender {
    fn route(&self) -> &str {
        &self.account.endpoint_id
    }

    fn check(&self, message: &Outbound) -> Result<(), ProviderError> {
        self.encode(message).map(drop)
    }

    async fn send(&self, message: &Outbound) -> Result<Accepted, SendFailure> {
        let body = self.encode(message).map_err(|e| {
            SendFailure::permanent(ProviderError { provider: PROVIDER.into(), ..e })
        })?;
        let answer = self.graph.post(&self.path, &body).await?;
        let id = match self.account.channel {
            Channel::Whatsapp => whatsapp::sent_id(&answer),
            _ => messenger::sent_id(&answer),
        };
        let id = id.ok_or_else(|| {
            SendFailure::permanent(ProviderError {
                code: ErrorCode::Rejected,
                message: "the Graph answer carries no message id; the message may have been sent"
                    .into(),
                provider: PROVIDER.into(),
                provider_code: String::new(),
                retryable: false,
            })
        })?;
        Ok(Accepted { provider_message_id: id, provider_status: "accepted".into() })
    }

    fn unsure_wait(&self) -> Option<Duration> {
        // Instagram echoes carry nothing of ours to wait for.
        (self.account.channel != Channel::Instagram).then_some(self.account.lost_send_wait)
    }

    fn service_window(&self, content: &Content, tag: Option<&str>) -> Option<Duration> {
        match (self.account.channel, content, tag) {
            (Channel::Whatsapp, Content::Template(_), _) => None,
            (Channel::Whatsapp, _, _) => Some(SERVICE_WINDOW),
            (_, _, Some("HUMAN_AGENT")) => Some(HUMAN_AGENT_WINDOW),
            (_, _, Some("RESPONSE" | "UPDATE")) => Some(SERVICE_WINDOW),
            // Other tags are Meta's exceptions for updates outside the window.
            (_, _, Some(_)) => None,
            (_, _, None) => Some(SERVICE_WINDOW),
        }
    }

    async fn mark_read(
        &self,
        provider_message_id: &str,
        peer: &str,
        typing: bool,
    ) -> Result<(), ProviderError> {
        let post = |body| async move { self.graph.post(&self.path, &body).await.map(drop) };
        let posted = match self.account.channel {
            Channel::Whatsapp => post(whatsapp::read_receipt(provider_message_id, typing)).await,
            // Messenger and Instagram take one action a request, and mark the conversation
            // seen rather than one message.
            _ => match post(messenger::sender_action(peer, "mark_seen")).await {
                Ok(()) if typing => post(messenger::sender_action(peer, "typing_on")).await,
                done => done,
            },
        };
        posted.map_err(|f| f.error)
    }

    /// `GET /{version}/{waba-id}/message_templates` (OpenAPI
    /// `getTemplateByNameDefaultFields`), paged by Graph's `after` cursor.
    async fn templates(
        &self,
        name: &str,
        limit: u32,
        after: &str,
    ) -> Result<TemplatePage, ProviderError> {
        let waba = &self.account.waba_id;
        if self.account.channel != Channel::Whatsapp || waba.is_empty() {
            return Err(ProviderError::gateway(
                ErrorCode::InvalidContent,
                "templates belong to a WhatsApp Business Account: set the account's waba_id",
            ));
        }
        let limit = limit.to_string();
        let query: Vec<(&str, &str)> =
            [("limit", limit.as_str()), ("after", after), ("name", name)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
        let query = serde_urlencoded::to_string(&query).unwrap_or_default();
        let page = self.graph.get(&format!("{waba}/message_templates?{query}")).await;
        Ok(whatsapp::template_page(&page.map_err(|f| f.error)?))
    }

    /// WhatsApp media by id (`DELETE /{version}/{media-id}`, OpenAPI `deleteMedia`, which
    /// takes ids from media message webhooks); Meta keeps it 30 days otherwise. Messenger and
    /// Instagram attachments have no such call.
    async fn delete_media(&self, media: &Media) -> Result<(), ProviderError> {
        if self.account.channel != Channel::Whatsapp || media.provider_media_id.is_empty() {
            return Ok(());
        }
        let path = self.media_path(&media.provider_media_id)?;
        match self.graph.delete(&path).await {
            Ok(_) => Ok(()),
            Err(f) if f.error.provider_code == GONE => Ok(()),
            Err(f) => Err(f.error),
        }
    }

    /// WhatsApp media by id: the lookup (`GET /{version}/{media-id}`, OpenAPI
    /// `retrieveMediaUrl`) answers a URL valid for 5 minutes that takes the same Bearer
    /// token (`downloadMedia`). Messenger and Instagram attachments carry a URL of their own.
    async fn fetch_media(
        &self,
        media: &Media,
        index: usize,
    ) -> Result<MediaDownload, ProviderError> {
        let no_item =
            || ProviderError::gateway(ErrorCode::InvalidContent, "this media has no such item");
        if media.url.is_empty() && !media.provider_media_id.is_empty() {
            if index > 0 {
                return Err(no_item());
            }
            return self.fetch_by_id(&media.provider_media_id).await;
        }
        let url = media.urls().nth(index).ok_or_else(no_item)?;
        crate::http::fetch_media(url, &MediaAuth::None, PROVIDER).await
    }
}

/// Graph's code and subcode for an object id that does not exist (or no longer does).
const GONE: &str = "100/33";

impl MetaSender {
    /// The Graph path of a media id, limited to this phone number's media.
    fn media_path(&self, id: &str) -> Result<String, ProviderError> {
        // A path segment of ours: an id from a webhook must not reach another Graph path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ProviderError::gateway(
                ErrorCode::InvalidContent,
                format!("{id:?} is not a Graph media id"),
            ));
        }
        Ok(format!("{id}?phone_number_id={}", self.account.endpoint_id))
    }

    async fn fetch_by_id(&self, id: &str) -> Result<MediaDownload, ProviderError> {
        let path = self.media_path(id)?;
        let found =
            self.graph.get(&path).await.map_err(|f| match f.error.provider_code.as_str() {
                // An object id Graph cannot load (the OpenAPI document's example of a bad id):
                // for media a person sent, one Meta no longer keeps (30 days).
                GONE => ProviderError { code: ErrorCode::Expired, ..f.error },
                _ => f.error,
            })?;
        let url = found["url"].as_str().ok_or_else(|| ProviderError {
            code: ErrorCode::Rejected,
            message: "the Graph media lookup answered no url".into(),
            provider: PROVIDER.into(),
            provider_code: String::new(),
            retryable: false,
        })?;
        let token = MediaAuth::Bearer(self.graph.token());
        let mut download = crate::http::fetch_media(url, &token, PROVIDER).await?;
        if download.mime_type.is_empty() {
            download.mime_type = found["mime_type"].as_str().unwrap_or_default().to_string();
        }
        // `file_size` is a string in the OpenAPI document ('303833').
        download.size = download.size.or_else(|| found["file_size"].as_str()?.parse().ok());
        Ok(download)
    }
}
