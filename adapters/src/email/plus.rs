//! Reply addresses that name their conversation (shared/providers/DETAILS.md 5.2:
//! "`Reply-To: reply+<conversation-token>@your-domain` (plus-addressing), so that replies
//! can be routed even when clients drop headers"). The account's own address with the
//! conversation's id as its detail, `shop+cnv_…@example.com`, reaches the account's
//! mailbox on any server that delivers subaddresses (RFC 5233), and the reply carries it
//! back in its `To`, or in the `Delivered-To` its server adds.

const DELIMITER: char = '+';
/// RFC 5321 4.5.3.1.1: the longest local part a server must accept.
const MAX_LOCAL_PART: usize = 64;

/// The address replies to `conversation` go to, for the account at `account`; none when
/// it would not fit in a local part, or the id is no token this module reads back.
pub fn reply_address(account: &str, conversation: &str) -> Option<String> {
    let (local, domain) = account.rsplit_once('@')?;
    let local = format!("{local}{DELIMITER}{conversation}");
    (is_token(conversation) && local.len() <= MAX_LOCAL_PART).then(|| format!("{local}@{domain}"))
}

/// The conversation `recipient` names, when it is the account's address with a detail.
/// Addresses compare without regard to case, as servers fold them.
pub fn conversation_of(account: &str, recipient: &str) -> Option<String> {
    let (local, domain) = account.rsplit_once('@')?;
    let recipient = recipient.trim().trim_start_matches('<').trim_end_matches('>');
    let (their_local, their_domain) = recipient.rsplit_once('@')?;
    let (base, token) = their_local.split_once(DELIMITER)?;
    let ours = base.eq_ignore_ascii_case(local) && their_domain.eq_ignore_ascii_case(domain);
    let token = token.to_ascii_lowercase();
    (ours && is_token(&token)).then_some(token)
}

/// Ids the gateway makes ("cnv_" and hex): anything else in a detail is someone's own use
/// of subaddressing, not ours.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LOCAL_PART
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "cnv_0195f1c2a3b47c3d8e9f0a1b2c3d4e5f";

    #[test]
    fn a_reply_address_reads_back_as_its_conversation() {
        let address = reply_address("shop@omnigate.test", ID).expect("fits");
        assert_eq!(address, format!("shop+{ID}@omnigate.test"));
        assert_eq!(conversation_of("shop@omnigate.test", &address).as_deref(), Some(ID));
        // Servers fold case, and headers may bracket the address.
        let folded = format!("<SHOP+{}@Omnigate.TEST>", ID.to_uppercase());
        assert_eq!(conversation_of("shop@omnigate.test", &folded).as_deref(), Some(ID));
    }

    #[test]
    fn only_our_address_with_one_of_our_ids_names_a_conversation() {
        let ours = "shop@omnigate.test";
        assert_eq!(conversation_of(ours, &format!("shop+{ID}@elsewhere.test")), None);
        assert_eq!(conversation_of(ours, &format!("other+{ID}@omnigate.test")), None);
        assert_eq!(conversation_of(ours, "shop@omnigate.test"), None);
        assert_eq!(conversation_of(ours, "shop+@omnigate.test"), None);
        assert_eq!(conversation_of(ours, "shop+news.letter@omnigate.test"), None);
        assert_eq!(conversation_of(ours, "not an address"), None);
    }

    #[test]
    fn no_reply_address_longer_than_a_local_part_may_be() {
        let long = format!("{}@omnigate.test", "a".repeat(30));
        assert_eq!(reply_address(&long, ID), None);
        assert_eq!(reply_address("shop@omnigate.test", "has space"), None);
    }
}
