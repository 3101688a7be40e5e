//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the bytes behind a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes from the operating system.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(format!("{PREFIX}{}", STANDARD.encode(key)))
}

/// The HMAC key of a secret; the spec allows 24 to 64 bytes.
pub fn key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(PREFIX).ok_or("a webhook secret starts with whsec_")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("a webhook secret is base64 after whsec_: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("a webhook secret holds 24 to 64 bytes, not {}", key.len()));
    }
    Ok(key)
}

pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and the svix libraries' tests).
    #[test]
    fn matches_the_specification_example() {
        let k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&k, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(key("whsec_AAAA").is_err(), "too short");
        let fresh = generate_secret().expect("os randomness");
        assert_eq!(key(&fresh).expect("valid").len(), 32);
    }
}
