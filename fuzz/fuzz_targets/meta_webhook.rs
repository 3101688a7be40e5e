//! Any JSON body Meta could post for WhatsApp, Messenger or Instagram, correctly signed so
//! that parsing is reached: it answers events (skipping what it cannot read) or a clear
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::Channel;
use omnigate_adapters::contract::{WebhookError, WebhookHandler, WebhookRequest};
use omnigate_adapters::meta::config::MetaAccount;
use omnigate_adapters::meta::{signature, webhook::MetaWebhooks};

fuzz_target!(|body: &[u8]| {
    let account = MetaAccount {
        channel: Channel::Whatsapp,
        api_base: String::new(),
        version: "v23.0".into(),
        endpoint_id: "106540352242922".into(),
        access_token: "t".into(),
        app_secret: "app-secret".into(),
        verify_token: "verify-me".into(),
        request_timeout: std::time::Duration::from_secs(1),
    };
    let request = WebhookRequest {
        public_url: "https://gw/webhooks/meta/wa/events".into(),
        hook: "events".into(),
        headers: [("x-hub-signature-256".to_string(), signature::sign("app-secret", body))].into(),
        body: body.to_vec().into(),
    };
    if let Err(WebhookError::Signature(why)) = MetaWebhooks::new(&account).handle(&request) {
        panic!("a correctly signed body was refused: {why}");
    }
});
