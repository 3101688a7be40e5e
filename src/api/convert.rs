//! Proto to model and back, and store errors to gRPC statuses. Nothing else in the gateway
//! sees the generated types' field layout.

use omnigate_adapters::{Channel, Content, ErrorCode, Media, MessageStatus, ProviderError, Text};
use omnigate_proto::v1 as pb;
use tonic::Status;

use crate::model::{Direction, Event, EventKind, Message, Millis};
use crate::store::StoreError;

pub fn channel_from_pb(value: i32) -> Result<Channel, Status> {
    Ok(match pb::Channel::try_from(value) {
        Ok(pb::Channel::Sms) => Channel::Sms,
        Ok(pb::Channel::Whatsapp) => Channel::Whatsapp,
        Ok(pb::Channel::Messenger) => Channel::Messenger,
        Ok(pb::Channel::Instagram) => Channel::Instagram,
        Ok(pb::Channel::Email) => Channel::Email,
        Ok(pb::Channel::Unspecified) => {
            return Err(Status::invalid_argument("channel is required"));
        }
        Err(_) => return Err(Status::invalid_argument(format!("unknown channel {value}"))),
    })
}

pub fn channel_to_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Sms => pb::Channel::Sms,
        Channel::Whatsapp => pb::Channel::Whatsapp,
        Channel::Messenger => pb::Channel::Messenger,
        Channel::Instagram => pb::Channel::Instagram,
        Channel::Email => pb::Channel::Email,
    }
}

pub fn content_from_pb(content: Option<pb::Content>) -> Result<Content, Status> {
    match content.and_then(|c| c.kind) {
        Some(pb::content::Kind::Text(t)) => Ok(Content::Text(Text { body: t.body })),
        Some(pb::content::Kind::Media(m)) => Ok(Content::Media(Media {
            url: m.url,
            mime_type: m.mime_type,
            caption: m.caption,
            extra_urls: m.extra_urls,
        })),
        None => Err(Status::invalid_argument("content is required (text or media)")),
    }
}

fn content_to_pb(content: &Content) -> pb::Content {
    let kind = match content {
        Content::Text(t) => pb::content::Kind::Text(pb::Text { body: t.body.clone() }),
        Content::Media(m) => pb::content::Kind::Media(pb::Media {
            url: m.url.clone(),
            mime_type: m.mime_type.clone(),
            caption: m.caption.clone(),
            extra_urls: m.extra_urls.clone(),
        }),
    };
    pb::Content { kind: Some(kind) }
}

pub fn status_to_pb(status: MessageStatus) -> pb::MessageStatus {
    match status {
        MessageStatus::Accepted => pb::MessageStatus::Accepted,
        MessageStatus::Queued => pb::MessageStatus::Queued,
        MessageStatus::Sent => pb::MessageStatus::Sent,
        MessageStatus::Delivered => pb::MessageStatus::Delivered,
        MessageStatus::Read => pb::MessageStatus::Read,
        MessageStatus::Failed => pb::MessageStatus::Failed,
        MessageStatus::Canceled => pb::MessageStatus::Canceled,
        MessageStatus::Expired => pb::MessageStatus::Expired,
        MessageStatus::Received => pb::MessageStatus::Received,
    }
}

fn error_code_to_pb(code: ErrorCode) -> pb::ErrorCode {
    match code {
        ErrorCode::InvalidRecipient => pb::ErrorCode::InvalidRecipient,
        ErrorCode::RecipientOptedOut => pb::ErrorCode::RecipientOptedOut,
        ErrorCode::InvalidContent => pb::ErrorCode::InvalidContent,
        ErrorCode::Authentication => pb::ErrorCode::Authentication,
        ErrorCode::RateLimited => pb::ErrorCode::RateLimited,
        ErrorCode::ProviderUnavailable => pb::ErrorCode::ProviderUnavailable,
        ErrorCode::Undeliverable => pb::ErrorCode::Undeliverable,
        ErrorCode::Expired => pb::ErrorCode::Expired,
        ErrorCode::Rejected => pb::ErrorCode::Rejected,
        ErrorCode::AttemptsExhausted => pb::ErrorCode::AttemptsExhausted,
        ErrorCode::OutsideWindow => pb::ErrorCode::OutsideWindow,
    }
}

fn error_to_pb(e: &ProviderError) -> pb::Error {
    pb::Error {
        code: error_code_to_pb(e.code) as i32,
        message: e.message.clone(),
        provider: e.provider.clone(),
        provider_code: e.provider_code.clone(),
        retryable: e.retryable,
    }
}

pub fn timestamp(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn message_to_pb(m: &Message) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        conversation_id: m.conversation_id.clone(),
        channel: channel_to_pb(m.channel) as i32,
        direction: match m.direction {
            Direction::Outbound => pb::Direction::Outbound,
            Direction::Inbound => pb::Direction::Inbound,
        } as i32,
        account: m.account.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        content: Some(content_to_pb(&m.content)),
        status: status_to_pb(m.status) as i32,
        status_history: m
            .history
            .iter()
            .map(|c| pb::StatusChange {
                status: status_to_pb(c.status) as i32,
                time: Some(timestamp(c.at)),
                provider_status: c.provider_status.clone(),
            })
            .collect(),
        error: m.error.as_ref().map(error_to_pb),
        provider_message_id: m.provider_message_id.clone().unwrap_or_default(),
        attempts: m.attempts,
        metadata: m.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
        expires_at: m.expires_at.map(timestamp),
    }
}

pub fn event_to_pb(e: &Event) -> pb::Event {
    let kind = match &e.kind {
        EventKind::StatusChanged { message, previous } => {
            pb::event::Kind::MessageStatusChanged(pb::MessageStatusChanged {
                message: Some(message_to_pb(message)),
                previous_status: previous.map(|p| status_to_pb(p) as i32).unwrap_or_default(),
            })
        }
        EventKind::Received { message } => pb::event::Kind::MessageReceived(pb::MessageReceived {
            message: Some(message_to_pb(message)),
        }),
    };
    pb::Event { sequence: e.sequence, time: Some(timestamp(e.at)), kind: Some(kind) }
}

/// Store errors as gRPC statuses, with the reason in the message.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::IdempotencyConflict(_) => Status::already_exists(e.to_string()),
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::Closed => Status::unavailable(e.to_string()),
        StoreError::Sqlite(_) | StoreError::Corrupt(_) | StoreError::CommitFailed(_) => {
            tracing::error!(error = %e, "store failure");
            Status::internal(e.to_string())
        }
    }
}
