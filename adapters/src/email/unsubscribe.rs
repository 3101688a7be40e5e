//! One-click unsubscribe (RFC 8058): each email carries `List-Unsubscribe` with an HTTPS
//! link of its own and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and the mail
//! client POSTs to that link when the person clicks "unsubscribe". The link names the
//! recipient, signed with the account's secret, so that nobody can unsubscribe anyone
//! else and the gateway need store nothing per email.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The value RFC 8058 section 3.1 gives `List-Unsubscribe-Post`.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// Where an account's unsubscribe links point, and the key that signs them.
#[derive(Clone)]
pub struct OneClick {
    /// The links' common start: `{public_url}/unsubscribe/{account}`.
    pub base_url: String,
    pub secret: String,
}

impl std::fmt::Debug for OneClick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneClick").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl OneClick {
    /// The link that unsubscribes `recipient`: `{base_url}/{address}.{signature}`.
    pub fn link(&self, recipient: &str) -> String {
        let address = URL_SAFE_NO_PAD.encode(recipient);
        let signature = URL_SAFE_NO_PAD.encode(sign(&self.secret, recipient));
        format!("{}/{address}.{signature}", self.base_url)
    }
}

/// The recipient a link's last segment unsubscribes, when `secret` signed it.
pub fn verify(secret: &str, token: &str) -> Option<String> {
    let (address, signature) = token.split_once('.')?;
    let address = String::from_utf8(URL_SAFE_NO_PAD.decode(address).ok()?).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    bool::from(sign(secret, &address).as_slice().ct_eq(&signature)).then_some(address)
}

fn sign(secret: &str, recipient: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"omnigate-unsubscribe\0");
    mac.update(recipient.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::{OneClick, verify};

    fn one_click(secret: &str) -> OneClick {
        OneClick { base_url: "https://gw.example/unsubscribe/mail".into(), secret: secret.into() }
    }

    /// Configs and errors are logged with `{:?}`: the signing secret must not show.
    #[test]
    fn debug_output_shows_the_base_url_but_not_the_secret() {
        let shown = format!("{:?}", one_click("s3cret-value"));
        assert!(shown.contains("https://gw.example/unsubscribe/mail"), "{shown}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }

    #[test]
    fn a_link_names_its_recipient_under_the_accounts_signature() {
        let link = one_click("s3cret").link("ann@example.com");
        let token = link.strip_prefix("https://gw.example/unsubscribe/mail/").expect("base");
        assert!(!token.contains('/') && !token.contains('=') && !token.contains('@'), "{token}");
        assert_eq!(verify("s3cret", token).as_deref(), Some("ann@example.com"));
        assert_eq!(verify("other", token), None, "another account's secret");
        let bob = one_click("s3cret").link("bob@example.com");
        let bob_signature = bob.rsplit_once('.').expect("signature").1;
        let ann_address = token.split_once('.').expect("address").0;
        assert_eq!(verify("s3cret", &format!("{ann_address}.{bob_signature}")), None, "spliced");
        for junk in ["", ".", "x.y", "%%.%%", "YW5u"] {
            assert_eq!(verify("s3cret", junk), None, "{junk:?}");
        }
    }
}
