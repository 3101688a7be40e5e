//! `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token, over the URL Twilio
//! called followed by every POST parameter sorted by name, as name + value. The reference is
//! twilio-python's `RequestValidator`; the test vectors below come from its unit tests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The signature Twilio would send for this URL and form parameters.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Names by code point; a repeated name's values sorted too, duplicates dropped.
    sorted.sort();
    sorted.dedup();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a signature in constant time. Twilio has signed some URLs with the default port
/// and some without, so the reference validator accepts both forms; so do we.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    url_variants(url)
        .iter()
        .any(|u| sign(auth_token, u, params).as_bytes().ct_eq(signature.as_bytes()).into())
}

fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once(':') {
        Some((host, port)) if port == default_port => {
            variants.push(format!("{scheme}://{host}{tail}"))
        }
        Some(_) => {}
        None => variants.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn voice_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    // Vectors from twilio-python tests/unit/test_request_validator.py (shared/providers DETAILS §1.5).
    #[test]
    fn matches_the_reference_vectors() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign("12345", url, &voice_params()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(
            sign("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &voice_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        let dupes = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign("12345", url, &dupes), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn accepts_either_port_form_and_rejects_tampering() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let without = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(verify("12345", with_port, &voice_params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(verify("12345", without, &voice_params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(verify(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &voice_params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // Only the scheme's own port is optional: a signature for the URL without a port
        // does not vouch for a request that reached another one.
        let other_port = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
        assert!(!verify("12345", other_port, &voice_params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
        let mut tampered = voice_params();
        tampered[2].1 = "9999".into();
        assert!(!verify("12345", without, &tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify("wrong", without, &voice_params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    }
}
