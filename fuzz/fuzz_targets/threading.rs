//! The threading code on hostile text: quoted-reply trimming, subject derivation, and
//! In-Reply-To/References headers of any shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::Thread;
use omnigate_adapters::email::parse::{Source, parse};
use omnigate_adapters::email::{quote, render};

fuzz_target!(|input: (&str, &str, &str)| {
    let (text, subject, header) = input;
    let reply = quote::reply_part(text);
    assert!(text.contains(reply));
    let thread = Thread { subject: subject.to_string(), ..Thread::default() };
    let _ = render::subject_for("", &thread, text);
    let _ = render::strip_reply_prefixes(subject);
    let raw = format!(
        "From: a@example.test\r\nIn-Reply-To: {header}\r\nReferences: {header}\r\n\r\n{text}"
    );
    let source = Source {
        account_address: "shop@omnigate.test",
        fallback_id: "x@omnigate.test".into(),
        url: String::new(),
        max_inline_attachment_bytes: 0,
    };
    let _ = parse(raw.as_bytes(), &source);
});
