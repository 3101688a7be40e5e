//! Any form body Twilio could post to a status or inbound hook, correctly signed so that
//! parsing is reached: it answers events or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::contract::{WebhookError, WebhookEvent, WebhookHandler, WebhookRequest};
use omnigate_adapters::twilio::{signature, webhook::TwilioWebhooks};

const URL: &str = "https://gw.example.com/webhooks/twilio/main/status";

fuzz_target!(|input: (bool, &[u8])| {
    let (inbound, body) = input;
    // Twilio signs the URL and the sorted form parameters, so sign what the body decodes to.
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return;
    };
    let request = WebhookRequest {
        public_url: URL.into(),
        hook: if inbound { "inbound" } else { "status" }.into(),
        headers: [("x-twilio-signature".to_string(), signature::sign("tok", URL, &params))].into(),
        body: body.to_vec().into(),
    };
    match TwilioWebhooks::new("tok").handle(&request) {
        Ok(parsed) => {
            for event in &parsed.events {
                match event {
                    WebhookEvent::Status(s) => assert!(!s.provider_message_id.is_empty()),
                    WebhookEvent::Inbound(m) => assert!(!m.from.is_empty()),
                    _ => {}
                }
            }
        }
        Err(WebhookError::Signature(why)) => panic!("a correctly signed body was refused: {why}"),
        Err(_) => {}
    }
});
