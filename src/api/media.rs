//! `GetMedia`: media a person sent, fetched from the provider that keeps it (with the
//! account's credentials, which product teams do not hold) and streamed on in chunks.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use omnigate_adapters::email::{ImapError, ImapUrl};
use omnigate_adapters::{Attachment, Content, MediaBody, MediaDownload};
use omnigate_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert::provider_status;
use super::grpc::{account_of, stored_message};
use crate::app::AppState;
use crate::model::{Direction, Message};

pub type MediaStream = Pin<Box<dyn Stream<Item = Result<pb::MediaChunk, Status>> + Send>>;

/// The most one fetch streams: the largest media a channel carries (WhatsApp documents,
/// 100 MB), so that an answer that never ends cannot hold a stream open forever.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;
/// The most a chunk carries: far under gRPC's usual 4 MiB message limit, large enough that
/// the per-message overhead does not matter.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks fetched ahead of a slow reader.
const AHEAD: usize = 4;

pub async fn get_media(
    state: &Arc<AppState>,
    request: pb::GetMediaRequest,
) -> Result<MediaStream, Status> {
    let id = &request.message_id;
    let message = stored_message(state, id).await?;
    if message.direction != Direction::Inbound {
        return Err(Status::failed_precondition(format!(
            "message {id} is outbound: GetMedia fetches media that people sent"
        )));
    }
    let index = request.index as usize;
    let past = |count: usize| {
        Status::out_of_range(format!(
            "message {id} carries {count} media item(s); index {index} is past them"
        ))
    };
    let (download, stated_type) = match &message.content {
        Content::Media(media) if index >= media.item_count() => {
            return Err(past(media.item_count()));
        }
        Content::Media(media) => {
            let account = account_of(state, &message)?;
            let download =
                account.sender.fetch_media(media, index).await.map_err(provider_status)?;
            (download, media.mime_type.as_str())
        }
        Content::Email(email) => {
            let attachment =
                email.attachments.get(index).ok_or_else(|| past(email.attachments.len()))?;
            (attachment_download(state, &message, attachment).await?, attachment.mime_type.as_str())
        }
        other => {
            return Err(Status::failed_precondition(format!(
                "message {id} carries {} content, not media",
                other.kind()
            )));
        }
    };
    let mime_type = match (download.mime_type.as_str(), stated_type) {
        ("", "") => "application/octet-stream".to_string(),
        ("", stated) => stated.to_string(),
        (announced, _) => announced.to_string(),
    };
    if let Some(size) = download.size.filter(|s| *s > MAX_MEDIA_BYTES) {
        return Err(too_large(size));
    }
    let first = pb::MediaChunk { mime_type, size: download.size.unwrap_or(0), data: Vec::new() };
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::spawn(pump(download.body, first, tx, state.stopping.clone()));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// An email attachment: its bytes when stored, else the part its IMAP URL names, fetched
/// from the account's mailbox (larger attachments than `max_inline_attachment_bytes` are
/// left there).
async fn attachment_download(
    state: &AppState,
    message: &Message,
    attachment: &Attachment,
) -> Result<MediaDownload, Status> {
    if attachment.url.is_empty() {
        return Ok(MediaDownload::whole(
            attachment.mime_type.clone(),
            attachment.data.clone().into(),
        ));
    }
    if attachment.size > MAX_MEDIA_BYTES {
        return Err(too_large(attachment.size));
    }
    let url = ImapUrl::parse(&attachment.url).ok_or_else(|| {
        Status::failed_precondition(format!("{:?} is not an IMAP URL of ours", attachment.url))
    })?;
    let account = account_of(state, message)?;
    let inbox = account.inbox.as_ref().ok_or_else(|| {
        Status::failed_precondition(format!(
            "account {} no longer reads a mailbox, where this attachment is",
            message.account
        ))
    })?;
    let (mime_type, bytes) = inbox.mailbox.fetch_part(&url).await.map_err(|e| match e {
        ImapError::Gone(_) => Status::not_found(e.to_string()),
        ImapError::Elsewhere(_) | ImapError::Login(_) => Status::failed_precondition(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    })?;
    Ok(MediaDownload::whole(mime_type, bytes.into()))
}

/// Reads the provider's answer and sends it on in chunks of up to [`CHUNK_BYTES`], the
/// first carrying the type and size; stops when the caller went away.
async fn pump(
    mut body: Box<dyn MediaBody>,
    first: pb::MediaChunk,
    tx: mpsc::Sender<Result<pb::MediaChunk, Status>>,
    stopping: CancellationToken,
) {
    let mut next = first;
    let mut pending = BytesMut::new();
    let mut total = 0u64;
    loop {
        // A download may take minutes; a draining gateway does not wait for it.
        let chunk = tokio::select! {
            _ = stopping.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("the gateway is stopping; fetch the media again"))).await;
                return;
            }
            chunk = body.chunk() => chunk,
        };
        let end = match chunk {
            Ok(Some(bytes)) => {
                total += bytes.len() as u64;
                if total > MAX_MEDIA_BYTES {
                    let _ = tx.send(Err(too_large(total))).await;
                    return;
                }
                pending.extend_from_slice(&bytes);
                false
            }
            Ok(None) => true,
            Err(e) => {
                let _ = tx.send(Err(provider_status(e))).await;
                return;
            }
        };
        while pending.len() >= CHUNK_BYTES || (end && !pending.is_empty()) {
            let take = pending.len().min(CHUNK_BYTES);
            next.data = pending.split_to(take).to_vec();
            if tx.send(Ok(std::mem::take(&mut next))).await.is_err() {
                return;
            }
        }
        if end {
            // Empty media still tells its type.
            if !next.mime_type.is_empty() {
                let _ = tx.send(Ok(next)).await;
            }
            return;
        }
    }
}

fn too_large(size: u64) -> Status {
    Status::resource_exhausted(format!(
        "the media is {size} bytes or more; GetMedia streams at most {MAX_MEDIA_BYTES}"
    ))
}
