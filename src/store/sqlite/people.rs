//! Contacts, identities and conversations: who a message is with, and which conversation it
//! threads into. Runs inside the writer's transaction (writes) or on a reader (reads).

use omnigate_adapters::Channel;
use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{append_event, scrub_contact_messages};
use crate::contacts::phone_sibling;
use crate::model::{
    Contact, Conversation, ConversationState, Event, EventKind, Identity, Millis, new_id,
};
use crate::store::{ContactUpdate, ConversationFilter, StoreError};

#[derive(serde::Serialize, serde::Deserialize)]
struct ContactDoc {
    display_name: String,
    preferences: Vec<Channel>,
    created_at: Millis,
    updated_at: Millis,
}

pub fn load_contact(conn: &Connection, id: &str) -> Result<Option<Contact>, StoreError> {
    // A merged contact answers as the one it was merged into.
    let mut id = id.to_string();
    for _ in 0..16 {
        let row: Option<(String, Option<String>)> = conn
            .prepare_cached("SELECT doc, merged_into FROM contacts WHERE id = ?1")?
            .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => return Ok(None),
            Some((_, Some(into))) => id = into,
            Some((doc, None)) => {
                let doc: ContactDoc = serde_json::from_str(&doc)?;
                let identities = conn
                    .prepare_cached("SELECT channel, address FROM identities WHERE contact_id = ?1 ORDER BY rowid")?
                    .query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter_map(|(c, a)| channel_from_str(&c).map(|channel| Identity { channel, address: a }))
                    .collect();
                return Ok(Some(Contact {
                    id,
                    display_name: doc.display_name,
                    identities,
                    preferences: doc.preferences,
                    created_at: doc.created_at,
                    updated_at: doc.updated_at,
                }));
            }
        }
    }
    Err(StoreError::Invalid(format!("contact {id} has a merge cycle")))
}

fn channel_from_str(s: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == s)
}

fn save_contact(conn: &Connection, c: &Contact) -> Result<(), StoreError> {
    let doc = ContactDoc {
        display_name: c.display_name.clone(),
        preferences: c.preferences.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    };
    conn.prepare_cached("INSERT INTO contacts (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc")?
        .execute(params![c.id, serde_json::to_string(&doc)?])?;
    Ok(())
}

pub fn owner_of(conn: &Connection, identity: &Identity) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT contact_id FROM identities WHERE channel = ?1 AND address = ?2")?
        .query_row([identity.channel.as_str(), &identity.address], |r| r.get(0))
        .optional()?)
}

fn attach(conn: &Connection, identity: &Identity, contact_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO identities (channel, address, contact_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![identity.channel.as_str(), identity.address, contact_id])?;
    Ok(())
}

/// The contact an address belongs to, created when the address is new. A new phone
/// identity joins the contact that already has the same number on the other phone channel.
pub fn resolve_contact(
    conn: &Connection,
    identity: &Identity,
    now: Millis,
) -> Result<String, StoreError> {
    if let Some(id) = owner_of(conn, identity)? {
        return Ok(id);
    }
    if let Some(sibling) = phone_sibling(identity)
        && let Some(id) = owner_of(conn, &sibling)?
    {
        attach(conn, identity, &id)?;
        return Ok(id);
    }
    let contact = Contact {
        id: new_id("ctc"),
        display_name: String::new(),
        identities: vec![identity.clone()],
        preferences: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    save_contact(conn, &contact)?;
    attach(conn, identity, &contact.id)?;
    Ok(contact.id)
}

/// Checks that no identity belongs to a contact other than `contact_id` (which may be new).
fn check_free(
    conn: &Connection,
    identities: &[Identity],
    contact_id: Option<&str>,
) -> Result<(), StoreError> {
    for identity in identities {
        if let Some(owner) = owner_of(conn, identity)?
            && Some(owner.as_str()) != contact_id
        {
            return Err(StoreError::IdentityTaken {
                identity: format!("{}:{}", identity.channel, identity.address),
                contact_id: owner,
            });
        }
    }
    Ok(())
}

pub fn upsert_contact(
    conn: &Connection,
    update: &ContactUpdate,
    now: Millis,
) -> Result<Contact, StoreError> {
    let mut contact = match &update.id {
        Some(id) => {
            load_contact(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?
        }
        None => Contact {
            id: new_id("ctc"),
            display_name: String::new(),
            identities: Vec::new(),
            preferences: Vec::new(),
            created_at: now,
            updated_at: now,
        },
    };
    check_free(conn, &update.identities, Some(&contact.id))?;
    if let Some(name) = &update.display_name {
        contact.display_name = name.clone();
    }
    if !update.preferences.is_empty() {
        contact.preferences = update.preferences.clone();
    }
    contact.updated_at = now;
    save_contact(conn, &contact)?;
    for identity in &update.identities {
        if owner_of(conn, identity)?.is_none() {
            attach(conn, identity, &contact.id)?;
        }
    }
    load_contact(conn, &contact.id)?
        .ok_or_else(|| StoreError::NotFound(format!("contact {}", contact.id)))
}

pub fn merge_contacts(
    conn: &Connection,
    events: &mut Vec<Event>,
    into: &str,
    from: &str,
    now: Millis,
) -> Result<Contact, StoreError> {
    let target =
        load_contact(conn, into)?.ok_or_else(|| StoreError::NotFound(format!("contact {into}")))?;
    let source =
        load_contact(conn, from)?.ok_or_else(|| StoreError::NotFound(format!("contact {from}")))?;
    // Merging again, or merging a contact into itself, changes nothing.
    if source.id == target.id {
        return Ok(target);
    }
    conn.prepare_cached("UPDATE identities SET contact_id = ?1 WHERE contact_id = ?2")?
        .execute([&target.id, &source.id])?;
    conn.prepare_cached("UPDATE conversations SET contact_id = ?1 WHERE contact_id = ?2")?
        .execute([&target.id, &source.id])?;
    let moved: Vec<(String, String)> = conn
        .prepare_cached("SELECT id, doc FROM messages WHERE contact_id = ?1")?
        .query_map([&source.id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, doc) in moved {
        let mut m: crate::model::Message = serde_json::from_str(&doc)?;
        m.contact_id = target.id.clone();
        conn.prepare_cached("UPDATE messages SET contact_id = ?2, doc = ?3 WHERE id = ?1")?
            .execute(params![id, target.id, serde_json::to_string(&m)?])?;
    }
    conn.prepare_cached("UPDATE contacts SET merged_into = ?1 WHERE id = ?2")?
        .execute([&target.id, &source.id])?;
    let mut merged = target;
    if merged.display_name.is_empty() {
        merged.display_name = source.display_name;
    }
    merged.updated_at = now;
    save_contact(conn, &merged)?;
    let merged = load_contact(conn, &merged.id)?
        .ok_or_else(|| StoreError::NotFound(format!("contact {into}")))?;
    append_event(
        conn,
        events,
        EventKind::ContactMerged { contact: merged.clone(), merged_contact_id: source.id },
    )?;
    Ok(merged)
}

pub fn forget_contact(
    conn: &Connection,
    events: &mut Vec<Event>,
    id: &str,
    now: Millis,
) -> Result<u64, StoreError> {
    let contact =
        load_contact(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?;
    for identity in &contact.identities {
        conn.prepare_cached("DELETE FROM windows WHERE peer = ?1")?.execute([&identity.address])?;
    }
    conn.prepare_cached("DELETE FROM identities WHERE contact_id = ?1")?.execute([&contact.id])?;
    let erased = scrub_contact_messages(conn, &contact.id)?;
    let blank =
        Contact { display_name: String::new(), identities: Vec::new(), updated_at: now, ..contact };
    save_contact(conn, &blank)?;
    conn.prepare_cached("UPDATE contacts SET forgotten = 1 WHERE id = ?1")?.execute([&blank.id])?;
    append_event(conn, events, EventKind::ContactForgotten { contact_id: blank.id })?;
    Ok(erased)
}

// Conversations.

fn conversation_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_conversation(
    row: (String, String, String, String, i64, i64),
) -> Result<Conversation, StoreError> {
    let (id, contact_id, channels, state, created_at, last_activity_at) = row;
    Ok(Conversation {
        id,
        contact_id,
        channels: serde_json::from_str(&channels)?,
        state: if state == "open" { ConversationState::Open } else { ConversationState::Closed },
        created_at,
        last_activity_at,
    })
}

const CONVERSATION_COLUMNS: &str = "id, contact_id, channels, state, created_at, last_activity_at";

pub fn load_conversation(conn: &Connection, id: &str) -> Result<Option<Conversation>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"))?
        .query_row([id], conversation_from_row)
        .optional()?;
    row.map(to_conversation).transpose()
}

/// Who a message is with, as threading needs it.
pub struct Party<'a> {
    pub contact_id: &'a str,
    pub account: &'a str,
    pub channel: Channel,
    pub address: &'a str,
}

/// The contact's open conversation if it was active within `inactivity_ms`, else a new one
/// (an older open one is closed). Records the channel and the activity.
pub fn thread(
    conn: &Connection,
    events: &mut Vec<Event>,
    party: &Party<'_>,
    now: Millis,
    inactivity_ms: Millis,
) -> Result<String, StoreError> {
    let (contact_id, account, channel, peer) =
        (party.contact_id, party.account, party.channel, party.address);
    let open = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE contact_id = ?1 AND state = 'open'
             ORDER BY last_activity_at DESC LIMIT 1"
        ))?
        .query_row([contact_id], conversation_from_row)
        .optional()?
        .map(to_conversation)
        .transpose()?;
    match open {
        Some(c) if now - c.last_activity_at <= inactivity_ms => {
            touch(conn, &c, channel, now)?;
            Ok(c.id)
        }
        stale => {
            if let Some(c) = stale {
                close(conn, events, &c.id)?;
            }
            let c = Conversation {
                id: new_id("cnv"),
                contact_id: contact_id.to_string(),
                channels: vec![channel],
                state: ConversationState::Open,
                created_at: now,
                last_activity_at: now,
            };
            conn.prepare_cached(
                "INSERT INTO conversations (id, account, channel, peer, state, created_at, last_activity_at, contact_id, channels)
                 VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, ?6, ?7)",
            )?
            .execute(params![c.id, account, channel.as_str(), peer, now, contact_id, serde_json::to_string(&c.channels)?])?;
            append_event(conn, events, EventKind::ConversationOpened { conversation: c.clone() })?;
            Ok(c.id)
        }
    }
}

/// Records activity on an explicitly named conversation.
pub fn touch(
    conn: &Connection,
    c: &Conversation,
    channel: Channel,
    now: Millis,
) -> Result<(), StoreError> {
    let mut channels = c.channels.clone();
    if !channels.contains(&channel) {
        channels.push(channel);
    }
    conn.prepare_cached("UPDATE conversations SET last_activity_at = max(last_activity_at, ?2), channels = ?3 WHERE id = ?1")?
        .execute(params![c.id, now, serde_json::to_string(&channels)?])?;
    Ok(())
}

pub fn close(
    conn: &Connection,
    events: &mut Vec<Event>,
    id: &str,
) -> Result<Conversation, StoreError> {
    let mut c = load_conversation(conn, id)?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {id}")))?;
    if c.state == ConversationState::Closed {
        return Ok(c);
    }
    conn.prepare_cached("UPDATE conversations SET state = 'closed' WHERE id = ?1")?
        .execute([id])?;
    c.state = ConversationState::Closed;
    append_event(conn, events, EventKind::ConversationClosed { conversation: c.clone() })?;
    Ok(c)
}

pub fn list_conversations(
    conn: &Connection,
    f: &ConversationFilter,
) -> Result<Vec<Conversation>, StoreError> {
    // Newest activity first; the page token is (last_activity_at, id) of the last one shown.
    let (after_at, after_id) = f.after.clone().unwrap_or((i64::MAX, String::new()));
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations
             WHERE (?1 = '' OR contact_id = ?1) AND (?2 = '' OR state = ?2) AND last_activity_at >= ?3
               AND (last_activity_at < ?4 OR (last_activity_at = ?4 AND id < ?5))
             ORDER BY last_activity_at DESC, id DESC LIMIT ?6"
        ))?
        .query_map(
            params![
                f.contact_id.as_deref().unwrap_or_default(),
                f.state.map(ConversationState::as_str).unwrap_or_default(),
                f.updated_since.unwrap_or(i64::MIN),
                after_at,
                if after_id.is_empty() { "\u{10FFFF}".to_string() } else { after_id },
                f.limit as i64
            ],
            conversation_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_conversation).collect()
}
