//! Sends whose answer was lost. A create that timed out after reaching the provider may
//! have made the message, and Twilio takes no idempotency key, so the next attempt first
//! asks the provider what it holds: a candidate no other message of ours holds is the lost
//! answer, and nothing is sent twice. When the provider cannot be asked now, the attempt
//! stays unsure and is retried later rather than risk a second copy; when it can never be
//! (the credentials may not list messages), the message is sent again, at least once.
//! A provider that cannot be asked but echoes our id in its webhooks (WhatsApp, Messenger)
//! is waited for instead: a receipt naming the message and an id we do not know is the
//! lost answer.

use std::time::{Duration, SystemTime};

use omnigate_adapters::{Accepted, FailureClass, Outbound, SendFailure, Sender};

use super::dispatcher::store_unreadable;
use crate::model::Millis;
use crate::store::{Store, StoreError};

/// Sends `outbound`, unless the unsure attempt that began at `unsure_since` turns out to
/// have sent it; answers the provider's answer and the outcome to count, `sent` or `found`.
pub async fn send(
    store: &dyn Store,
    sender: &dyn Sender,
    account: &str,
    outbound: &Outbound,
    unsure_since: Option<Millis>,
) -> Result<(Accepted, &'static str), SendFailure> {
    if let Some(since) = unsure_since
        && let Some(found) = lost_answer(store, sender, account, outbound, since).await?
    {
        return Ok((found, "found"));
    }
    sender.send(outbound).await.map(|accepted| (accepted, "sent"))
}

/// What the provider took from the unsure attempt that began at `since`, if anything.
async fn lost_answer(
    store: &dyn Store,
    sender: &dyn Sender,
    account: &str,
    outbound: &Outbound,
    since: Millis,
) -> Result<Option<Accepted>, SendFailure> {
    let echoed = store.lost_sends(account, &outbound.message_id).await.map_err(unreadable)?;
    if let Some(provider_message_id) = echoed.into_iter().next() {
        return Ok(Some(Accepted { provider_message_id, provider_status: "accepted".into() }));
    }
    let began = SystemTime::UNIX_EPOCH + Duration::from_millis(since.max(0) as u64);
    let candidates = match sender.find_sent(outbound, began).await {
        Ok(candidates) => candidates,
        // Never answerable (a key that may not list messages): send as before, at least once.
        Err(f) if f.class == FailureClass::Permanent => {
            tracing::warn!(account, error = %f.error, "cannot ask the provider about a lost send; sending again");
            return Ok(None);
        }
        // Not now: the attempt fails as the lookup did, and the next one asks again.
        Err(f) => return Err(f),
    };
    for candidate in candidates {
        let holder = store
            .message_by_provider_id(account, &candidate.provider_message_id)
            .await
            .map_err(unreadable)?;
        if holder.is_none() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn unreadable(e: StoreError) -> SendFailure {
    store_unreadable("what became of a lost send", e)
}
