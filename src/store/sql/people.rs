//! Contacts, identities and conversations: who a message is with, and which conversation it
//! threads into. Runs inside the writer's transaction (writes) or on a reader (reads).

use super::db::{Db, Row, args};
use omnigate_adapters::Channel;

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

pub fn load_contact(db: &dyn Db, id: &str) -> Result<Option<Contact>, StoreError> {
    // A merged contact answers as the one it was merged into.
    let mut id = id.to_string();
    for _ in 0..16 {
        let Some(row) =
            db.query_opt("SELECT doc, merged_into FROM contacts WHERE id = $1", args![&id])?
        else {
            return Ok(None);
        };
        match row.opt_text(1)? {
            Some(into) => id = into,
            None => {
                let doc: ContactDoc = row.doc(0)?;
                // Both schemas keep identities in the order they were added as `rowid`.
                let identities = db
                    .query(
                        "SELECT channel, address FROM identities WHERE contact_id = $1 ORDER BY rowid",
                        args![&id],
                    )?
                    .iter()
                    .map(|r| Ok((r.text(0)?, r.text(1)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?
                    .into_iter()
                    .filter_map(|(c, a)| channel_from_str(&c).map(|channel| Identity { channel, address: a }))
                    .collect();
                let opt_outs = super::consent::of_contact(db, &id)?;
                return Ok(Some(Contact {
                    id,
                    display_name: doc.display_name,
                    identities,
                    preferences: doc.preferences,
                    created_at: doc.created_at,
                    updated_at: doc.updated_at,
                    opt_outs,
                }));
            }
        }
    }
    Err(StoreError::Invalid(format!("contact {id} has a merge cycle")))
}

fn channel_from_str(s: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == s)
}

fn save_contact(db: &dyn Db, c: &Contact) -> Result<(), StoreError> {
    let doc = ContactDoc {
        display_name: c.display_name.clone(),
        preferences: c.preferences.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    };
    db.execute_later(
        "INSERT INTO contacts (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        args![&c.id, &serde_json::to_string(&doc)?],
    )?;
    Ok(())
}

pub fn owner_of(db: &dyn Db, identity: &Identity) -> Result<Option<String>, StoreError> {
    db.query_opt(
        "SELECT contact_id FROM identities WHERE channel = $1 AND address = $2",
        args![identity.channel.as_str(), &identity.address],
    )?
    .map(|r| r.text(0))
    .transpose()
}

fn attach(db: &dyn Db, identity: &Identity, contact_id: &str) -> Result<(), StoreError> {
    db.execute_later(
        "INSERT INTO identities (channel, address, contact_id) VALUES ($1, $2, $3)",
        args![identity.channel.as_str(), &identity.address, contact_id],
    )?;
    Ok(())
}

/// The contact an identity belongs to, and whether this write made it.
pub struct Resolved {
    pub id: String,
    pub created: bool,
}

/// The contact an address belongs to, created when the address is new. A new phone
/// identity joins the contact that already has the same number on the other phone channel.
pub fn resolve_contact(
    db: &dyn Db,
    identity: &Identity,
    now: Millis,
) -> Result<Resolved, StoreError> {
    // The address and its sibling on the other phone channel, in one look-up.
    let sibling = phone_sibling(identity);
    let other = sibling.as_ref().unwrap_or(identity);
    let owners = db.query(
        "SELECT contact_id, channel FROM identities
         WHERE (channel = $1 AND address = $2) OR (channel = $3 AND address = $4)",
        args![identity.channel.as_str(), &identity.address, other.channel.as_str(), &other.address],
    )?;
    let mut sibling_owner = None;
    for row in &owners {
        if row.text(1)? == identity.channel.as_str() {
            return Ok(Resolved { id: row.text(0)?, created: false });
        }
        sibling_owner = Some(row.text(0)?);
    }
    if let Some(id) = sibling_owner {
        attach(db, identity, &id)?;
        return Ok(Resolved { id, created: false });
    }
    let contact = Contact {
        id: new_id("ctc"),
        display_name: String::new(),
        identities: vec![identity.clone()],
        preferences: Vec::new(),
        created_at: now,
        updated_at: now,
        opt_outs: Vec::new(),
    };
    save_contact(db, &contact)?;
    attach(db, identity, &contact.id)?;
    Ok(Resolved { id: contact.id, created: true })
}

/// Checks that no identity belongs to a contact other than `contact_id` (which may be new).
fn check_free(
    db: &dyn Db,
    identities: &[Identity],
    contact_id: Option<&str>,
) -> Result<(), StoreError> {
    for identity in identities {
        if let Some(owner) = owner_of(db, identity)?
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
    db: &dyn Db,
    update: &ContactUpdate,
    now: Millis,
) -> Result<Contact, StoreError> {
    let mut contact = match &update.id {
        Some(id) => {
            load_contact(db, id)?.ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?
        }
        None => Contact {
            id: new_id("ctc"),
            display_name: String::new(),
            identities: Vec::new(),
            preferences: Vec::new(),
            created_at: now,
            updated_at: now,
            opt_outs: Vec::new(),
        },
    };
    check_free(db, &update.identities, Some(&contact.id))?;
    if let Some(name) = &update.display_name {
        contact.display_name = name.clone();
    }
    if !update.preferences.is_empty() {
        contact.preferences = update.preferences.clone();
    }
    contact.updated_at = now;
    save_contact(db, &contact)?;
    for identity in &update.identities {
        if owner_of(db, identity)?.is_none() {
            attach(db, identity, &contact.id)?;
        }
    }
    load_contact(db, &contact.id)?
        .ok_or_else(|| StoreError::NotFound(format!("contact {}", contact.id)))
}

pub fn merge_contacts(
    db: &dyn Db,
    events: &mut Vec<Event>,
    into: &str,
    from: &str,
    now: Millis,
) -> Result<Contact, StoreError> {
    let target =
        load_contact(db, into)?.ok_or_else(|| StoreError::NotFound(format!("contact {into}")))?;
    let source =
        load_contact(db, from)?.ok_or_else(|| StoreError::NotFound(format!("contact {from}")))?;
    // Merging again, or merging a contact into itself, changes nothing.
    if source.id == target.id {
        return Ok(target);
    }
    db.execute(
        "UPDATE identities SET contact_id = $1 WHERE contact_id = $2",
        args![&target.id, &source.id],
    )?;
    db.execute(
        "UPDATE conversations SET contact_id = $1 WHERE contact_id = $2",
        args![&target.id, &source.id],
    )?;
    let moved =
        db.query("SELECT id, doc FROM messages WHERE contact_id = $1", args![&source.id])?;
    for row in moved {
        let mut m: crate::model::Message = row.doc(1)?;
        m.contact_id = target.id.clone();
        db.execute(
            "UPDATE messages SET contact_id = $2, doc = $3 WHERE id = $1",
            args![&row.text(0)?, &target.id, &serde_json::to_string(&m)?],
        )?;
    }
    db.execute(
        "UPDATE contacts SET merged_into = $1 WHERE id = $2",
        args![&target.id, &source.id],
    )?;
    let mut merged = target;
    if merged.display_name.is_empty() {
        merged.display_name = source.display_name;
    }
    merged.updated_at = now;
    save_contact(db, &merged)?;
    let merged = load_contact(db, &merged.id)?
        .ok_or_else(|| StoreError::NotFound(format!("contact {into}")))?;
    append_event(
        db,
        events,
        EventKind::ContactMerged { contact: merged.clone(), merged_contact_id: source.id },
    )?;
    Ok(merged)
}

pub fn forget_contact(
    db: &dyn Db,
    events: &mut Vec<Event>,
    id: &str,
    now: Millis,
) -> Result<u64, StoreError> {
    let contact =
        load_contact(db, id)?.ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?;
    for identity in &contact.identities {
        db.execute("DELETE FROM windows WHERE peer = $1", args![&identity.address])?;
    }
    db.execute("DELETE FROM identities WHERE contact_id = $1", args![&contact.id])?;
    let erased = scrub_contact_messages(db, &contact.id)?;
    let blank =
        Contact { display_name: String::new(), identities: Vec::new(), updated_at: now, ..contact };
    save_contact(db, &blank)?;
    db.execute("UPDATE contacts SET forgotten = 1 WHERE id = $1", args![&blank.id])?;
    append_event(db, events, EventKind::ContactForgotten { contact_id: blank.id })?;
    Ok(erased)
}

// Conversations.

fn to_conversation(row: &Row) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: row.text(0)?,
        contact_id: row.text(1)?,
        channels: row.doc(2)?,
        state: if row.text(3)? == "open" {
            ConversationState::Open
        } else {
            ConversationState::Closed
        },
        created_at: row.int(4)?,
        last_activity_at: row.int(5)?,
    })
}

const CONVERSATION_COLUMNS: &str = "id, contact_id, channels, state, created_at, last_activity_at";

pub fn load_conversation(db: &dyn Db, id: &str) -> Result<Option<Conversation>, StoreError> {
    db.query_opt(
        &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"),
        args![id],
    )?
    .map(|r| to_conversation(&r))
    .transpose()
}

/// Who a message is with, as threading and consent need it.
pub struct Party<'a> {
    pub contact: &'a Resolved,
    pub account: &'a str,
    pub channel: Channel,
    pub address: &'a str,
}

/// The contact's open conversation if it was active within `inactivity_ms`, else a new one
/// (an older open one is closed). Records the channel and the activity.
pub fn thread(
    db: &dyn Db,
    events: &mut Vec<Event>,
    party: &Party<'_>,
    now: Millis,
    inactivity_ms: Millis,
) -> Result<String, StoreError> {
    let (contact_id, account, channel, peer) =
        (party.contact.id.as_str(), party.account, party.channel, party.address);
    // A contact made in this very write has no conversation yet: no need to look.
    let open = if party.contact.created {
        None
    } else {
        db.query_opt(
            &format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE contact_id = $1 AND state = 'open'
                 ORDER BY last_activity_at DESC LIMIT 1"
            ),
            args![contact_id],
        )?
        .map(|r| to_conversation(&r))
        .transpose()?
    };
    match open {
        Some(c) if now - c.last_activity_at <= inactivity_ms => {
            touch(db, &c, channel, now)?;
            Ok(c.id)
        }
        stale => {
            if let Some(c) = stale {
                close(db, events, &c.id)?;
            }
            let c = Conversation {
                id: new_id("cnv"),
                contact_id: contact_id.to_string(),
                channels: vec![channel],
                state: ConversationState::Open,
                created_at: now,
                last_activity_at: now,
            };
            db.execute_later(
                "INSERT INTO conversations (id, account, channel, peer, state, created_at, last_activity_at, contact_id, channels)
                 VALUES ($1, $2, $3, $4, 'open', $5, $5, $6, $7)",
                args![&c.id, account, channel.as_str(), peer, now, contact_id, &serde_json::to_string(&c.channels)?],
            )?;
            append_event(db, events, EventKind::ConversationOpened { conversation: c.clone() })?;
            Ok(c.id)
        }
    }
}

/// Records activity on an explicitly named conversation.
pub fn touch(
    db: &dyn Db,
    c: &Conversation,
    channel: Channel,
    now: Millis,
) -> Result<(), StoreError> {
    let mut channels = c.channels.clone();
    if !channels.contains(&channel) {
        channels.push(channel);
    }
    db.execute_later(
        "UPDATE conversations SET channels = $3,
           last_activity_at = CASE WHEN last_activity_at > $2 THEN last_activity_at ELSE $2 END
         WHERE id = $1",
        args![&c.id, now, &serde_json::to_string(&channels)?],
    )?;
    Ok(())
}

pub fn close(db: &dyn Db, events: &mut Vec<Event>, id: &str) -> Result<Conversation, StoreError> {
    let mut c = load_conversation(db, id)?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {id}")))?;
    if c.state == ConversationState::Closed {
        return Ok(c);
    }
    db.execute("UPDATE conversations SET state = 'closed' WHERE id = $1", args![id])?;
    c.state = ConversationState::Closed;
    append_event(db, events, EventKind::ConversationClosed { conversation: c.clone() })?;
    Ok(c)
}

pub fn list_conversations(
    db: &dyn Db,
    f: &ConversationFilter,
) -> Result<Vec<Conversation>, StoreError> {
    // Newest activity first; the page token is (last_activity_at, id) of the last one shown.
    let (after_at, after_id) = f.after.clone().unwrap_or((i64::MAX, String::new()));
    let after_id = if after_id.is_empty() { "\u{10FFFF}".to_string() } else { after_id };
    db.query(
        &format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations
             WHERE ($1 = '' OR contact_id = $1) AND ($2 = '' OR state = $2) AND last_activity_at >= $3
               AND (last_activity_at < $4 OR (last_activity_at = $4 AND id < $5))
             ORDER BY last_activity_at DESC, id DESC LIMIT $6"
        ),
        args![
            f.contact_id.as_deref().unwrap_or_default(),
            f.state.map(ConversationState::as_str).unwrap_or_default(),
            f.updated_since.unwrap_or(i64::MIN),
            after_at,
            &after_id,
            f.limit
        ],
    )?
    .iter()
    .map(to_conversation)
    .collect()
}
