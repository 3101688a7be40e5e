//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the bytes behind a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{Millis, Webhook};

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

/// The keys a subscription signs with: its secret's, and for a while after a rotation the
/// one before.
pub struct Keys {
    current: Vec<u8>,
    previous: Option<(Vec<u8>, Millis)>,
}

impl Keys {
    pub fn of(webhook: &Webhook) -> Result<Self, String> {
        let previous = match &webhook.previous {
            // A stored secret that no longer parses only loses its grace, not the deliveries.
            Some(p) => key(&p.secret).ok().map(|k| (k, p.until)),
            None => None,
        };
        Ok(Keys { current: key(&webhook.secret)?, previous })
    }

    /// The `webhook-signature` header: the current secret's signature, then, until the
    /// previous secret expires, its signature too. Standard Webhooks makes the header a
    /// space-delimited list for exactly this, so a receiver accepts either.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8], now: Millis) -> String {
        let mut header = signature(&self.current, id, timestamp, body);
        if let Some((previous, until)) = &self.previous
            && now < *until
        {
            header.push(' ');
            header.push_str(&signature(previous, id, timestamp, body));
        }
        header
    }
}

fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
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

    #[test]
    fn a_rotated_out_secret_signs_beside_the_new_one_until_it_expires() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = generate_secret().expect("os randomness");
        let webhook = Webhook {
            previous: Some(crate::model::PreviousSecret { secret: old.into(), until: 5_000 }),
            ..Webhook::new(
                "whk_1".into(),
                "https://crm.example/hook".into(),
                new.clone(),
                vec![],
                0,
            )
        };
        let keys = Keys::of(&webhook).expect("keys");
        let sign = |secret: &str| signature(&key(secret).expect("key"), "evt_1", 1, b"{}");
        assert_eq!(
            keys.header("evt_1", 1, b"{}", 4_999),
            format!("{} {}", sign(&new), sign(old)),
            "the new secret's signature first, then the old one's, space-delimited"
        );
        assert_eq!(keys.header("evt_1", 1, b"{}", 5_000), sign(&new), "expired");
    }
}
