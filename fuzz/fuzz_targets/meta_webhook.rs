//! Any JSON body Meta could post for WhatsApp, Messenger or Instagram, correctly signed so
//! that parsing is reached: it answers events (skipping what it cannot read) or a clear
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::contract::{WebhookError, WebhookHandler, WebhookRequest};
use omnigate_adapters::meta::{signature, webhook::MetaWebhooks};

fuzz_target!(|body: &[u8]| {
    let request = WebhookRequest {
        public_url: "https://gw/webhooks/meta/wa/events".into(),
        hook: "events".into(),
        headers: [("x-hub-signature-256".to_string(), signature::sign("app-secret", body))].into(),
        body: body.to_vec().into(),
    };
    if let Err(WebhookError::Signature(why)) =
        MetaWebhooks::with_secrets("app-secret", "verify-me").handle(&request)
    {
        panic!("a correctly signed body was refused: {why}");
    }
});
