//! The webhook subscription RPCs.

use std::sync::Arc;
use std::time::Duration;

use omnigate_proto::v1 as pb;
use tonic::Status;

use super::convert::{store_status, timestamp};
use crate::app::AppState;
use crate::model::{EventKind, PreviousSecret, Webhook, new_id, now_ms};
use crate::webhooks::sign;

/// How long a rotated-out secret keeps signing unless the rotation says otherwise: a day,
/// for receivers deployed daily to pick up the new one.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

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
        previous_secret_expires_at: w
            .previous
            .as_ref()
            .filter(|p| p.until > now_ms())
            .map(|p| timestamp(p.until)),
        delivery: if w.independent {
            pb::WebhookDelivery::Independent
        } else {
            pb::WebhookDelivery::InOrder
        } as i32,
        retrying: w.retrying,
    }
}

fn check_url(url: &str) -> Result<(), Status> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Status::invalid_argument("url must be an http(s) URL"));
    }
    Ok(())
}

/// Whether a `WebhookDelivery` asks for each event on its own.
fn independent(delivery: i32) -> Result<bool, Status> {
    match pb::WebhookDelivery::try_from(delivery) {
        Ok(pb::WebhookDelivery::Unspecified | pb::WebhookDelivery::InOrder) => Ok(false),
        Ok(pb::WebhookDelivery::Independent) => Ok(true),
        Err(_) => Err(Status::invalid_argument(format!("unknown delivery {delivery}"))),
    }
}

/// The secret a request gives, checked, or a new one when it gives none.
fn secret_or_new(given: String) -> Result<String, Status> {
    if given.is_empty() {
        return sign::generate_secret()
            .map_err(|e| Status::internal(format!("no randomness for a secret: {e}")));
    }
    sign::key(&given).map_err(|e| Status::invalid_argument(format!("secret: {e}")))?;
    Ok(given)
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
    check_url(&r.url)?;
    check_kinds(&r.kinds)?;
    let independent = independent(r.delivery)?;
    let secret = secret_or_new(r.secret)?;
    let cursor = if r.from_now {
        state.store.last_sequence().await.map_err(store_status)?
    } else {
        checked_cursor(state, r.from_sequence).await?
    };
    let webhook =
        Webhook { independent, ..Webhook::new(new_id("whk"), r.url, secret, r.kinds, cursor) };
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
    let webhook = change(state, &r.id, |w| {
        w.cursor = from;
        w.active = true;
    })
    .await?;
    Ok(to_pb(&webhook, false))
}

pub async fn rotate(
    state: &Arc<AppState>,
    r: pb::RotateWebhookSecretRequest,
) -> Result<pb::Webhook, Status> {
    let grace = match r.grace {
        None => DEFAULT_GRACE,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            return Err(Status::invalid_argument("grace must not be negative"));
        }
        Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
    };
    if grace > MAX_GRACE {
        return Err(Status::invalid_argument(format!(
            "grace is at most {} days",
            MAX_GRACE.as_secs() / 86_400
        )));
    }
    let secret = secret_or_new(r.secret)?;
    let until = now_ms() + grace.as_millis() as i64;
    let webhook = change(state, &r.id, |w| {
        let old = std::mem::replace(&mut w.secret, secret);
        w.previous = (!grace.is_zero()).then_some(PreviousSecret { secret: old, until });
    })
    .await?;
    Ok(to_pb(&webhook, true))
}

/// The fields `UpdateWebhook` changes.
const UPDATABLE: [&str; 4] = ["url", "kinds", "delivery", "state"];

/// What an `UpdateWebhook` request changes, checked before anything is.
#[derive(Default)]
struct Update {
    url: Option<String>,
    kinds: Option<Vec<String>>,
    independent: Option<bool>,
    active: Option<bool>,
}

impl Update {
    fn of(w: pb::Webhook, mask: Option<Vec<String>>) -> Result<Update, Status> {
        let paths = match mask {
            Some(paths) => paths,
            // AIP-134: no mask means the fields the request sets.
            None => [
                (!w.url.is_empty(), "url"),
                (!w.kinds.is_empty(), "kinds"),
                (w.delivery != 0, "delivery"),
                (w.state != 0, "state"),
            ]
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, path)| path.to_string())
            .collect(),
        };
        if paths.is_empty() {
            return Err(Status::invalid_argument(format!(
                "nothing to change: name fields among {UPDATABLE:?} in update_mask, or set them"
            )));
        }
        let mut update = Update::default();
        for path in paths {
            match path.as_str() {
                "url" => {
                    check_url(&w.url)?;
                    update.url = Some(w.url.clone());
                }
                "kinds" => {
                    check_kinds(&w.kinds)?;
                    update.kinds = Some(w.kinds.clone());
                }
                "delivery" => update.independent = Some(independent(w.delivery)?),
                "state" => {
                    update.active = Some(match pb::WebhookState::try_from(w.state) {
                        Ok(pb::WebhookState::Active) => true,
                        Ok(pb::WebhookState::Disabled) => false,
                        _ => {
                            return Err(Status::invalid_argument(
                                "state must be WEBHOOK_STATE_ACTIVE or WEBHOOK_STATE_DISABLED",
                            ));
                        }
                    });
                }
                "secret" => {
                    return Err(Status::invalid_argument(
                        "the secret changes with RotateWebhookSecret, which keeps the old one signing for a while",
                    ));
                }
                "cursor" => {
                    return Err(Status::invalid_argument("the cursor changes with ReplayWebhook"));
                }
                other => {
                    return Err(Status::invalid_argument(format!(
                        "update_mask path {other:?} is not one of {UPDATABLE:?}"
                    )));
                }
            }
        }
        Ok(update)
    }

    fn apply(self, w: &mut Webhook) {
        if let Some(url) = self.url {
            w.url = url;
        }
        if let Some(kinds) = self.kinds {
            w.kinds = kinds;
        }
        if let Some(independent) = self.independent {
            w.independent = independent;
        }
        if let Some(active) = self.active {
            w.active = active;
        }
    }
}

pub async fn update(
    state: &Arc<AppState>,
    r: pb::UpdateWebhookRequest,
) -> Result<pb::Webhook, Status> {
    let Some(given) = r.webhook else {
        return Err(Status::invalid_argument("webhook (its id and the new values) is required"));
    };
    if given.id.is_empty() {
        return Err(Status::invalid_argument("webhook.id is required"));
    }
    let id = given.id.clone();
    let update = Update::of(given, r.update_mask.map(|m| m.paths))?;
    let webhook = change(state, &id, |w| update.apply(w)).await?;
    Ok(to_pb(&webhook, false))
}

pub async fn dead_letters(
    state: &AppState,
    r: pb::ListWebhookDeadLettersRequest,
) -> Result<pb::ListWebhookDeadLettersResponse, Status> {
    find(state, &r.webhook_id).await?;
    let size = super::people::page_size(r.page_size);
    // The token is the last sequence shown.
    let after = match r.page_token.as_str() {
        "" => 0,
        token => token
            .parse()
            .map_err(|_| Status::invalid_argument("page_token is not one this API gave"))?,
    };
    let mut page = state
        .store
        .webhook_dead_letters(&r.webhook_id, after, size + 1)
        .await
        .map_err(store_status)?;
    let next_page_token = super::people::next_page(&mut page, size, |d| d.sequence.to_string());
    let dead_letters = page
        .into_iter()
        .map(|d| pb::WebhookDeadLetter {
            sequence: d.sequence,
            error: d.error,
            at: Some(timestamp(d.at)),
        })
        .collect();
    Ok(pb::ListWebhookDeadLettersResponse { dead_letters, next_page_token })
}

/// Changes a subscription with its worker stopped (so that the cursor the worker saves as
/// it stops is not written over the change), then starts the worker again if active.
async fn change(
    state: &Arc<AppState>,
    id: &str,
    f: impl FnOnce(&mut Webhook),
) -> Result<Webhook, Status> {
    let first = find(state, id).await?;
    state.deliveries.stop(id).await;
    // Read again for the cursor the worker saved as it stopped.
    let outcome = match find(state, id).await {
        Ok(mut webhook) => {
            let read_at = webhook.revision;
            f(&mut webhook);
            webhook.revision += 1;
            match state.store.update_webhook(webhook.clone(), read_at).await {
                Ok(true) => Ok(webhook),
                // Deleted, or changed, through another replica since it was read here.
                Ok(false) => match find(state, id).await {
                    Ok(_) => Err(Status::aborted(format!(
                        "webhook {id} was changed at the same time; read it and try again"
                    ))),
                    Err(e) => Err(e),
                },
                Err(e) => Err(store_status(e)),
            }
        }
        Err(e) => Err(e),
    };
    // Unchanged, the worker runs again as it was: an event may go out twice, none is lost.
    let running = match &outcome {
        Ok(changed) => Some(changed.clone()),
        Err(e) if e.code() == tonic::Code::NotFound => None,
        Err(_) => Some(first),
    };
    if let Some(webhook) = running.filter(|w| w.active) {
        state.deliveries.run(webhook).await;
    }
    outcome
}

async fn find(state: &AppState, id: &str) -> Result<Webhook, Status> {
    state
        .store
        .list_webhooks()
        .await
        .map_err(store_status)?
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| Status::not_found(format!("webhook {id} not found")))
}
