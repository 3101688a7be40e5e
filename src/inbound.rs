//! What a provider reports, whichever way it arrives (a webhook, a mailbox), applied to
//! the store: receipts move messages, inbound messages join conversations.

use omnigate_adapters::WebhookEvent;

use crate::accounts::Account;
use crate::app::AppState;
use crate::contacts::normalize;
use crate::model::{Identity, new_id, now_ms};
use crate::store::{NewInbound, StoreError};

/// Stores one reported event on `account`. A failure leaves nothing half-applied; the
/// caller makes the provider (or the mailbox cursor) bring it again.
pub async fn apply(
    state: &AppState,
    account: &Account,
    event: WebhookEvent,
) -> Result<(), StoreError> {
    match event {
        WebhookEvent::Watermark { peer, status, up_to_ms } => {
            state.store.apply_watermark(&account.id, &peer, status, up_to_ms).await.map(|_| ())
        }
        WebhookEvent::Status(report) => {
            let (_, fallback) = state.store.apply_status(&account.id, report).await?;
            // A failed delivery moved the message to its next channel.
            if let Some(next) = fallback {
                state.outlet.submit(next);
            }
            Ok(())
        }
        WebhookEvent::Unreadable { provider_message_id, from, reason } => {
            let from = identity(account, &from);
            let store = &state.store;
            store
                .reject_inbound(
                    &account.id,
                    account.channel,
                    &provider_message_id,
                    Some(from),
                    &reason,
                )
                .await
        }
        WebhookEvent::Inbound(message) => {
            let from = identity(account, &message.from);
            let inbound = NewInbound {
                id: new_id("msg"),
                from,
                channel: account.channel,
                account: account.id.clone(),
                message,
                now: now_ms(),
            };
            state.store.receive(inbound).await.map(|_| ())
        }
    }
}

/// A sender's identity on the account's channel; one the rules cannot normalise (an
/// alphanumeric SMS sender) is kept as given.
fn identity(account: &Account, address: &str) -> Identity {
    normalize(account.channel, address)
        .unwrap_or_else(|_| Identity { channel: account.channel, address: address.to_string() })
}
