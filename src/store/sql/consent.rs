//! Opt-outs: who told an account's sender to stop. An SMS `STOP`, or the provider refusing a
//! send because of one, records it; `START` clears it; acceptance reads it, so that a send
//! the provider must refuse fails at once with the reason instead of costing a call.
//!
//! A hard bounce (an email address its server says does not exist, an SMS number that
//! does not exist or is a landline) is kept beside them as the same bar: each send to a
//! dead address costs the sender's reputation with mailbox providers and carriers (and,
//! for SMS, the message's price), which is what the suppression lists of messaging
//! services are for.

use omnigate_adapters::{Channel, Consent, ErrorCode, ProviderError};

use super::db::{Db, Row, args};
use super::ops::append_event;
use super::people::{self, Party, Resolved};
use crate::model::{Event, EventKind, Identity, Message, Millis, OptOut};
use crate::store::StoreError;

/// Where an address stands with an account, as one change puts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stand {
    /// The person's word: send again (clears every bar of the account).
    OptedIn,
    /// The person's word: send nothing.
    OptedOut,
    /// The person's word on marketing alone (WhatsApp's 131050): reported, no bar.
    MarketingOptedOut,
    /// The provider's word: no such address, or none that takes messages.
    Bounced,
    /// A message came from the address, so it exists: clears a bounce, and nothing else.
    Reachable,
}

impl Stand {
    /// The stand a consent (and whether it concerns marketing alone) records.
    pub fn of((consent, marketing_only): (Consent, bool)) -> Stand {
        match consent {
            Consent::OptedIn => Stand::OptedIn,
            Consent::OptedOut if marketing_only => Stand::MarketingOptedOut,
            Consent::OptedOut => Stand::OptedOut,
        }
    }
}

/// The error a send from `account` to `address` fails with at acceptance, when a bar
/// stands (an opt-out of marketing alone bars nothing here).
pub fn bar(db: &dyn Db, account: &str, address: &str) -> Result<Option<ProviderError>, StoreError> {
    db.query_opt(
        "SELECT reason, bounced FROM opt_outs WHERE account = $1 AND address = $2 AND marketing_only = 0",
        args![account, address],
    )?
    .map(|row| Ok(refusal(address, account, &row.text(0)?, row.int(1)? != 0)))
    .transpose()
}

/// The opt-outs of every address of contact `id`, oldest first.
pub fn of_contact(db: &dyn Db, id: &str) -> Result<Vec<OptOut>, StoreError> {
    db.query(
        &format!(
            "SELECT {COLUMNS} FROM opt_outs
             WHERE address IN (SELECT address FROM identities WHERE contact_id = $1)
             ORDER BY at, account, address"
        ),
        args![id],
    )?
    .iter()
    .map(to_opt_out)
    .collect()
}

/// A page of `account`'s bars (every account's when empty), by account and then address,
/// after the pair `after`.
pub fn list(
    db: &dyn Db,
    account: &str,
    after: &(String, String),
    limit: usize,
) -> Result<Vec<OptOut>, StoreError> {
    db.query(
        &format!(
            "SELECT {COLUMNS} FROM opt_outs
             WHERE ($1 = '' OR account = $1) AND (account, address) > ($2, $3)
             ORDER BY account, address LIMIT $4"
        ),
        args![account, &after.0, &after.1, limit],
    )?
    .iter()
    .map(to_opt_out)
    .collect()
}

const COLUMNS: &str = "account, address, reason, at, marketing_only, bounced";

fn to_opt_out(row: &Row) -> Result<OptOut, StoreError> {
    Ok(OptOut {
        account: row.text(0)?,
        address: row.text(1)?,
        reason: row.text(2)?,
        at: row.int(3)?,
        marketing_only: row.int(4)? != 0,
        bounced: row.int(5)? != 0,
    })
}

/// Records where an address stands with an account, and an event when that changes
/// anything (the answer); `reason` says how it came. A repeated bar keeps the first one's
/// time and reason. The person's full opt-out replaces a bounce or an opt-out of marketing
/// alone, and a bounce replaces the latter, never the other way round.
pub fn record(
    db: &dyn Db,
    events: &mut Vec<Event>,
    party: &Party<'_>,
    stand: Stand,
    reason: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let changed = match stand {
        Stand::MarketingOptedOut => db.execute(
            "INSERT INTO opt_outs (account, address, at, reason, marketing_only) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (account, address) DO NOTHING",
            args![party.account, party.address, now, reason],
        )?,
        // A full bar replaces one of marketing alone; the person's opt-out (bounced = 0)
        // also replaces a bounce.
        Stand::OptedOut | Stand::Bounced => db.execute(
            "INSERT INTO opt_outs (account, address, at, reason, marketing_only, bounced) VALUES ($1, $2, $3, $4, 0, $5)
             ON CONFLICT (account, address) DO UPDATE
             SET at = excluded.at, reason = excluded.reason, marketing_only = 0, bounced = excluded.bounced
             WHERE opt_outs.marketing_only <> 0 OR (opt_outs.bounced <> 0 AND excluded.bounced = 0)",
            args![party.account, party.address, now, reason, i64::from(stand == Stand::Bounced)],
        )?,
        Stand::OptedIn => db.execute(
            "DELETE FROM opt_outs WHERE account = $1 AND address = $2",
            args![party.account, party.address],
        )?,
        Stand::Reachable => db.execute(
            "DELETE FROM opt_outs WHERE account = $1 AND address = $2 AND bounced <> 0",
            args![party.account, party.address],
        )?,
    };
    if changed == 0 {
        return Ok(false);
    }
    append_event(
        db,
        events,
        EventKind::ConsentChanged {
            contact_id: party.contact.id.clone(),
            account: party.account.to_string(),
            channel: party.channel,
            address: party.address.to_string(),
            opted_out: matches!(stand, Stand::OptedOut | Stand::MarketingOptedOut | Stand::Bounced),
            reason: reason.to_string(),
            marketing_only: stand == Stand::MarketingOptedOut,
            bounced: matches!(stand, Stand::Bounced | Stand::Reachable),
        },
    )?;
    Ok(true)
}

/// Consent given or withdrawn outside any channel: answers whether it changed anything,
/// and the address's contact, made when the address is new.
pub fn set(
    db: &dyn Db,
    events: &mut Vec<Event>,
    account: &str,
    identity: &Identity,
    stand: Stand,
    reason: &str,
    now: Millis,
) -> Result<(bool, String), StoreError> {
    let contact = people::resolve_contact(db, identity, now)?;
    let party =
        Party { contact: &contact, account, channel: identity.channel, address: &identity.address };
    let changed = record(db, events, &party, stand, reason, now)?;
    Ok((changed, contact.id))
}

/// Records a bar when the provider refused `message` for one. An SMS refusal (Twilio
/// 21610) bars every later send from the sender; WhatsApp's 131050 concerns marketing
/// templates alone, which acceptance cannot tell from others, so it is recorded as an
/// opt-out of marketing, reported but no bar. A provider's permanent "no such address" (a
/// mail server's 5.1.x at submission or in a bounce; Twilio's invalid, landline or
/// non-existent numbers) bars the address as a hard bounce.
pub fn note_refusal(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &Message,
    error: &ProviderError,
    now: Millis,
) -> Result<(), StoreError> {
    let (stand, verb) = match (message.channel, error.code) {
        (Channel::Sms, ErrorCode::RecipientOptedOut) => (Stand::OptedOut, "refused"),
        (Channel::Whatsapp, ErrorCode::RecipientOptedOut) => (Stand::MarketingOptedOut, "refused"),
        // The provider's word only: the gateway's own check of an address's form has no
        // provider, and a malformed address never reaches acceptance twice.
        (Channel::Email | Channel::Sms, ErrorCode::InvalidRecipient)
            if !error.provider.is_empty() && !error.retryable =>
        {
            (Stand::Bounced, "bounced")
        }
        _ => return Ok(()),
    };
    let contact = Resolved { id: message.contact_id.clone(), created: false };
    let party = Party {
        contact: &contact,
        account: &message.account,
        channel: message.channel,
        address: &message.to,
    };
    let reason = format!("{} {verb} a send with {}", error.provider, error.provider_code);
    record(db, events, &party, stand, &reason, now).map(drop)
}

/// The error a message gets at acceptance when a bar stands.
fn refusal(to: &str, account: &str, reason: &str, bounced: bool) -> ProviderError {
    if bounced {
        return ProviderError::gateway(
            ErrorCode::InvalidRecipient,
            format!(
                "{to} bounced as an address that takes no messages, for account {account} ({reason}); nothing is sent to it until a message comes from it or SetConsent opts it back in"
            ),
        );
    }
    ProviderError::gateway(
        ErrorCode::RecipientOptedOut,
        format!(
            "{to} opted out of messages from account {account} ({reason}); nothing is sent until they opt back in (SMS: START)"
        ),
    )
}
