//! The `omnigate.v1.Gateway` gRPC service.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use omnigate_proto::v1 as pb;
use omnigate_proto::v1::gateway_server::Gateway;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::convert::{self, store_status};
use super::{people, routing, validate, webhooks};
use crate::app::AppState;
use crate::config::MAX_TTL;
use crate::model::{Event, SendOptions, now_ms};
use crate::store::{AcceptOutcome, NewMessage};
use omnigate_adapters::{Content, MessageStatus};

/// How long a cancellation waits for the replica that dispatches the message.
const CANCEL_ELSEWHERE_WAIT: Duration = Duration::from_secs(5);

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
const REPLAY_PAGE: usize = 500;
/// Where a page of messages ends, whatever its size: under the 4 MiB a gRPC client reads by
/// default.
const PAGE_BYTES: usize = 3 << 20;
/// Events a slow stream consumer may fall behind before it reads from the store instead.
const STREAM_BUFFER: usize = 256;

pub struct GatewayService {
    state: Arc<AppState>,
}

impl GatewayService {
    pub fn new(state: Arc<AppState>) -> Self {
        GatewayService { state }
    }
}

impl GatewayService {
    /// The provider's id of an omnigate message, for replies and reactions that quote it.
    async fn provider_id_of(&self, id: &str, field: &str) -> Result<String, Status> {
        let message = self
            .state
            .store
            .get_message(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{field}: message {id} not found")))?;
        message.provider_message_id.ok_or_else(|| {
            Status::failed_precondition(format!(
                "{field}: message {id} has no provider id yet (it was not sent)"
            ))
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        if !self.state.is_ready() {
            return Err(Status::unavailable("the gateway is shutting down"));
        }
        // Past what the store keeps up with, shedding at once beats an unbounded queue.
        let _pending = self.state.pending_sends.try_acquire().map_err(|_| {
            self.state.metrics.send_shed();
            Status::unavailable(
                "server.max_pending_sends sends are already waiting for the store; retry with backoff",
            )
        })?;
        let req = request.into_inner();
        validate::idempotency_key(&req.idempotency_key)?;
        validate::metadata(req.metadata.iter())?;
        let send_at = validate::send_at(req.send_at.as_ref().map(convert::millis), now_ms())?;
        let mut content = convert::content_from_pb(req.content.clone())?;
        validate::content(&content)?;
        if let Content::Reaction(r) = &mut content {
            r.provider_message_id =
                self.provider_id_of(&r.provider_message_id, "content.reaction.message_id").await?;
        }
        let reply_to_provider_id = match req.reply_to_message_id.as_str() {
            "" => None,
            id => Some(self.provider_id_of(id, "reply_to_message_id").await?),
        };
        let tag = (!req.message_tag.is_empty()).then(|| req.message_tag.clone());
        let routing::Plan { first, fallbacks } =
            routing::plan(&self.state, &req, &content, tag.as_deref()).await?;
        let account = self.state.accounts.get(&first.account).ok_or_else(|| {
            Status::internal(format!("planned account {} vanished", first.account))
        })?;
        let ttl = match req.ttl {
            Some(d) if d.seconds < 0 || (d.seconds == 0 && d.nanos <= 0) => {
                return Err(Status::invalid_argument("ttl must be positive"));
            }
            Some(d) => Duration::new(d.seconds as u64, d.nanos.max(0) as u32).min(MAX_TTL),
            None => self.state.default_ttl,
        };
        let metadata: BTreeMap<String, String> = req.metadata.clone().into_iter().collect();
        let window_ms =
            account.sender.service_window(&content, tag.as_deref()).map(|w| w.as_millis() as i64);
        let dispatch_here = self.state.ownership.owns_route(&first.account, &first.route);
        let idempotency_key =
            (!req.idempotency_key.is_empty()).then(|| req.idempotency_key.clone());
        let mut new = NewMessage {
            dispatch_here,
            // Only a key's second use compares fingerprints.
            fingerprint: idempotency_key
                .as_ref()
                .map_or_else(String::new, |_| fingerprint(&req, &metadata, ttl)),
            reply_to_message_id: (!req.reply_to_message_id.is_empty())
                .then(|| req.reply_to_message_id.clone()),
            send_options: SendOptions { reply_to_provider_id, tag, fallbacks },
            window_ms,
            idempotency_key,
            route: first.route,
            conversation_id: (!req.conversation_id.is_empty()).then_some(req.conversation_id),
            metadata,
            ..NewMessage::new(first.channel, &first.account, &first.from, &first.to, content, ttl)
        };
        if let Some(at) = send_at {
            new.send_at = Some(at);
            new.expires_at = at + ttl.as_millis() as i64;
        }
        let accepted = self.state.store.accept(new).instrument(tracing::info_span!("store.accept"));
        let message = match accepted.await.map_err(store_status)? {
            AcceptOutcome::Created(message, job) => {
                let metrics = &self.state.metrics;
                metrics.accepted(message.channel.as_str());
                // What acceptance refused (an opt-out, a closed window) never reaches the
                // dispatcher, so is counted here: every channel left so far, and the last
                // one when nothing was left to fall back to.
                let failed = message.status == MessageStatus::Failed;
                let refused = message.channel_attempts.iter().map(|a| a.account.as_str());
                for account in refused.chain(failed.then_some(message.account.as_str())) {
                    metrics.attempt_not_made(account, "refused");
                }
                if let Some(mut job) = job {
                    job.origin = tracing::Span::current().context();
                    self.state.outlet.submit(*job);
                }
                message
            }
            AcceptOutcome::Existing(message) => message,
        };
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(convert::message_to_pb(&message)),
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let message = stored_message(&self.state, &request.into_inner().id).await?;
        Ok(Response::new(pb::GetMessageResponse {
            message: Some(convert::message_to_pb(&message)),
        }))
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let req = request.into_inner();
        let account =
            routing::account_for(&self.state, omnigate_adapters::Channel::Whatsapp, &req.account)?;
        let limit = match req.page_size {
            0 => 25,
            n if n > 100 => return Err(Status::invalid_argument("page_size is at most 100")),
            n => n,
        };
        let page = account
            .sender
            .templates(&req.name, limit, &req.page_token)
            .await
            .map_err(convert::provider_status)?;
        let templates = page
            .templates
            .into_iter()
            .map(|t| pb::WhatsAppTemplate {
                id: t.id,
                name: t.name,
                language: t.language,
                category: t.category,
                status: t.status,
                body: t.body,
                components_json: t.components_json,
            })
            .collect();
        Ok(Response::new(pb::ListTemplatesResponse { templates, next_page_token: page.after }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let req = request.into_inner();
        let id = &req.message_id;
        let message = stored_message(&self.state, id).await?;
        let refuse = |why: String| Err(Status::failed_precondition(format!("message {id} {why}")));
        if message.direction != crate::model::Direction::Inbound {
            return refuse("is outbound: only a message a person sent can be marked read".into());
        }
        let Some(provider_id) = &message.provider_message_id else {
            return refuse("has no provider id to mark".into());
        };
        let account = account_of(&self.state, &message)?;
        if let Err(e) = account.sender.mark_read(provider_id, &message.from, req.typing).await {
            let channel = message.channel;
            return Err(convert::provider_status(omnigate_adapters::ProviderError {
                message: format!("message {id} came by {channel}: {}", e.message),
                ..e
            }));
        }
        Ok(Response::new(pb::MarkReadResponse {}))
    }

    type GetMediaStream = super::media::MediaStream;

    async fn get_media(
        &self,
        request: Request<pb::GetMediaRequest>,
    ) -> Result<Response<Self::GetMediaStream>, Status> {
        super::media::get_media(&self.state, request.into_inner()).await.map(Response::new)
    }

    async fn cancel_message(
        &self,
        request: Request<pb::CancelMessageRequest>,
    ) -> Result<Response<pb::CancelMessageResponse>, Status> {
        let id = request.into_inner().id;
        let state = &self.state;
        let message = stored_message(state, &id).await?;
        // Only the dispatcher of the message's route knows whether its send has started; in
        // a fleet that may be another replica's, which decides through the store.
        let route = state.accounts.get(&message.account).map(|a| a.sender.route());
        let message = match route {
            Some(route) if !state.ownership.owns_route(&message.account, route) => {
                cancel_elsewhere(state, &id).await?
            }
            _ => state.outlet.cancel(state.store.as_ref(), &id).await.map_err(store_status)?,
        };
        Ok(Response::new(pb::CancelMessageResponse {
            message: Some(convert::message_to_pb(&message)),
        }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let req = request.into_inner();
        if req.conversation_id.is_empty() {
            return Err(Status::invalid_argument("conversation_id is required"));
        }
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        let after = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse::<u64>()
                .map_err(|_| Status::invalid_argument("page_token is not one this API gave"))?
        };
        let mut page = self
            .state
            .store
            .list_messages(&req.conversation_id, after, size + 1)
            .await
            .map_err(store_status)?;
        let mut more = page.len() > size;
        page.truncate(size);
        // A page also ends before it passes what a client reads by default (inbound emails
        // carry their attachments), but always holds one message, so paging moves on.
        let (mut messages, mut bytes) = (Vec::with_capacity(page.len()), 0);
        for (_, m) in &page {
            let shown = convert::message_to_pb(m);
            bytes += prost::Message::encoded_len(&shown);
            if bytes > PAGE_BYTES && !messages.is_empty() {
                more = true;
                break;
            }
            messages.push(shown);
        }
        let next_page_token = match messages.len().checked_sub(1).and_then(|last| page.get(last)) {
            Some((seq, _)) if more => seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListMessagesResponse { messages, next_page_token }))
    }

    async fn upsert_contact(
        &self,
        r: Request<pb::UpsertContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        people::upsert_contact(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn get_contact(
        &self,
        r: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        people::get_contact(&self.state, &r.into_inner().id).await.map(Response::new)
    }

    async fn find_contact(
        &self,
        r: Request<pb::FindContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        people::find_contact(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn link_identity(
        &self,
        r: Request<pb::LinkIdentityRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        people::link_identity(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn merge_contacts(
        &self,
        r: Request<pb::MergeContactsRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        people::merge_contacts(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn forget_contact(
        &self,
        r: Request<pb::ForgetContactRequest>,
    ) -> Result<Response<pb::ForgetContactResponse>, Status> {
        people::forget_contact(&self.state, &r.into_inner().contact_id).await.map(Response::new)
    }

    async fn get_conversation(
        &self,
        r: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        people::get_conversation(&self.state, &r.into_inner().id).await.map(Response::new)
    }

    async fn list_conversations(
        &self,
        r: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        people::list_conversations(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn set_consent(
        &self,
        r: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::SetConsentResponse>, Status> {
        people::set_consent(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn list_opt_outs(
        &self,
        r: Request<pb::ListOptOutsRequest>,
    ) -> Result<Response<pb::ListOptOutsResponse>, Status> {
        people::list_opt_outs(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn close_conversation(
        &self,
        r: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        people::close_conversation(&self.state, &r.into_inner().id).await.map(Response::new)
    }

    async fn create_webhook(
        &self,
        r: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        webhooks::create(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn list_webhooks(
        &self,
        _: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        webhooks::list(&self.state).await.map(Response::new)
    }

    async fn delete_webhook(
        &self,
        r: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        webhooks::delete(&self.state, &r.into_inner().id).await.map(Response::new)
    }

    async fn replay_webhook(
        &self,
        r: Request<pb::ReplayWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        webhooks::replay(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn list_webhook_dead_letters(
        &self,
        r: Request<pb::ListWebhookDeadLettersRequest>,
    ) -> Result<Response<pb::ListWebhookDeadLettersResponse>, Status> {
        webhooks::dead_letters(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn rotate_webhook_secret(
        &self,
        r: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        webhooks::rotate(&self.state, r.into_inner()).await.map(Response::new)
    }

    async fn update_webhook(
        &self,
        r: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        webhooks::update(&self.state, r.into_inner()).await.map(Response::new)
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        webhooks::check_kinds(&req.kinds)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if req.from_now && req.from_sequence > 0 {
            return Err(Status::invalid_argument("give from_sequence or from_now, not both"));
        }
        // Subscribe before replaying, so nothing committed during the replay is missed.
        let live = self.state.store.subscribe();
        let from = match req.from_now {
            true => self.state.store.last_sequence().await.map_err(store_status)?,
            false => webhooks::checked_cursor(&self.state, req.from_sequence).await?,
        };
        tokio::spawn(follow(self.state.clone(), from, req.kinds, live, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The account a stored message came by, for a call to its provider.
pub(super) fn account_of<'a>(
    state: &'a AppState,
    message: &crate::model::Message,
) -> Result<&'a Arc<crate::accounts::Account>, Status> {
    state.accounts.get(&message.account).ok_or_else(|| {
        Status::failed_precondition(format!(
            "account {} of message {} is no longer configured, so its provider cannot be asked",
            message.account, message.id
        ))
    })
}

pub(super) async fn stored_message(
    state: &AppState,
    id: &str,
) -> Result<crate::model::Message, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("id is required"));
    }
    let message = state.store.get_message(id).await.map_err(store_status)?;
    message.ok_or_else(|| Status::not_found(format!("message {id} not found")))
}

/// Asks the replica dispatching message `id` to cancel it, and waits for its answer.
async fn cancel_elsewhere(state: &AppState, id: &str) -> Result<crate::model::Message, Status> {
    state.store.request_cancel(id).await.map_err(store_status)?;
    let deadline = tokio::time::Instant::now() + CANCEL_ELSEWHERE_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match state.store.take_cancel_answer(id).await.map_err(store_status)? {
            Some(why) if !why.is_empty() => return Err(Status::failed_precondition(why)),
            Some(_) => return stored_message(state, id).await,
            None => {}
        }
    }
    Err(Status::unavailable(format!(
        "the replica dispatching message {id} did not decide its cancellation in time; it still may: GetMessage tells"
    )))
}

/// Replays from the store after `cursor`, then forwards live events, skipping any already
/// sent; when the live feed overflows, goes back to the store from the last sequence sent.
async fn follow(
    state: Arc<AppState>,
    mut cursor: u64,
    kinds: Vec<String>,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    let wanted = |e: &Event| kinds.is_empty() || kinds.iter().any(|k| k == e.kind.name());
    loop {
        // Replay.
        loop {
            let page = match state.store.events_after(cursor, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            let done = page.len() < REPLAY_PAGE;
            for event in page {
                cursor = event.sequence;
                if wanted(&event) && !forward(&state, &tx, &event).await {
                    return;
                }
            }
            if done {
                break;
            }
        }
        // Follow.
        loop {
            let next = tokio::select! {
                _ = state.stopping.cancelled() => return,
                next = live.recv() => next,
            };
            match next {
                Ok(event) if event.sequence <= cursor => continue,
                Ok(event) => {
                    cursor = event.sequence;
                    if wanted(&event) && !forward(&state, &tx, &event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        live = live.resubscribe();
    }
}

/// Sends one event to the client; false when the client is gone or the gateway is stopping
/// (a stream never holds up shutdown).
async fn forward(
    state: &AppState,
    tx: &mpsc::Sender<Result<pb::Event, Status>>,
    event: &Event,
) -> bool {
    tokio::select! {
        _ = state.stopping.cancelled() => false,
        sent = tx.send(Ok(convert::event_to_pb(event))) => sent.is_ok(),
    }
}

/// What makes two requests with one idempotency key the same request: every field but the
/// key itself, metadata in key order.
fn fingerprint(
    req: &pb::SendMessageRequest,
    metadata: &BTreeMap<String, String>,
    ttl: Duration,
) -> String {
    let mut h = Sha256::new();
    let canonical = pb::SendMessageRequest {
        idempotency_key: String::new(),
        metadata: Default::default(),
        ttl: None,
        ..req.clone()
    };
    h.update(prost::Message::encode_to_vec(&canonical));
    for (k, v) in metadata {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.update(ttl.as_millis().to_le_bytes());
    crate::model::hex(&h.finalize())
}
