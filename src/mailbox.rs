//! Each email account's mailbox reader. Replies and bounces arrive by IMAP; the cursor
//! (UIDVALIDITY, last UID) is stored after what it covers, so a restart neither loses mail
//! (it reads again from the cursor) nor repeats it (a Message-ID already stored is skipped).
//! A UIDVALIDITY change means the UIDs were renumbered: the mailbox is read again from its
//! start, and the Message-ID check keeps that from duplicating anything.

use std::sync::Arc;
use std::time::Duration;

use omnigate_adapters::email::feedback::Complaint;
use omnigate_adapters::email::parse::{self, Incoming, MailError, Source};
use omnigate_adapters::email::{Fetched, ImapConfig, ImapError, Mailbox};
use omnigate_adapters::{Channel, Consent, WebhookEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounts::Account;
use crate::app::AppState;
use crate::contacts::normalize;
use crate::model::Identity;
use crate::store::StoreError;

/// Mails fetched per round trip; the cursor is saved after each batch.
const BATCH: usize = 50;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// An account's mailbox and where it starts reading.
pub struct Inbox {
    pub mailbox: Mailbox,
    pub initial: InitialSync,
}

/// Where a new account starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialSync {
    /// Only mail that arrives after the account is first connected.
    #[default]
    New,
    /// Everything already in the mailbox too.
    All,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Starts one reader per email account with a mailbox.
pub fn spawn_all(state: &Arc<AppState>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    state
        .accounts
        .iter()
        .filter_map(|account| {
            account.inbox.as_ref()?;
            let (state, account, stop) = (state.clone(), account.clone(), stop.clone());
            Some(tokio::spawn(async move {
                let Some(inbox) = &account.inbox else { return };
                // In a fleet one replica reads each mailbox; it stops when the mailbox moves
                // (its cursor is in the store, and Message-IDs keep an overlap harmless).
                let name = crate::fleet::mailbox_key(&account.id);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = state.ownership.until_owned(&name) => {}
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = state.ownership.until_lost(&name) => {}
                        _ = run(&state, &account, &inbox.mailbox, inbox.initial) => {}
                    }
                }
            }))
        })
        .collect()
}

/// Reads until cancelled, reconnecting with backoff after any failure.
async fn run(state: &AppState, account: &Account, mailbox: &Mailbox, initial: InitialSync) {
    let mut delay = FIRST_RETRY;
    loop {
        match read(state, account, mailbox, initial, &mut delay).await {
            Ok(never) => match never {},
            Err(e) => {
                tracing::warn!(account = %account.id, error = %e, retry_in = ?delay, "mailbox reader stopped; reconnecting");
                state.metrics.mailbox(&account.id, "error");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
            }
        }
    }
}

async fn read(
    state: &AppState,
    account: &Account,
    mailbox: &Mailbox,
    initial: InitialSync,
    delay: &mut Duration,
) -> Result<std::convert::Infallible, ReadError> {
    let config = mailbox.config();
    let mut session = mailbox.connect().await?;
    let selected = session.select().await?;
    let validity = selected.uid_validity;
    let mut last_uid = match state.store.mailbox_cursor(&account.id).await? {
        Some((v, uid)) if v == validity => uid,
        Some((v, _)) => {
            tracing::warn!(account = %account.id, old = v, new = validity, "UIDVALIDITY changed; reading the mailbox again from its start");
            0
        }
        None if initial == InitialSync::New => selected.uid_next.saturating_sub(1),
        None => 0,
    };
    state.store.save_mailbox_cursor(&account.id, validity, last_uid).await?;
    *delay = FIRST_RETRY;
    loop {
        let batch = session.fetch_after(last_uid, BATCH, config.max_message_bytes).await?;
        for fetched in &batch {
            let url = session.url(&config.host, validity, fetched.uid);
            handle(state, account, config, url, validity, fetched).await?;
            last_uid = fetched.uid;
        }
        if let Some(last) = batch.last() {
            state.store.save_mailbox_cursor(&account.id, validity, last.uid).await?;
        }
        if batch.len() < BATCH {
            session = session.wait(config.poll_interval).await?;
        }
    }
}

/// One mail: a message, a report on one of ours, a complaint, or an `inbound_rejected`
/// event. Only a store failure is an error; the mail is then read again.
async fn handle(
    state: &AppState,
    account: &Account,
    config: &ImapConfig,
    url: String,
    validity: u32,
    fetched: &Fetched,
) -> Result<(), StoreError> {
    let source = Source {
        account_address: &account.from,
        fallback_id: format!("imap-{validity}-{}.{}", fetched.uid, account.from),
        url: url.clone(),
        max_inline_attachment_bytes: config.max_inline_attachment_bytes,
    };
    let parsed = match &fetched.raw {
        Some(raw) => parse::parse(raw, &source),
        None if fetched.size > config.max_message_bytes => {
            Err(MailError::TooLarge { size: fetched.size, limit: config.max_message_bytes })
        }
        None => Ok(Incoming::Ignored("expunged by another client before it was read".into())),
    };
    let event = match parsed {
        Ok(Incoming::Message(m)) => WebhookEvent::Inbound(m),
        Ok(Incoming::Report(r)) => WebhookEvent::Status(r),
        Ok(Incoming::Complaint(c)) => return complain(state, account, &url, c).await,
        Ok(Incoming::Ignored(why)) => {
            tracing::debug!(account = %account.id, %url, why, "mail skipped");
            state.metrics.mailbox(&account.id, "ignored");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(account = %account.id, %url, error = %e, "mail rejected");
            state.metrics.mailbox(&account.id, "rejected");
            return state
                .store
                .reject_inbound(&account.id, Channel::Email, &url, None, &e.to_string())
                .await;
        }
    };
    crate::inbound::apply(state, account, event).await?;
    state.metrics.mailbox(&account.id, "ok");
    Ok(())
}

/// A spam complaint opts the person out of the account's mail, as `SetConsent` would:
/// mailbox providers count every further message to them against the sender. A complaint
/// about mail this account did not send is kept as an `inbound_rejected` event.
async fn complain(
    state: &AppState,
    account: &Account,
    url: &str,
    complaint: Complaint,
) -> Result<(), StoreError> {
    if !complaint.is_opt_out() {
        tracing::debug!(account = %account.id, url, kind = %complaint.feedback_type, "feedback report that says nothing of consent");
        state.metrics.mailbox(&account.id, "ignored");
        return Ok(());
    }
    let sent = state.store.message_by_provider_id(&account.id, &complaint.original_message_id);
    let message = match sent.await? {
        Some(id) => state.store.get_message(&id).await?,
        None => None,
    };
    let Some(message) = message else {
        state.metrics.mailbox(&account.id, "rejected");
        let why = format!(
            "feedback report about <{}>, which is not a message this account sent",
            complaint.original_message_id
        );
        return state.store.reject_inbound(&account.id, Channel::Email, url, None, &why).await;
    };
    let identity = normalize(Channel::Email, &message.to)
        .unwrap_or(Identity { channel: Channel::Email, address: message.to });
    let reason = format!("spam complaint ({} feedback report)", complaint.feedback_type);
    state.store.set_consent(&account.id, identity, (Consent::OptedOut, false), reason).await?;
    state.metrics.mailbox(&account.id, "complaint");
    Ok(())
}
