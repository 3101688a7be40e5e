//! Where a message goes: the channel, account and address to try first, and the fallbacks
//! after it. A message names an address on a channel, or a contact; fallbacks come from
//! `fallback_channels`, else (for a contact) from its channel preferences.

use omnigate_adapters::{Channel, Content, Outbound};
use omnigate_proto::v1 as pb;
use tonic::Status;

use super::convert::{self, store_status};
use crate::accounts::Account;
use crate::app::AppState;
use crate::contacts::normalize;
use crate::model::{Contact, Route, now_ms};

/// The route to try first, then the fallbacks in order.
pub struct Plan {
    pub first: Route,
    pub fallbacks: Vec<Route>,
}

pub async fn plan(
    state: &AppState,
    req: &pb::SendMessageRequest,
    content: &Content,
    tag: Option<&str>,
) -> Result<Plan, Status> {
    let mut channels = Vec::new();
    if req.channel != 0 {
        channels.push(convert::channel_from_pb(req.channel)?);
    }
    for c in &req.fallback_channels {
        let c = convert::channel_from_pb(*c)?;
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    if req.contact_id.is_empty() {
        return explicit(state, req, content, tag, channels).await;
    }
    if !req.to.is_empty() {
        return Err(Status::invalid_argument("give to or contact_id, not both"));
    }
    let contact = state
        .store
        .get_contact(&req.contact_id)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("contact {} not found", req.contact_id)))?;
    if channels.is_empty() {
        channels = contact.preferences.clone();
    }
    if channels.is_empty() {
        channels = contact.identities.iter().map(|i| i.channel).collect();
        channels.dedup();
    }
    let mut reasons = Vec::new();
    let mut routes = Vec::new();
    for channel in channels {
        match viable(state, &contact, channel, content, tag).await? {
            Ok(route) => routes.push(route),
            Err(reason) => reasons.push(format!("{channel}: {reason}")),
        }
    }
    let mut routes = routes.into_iter();
    let first = routes.next().ok_or_else(|| {
        Status::failed_precondition(format!(
            "no channel can carry this message to contact {} now ({})",
            contact.id,
            reasons.join("; ")
        ))
    })?;
    Ok(Plan { first, fallbacks: routes.collect() })
}

/// The account a request names for `channel` (`requested`), or the channel's default.
pub fn account_for<'a>(
    state: &'a AppState,
    channel: Channel,
    requested: &str,
) -> Result<&'a Account, Status> {
    let account = if requested.is_empty() {
        state.accounts.default_for(channel).ok_or_else(|| {
            Status::failed_precondition(format!("no account is configured for channel {channel}"))
        })?
    } else {
        state
            .accounts
            .get(requested)
            .ok_or_else(|| Status::not_found(format!("account {requested:?} is not configured")))?
    };
    if account.channel != channel {
        return Err(Status::invalid_argument(format!(
            "account {:?} serves {}, not {channel}",
            account.id, account.channel
        )));
    }
    Ok(account)
}

/// An address on a channel: that route first, as asked; fallbacks from the contact that
/// holds the address, if any.
async fn explicit(
    state: &AppState,
    req: &pb::SendMessageRequest,
    content: &Content,
    tag: Option<&str>,
    channels: Vec<Channel>,
) -> Result<Plan, Status> {
    let Some(&channel) = channels.first() else {
        return Err(Status::invalid_argument("channel is required (or name a contact_id)"));
    };
    if req.channel == 0 {
        return Err(Status::invalid_argument("channel is required with to"));
    }
    let to =
        normalize(channel, &req.to).map_err(|e| Status::invalid_argument(format!("to: {e}")))?;
    let account = account_for(state, channel, &req.account)?;
    // Content the account can never carry (a kind, a size) is bad input: refused now with
    // the adapter's reason, unless a fallback channel may take it over after the failure.
    if channels.len() == 1 {
        carries(account, &to.address, content, tag).map_err(|why| {
            Status::invalid_argument(format!("content: {why} (account {:?})", account.id))
        })?;
    }
    let first = Route {
        channel,
        account: account.id.clone(),
        route: account.sender.route().to_string(),
        from: account.from.clone(),
        to: to.address,
    };
    let mut fallbacks = Vec::new();
    if channels.len() > 1 {
        let holder = state
            .store
            .find_contact(crate::model::Identity { channel, address: first.to.clone() })
            .await;
        if let Some(contact) = holder.map_err(store_status)? {
            for &next in &channels[1..] {
                if let Ok(route) = viable(state, &contact, next, content, tag).await? {
                    fallbacks.push(route);
                }
            }
        }
    }
    Ok(Plan { first, fallbacks })
}

/// A route to `contact` on `channel`, or why there is none: no identity there, no account,
/// content the channel cannot carry, or a closed service window.
async fn viable(
    state: &AppState,
    contact: &Contact,
    channel: Channel,
    content: &Content,
    tag: Option<&str>,
) -> Result<Result<Route, String>, Status> {
    let Some(identity) = contact.identities.iter().find(|i| i.channel == channel) else {
        return Ok(Err("the contact has no identity there".into()));
    };
    let Some(account) = state.accounts.default_for(channel) else {
        return Ok(Err("no account is configured".into()));
    };
    if let Err(why) = carries(account, &identity.address, content, tag) {
        return Ok(Err(why));
    }
    if let Some(window) = account.sender.service_window(content, tag) {
        let last =
            state.store.last_inbound(&account.id, &identity.address).await.map_err(store_status)?;
        if last.is_none_or(|at| now_ms() - at > window.as_millis() as i64) {
            return Ok(Err("outside the service window".into()));
        }
    }
    Ok(Ok(Route {
        channel,
        account: account.id.clone(),
        route: account.sender.route().to_string(),
        from: account.from.clone(),
        to: identity.address.clone(),
    }))
}

/// Whether `account` can carry `content` to `address` at all (content kind, sizes), as its
/// adapter tells without sending; else why not.
fn carries(
    account: &Account,
    address: &str,
    content: &Content,
    tag: Option<&str>,
) -> Result<(), String> {
    let mut probe = Outbound::new("probe", address.to_string(), content.clone());
    probe.tag = tag.map(str::to_string);
    account.sender.check(&probe).map_err(|e| e.message)
}
