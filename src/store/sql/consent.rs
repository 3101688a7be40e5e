//! Opt-outs: who told an account's sender to stop. An SMS `STOP`, or the provider refusing a
//! send because of one, records it; `START` clears it; acceptance reads it, so that a send
//! the provider must refuse fails at once with the reason instead of costing a call.

use omnigate_adapters::{Channel, Consent, ErrorCode, ProviderError};

use super::db::{Db, args};
use super::ops::append_event;
use super::people::{self, Party, Resolved};
use crate::model::{Event, EventKind, Identity, Message, Millis, OptOut};
use crate::store::StoreError;

/// Why `address` opted out of `account`'s messages, when it did and has not opted back in
/// (an opt-out of marketing alone does not count: it bars nothing here).
pub fn opted_out(db: &dyn Db, account: &str, address: &str) -> Result<Option<String>, StoreError> {
    db.query_opt(
        "SELECT reason FROM opt_outs WHERE account = $1 AND address = $2 AND marketing_only = 0",
        args![account, address],
    )?
    .map(|row| row.text(0))
    .transpose()
}

/// The opt-outs of every address of contact `id`, oldest first.
pub fn of_contact(db: &dyn Db, id: &str) -> Result<Vec<OptOut>, StoreError> {
    db.query(
        "SELECT account, address, reason, at, marketing_only FROM opt_outs
         WHERE address IN (SELECT address FROM identities WHERE contact_id = $1)
         ORDER BY at, account, address",
        args![id],
    )?
    .iter()
    .map(|row| {
        Ok(OptOut {
            account: row.text(0)?,
            address: row.text(1)?,
            reason: row.text(2)?,
            at: row.int(3)?,
            marketing_only: row.int(4)? != 0,
        })
    })
    .collect()
}

/// Records a person's word on an account's messages (`marketing_only`: an opt-out of
/// marketing alone), and an event when it changes anything (the answer); `reason` says how
/// it came. A repeated opt-out keeps the first one's time and reason; a full opt-out
/// replaces one of marketing alone, never the other way round.
pub fn record(
    db: &dyn Db,
    events: &mut Vec<Event>,
    party: &Party<'_>,
    (consent, marketing_only): (Consent, bool),
    reason: &str,
    now: Millis,
) -> Result<bool, StoreError> {
    let marketing_only = marketing_only && consent == Consent::OptedOut;
    let changed = match consent {
        Consent::OptedOut if marketing_only => db.execute(
            "INSERT INTO opt_outs (account, address, at, reason, marketing_only) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (account, address) DO NOTHING",
            args![party.account, party.address, now, reason],
        )?,
        Consent::OptedOut => db.execute(
            "INSERT INTO opt_outs (account, address, at, reason, marketing_only) VALUES ($1, $2, $3, $4, 0)
             ON CONFLICT (account, address) DO UPDATE
             SET at = excluded.at, reason = excluded.reason, marketing_only = 0
             WHERE opt_outs.marketing_only <> 0",
            args![party.account, party.address, now, reason],
        )?,
        Consent::OptedIn => db.execute(
            "DELETE FROM opt_outs WHERE account = $1 AND address = $2",
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
            opted_out: consent == Consent::OptedOut,
            reason: reason.to_string(),
            marketing_only,
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
    said: (Consent, bool),
    reason: &str,
    now: Millis,
) -> Result<(bool, String), StoreError> {
    let contact = people::resolve_contact(db, identity, now)?;
    let party =
        Party { contact: &contact, account, channel: identity.channel, address: &identity.address };
    let changed = record(db, events, &party, said, reason, now)?;
    Ok((changed, contact.id))
}

/// Records an opt-out when the provider refused `message` for one. An SMS refusal (Twilio
/// 21610) bars every later send from the sender; WhatsApp's 131050 concerns marketing
/// templates alone, which acceptance cannot tell from others, so it is recorded as an
/// opt-out of marketing, reported but no bar.
pub fn note_refusal(
    db: &dyn Db,
    events: &mut Vec<Event>,
    message: &Message,
    error: &ProviderError,
    now: Millis,
) -> Result<(), StoreError> {
    let marketing_only = match message.channel {
        Channel::Sms => false,
        Channel::Whatsapp => true,
        _ => return Ok(()),
    };
    if error.code != ErrorCode::RecipientOptedOut {
        return Ok(());
    }
    let contact = Resolved { id: message.contact_id.clone(), created: false };
    let party = Party {
        contact: &contact,
        account: &message.account,
        channel: message.channel,
        address: &message.to,
    };
    let reason = format!("{} refused a send with {}", error.provider, error.provider_code);
    record(db, events, &party, (Consent::OptedOut, marketing_only), &reason, now).map(drop)
}

/// The error a message gets at acceptance when its recipient opted out.
pub fn refusal(to: &str, account: &str, reason: &str) -> ProviderError {
    ProviderError::gateway(
        ErrorCode::RecipientOptedOut,
        format!(
            "{to} opted out of messages from account {account} ({reason}); nothing is sent until they opt back in (SMS: START)"
        ),
    )
}
