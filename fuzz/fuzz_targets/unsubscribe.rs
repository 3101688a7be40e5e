//! One-click unsubscribe links on hostile input: any token is refused or names the address
//! it was signed for, and every address, whatever its characters, round-trips through its
//! own link and through no other account's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate_adapters::email::unsubscribe::{OneClick, verify};

const SECRET: &str = "fuzzing secret, long enough";

fuzz_target!(|input: (&str, &str)| {
    let (token, address) = input;
    if let Some(named) = verify(SECRET, token) {
        let signed = OneClick { base_url: String::new(), secret: SECRET.into() }.link(&named);
        assert_eq!(signed.trim_start_matches('/'), token, "only the account's own link verifies");
    }
    let link = OneClick { base_url: "https://gw.example/u/a".into(), secret: SECRET.into() }
        .link(address);
    let token = link.rsplit_once('/').map(|(_, t)| t).unwrap_or_default();
    assert_eq!(verify(SECRET, token).as_deref(), Some(address));
    assert_eq!(verify("another account's secret!", token), None);
});
