//! Any bytes as a `SendMessageRequest`: the checks `SendMessage` runs before it touches the
//! store answer a reason or pass, never panic, and content that passes comes back from the
//! model exactly as sent (what `GetMessage` answers is what was stored).
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnigate::api::{convert, validate};
use omnigate::contacts::normalize;
use omnigate_adapters::Channel;
use omnigate_proto::v1 as pb;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Ok(request) = pb::SendMessageRequest::decode(bytes) else { return };
    let _ = validate::idempotency_key(&request.idempotency_key);
    let _ = validate::metadata(request.metadata.iter());
    let now = omnigate::model::now_ms();
    if let Ok(Some(at)) = validate::send_at(request.send_at.as_ref().map(convert::millis), now) {
        assert!(at > now, "a time to wait for is in the future");
    }
    for channel in Channel::ALL {
        if let Ok(identity) = normalize(channel, &request.to) {
            // A normalised address is its own normal form: threading keys on it.
            let again = normalize(channel, &identity.address).expect("normal form is valid");
            assert_eq!(again.address, identity.address);
        }
    }
    let Ok(content) = convert::content_from_pb(request.content) else { return };
    if validate::content(&content).is_err() {
        return;
    }
    let back = convert::content_from_pb(Some(convert::content_to_pb(&content)))
        .expect("the gateway's own proto content converts");
    assert_eq!(back, content);
});
