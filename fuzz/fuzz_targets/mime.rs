//! Any bytes a mailbox can hold go through the inbound parser: it answers a message, a
//! report, an ignore or an error, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::email::parse::{Source, parse};

fuzz_target!(|raw: &[u8]| {
    let source = Source {
        account_address: "shop@omnigate.test",
        fallback_id: "imap-1-1@omnigate.test".into(),
        url: "imap://localhost/INBOX;UIDVALIDITY=1/;UID=1".into(),
        max_inline_attachment_bytes: 64,
    };
    if let Ok(omnigate_adapters::email::Incoming::Message(m)) = parse(raw, &source) {
        // What threading reads and replies echo must be well-formed ids, never raw header.
        let clean = |id: &String| !id.is_empty() && !id.chars().any(char::is_whitespace);
        assert!(m.references.iter().all(clean));
        assert!(m.reply_to.iter().all(clean));
        assert!(clean(&m.provider_message_id));
    }
});
