//! Proto to model and back, and store errors to gRPC statuses. Nothing else in the gateway
//! sees the generated types' field layout.

use omnigate_adapters::{
    Attachment, Channel, Choice, Content, Email, ErrorCode, Interactive, InteractiveAction,
    Location, Media, MediaKind, MessageStatus, ProviderError, Reaction, Section, Template,
    TemplateComponent, TemplateParameter, Text,
};
use omnigate_proto::v1 as pb;
use tonic::Status;

use crate::contacts::normalize;
use crate::model::{
    Contact, Conversation, ConversationState, Direction, Event, EventKind, Identity, Message,
    Millis, OptOut,
};
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

/// Proto content to the model. Reactions name an omnigate message id here; the caller
/// swaps in the provider's id.
pub fn content_from_pb(content: Option<pb::Content>) -> Result<Content, Status> {
    use pb::content::Kind;
    Ok(match content.and_then(|c| c.kind) {
        Some(Kind::Text(t)) => Content::Text(Text { body: t.body, preview_url: t.preview_url }),
        Some(Kind::Media(m)) => Content::Media(Media {
            kind: match pb::MediaKind::try_from(m.kind) {
                Ok(pb::MediaKind::Image) => MediaKind::Image,
                Ok(pb::MediaKind::Audio) => MediaKind::Audio,
                Ok(pb::MediaKind::Video) => MediaKind::Video,
                Ok(pb::MediaKind::Document) => MediaKind::Document,
                Ok(pb::MediaKind::Sticker) => MediaKind::Sticker,
                Ok(pb::MediaKind::Auto) => MediaKind::Auto,
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "unknown content.media.kind {}",
                        m.kind
                    )));
                }
            },
            url: m.url,
            mime_type: m.mime_type,
            caption: m.caption,
            extra_urls: m.extra_urls,
            filename: m.filename,
            provider_media_id: m.provider_media_id,
        }),
        Some(Kind::Template(t)) => Content::Template(Template {
            name: t.name,
            language: t.language,
            components: t
                .components
                .into_iter()
                .map(|c| {
                    Ok(TemplateComponent {
                        kind: c.r#type,
                        sub_type: c.sub_type,
                        index: c.index,
                        parameters: c
                            .parameters
                            .into_iter()
                            .map(parameter_from_pb)
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, Status>>()?,
        }),
        Some(Kind::Interactive(i)) => Content::Interactive(Interactive {
            header: i.header,
            body: i.body,
            footer: i.footer,
            action: match i.action {
                Some(pb::interactive::Action::Buttons(c)) => {
                    InteractiveAction::Buttons(choices(c.choices))
                }
                Some(pb::interactive::Action::QuickReplies(c)) => {
                    InteractiveAction::QuickReplies(choices(c.choices))
                }
                Some(pb::interactive::Action::List(l)) => InteractiveAction::List {
                    button: l.button,
                    sections: l
                        .sections
                        .into_iter()
                        .map(|s| Section { title: s.title, rows: choices(s.rows) })
                        .collect(),
                },
                None => {
                    return Err(Status::invalid_argument(
                        "content.interactive needs buttons, list or quick_replies",
                    ));
                }
            },
        }),
        Some(Kind::Location(l)) => Content::Location(Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name,
            address: l.address,
        }),
        Some(Kind::Reaction(r)) => {
            Content::Reaction(Reaction { provider_message_id: r.message_id, emoji: r.emoji })
        }
        Some(Kind::Choice(_)) => {
            return Err(Status::invalid_argument(
                "content.choice is what a person answers; it cannot be sent",
            ));
        }
        Some(Kind::Email(e)) => Content::Email(Email {
            subject: e.subject,
            text: e.text,
            html: e.html,
            attachments: e
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    size: if a.data.is_empty() { a.size } else { a.data.len() as u64 },
                    filename: a.filename,
                    mime_type: a.mime_type,
                    url: a.url,
                    data: a.data,
                })
                .collect(),
            reply_text: e.reply_text,
            headers: e.headers.into_iter().collect(),
            // What the mail says of itself when it comes in; nothing a sender sets.
            automatic: false,
        }),
        None => return Err(Status::invalid_argument("content is required")),
    })
}

fn choices(c: Vec<pb::Choice>) -> Vec<Choice> {
    c.into_iter().map(|c| Choice { id: c.id, title: c.title, description: c.description }).collect()
}

fn choices_to_pb(c: &[Choice]) -> Vec<pb::Choice> {
    c.iter()
        .map(|c| pb::Choice {
            id: c.id.clone(),
            title: c.title.clone(),
            description: c.description.clone(),
        })
        .collect()
}

fn parameter_from_pb(p: pb::TemplateParameter) -> Result<TemplateParameter, Status> {
    use pb::template_parameter::Kind;
    Ok(match p.kind {
        Some(Kind::Text(t)) => TemplateParameter::Text(t),
        Some(Kind::Payload(p)) => TemplateParameter::Payload(p),
        Some(Kind::ImageUrl(url)) => TemplateParameter::Image { url },
        Some(Kind::VideoUrl(url)) => TemplateParameter::Video { url },
        Some(Kind::Document(d)) => TemplateParameter::Document { url: d.url, filename: d.filename },
        Some(Kind::Currency(c)) => TemplateParameter::Currency {
            fallback: c.fallback_value,
            code: c.code,
            amount_1000: c.amount_1000,
        },
        Some(Kind::DateTime(fallback)) => TemplateParameter::DateTime { fallback },
        None => return Err(Status::invalid_argument("a template parameter is empty")),
    })
}

fn parameter_to_pb(p: &TemplateParameter) -> pb::TemplateParameter {
    use pb::template_parameter::Kind;
    let kind = match p {
        TemplateParameter::Text(t) => Kind::Text(t.clone()),
        TemplateParameter::Payload(p) => Kind::Payload(p.clone()),
        TemplateParameter::Image { url } => Kind::ImageUrl(url.clone()),
        TemplateParameter::Video { url } => Kind::VideoUrl(url.clone()),
        TemplateParameter::Document { url, filename } => {
            Kind::Document(pb::TemplateDocument { url: url.clone(), filename: filename.clone() })
        }
        TemplateParameter::Currency { fallback, code, amount_1000 } => {
            Kind::Currency(pb::TemplateCurrency {
                fallback_value: fallback.clone(),
                code: code.clone(),
                amount_1000: *amount_1000,
            })
        }
        TemplateParameter::DateTime { fallback } => Kind::DateTime(fallback.clone()),
    };
    pb::TemplateParameter { kind: Some(kind) }
}

pub fn content_to_pb(content: &Content) -> pb::Content {
    use pb::content::Kind;
    let kind = match content {
        Content::Text(t) => {
            Kind::Text(pb::Text { body: t.body.clone(), preview_url: t.preview_url })
        }
        Content::Media(m) => Kind::Media(pb::Media {
            url: m.url.clone(),
            mime_type: m.mime_type.clone(),
            caption: m.caption.clone(),
            extra_urls: m.extra_urls.clone(),
            kind: match m.kind {
                MediaKind::Auto => pb::MediaKind::Auto,
                MediaKind::Image => pb::MediaKind::Image,
                MediaKind::Audio => pb::MediaKind::Audio,
                MediaKind::Video => pb::MediaKind::Video,
                MediaKind::Document => pb::MediaKind::Document,
                MediaKind::Sticker => pb::MediaKind::Sticker,
            } as i32,
            filename: m.filename.clone(),
            provider_media_id: m.provider_media_id.clone(),
        }),
        Content::Template(t) => Kind::Template(pb::Template {
            name: t.name.clone(),
            language: t.language.clone(),
            components: t
                .components
                .iter()
                .map(|c| pb::TemplateComponent {
                    r#type: c.kind.clone(),
                    sub_type: c.sub_type.clone(),
                    index: c.index,
                    parameters: c.parameters.iter().map(parameter_to_pb).collect(),
                })
                .collect(),
        }),
        Content::Interactive(i) => Kind::Interactive(pb::Interactive {
            header: i.header.clone(),
            body: i.body.clone(),
            footer: i.footer.clone(),
            action: Some(match &i.action {
                InteractiveAction::Buttons(c) => {
                    pb::interactive::Action::Buttons(pb::Choices { choices: choices_to_pb(c) })
                }
                InteractiveAction::QuickReplies(c) => {
                    pb::interactive::Action::QuickReplies(pb::Choices { choices: choices_to_pb(c) })
                }
                InteractiveAction::List { button, sections } => {
                    pb::interactive::Action::List(pb::ListMenu {
                        button: button.clone(),
                        sections: sections
                            .iter()
                            .map(|s| pb::ListSection {
                                title: s.title.clone(),
                                rows: choices_to_pb(&s.rows),
                            })
                            .collect(),
                    })
                }
            }),
        }),
        Content::Location(l) => Kind::Location(pb::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name.clone(),
            address: l.address.clone(),
        }),
        // Stored reactions hold the provider's id of the reacted message.
        Content::Reaction(r) => Kind::Reaction(pb::Reaction {
            message_id: r.provider_message_id.clone(),
            emoji: r.emoji.clone(),
        }),
        Content::Choice(c) => Kind::Choice(pb::Choice {
            id: c.id.clone(),
            title: c.title.clone(),
            description: c.description.clone(),
        }),
        Content::Email(e) => Kind::Email(pb::Email {
            subject: e.subject.clone(),
            text: e.text.clone(),
            html: e.html.clone(),
            attachments: e
                .attachments
                .iter()
                .map(|a| pb::Attachment {
                    filename: a.filename.clone(),
                    mime_type: a.mime_type.clone(),
                    url: a.url.clone(),
                    data: a.data.clone(),
                    size: a.size,
                })
                .collect(),
            reply_text: e.reply_text.clone(),
            headers: e.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            automatic: e.automatic,
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

pub fn timestamp(ms: Millis) -> omnigate_proto::pbjson_types::Timestamp {
    omnigate_proto::pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The message as the API shows it. An outbound message's inline attachment bytes are left
/// out (their name, type and size stay): the caller sent them, and echoing up to
/// `max_attachment_bytes` back would pass the 4 MiB a gRPC client reads by default, making
/// an accepted message look refused.
pub fn message_to_pb(m: &Message) -> pb::Message {
    let light = match m.direction {
        Direction::Outbound => m.content.without_inline_data(),
        Direction::Inbound => None,
    };
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
        content: Some(content_to_pb(light.as_ref().unwrap_or(&m.content))),
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
        send_at: m.send_at.map(timestamp),
        reply_to_message_id: m.reply_to_message_id.clone().unwrap_or_default(),
        contact_id: m.contact_id.clone(),
        channel_attempts: m
            .channel_attempts
            .iter()
            .map(|a| pb::ChannelAttempt {
                channel: channel_to_pb(a.channel) as i32,
                account: a.account.clone(),
                to: a.to.clone(),
                status: status_to_pb(a.status) as i32,
                error: a.error.as_ref().map(error_to_pb),
                provider_message_id: a.provider_message_id.clone().unwrap_or_default(),
            })
            .collect(),
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
        EventKind::ConversationOpened { conversation } => {
            pb::event::Kind::ConversationOpened(pb::ConversationOpened {
                conversation: Some(conversation_to_pb(conversation)),
            })
        }
        EventKind::ConversationClosed { conversation } => {
            pb::event::Kind::ConversationClosed(pb::ConversationClosed {
                conversation: Some(conversation_to_pb(conversation)),
            })
        }
        EventKind::ContactMerged { contact, merged_contact_id } => {
            pb::event::Kind::ContactMerged(pb::ContactMerged {
                contact: Some(contact_to_pb(contact)),
                merged_contact_id: merged_contact_id.clone(),
            })
        }
        EventKind::ContactForgotten { contact_id } => {
            pb::event::Kind::ContactForgotten(pb::ContactForgotten {
                contact_id: contact_id.clone(),
            })
        }
        EventKind::InboundRejected { account, channel, reference, reason, from, contact_id } => {
            pb::event::Kind::InboundRejected(pb::InboundRejected {
                account: account.clone(),
                channel: channel_to_pb(*channel) as i32,
                reference: reference.clone(),
                reason: reason.clone(),
                from: from.clone(),
                contact_id: contact_id.clone(),
            })
        }
        EventKind::ConsentChanged {
            contact_id,
            account,
            channel,
            address,
            opted_out,
            reason,
            marketing_only,
            bounced,
        } => pb::event::Kind::ConsentChanged(pb::ConsentChanged {
            contact_id: contact_id.clone(),
            account: account.clone(),
            channel: channel_to_pb(*channel) as i32,
            address: address.clone(),
            opted_out: *opted_out,
            reason: reason.clone(),
            marketing_only: *marketing_only,
            bounced: *bounced,
        }),
    };
    pb::Event { sequence: e.sequence, time: Some(timestamp(e.at)), kind: Some(kind) }
}

pub fn identity_from_pb(identity: Option<pb::Identity>) -> Result<Identity, Status> {
    let identity = identity.ok_or_else(|| Status::invalid_argument("identity is required"))?;
    let channel = channel_from_pb(identity.channel)?;
    normalize(channel, &identity.address).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn identity_to_pb(i: &Identity) -> pb::Identity {
    pb::Identity { channel: channel_to_pb(i.channel) as i32, address: i.address.clone() }
}

pub fn contact_to_pb(c: &Contact) -> pb::Contact {
    pb::Contact {
        id: c.id.clone(),
        display_name: c.display_name.clone(),
        identities: c.identities.iter().map(identity_to_pb).collect(),
        channel_preferences: c.preferences.iter().map(|p| channel_to_pb(*p) as i32).collect(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        opt_outs: c.opt_outs.iter().map(opt_out_to_pb).collect(),
    }
}

pub fn opt_out_to_pb(o: &OptOut) -> pb::OptOut {
    pb::OptOut {
        account: o.account.clone(),
        address: o.address.clone(),
        reason: o.reason.clone(),
        at: Some(timestamp(o.at)),
        marketing_only: o.marketing_only,
        bounced: o.bounced,
    }
}

pub fn conversation_to_pb(c: &Conversation) -> pb::Conversation {
    pb::Conversation {
        id: c.id.clone(),
        contact_id: c.contact_id.clone(),
        channels: c.channels.iter().map(|ch| channel_to_pb(*ch) as i32).collect(),
        state: match c.state {
            ConversationState::Open => pb::ConversationState::Open,
            ConversationState::Closed => pb::ConversationState::Closed,
        } as i32,
        created_at: Some(timestamp(c.created_at)),
        last_activity_at: Some(timestamp(c.last_activity_at)),
    }
}

/// A client's timestamp in milliseconds; saturating, since any i64 of seconds may come.
pub fn millis(t: &omnigate_proto::pbjson_types::Timestamp) -> Millis {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// Store errors as gRPC statuses, with the reason in the message.
/// A provider's refusal of a request made for a caller (a media fetch, a read receipt) as
/// a gRPC status that says whose problem it is, with the provider's code.
pub fn provider_status(e: omnigate_adapters::ProviderError) -> Status {
    let code =
        if e.provider_code.is_empty() { String::new() } else { format!(" ({})", e.provider_code) };
    let message = format!("{}{code}", e.message);
    match e.code {
        omnigate_adapters::ErrorCode::Expired => Status::not_found(message),
        _ if e.retryable => Status::unavailable(message),
        _ => Status::failed_precondition(message),
    }
}

pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::IdempotencyConflict(_) => Status::already_exists(e.to_string()),
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::IdentityTaken { .. } | StoreError::TooLate { .. } => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StoreError::Closed => Status::unavailable(e.to_string()),
        StoreError::Purged { .. } => Status::out_of_range(e.to_string()),
        StoreError::Sqlite(_)
        | StoreError::Postgres(_)
        | StoreError::Database(_)
        | StoreError::Corrupt(_)
        | StoreError::CommitFailed(_) => {
            tracing::error!(error = %e, "store failure");
            Status::internal(e.to_string())
        }
    }
}
