//! Opt-outs: who told an account's sender to stop. An SMS `STOP`, or the provider refusing a
//! send because of one, records it; `START` clears it; acceptance reads it, so that a send
//! the provider must refuse fails at once with the reason instead of costing a call.

use omnigate_adapters::{Channel, Consent, ErrorCode, ProviderError};

use super::db::{Db, args};
use crate::model::{Message, Millis};
use crate::store::StoreError;

/// Why `address` opted out of `account`'s messages, when it did and has not opted back in.
pub fn opted_out(db: &dyn Db, account: &str, address: &str) -> Result<Option<String>, StoreError> {
    db.query_opt(
        "SELECT reason FROM opt_outs WHERE account = $1 AND address = $2",
        args![account, address],
    )?
    .map(|row| row.text(0))
    .transpose()
}

/// Records a person's word on `account`'s messages; `reason` says how it came.
pub fn record(
    db: &dyn Db,
    account: &str,
    address: &str,
    consent: Consent,
    reason: &str,
    now: Millis,
) -> Result<(), StoreError> {
    match consent {
        Consent::OptedOut => db.execute_later(
            "INSERT INTO opt_outs (account, address, at, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account, address) DO UPDATE SET at = excluded.at, reason = excluded.reason",
            args![account, address, now, reason],
        ),
        Consent::OptedIn => db.execute_later(
            "DELETE FROM opt_outs WHERE account = $1 AND address = $2",
            args![account, address],
        ),
    }
}

/// Records an opt-out when the provider refused `message` for one. Only an SMS refusal
/// (Twilio 21610) bars every later send from the sender; WhatsApp's 131050 bars marketing
/// templates alone, which acceptance cannot tell from others, so it records nothing.
pub fn note_refusal(
    db: &dyn Db,
    message: &Message,
    error: &ProviderError,
    now: Millis,
) -> Result<(), StoreError> {
    if error.code != ErrorCode::RecipientOptedOut || message.channel != Channel::Sms {
        return Ok(());
    }
    let reason = format!("{} refused a send with {}", error.provider, error.provider_code);
    record(db, &message.account, &message.to, Consent::OptedOut, &reason, now)
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
