//! The [`Sender`] for WhatsApp, Messenger and Instagram: encode per channel, POST through
//! the shared Graph client, read the id.

use std::time::Duration;

use async_trait::async_trait;

use crate::contract::{Accepted, Outbound, SendFailure, Sender};
use crate::model::{Channel, Content, ErrorCode, ProviderError};

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
}
