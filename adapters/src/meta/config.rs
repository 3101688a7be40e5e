//! One Meta account as the gateway uses it.

use std::time::Duration;

use crate::model::Channel;

#[derive(Clone)]
pub struct MetaAccount {
    pub channel: Channel,
    /// `https://graph.facebook.com`, or a sandbox.
    pub api_base: String,
    /// The Graph API version, `v23.0`.
    pub version: String,
    /// The WhatsApp phone number id, the Page id, or the Instagram account id.
    pub endpoint_id: String,
    pub access_token: String,
    /// Signs webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// What Meta echoes in the subscription handshake.
    pub verify_token: String,
    pub request_timeout: Duration,
    /// WhatsApp and Messenger: how long a send whose answer was lost waits for a webhook
    /// that echoes its id before it is sent again.
    pub lost_send_wait: Duration,
    /// WhatsApp: the WhatsApp Business Account id, which owns the message templates; empty
    /// when not configured.
    pub waba_id: String,
}

impl std::fmt::Debug for MetaAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaAccount")
            .field("channel", &self.channel)
            .field("api_base", &self.api_base)
            .field("version", &self.version)
            .field("endpoint_id", &self.endpoint_id)
            .field("waba_id", &self.waba_id)
            .finish_non_exhaustive()
    }
}
