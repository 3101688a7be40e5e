//! The webhook subscription RPCs.

use std::sync::Arc;

use omnigate_proto::v1 as pb;
use tonic::Status;

use super::convert::store_status;
use crate::app::AppState;
use crate::model::{EventKind, Webhook, new_id};
use crate::webhooks::sign;

/// Checks event kind names against the ones events carry.
pub fn check_kinds(kinds: &[String]) -> Result<(), Status> {
    const KINDS: [&str; EventKind::NAMES.len()] = EventKind::NAMES;
    match kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        Some(unknown) => Err(Status::invalid_argument(format!(
            "unknown event kind {unknown:?}; known: {KINDS:?}"
        ))),
        None => Ok(()),
    }
}

pub fn to_pb(w: &Webhook, with_secret: bool) -> pb::Webhook {
    pb::Webhook {
        id: w.id.clone(),
        url: w.url.clone(),
        secret: if with_secret { w.secret.clone() } else { String::new() },
        kinds: w.kinds.clone(),
        state: if w.active { pb::WebhookState::Active } else { pb::WebhookState::Disabled } as i32,
        cursor: w.cursor,
        dead_letters: w.dead_letters,
        last_error: w.last_error.clone(),
        missed_events: w.missed,
    }
}

/// `cursor`, if this store could have handed it out, and retention has not deleted events
/// after it; else OUT_OF_RANGE, saying which. A cursor past the last event is another
/// store's (one restored or replaced): following from it would skip every event until the
/// log got there, as would one behind deleted events, without a word.
pub async fn checked_cursor(state: &AppState, cursor: u64) -> Result<u64, Status> {
    let last = state.store.last_sequence().await.map_err(store_status)?;
    if cursor > last {
        return Err(Status::out_of_range(format!(
            "from_sequence {cursor} is past the last event, {last}: a cursor from another store? Start from {last} or from_now"
        )));
    }
    state.store.events_after(cursor, 1).await.map_err(store_status)?;
    Ok(cursor)
}

pub async fn create(
    state: &Arc<AppState>,
    r: pb::CreateWebhookRequest,
) -> Result<pb::Webhook, Status> {
    if !(r.url.starts_with("https://") || r.url.starts_with("http://")) {
        return Err(Status::invalid_argument("url must be an http(s) URL"));
    }
    check_kinds(&r.kinds)?;
    let secret = if r.secret.is_empty() {
        sign::generate_secret()
            .map_err(|e| Status::internal(format!("no randomness for a secret: {e}")))?
    } else {
        sign::key(&r.secret).map_err(|e| Status::invalid_argument(format!("secret: {e}")))?;
        r.secret
    };
    let cursor = if r.from_now {
        state.store.last_sequence().await.map_err(store_status)?
    } else {
        checked_cursor(state, r.from_sequence).await?
    };
    let webhook = Webhook {
        id: new_id("whk"),
        url: r.url,
        secret,
        kinds: r.kinds,
        active: true,
        cursor,
        dead_letters: 0,
        last_error: String::new(),
        missed: 0,
    };
    let webhook = state.store.save_webhook(webhook).await.map_err(store_status)?;
    state.deliveries.run(webhook.clone()).await;
    Ok(to_pb(&webhook, true))
}

pub async fn list(state: &AppState) -> Result<pb::ListWebhooksResponse, Status> {
    let all = state.store.list_webhooks().await.map_err(store_status)?;
    Ok(pb::ListWebhooksResponse { webhooks: all.iter().map(|w| to_pb(w, false)).collect() })
}

pub async fn delete(state: &AppState, id: &str) -> Result<pb::DeleteWebhookResponse, Status> {
    state.deliveries.stop(id).await;
    if !state.store.delete_webhook(id).await.map_err(store_status)? {
        return Err(Status::not_found(format!("webhook {id} not found")));
    }
    Ok(pb::DeleteWebhookResponse {})
}

pub async fn replay(
    state: &Arc<AppState>,
    r: pb::ReplayWebhookRequest,
) -> Result<pb::Webhook, Status> {
    let from = checked_cursor(state, r.from_sequence).await?;
    state.deliveries.stop(&r.id).await;
    let mut webhook = state
        .store
        .list_webhooks()
        .await
        .map_err(store_status)?
        .into_iter()
        .find(|w| w.id == r.id)
        .ok_or_else(|| Status::not_found(format!("webhook {} not found", r.id)))?;
    webhook.cursor = from;
    webhook.active = true;
    let webhook = state.store.save_webhook(webhook).await.map_err(store_status)?;
    state.deliveries.run(webhook.clone()).await;
    Ok(to_pb(&webhook, false))
}
