//! Identity normalisation: one person's address always stored the same way, so that the
//! same person is found whatever way a provider or a client spells them.

use omnigate_adapters::Channel;

use crate::model::Identity;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{channel} address {address:?}: {reason}")]
pub struct InvalidIdentity {
    pub channel: Channel,
    pub address: String,
    pub reason: &'static str,
}

/// Phones become E.164 (`+` and digits; spaces, dots, dashes and brackets dropped, a
/// leading `00` read as `+`); email addresses are trimmed and lower-cased (domains are
/// case-insensitive, and providers treat local parts so in practice); Meta ids are digits.
pub fn normalize(channel: Channel, address: &str) -> Result<Identity, InvalidIdentity> {
    let bad = |reason| InvalidIdentity { channel, address: address.to_string(), reason };
    let trimmed = address.trim();
    let normalized = match channel {
        Channel::Sms | Channel::Whatsapp => {
            let compact: String =
                trimmed.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
            let digits = match compact.strip_prefix('+') {
                Some(d) => d.to_string(),
                None => compact
                    .strip_prefix("00")
                    .ok_or_else(|| bad("needs a leading + and country code (E.164)"))?
                    .to_string(),
            };
            if !(8..=15).contains(&digits.len())
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.starts_with('0')
            {
                return Err(bad("is not an E.164 number (+ and 8 to 15 digits)"));
            }
            format!("+{digits}")
        }
        Channel::Email => {
            let (local, domain) = trimmed.rsplit_once('@').ok_or_else(|| bad("has no @"))?;
            if local.is_empty()
                || domain.is_empty()
                || !domain.contains('.')
                || trimmed.chars().any(char::is_whitespace)
            {
                return Err(bad("is not an email address"));
            }
            trimmed.to_lowercase()
        }
        Channel::Messenger | Channel::Instagram => {
            if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("is not a Meta user id (digits)"));
            }
            trimmed.to_string()
        }
    };
    Ok(Identity { channel, address: normalized })
}

/// SMS and WhatsApp reach a person through the same phone number: an identity on one is
/// evidence of the person on the other.
pub fn phone_sibling(identity: &Identity) -> Option<Identity> {
    let channel = match identity.channel {
        Channel::Sms => Channel::Whatsapp,
        Channel::Whatsapp => Channel::Sms,
        _ => return None,
    };
    Some(Identity { channel, address: identity.address.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_normalise_alike() {
        for raw in ["+1 (415) 555-0100", "+14155550100", "0014155550100", " +1.415.555.0100 "] {
            assert_eq!(normalize(Channel::Sms, raw).expect(raw).address, "+14155550100", "{raw}");
        }
        assert_eq!(
            normalize(Channel::Email, " Ann.Lee@Example.COM ").expect("email").address,
            "ann.lee@example.com"
        );
        assert!(normalize(Channel::Sms, "4155550100").is_err());
        assert!(normalize(Channel::Email, "ann@localhost").is_err());
        assert!(normalize(Channel::Messenger, "12ab").is_err());
        let id = normalize(Channel::Whatsapp, "+14155550100").expect("wa");
        assert_eq!(
            phone_sibling(&id),
            Some(Identity { channel: Channel::Sms, address: "+14155550100".into() })
        );
        let sms = normalize(Channel::Sms, "+14155550100").expect("sms");
        assert_eq!(phone_sibling(&sms).map(|i| i.channel), Some(Channel::Whatsapp));
        let email = normalize(Channel::Email, "ann@example.com").expect("email");
        assert_eq!(phone_sibling(&email), None, "only phones have siblings");
    }

    /// Each rule of E.164 and of an address on its own: one broken rule is enough.
    #[test]
    fn each_rule_refuses_on_its_own() {
        // 8 and 15 digits are E.164's bounds; 7, 16, a letter or a leading 0 are not.
        assert!(normalize(Channel::Sms, "+12345678").is_ok());
        assert!(normalize(Channel::Sms, "+123456789012345").is_ok());
        for raw in ["+1234567", "+1234567890123456", "+1415555010x", "+04155550100"] {
            let e = normalize(Channel::Sms, raw).expect_err(raw);
            assert!(e.reason.contains("E.164"), "{raw}: {e}");
        }
        for raw in ["@example.com", "ann@", "ann@example", "ann lee@example.com"] {
            let e = normalize(Channel::Email, raw).expect_err(raw);
            assert_eq!(e.reason, "is not an email address", "{raw}");
        }
        assert!(normalize(Channel::Instagram, "  ").is_err());
        assert_eq!(
            normalize(Channel::Instagram, " 17841400000 ").expect("id").address,
            "17841400000"
        );
    }
}
