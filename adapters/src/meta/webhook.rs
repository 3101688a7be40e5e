//! Meta webhooks for all three channels: the `hub.*` subscription handshake, and signed
//! POST batches parsed defensively: an entry or change we cannot read is counted and
//! skipped, never fatal to the rest of the batch.

use bytes::Bytes;
use serde_json::Value;

use crate::contract::{Parsed, WebhookAck, WebhookError, WebhookHandler, WebhookRequest};

use super::config::MetaAccount;
use super::{messenger, signature, whatsapp};

pub struct MetaWebhooks {
    app_secret: String,
    verify_token: String,
}

impl MetaWebhooks {
    pub fn new(account: &MetaAccount) -> Self {
        Self::with_secrets(&account.app_secret, &account.verify_token)
    }

    /// Webhooks need only the app's secret (signatures) and the handshake's token.
    pub fn with_secrets(app_secret: &str, verify_token: &str) -> Self {
        MetaWebhooks { app_secret: app_secret.to_string(), verify_token: verify_token.to_string() }
    }
}

impl WebhookHandler for MetaWebhooks {
    fn handle(&self, request: &WebhookRequest) -> Result<Parsed, WebhookError> {
        let header = request
            .header("x-hub-signature-256")
            .ok_or(WebhookError::Signature("missing X-Hub-Signature-256"))?;
        if !signature::verify(&self.app_secret, &request.body, header) {
            return Err(WebhookError::Signature("X-Hub-Signature-256 does not match"));
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::Malformed(format!("JSON body: {e}")))?;
        let entries = body["entry"]
            .as_array()
            .ok_or_else(|| WebhookError::Malformed("no entry array".into()))?;
        let mut events = Vec::new();
        let mut ignored = 0;
        match body["object"].as_str() {
            Some("whatsapp_business_account") => {
                for change in
                    entries.iter().flat_map(|e| e["changes"].as_array().into_iter().flatten())
                {
                    if change["field"] == "messages" {
                        ignored += whatsapp::parse_value(&change["value"], &mut events);
                    } else {
                        ignored += 1;
                    }
                }
            }
            Some("page") | Some("instagram") => {
                for entry in entries {
                    match entry["messaging"].as_array() {
                        Some(items) => items
                            .iter()
                            .for_each(|e| ignored += messenger::parse_event(e, &mut events)),
                        None => ignored += 1,
                    }
                }
            }
            other => return Err(WebhookError::Malformed(format!("unknown object {other:?}"))),
        }
        Ok(Parsed {
            events,
            ack: WebhookAck {
                content_type: "text/plain",
                body: Bytes::from_static(b"EVENT_RECEIVED"),
            },
            ignored,
        })
    }

    fn verify_subscription(&self, _hook: &str, query: &str) -> Result<String, WebhookError> {
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| WebhookError::Malformed(format!("query: {e}")))?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("hub.mode") != Some("subscribe") {
            return Err(WebhookError::Malformed("hub.mode must be subscribe".into()));
        }
        let token = get("hub.verify_token").unwrap_or_default();
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(token.as_bytes(), self.verify_token.as_bytes()).into();
        if !matches || self.verify_token.is_empty() {
            return Err(WebhookError::Signature("hub.verify_token does not match"));
        }
        get("hub.challenge")
            .map(str::to_string)
            .ok_or_else(|| WebhookError::Malformed("missing hub.challenge".into()))
    }
}
