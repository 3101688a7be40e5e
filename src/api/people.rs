//! The contact and conversation RPCs: requests checked and converted, then handed to the
//! store, whose rules (an identity belongs to one contact; merging is explicit) they expose.

use omnigate_adapters::Consent;
use omnigate_proto::v1 as pb;
use tonic::Status;

use super::convert::{self, store_status};
use crate::app::AppState;
use crate::model::ConversationState;
use crate::store::{ContactUpdate, ConversationFilter};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// A consent reason is a note, kept with the opt-out and on every copy of its event.
const MAX_REASON_CHARS: usize = 500;

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

pub async fn upsert_contact(
    state: &AppState,
    r: pb::UpsertContactRequest,
) -> Result<pb::Contact, Status> {
    let identities = r
        .identities
        .into_iter()
        .map(|i| convert::identity_from_pb(Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let preferences = r
        .channel_preferences
        .into_iter()
        .map(convert::channel_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    let update = ContactUpdate {
        id: (!r.id.is_empty()).then_some(r.id),
        display_name: (!r.display_name.is_empty()).then_some(r.display_name),
        identities,
        preferences,
    };
    let contact = state.store.upsert_contact(update).await.map_err(store_status)?;
    Ok(convert::contact_to_pb(&contact))
}

pub async fn get_contact(state: &AppState, id: &str) -> Result<pb::Contact, Status> {
    let contact = state
        .store
        .get_contact(required(id, "id")?)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("contact {id} not found")))?;
    Ok(convert::contact_to_pb(&contact))
}

pub async fn find_contact(
    state: &AppState,
    r: pb::FindContactRequest,
) -> Result<pb::Contact, Status> {
    let identity = convert::identity_from_pb(r.identity)?;
    let contact = state
        .store
        .find_contact(identity.clone())
        .await
        .map_err(store_status)?
        .ok_or_else(|| {
            Status::not_found(format!("no contact has {}:{}", identity.channel, identity.address))
        })?;
    Ok(convert::contact_to_pb(&contact))
}

pub async fn link_identity(
    state: &AppState,
    r: pb::LinkIdentityRequest,
) -> Result<pb::Contact, Status> {
    let update = ContactUpdate {
        id: Some(required(&r.contact_id, "contact_id")?.to_string()),
        identities: vec![convert::identity_from_pb(r.identity)?],
        ..ContactUpdate::default()
    };
    let contact = state.store.upsert_contact(update).await.map_err(store_status)?;
    Ok(convert::contact_to_pb(&contact))
}

pub async fn merge_contacts(
    state: &AppState,
    r: pb::MergeContactsRequest,
) -> Result<pb::Contact, Status> {
    let into = required(&r.into_contact_id, "into_contact_id")?;
    let from = required(&r.from_contact_id, "from_contact_id")?;
    let contact = state.store.merge_contacts(into, from).await.map_err(store_status)?;
    Ok(convert::contact_to_pb(&contact))
}

pub async fn forget_contact(
    state: &AppState,
    id: &str,
) -> Result<pb::ForgetContactResponse, Status> {
    let id = required(id, "contact_id")?;
    // What providers keep of the person goes first: once forgotten, the gateway no longer
    // knows where it is. A failure erases nothing, so that forgetting again finishes.
    let media = state.store.media_of_contact(id).await.map_err(store_status)?;
    for (account, item) in &media {
        let Some(account) = state.accounts.get(account) else {
            tracing::warn!(%account, "media of a forgotten contact stays at the provider: its account is no longer configured");
            continue;
        };
        if let Err(e) = account.sender.delete_media(item).await {
            return Err(convert::provider_status(omnigate_adapters::ProviderError {
                message: format!(
                    "deleting the media contact {id} sent to account {} failed, so nothing was erased; forget them again: {}",
                    account.id, e.message
                ),
                ..e
            }));
        }
    }
    let erased = state.store.forget_contact(id).await.map_err(store_status)?;
    Ok(pb::ForgetContactResponse { messages_erased: erased })
}

pub async fn get_conversation(state: &AppState, id: &str) -> Result<pb::Conversation, Status> {
    let c = state
        .store
        .get_conversation(required(id, "id")?)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("conversation {id} not found")))?;
    Ok(convert::conversation_to_pb(&c))
}

pub async fn set_consent(
    state: &AppState,
    r: pb::SetConsentRequest,
) -> Result<pb::SetConsentResponse, Status> {
    let identity = convert::identity_from_pb(r.identity)?;
    let account = super::routing::account_for(state, identity.channel, &r.account)?;
    let consent = if r.opted_out { Consent::OptedOut } else { Consent::OptedIn };
    if r.marketing_only && !r.opted_out {
        return Err(Status::invalid_argument(
            "marketing_only goes with opted_out; an opt-in clears every opt-out of the account",
        ));
    }
    if r.reason.chars().count() > MAX_REASON_CHARS {
        return Err(Status::invalid_argument(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    let reason = if r.reason.is_empty() { "set through the API".into() } else { r.reason };
    let (changed, contact_id) = state
        .store
        .set_consent(&account.id, identity, (consent, r.marketing_only), reason)
        .await
        .map_err(store_status)?;
    Ok(pb::SetConsentResponse { changed, contact_id })
}

pub async fn list_opt_outs(
    state: &AppState,
    r: pb::ListOptOutsRequest,
) -> Result<pb::ListOptOutsResponse, Status> {
    if !r.account.is_empty() && state.accounts.get(&r.account).is_none() {
        return Err(Status::not_found(format!("account {:?} is not configured", r.account)));
    }
    let size = page_size(r.page_size);
    // The token is the last (account, address) shown, as a JSON pair: either may hold any
    // character.
    let after = if r.page_token.is_empty() {
        (String::new(), String::new())
    } else {
        serde_json::from_str(&r.page_token)
            .map_err(|_| Status::invalid_argument("page_token is not one this API gave"))?
    };
    let mut page =
        state.store.list_opt_outs(&r.account, after, size + 1).await.map_err(store_status)?;
    let next_page_token = next_page(&mut page, size, |o| {
        serde_json::to_string(&(&o.account, &o.address)).unwrap_or_default()
    });
    Ok(pb::ListOptOutsResponse {
        opt_outs: page.iter().map(convert::opt_out_to_pb).collect(),
        next_page_token,
    })
}

/// Cuts a page read with one row more than `size` (which tells that another page follows)
/// to `size`, and answers the next page's token, made from the last row shown; empty when
/// this page is the last.
pub(super) fn next_page<T>(
    page: &mut Vec<T>,
    size: usize,
    token: impl FnOnce(&T) -> String,
) -> String {
    let more = page.len() > size;
    page.truncate(size);
    match page.last() {
        Some(last) if more => token(last),
        _ => String::new(),
    }
}

pub(super) fn page_size(asked: u32) -> usize {
    let size = match asked {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    size as usize
}

pub async fn close_conversation(state: &AppState, id: &str) -> Result<pb::Conversation, Status> {
    let c = state.store.close_conversation(required(id, "id")?).await.map_err(store_status)?;
    Ok(convert::conversation_to_pb(&c))
}

pub async fn list_conversations(
    state: &AppState,
    r: pb::ListConversationsRequest,
) -> Result<pb::ListConversationsResponse, Status> {
    let size = page_size(r.page_size);
    let after = if r.page_token.is_empty() {
        None
    } else {
        let bad = || Status::invalid_argument("page_token is not one this API gave");
        let (at, id) = r.page_token.split_once('/').ok_or_else(bad)?;
        Some((at.parse::<i64>().map_err(|_| bad())?, id.to_string()))
    };
    let state_filter = match pb::ConversationState::try_from(r.state) {
        Ok(pb::ConversationState::Unspecified) => None,
        Ok(pb::ConversationState::Open) => Some(ConversationState::Open),
        Ok(pb::ConversationState::Closed) => Some(ConversationState::Closed),
        Err(_) => return Err(Status::invalid_argument(format!("unknown state {}", r.state))),
    };
    let filter = ConversationFilter {
        contact_id: (!r.contact_id.is_empty()).then_some(r.contact_id),
        state: state_filter,
        updated_since: r.updated_since.as_ref().map(convert::millis),
        after,
        limit: size + 1,
    };
    let mut page = state.store.list_conversations(filter).await.map_err(store_status)?;
    let next_page_token =
        next_page(&mut page, size, |c| format!("{}/{}", c.last_activity_at, c.id));
    Ok(pb::ListConversationsResponse {
        conversations: page.iter().map(convert::conversation_to_pb).collect(),
        next_page_token,
    })
}
