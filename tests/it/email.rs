//! Email against real mail servers: Postfix (submission 587 STARTTLS, 465 TLS) and Dovecot
//! (IMAPS 993), started by `scripts/mail-servers.sh` (`scripts/test.sh` runs it). Every user at
//! omnigate.test and example.test exists; each test takes addresses of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use omnigate_adapters::email::parse::{Incoming, Source, parse};
use omnigate_adapters::email::{
    EmailAccount, EmailSender, ImapConfig, Mailbox, Security, Session, SmtpConfig,
};
use omnigate_adapters::{Content, Outbound, Sender, Thread};
use omnigate_proto::v1 as pb;

use crate::support::{self, TestGateway};

const PASSWORD: &str = "omnigate";

fn mail_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("OMNIGATE_MAIL_DIR").unwrap_or_else(|_| "/var/lib/omnigate-test-mail".into()),
    );
    assert!(
        dir.join("ca.pem").exists(),
        "the email tests need the real mail servers: run them with scripts/test.sh (or scripts/mail-servers.sh as root)"
    );
    dir
}

fn ca() -> PathBuf {
    mail_dir().join("ca.pem")
}

/// An address no other test (or earlier run) uses.
fn unique(local: &str, domain: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{local}-{nanos:x}-{}@{domain}", N.fetch_add(1, Ordering::Relaxed))
}

/// The gateway's email account on the real servers; `imap` adds keys to its `[imap]`
/// (by default IMAPS on 993, INBOX, mail from now on).
fn account_toml(address: &str, smtp_port: u16, security: &str, imap: &str) -> String {
    account_toml_with(address, smtp_port, security, "", imap)
}

/// As [`account_toml`], with more keys for `[smtp]`.
fn account_toml_with(
    address: &str,
    smtp_port: u16,
    security: &str,
    smtp: &str,
    imap: &str,
) -> String {
    format!(
        r#"
[[accounts]]
type = "email"
id = "mail"
default = true
address = "{address}"
display_name = "Omnigate Shop"
ca_file = "{ca}"
max_attachment_bytes = 4096
# The test's file server is on loopback.
fetch_private_urls = true
[accounts.smtp]
host = "localhost"
port = {smtp_port}
security = "{security}"
username = "{address}"
password = "{PASSWORD}"
timeout_ms = 10000
{smtp}
[accounts.imap]
host = "localhost"
username = "{address}"
password = "{PASSWORD}"
poll_interval_secs = 2
{imap}
"#,
        ca = ca().display()
    )
}

async fn start(address: &str) -> TestGateway {
    support::gateway().extra(&account_toml(address, 587, "starttls", "")).start().await
}

/// A person's (or our own) mailbox, as their mail client sees it.
async fn login(address: &str, mailbox: &str) -> Session {
    let config = ImapConfig {
        host: "localhost".into(),
        port: 993,
        security: Security::Tls,
        username: address.into(),
        password: PASSWORD.into(),
        mailbox: mailbox.into(),
        poll_interval: Duration::from_secs(1),
        max_message_bytes: 1 << 20,
        max_inline_attachment_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
    };
    Mailbox::new(config, Some(&ca())).expect("mailbox").connect().await.expect("imap login")
}

/// Waits until `address`'s inbox holds `n` mails; answers them, oldest first.
async fn inbox(address: &str, n: usize) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut session = login(address, "INBOX").await;
        session.select().await.expect("select");
        let mails = session.fetch_after(0, 100, 1 << 20).await.expect("fetch");
        session.logout().await;
        if mails.len() >= n {
            return mails.into_iter().filter_map(|m| m.raw).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} got {} of {n} mails",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn read(raw: &[u8], reader: &str) -> (omnigate_adapters::InboundMessage, omnigate_adapters::Email) {
    let source = Source {
        account_address: reader,
        fallback_id: "none".into(),
        url: String::new(),
        max_inline_attachment_bytes: 1 << 20,
    };
    match parse(raw, &source) {
        Ok(Incoming::Message(m)) => {
            let Content::Email(e) = m.content.clone() else { panic!("not email") };
            (m, e)
        }
        other => panic!("not a message: {other:?}"),
    }
}

/// A person's mail client account on the real submission server (STARTTLS on 587).
fn client_account(from: &str) -> EmailAccount {
    EmailAccount {
        address: from.into(),
        display_name: String::new(),
        smtp: SmtpConfig {
            host: "localhost".into(),
            port: 587,
            security: Security::StartTls,
            username: from.into(),
            password: PASSWORD.into(),
            pool_size: 1,
            timeout: Duration::from_secs(10),
            request_delivery_reports: false,
        },
        ca_file: Some(ca()),
        max_attachment_bytes: 1 << 20,
        fetch_private_urls: false,
        one_click_unsubscribe: None,
        plus_address_replies: false,
    }
}

/// Sends as a person would from their mail client, through the real submission server.
async fn reply_as(from: &str, to: &str, text: &str, thread: Thread) {
    let mut out = Outbound::new(format!("reply{}", fastrand::u64(..)), to, Content::text(text));
    out.thread = thread;
    let sender = EmailSender::new(client_account(from)).expect("sender");
    sender.send(&out).await.expect("reply submitted");
}

/// The test servers' certificates come from the tests' own CA, which the system does not
/// trust: without `ca_file` naming it, STARTTLS and implicit TLS alike refuse the server,
/// so no mail (nor the SMTP password) goes to a server that cannot prove who it is.
#[tokio::test]
async fn a_mail_server_whose_ca_is_not_trusted_is_refused() {
    let from = unique("untrusted", "example.test");
    for (port, security) in [(587, Security::StartTls), (465, Security::Tls)] {
        let mut account = client_account(&from);
        (account.smtp.port, account.smtp.security, account.ca_file) = (port, security, None);
        let out = Outbound::new(format!("untrusted-{port}"), &from, Content::text("hello"));
        let sender = EmailSender::new(account).expect("sender");
        let refused = sender.send(&out).await.expect_err("an untrusted server is refused");
        let why = refused.error.message.to_lowercase();
        assert!(why.contains("certificate") || why.contains("issuer"), "{port}: {why}");
    }
}

fn email(subject: &str, text: &str, html: &str) -> pb::content::Kind {
    pb::content::Kind::Email(pb::Email {
        subject: subject.into(),
        text: text.into(),
        html: html.into(),
        attachments: vec![pb::Attachment {
            filename: "receipt.txt".into(),
            mime_type: "text/plain".into(),
            data: b"total: 42 EUR".to_vec(),
            ..Default::default()
        }],
        reply_text: String::new(),
        headers: [("X-Campaign".to_string(), "autumn".to_string())].into(),
        automatic: false,
    })
}

/// The first attachment's bytes of an email content.
/// An email's first attachment: its name, size and the bytes it carries.
fn attachment(content: &pb::Content) -> (String, u64, usize) {
    match &content.kind {
        Some(pb::content::Kind::Email(e)) => {
            let a = &e.attachments[0];
            (a.filename.clone(), a.size, a.data.len())
        }
        _ => (String::new(), 0, 0),
    }
}

/// A plain text email through the gateway's default email account.
async fn send_text(gw: &mut TestGateway, to: &str, text: &str) -> pb::Message {
    gw.send_request(support::request(pb::Channel::Email, to, support::text(text)))
        .await
        .expect("accepted")
}

/// Waits for the conversation to hold `n` messages; answers them.
async fn history_of(gw: &mut TestGateway, conversation_id: &str, n: usize) -> Vec<pb::Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let history = gw.history(conversation_id).await;
        if history.len() >= n {
            return history;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "conversation has {} of {n}: {history:#?}",
            history.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_email_goes_out_threaded_and_the_reply_comes_back_into_its_conversation() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start(&shop).await;

    let first = gw
        .send_request(support::request(
            pb::Channel::Email,
            &ann,
            email(
                "Your order №42",
                "Hello Ann,\nyour order ships today.",
                "<p>Hello Ann,<br>your order <b>ships today</b>.</p>",
            ),
        ))
        .await
        .expect("accepted");
    let first = gw.wait_for(&first.id, pb::MessageStatus::Sent).await;
    assert_eq!(first.provider_message_id, format!("{}@omnigate.test", first.id));
    // Answers name the attachment we sent without echoing its bytes; Ann's mail has them.
    assert_eq!(first.content.as_ref().map(attachment), Some(("receipt.txt".into(), 13, 0)));
    // Status events name the attachment but do not copy its bytes each time.
    let request = pb::StreamEventsRequest {
        kinds: vec!["message_status_changed".into()],
        ..Default::default()
    };
    let mut events = gw.client.stream_events(request).await.expect("stream").into_inner();
    let mut seen = 0;
    while seen < 2 {
        let event = events.message().await.expect("ok").expect("an event");
        let Some(pb::event::Kind::MessageStatusChanged(change)) = event.kind else { continue };
        let message = change.message.expect("message");
        if message.id != first.id {
            continue;
        }
        let Some(pb::content::Kind::Email(content)) = message.content.and_then(|c| c.kind) else {
            panic!("not an email")
        };
        let attachment = &content.attachments[0];
        assert_eq!((attachment.filename.as_str(), attachment.size), ("receipt.txt", 13));
        assert!(attachment.data.is_empty(), "{attachment:?}");
        seen += 1;
    }

    // What Ann's mail client shows.
    let mails = inbox(&ann, 1).await;
    let (mail, content) = read(&mails[0], &ann);
    assert_eq!(mail.provider_message_id, first.provider_message_id);
    assert_eq!(mail.from, shop);
    assert_eq!(content.subject, "Your order №42");
    assert!(content.html.contains("<b>ships today</b>"), "{}", content.html);
    assert_eq!(content.text.trim_end(), "Hello Ann,\nyour order ships today.");
    assert_eq!(content.attachments.len(), 1);
    assert_eq!(content.attachments[0].data, b"total: 42 EUR");
    assert_eq!(content.headers.get("X-Campaign").map(String::as_str), Some("autumn"));

    // Ann answers from her other address: only the References header can thread it.
    let ann_work = unique("ann.work", "example.test");
    let thread = Thread {
        subject: content.subject.clone(),
        references: vec![mail.provider_message_id.clone()],
        ..Thread::default()
    };
    reply_as(&ann_work, &shop, "Thanks! Can it come on Friday?", thread).await;
    let history = history_of(&mut gw, &first.conversation_id, 2).await;
    let reply = &history[1];
    assert_eq!(reply.status, pb::MessageStatus::Received as i32);
    assert_eq!(reply.direction, pb::Direction::Inbound as i32);
    assert_eq!(reply.channel, pb::Channel::Email as i32);
    assert_eq!(reply.from, ann_work);
    assert_eq!(reply.reply_to_message_id, first.id);
    let Some(pb::content::Kind::Email(e)) = reply.content.as_ref().and_then(|c| c.kind.clone())
    else {
        panic!("not email: {reply:#?}")
    };
    assert_eq!(e.subject, "Re: Your order №42");
    assert_eq!(e.reply_text, "Thanks! Can it come on Friday?");

    // A plain text answer continues the thread: subject and References from the conversation.
    let second = gw
        .send_request(pb::SendMessageRequest {
            conversation_id: first.conversation_id.clone(),
            ..support::request(pb::Channel::Email, &ann, support::text("Yes, Friday works."))
        })
        .await
        .expect("accepted");
    gw.wait_for(&second.id, pb::MessageStatus::Sent).await;
    let mails = inbox(&ann, 2).await;
    let (mail, content) = read(&mails[1], &ann);
    assert_eq!(content.subject, "Re: Your order №42");
    assert_eq!(mail.reply_to.as_deref(), Some(reply.provider_message_id.as_str()));
    assert_eq!(
        mail.references,
        vec![first.provider_message_id.clone(), reply.provider_message_id.clone()]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_bounce_in_the_mailbox_fails_the_message_with_its_status_over_implicit_tls() {
    let shop = unique("shop", "omnigate.test");
    let mut gw = support::gateway().extra(&account_toml(&shop, 465, "tls", "")).start().await;
    let sent = send_text(&mut gw, "nobody@bounce.test", "Hi").await;
    // Postfix takes it (250 over SMTPS), then its delivery fails and a DSN comes back.
    let sent = gw.wait_for(&sent.id, pb::MessageStatus::Failed).await;
    assert!(support::statuses(&sent).contains(&pb::MessageStatus::Sent), "{sent:#?}");
    let error = sent.error.expect("error");
    assert_eq!(error.provider, "smtp");
    assert_eq!(error.provider_code, "5.1.1");
    assert_eq!(error.code, pb::ErrorCode::InvalidRecipient as i32);
    gw.stop().await;
}

#[tokio::test]
async fn a_4xx_reply_is_retried_with_backoff_and_keeps_the_smtp_codes() {
    let shop = unique("shop", "omnigate.test");
    let mut gw = support::gateway()
        .max_attempts(3)
        .extra(&account_toml(&shop, 587, "starttls", ""))
        .start()
        .await;
    let sent = send_text(&mut gw, "later@tempfail.test", "Hi").await;
    let failed = gw.wait_for(&sent.id, pb::MessageStatus::Failed).await;
    assert_eq!(failed.attempts, 3);
    assert!(support::statuses(&failed).contains(&pb::MessageStatus::Queued), "{failed:#?}");
    let error = failed.error.expect("error");
    // Postfix's access map answers "450 4.2.0 ... Mailbox busy" (scripts/mail-servers.sh).
    assert_eq!(error.provider_code, "450 4.2.0");
    assert_eq!(error.code, pb::ErrorCode::AttemptsExhausted as i32);
    gw.stop().await;
}

#[tokio::test]
async fn a_spam_complaint_opts_the_person_out_and_a_free_text_bounce_fails_its_message() {
    let shop = unique("shop", "omnigate.test");
    let (ann, bob) = (unique("ann", "example.test"), unique("bob", "example.test"));
    let mut gw = start(&shop).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let to_ann = send_text(&mut gw, &ann, "Your order shipped").await;
    let to_ann = gw.wait_for(&to_ann.id, pb::MessageStatus::Sent).await;
    let to_bob = send_text(&mut gw, &bob, "Hi").await;
    let to_bob = gw.wait_for(&to_bob.id, pb::MessageStatus::Sent).await;
    // Ann's mailbox provider reports her spam complaint (RFC 5965); Bob's server is one
    // that writes its bounces in words (qmail), with no RFC 3464 report.
    let complaint = include_str!("../../adapters/spec/email/arf-complaint.eml")
        .replace("msg_0195f1c2a3b5@omnigate.test", &to_ann.provider_message_id);
    append(&shop, "INBOX", complaint.as_bytes()).await;
    let bounce = include_str!("../../adapters/spec/email/qmail-bounce.eml")
        .replace("msg_0195f1c2a3b4@omnigate.test", &to_bob.provider_message_id)
        .replace("nobody@example.test", &bob);
    append(&shop, "INBOX", bounce.as_bytes()).await;
    let bounced = gw.wait_for(&to_bob.id, pb::MessageStatus::Failed).await;
    let error = bounced.error.expect("error");
    assert_eq!(
        (error.provider_code.as_str(), error.code),
        ("5.1.1", pb::ErrorCode::InvalidRecipient as i32)
    );
    // The mailbox is read in order: the complaint before it was applied.
    let refused = send_text(&mut gw, &ann, "More news").await;
    assert_eq!(refused.status, pb::MessageStatus::Failed as i32);
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::RecipientOptedOut as i32);
    assert!(error.message.contains("spam complaint (abuse feedback report)"), "{}", error.message);
    let delivered = gw.get(&to_ann.id).await;
    assert_eq!(delivered.status, pb::MessageStatus::Sent as i32, "a complaint moves no status");
    let metrics = reqwest::get(gw.url("/metrics")).await.expect("get").text().await.expect("body");
    assert!(
        metrics.contains(r#"omnigate_mailbox_mails_total{account="mail",result="complaint"} 1"#),
        "{metrics}"
    );
    gw.stop().await;
}

/// A reply from a client that drops In-Reply-To and References, from another address of
/// the person, still threads: it goes to the plus-addressed Reply-To, which Postfix
/// (`recipient_delimiter = +`) delivers to the account's mailbox (DETAILS.md 5.2 step 2).
#[tokio::test]
async fn a_reply_to_the_plus_address_threads_without_references() {
    let shop = unique("shop", "omnigate.test");
    let (ann, ann_home) = (unique("ann", "example.test"), unique("ann.home", "example.test"));
    let toml = account_toml(&shop, 587, "starttls", "").replace(
        "fetch_private_urls = true",
        "fetch_private_urls = true\nplus_address_replies = true",
    );
    let mut gw = support::gateway().extra(&toml).start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = send_text(&mut gw, &ann, "Your table is booked").await;
    gw.wait_for(&first.id, pb::MessageStatus::Sent).await;
    let (_, content) = read(&inbox(&ann, 1).await[0], &ann);
    let (local, domain) = shop.split_once('@').expect("address");
    let reply_address = format!("{local}+{}@{domain}", first.conversation_id);
    let reply_to = content.headers.get("Reply-To").expect("a Reply-To");
    assert!(reply_to.contains(&format!("<{reply_address}>")), "{reply_to}");
    reply_as(&ann_home, &reply_address, "Can we make it eight?", Thread::default()).await;
    let history = history_of(&mut gw, &first.conversation_id, 2).await;
    assert_eq!(
        (history[1].from.as_str(), history[1].direction),
        (ann_home.as_str(), pb::Direction::Inbound as i32)
    );
    // A Reply-To the client sets is theirs: the gateway adds none of its own.
    let menu = pb::content::Kind::Email(pb::Email {
        subject: "Menu".into(),
        text: "See the menu".into(),
        headers: [("Reply-To".to_string(), "chef@omnigate.test".to_string())].into(),
        ..Default::default()
    });
    let own = gw.send_request(support::request(pb::Channel::Email, &ann, menu)).await;
    let own = own.expect("accepted");
    gw.wait_for(&own.id, pb::MessageStatus::Sent).await;
    let (_, content) = read(&inbox(&ann, 2).await[1], &ann);
    assert_eq!(content.headers.get("Reply-To").map(String::as_str), Some("chef@omnigate.test"));
    gw.stop().await;
}

/// A hard bounce (RFC 3463 x.1.1, "bad destination mailbox address") bars the address as
/// mail services' suppression lists do, whether the submission server refuses the
/// recipient or a bounce reports it later; mail from the address lifts the bar.
#[tokio::test]
async fn a_hard_bounce_bars_the_address_until_mail_comes_from_it() {
    let shop = unique("shop", "omnigate.test");
    let (gone, ghost) = (unique("gone", "bounce.test"), unique("ghost", "unknown.test"));
    let mut gw = start(&shop).await;
    let mut changes = crate::consent::Changes::follow(&mut gw).await;
    // Postfix takes it, the delivery fails with 5.1.1 and its DSN comes back to the mailbox.
    let sent = send_text(&mut gw, &gone, "Hi").await;
    gw.wait_for(&sent.id, pb::MessageStatus::Failed).await;
    let barred = changes.next().await;
    assert!(barred.opted_out && barred.bounced && !barred.marketing_only, "{barred:?}");
    assert_eq!(
        (barred.account.as_str(), barred.address.as_str(), barred.reason.as_str()),
        ("mail", gone.as_str(), "smtp bounced a send with 5.1.1")
    );
    let refused = send_text(&mut gw, &gone, "Hello again").await;
    assert_eq!((refused.status, refused.attempts), (pb::MessageStatus::Failed as i32, 0));
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::InvalidRecipient as i32);
    assert!(error.message.contains("smtp bounced a send with 5.1.1"), "{}", error.message);
    let request = pb::GetContactRequest { id: refused.contact_id.clone() };
    let contact = gw.client.get_contact(request).await.expect("contact").into_inner();
    assert_eq!(contact.opt_outs.len(), 1, "{contact:?}");
    assert!(contact.opt_outs[0].bounced && !contact.opt_outs[0].marketing_only);
    // Refused at submission (Postfix's access map answers 550 5.1.1, scripts/mail-servers.sh).
    let sent = send_text(&mut gw, &ghost, "Hi").await;
    let failed = gw.wait_for(&sent.id, pb::MessageStatus::Failed).await;
    assert_eq!(failed.error.expect("error").provider_code, "550 5.1.1");
    let barred = changes.next().await;
    assert_eq!((barred.address.as_str(), barred.bounced), (ghost.as_str(), true));
    let refused = send_text(&mut gw, &ghost, "Hi again").await;
    assert_eq!((refused.status, refused.attempts), (pb::MessageStatus::Failed as i32, 0));
    // The person writes from the address: it exists after all.
    append(&shop, "INBOX", &mail(&gone, &shop, &format!("back.{gone}"), "I'm back")).await;
    let lifted = changes.next().await;
    assert!(!lifted.opted_out && lifted.bounced, "{lifted:?}");
    assert_eq!(
        (lifted.address.as_str(), lifted.reason.as_str()),
        (gone.as_str(), "wrote on email")
    );
    let welcomed = send_text(&mut gw, &gone, "Welcome back").await;
    assert_ne!(welcomed.status, pb::MessageStatus::Failed as i32, "{welcomed:?}");
    gw.stop().await;
}

/// An out-of-office reply comes in marked `automatic` and a person's mail does not: what
/// an app needs so as not to answer a program, which would answer back (RFC 3834).
#[tokio::test]
async fn an_out_of_office_reply_comes_in_marked_automatic() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start(&shop).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let away = format!(
        "From: {ann}\r\nTo: {shop}\r\nSubject: Away\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <away.{ann}>\r\n\r\nBack on Monday.\r\n"
    );
    append(&shop, "INBOX", away.as_bytes()).await;
    append(&shop, "INBOX", &mail(&ann, &shop, &format!("back.{ann}"), "Thanks!")).await;
    let automatic = |m: pb::Message| match m.content.and_then(|c| c.kind) {
        Some(pb::content::Kind::Email(e)) => e.automatic,
        other => panic!("not email: {other:?}"),
    };
    assert!(automatic(gw.received(&format!("away.{ann}")).await));
    assert!(!automatic(gw.received(&format!("back.{ann}")).await));
    gw.stop().await;
}

/// An account that stores inbound attachments up to `max_inline` bytes, reading mail
/// from now on.
async fn start_keeping_inline(address: &str, max_inline: u64) -> TestGateway {
    let account = account_toml(address, 587, "starttls", "").replace(
        "max_attachment_bytes = 4096",
        &format!("max_attachment_bytes = 4096\nmax_inline_attachment_bytes = {max_inline}"),
    );
    let gw = support::gateway().extra(&account).start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw
}

/// A mail with a line of text and `files` (name, type, bytes) attached in base64 lines.
fn mail_with_files(from: &str, to: &str, id: &str, files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    use base64::Engine;
    let mut raw = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: files\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nFiles.\r\n"
    );
    for (name, mime_type, bytes) in files {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> =
            b64.as_bytes().chunks(76).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        raw += &format!(
            "--b1\r\nContent-Type: {mime_type}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        );
    }
    (raw + "--b1--\r\n").into_bytes()
}

/// A mail as a person's client would append it.
fn mail(from: &str, to: &str, id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: note {id}\r\nMessage-ID: <{id}>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

async fn append(address: &str, mailbox: &str, raw: &[u8]) {
    let mut session = login(address, mailbox).await;
    session.inner_mut().append(mailbox, None, None, raw).await.expect("append");
    session.logout().await;
}

/// The inbound email messages of the conversation that `provider_id` started.
async fn received_in(gw: &mut TestGateway, provider_id: &str, n: usize) -> Vec<pb::Message> {
    let first = gw.received(provider_id).await;
    history_of(gw, &first.conversation_id, n).await
}

#[tokio::test]
async fn a_restart_mid_sync_neither_loses_nor_repeats_mail() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start(&shop).await;
    // Connected once: the cursor exists, so what arrives from now on is read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.stop().await;
    const N: usize = 90;
    let mut session = login(&shop, "INBOX").await;
    for i in 0..N {
        let raw = mail(&ann, &shop, &format!("m{i}.{ann}"), "hello");
        session.inner_mut().append("INBOX", None, None, raw).await.expect("append");
    }
    session.logout().await;
    gw.restart().await;
    // Stop as soon as the first mail is in, while the rest of the backlog is still read.
    gw.received(&format!("m0.{ann}")).await;
    gw.restart().await;
    let all = received_in(&mut gw, &format!("m0.{ann}"), N).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_again = gw.history(&all[0].conversation_id).await;
    assert_eq!(all_again.len(), N, "every mail exactly once");
    let mut ids: Vec<_> = all_again.iter().map(|m| m.provider_message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N);
    gw.stop().await;
}

#[tokio::test]
async fn a_uidvalidity_change_reads_the_mailbox_again_without_duplicates() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut admin = login(&shop, "INBOX").await;
    admin.inner_mut().create("Support").await.expect("create");
    let mut gw = support::gateway()
        .extra(&account_toml(
            &shop,
            587,
            "starttls",
            "mailbox = \"Support\"\nsecurity = \"starttls\"",
        ))
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&shop, "Support", &mail(&ann, &shop, &format!("a.{ann}"), "first")).await;
    let a = gw.received(&format!("a.{ann}")).await;
    let before = gw.gw().state().store.mailbox_cursor("mail").await.expect("cursor").expect("set");

    // Recreating the mailbox gives it a new UIDVALIDITY; the same mail comes back with it.
    admin.inner_mut().delete("Support").await.expect("delete");
    admin.inner_mut().create("Support").await.expect("create again");
    admin.logout().await;
    append(&shop, "Support", &mail(&ann, &shop, &format!("a.{ann}"), "first")).await;
    append(&shop, "Support", &mail(&ann, &shop, &format!("b.{ann}"), "second")).await;
    let history = history_of(&mut gw, &a.conversation_id, 2).await;
    let after = gw.gw().state().store.mailbox_cursor("mail").await.expect("cursor").expect("set");
    assert_ne!(after.0, before.0, "the new UIDVALIDITY is stored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history_again = gw.history(&a.conversation_id).await;
    let ids: Vec<_> = history_again.iter().map(|m| m.provider_message_id.as_str()).collect();
    assert_eq!(ids, vec![format!("a.{ann}"), format!("b.{ann}")], "{history:#?}");
    gw.stop().await;
}

#[tokio::test]
async fn malformed_mail_becomes_an_event_and_the_mailbox_goes_on() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let toml = account_toml(&shop, 587, "starttls", "max_message_bytes = 2000");
    let mut gw = support::gateway().extra(&toml).start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&shop, "INBOX", b"Subject: no sender here\r\n\r\nwho sent this?\r\n").await;
    append(&shop, "INBOX", &mail(&ann, &shop, &format!("big.{ann}"), &"x".repeat(3000))).await;
    append(&shop, "INBOX", &mail(&ann, &shop, &format!("ok.{ann}"), "a real one")).await;
    let ok = gw.received(&format!("ok.{ann}")).await;
    assert_eq!(ok.from, ann);
    // From the start of the log: the stream replays what happened before it opened.
    let request = pb::StreamEventsRequest {
        from_sequence: 0,
        kinds: vec!["inbound_rejected".into()],
        ..Default::default()
    };
    let mut events = gw.client.stream_events(request).await.expect("stream").into_inner();
    let mut rejected = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(15), events.message())
            .await
            .expect("in time")
            .expect("stream ok")
            .expect("open");
        let Some(pb::event::Kind::InboundRejected(r)) = event.kind else { panic!("{event:?}") };
        assert_eq!(r.account, "mail");
        assert_eq!(r.channel, pb::Channel::Email as i32);
        assert!(r.reference.starts_with("imap://localhost/INBOX;UIDVALIDITY="), "{}", r.reference);
        rejected.push(r.reason);
    }
    assert!(rejected[0].contains("no sender"), "{rejected:?}");
    assert!(rejected[1].contains("over the 2000 byte limit"), "{rejected:?}");
    drop(events);
    let metrics = reqwest::get(gw.url("/metrics")).await.expect("get").text().await.expect("body");
    for (result, n) in [("rejected", 2), ("ok", 1)] {
        let line =
            format!("omnigate_mailbox_mails_total{{account=\"mail\",result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }
    gw.stop().await;
}

/// Serves `body` at http://127.0.0.1:PORT/files/NAME, as a CDN would.
async fn serve_file(body: Vec<u8>) -> String {
    let app = axum::Router::new().route(
        "/files/{name}",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/pdf")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/files")
}

fn with_url(url: String) -> pb::content::Kind {
    pb::content::Kind::Email(pb::Email {
        subject: "Your invoice".into(),
        text: "Attached.".into(),
        attachments: vec![pb::Attachment { url, ..Default::default() }],
        ..Default::default()
    })
}

#[tokio::test]
async fn url_attachments_are_fetched_within_the_size_limit() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start(&shop).await;
    let base = serve_file(b"%PDF-1.7 tiny invoice".to_vec()).await;
    let sent = gw
        .send_request(support::request(
            pb::Channel::Email,
            &ann,
            with_url(format!("{base}/invoice.pdf")),
        ))
        .await
        .expect("accepted");
    gw.wait_for(&sent.id, pb::MessageStatus::Sent).await;
    let (_, content) = read(&inbox(&ann, 1).await[0], &ann);
    let file = &content.attachments[0];
    assert_eq!(file.filename, "invoice.pdf");
    assert_eq!(file.mime_type, "application/pdf");
    assert_eq!(file.data, b"%PDF-1.7 tiny invoice");

    // Over the account's max_attachment_bytes (4096): refused for good, never half sent.
    let big = serve_file(vec![b'x'; 5000]).await;
    let refused = gw
        .send_request(support::request(
            pb::Channel::Email,
            &ann,
            with_url(format!("{big}/big.pdf")),
        ))
        .await
        .expect("accepted");
    let refused = gw.wait_for(&refused.id, pb::MessageStatus::Failed).await;
    assert_eq!(refused.attempts, 1);
    let error = refused.error.expect("error");
    assert_eq!(error.code, pb::ErrorCode::InvalidContent as i32);
    assert!(error.message.contains("4096"), "{}", error.message);

    // Carried inline, the size is known at once: refused, nothing stored.
    let inline = pb::content::Kind::Email(pb::Email {
        text: "Attached.".into(),
        attachments: vec![pb::Attachment {
            filename: "big.pdf".into(),
            mime_type: "application/pdf".into(),
            data: vec![b'x'; 5000],
            ..Default::default()
        }],
        ..Default::default()
    });
    let refused = gw
        .send_request(support::request(pb::Channel::Email, &ann, inline))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("4096"), "{}", refused.message());
    gw.stop().await;
}

#[tokio::test]
async fn initial_sync_all_reads_what_was_there_before_the_first_start_and_new_does_not() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    append(&shop, "INBOX", &mail(&ann, &shop, &format!("old.{ann}"), "before")).await;
    let mut gw = support::gateway()
        .extra(&account_toml(&shop, 587, "starttls", "initial_sync = \"all\""))
        .start()
        .await;
    let old = gw.received(&format!("old.{ann}")).await;
    assert_eq!(old.from, ann);
    gw.stop().await;

    let other = unique("shop", "omnigate.test");
    append(&other, "INBOX", &mail(&ann, &other, &format!("old2.{ann}"), "before")).await;
    let mut gw = start(&other).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&other, "INBOX", &mail(&ann, &other, &format!("new2.{ann}"), "after")).await;
    let new = gw.received(&format!("new2.{ann}")).await;
    let history = gw.history(&new.conversation_id).await;
    assert_eq!(history.len(), 1, "mail from before the first start is not read: {history:#?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_requested_delivery_report_marks_the_message_delivered() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let toml = account_toml_with(&shop, 587, "starttls", "request_delivery_reports = true", "");
    let mut gw = support::gateway().extra(&toml).start().await;
    let sent = send_text(&mut gw, &ann, "Your code is 1234").await;
    // Postfix delivers to Ann's mailbox and, as NOTIFY=SUCCESS asked, reports it back.
    let delivered = gw.wait_for(&sent.id, pb::MessageStatus::Delivered).await;
    assert!(support::statuses(&delivered).contains(&pb::MessageStatus::Sent));
    assert!(delivered.error.is_none(), "{delivered:#?}");
    let last = delivered.status_history.last().expect("history");
    // Postfix hands local mail to Dovecot's LDA, which reports no further: "relayed".
    assert_eq!(last.provider_status, "relayed 2.0.0");
    let (mail, _) = read(&inbox(&ann, 1).await[0], &ann);
    assert_eq!(mail.provider_message_id, format!("{}@omnigate.test", sent.id));
    // A failure report still fails the message on the same path.
    let bounced = send_text(&mut gw, "nobody@bounce.test", "Hi").await;
    let bounced = gw.wait_for(&bounced.id, pb::MessageStatus::Failed).await;
    assert_eq!(bounced.error.expect("error").provider_code, "5.1.1");
    gw.stop().await;
}

/// `GetMedia` on an email: a small attachment comes from the store; one over
/// `max_inline_attachment_bytes`, kept as an IMAP URL, is fetched from the account's own
/// mailbox by its section and decoded from base64, with the mail left unread.
#[tokio::test]
async fn email_attachments_come_from_the_store_or_the_mailbox() {
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start_keeping_inline(&shop, 1000).await;
    let small: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let large: Vec<u8> = (0..5000u32).map(|i| (i * 13 + i / 256) as u8).collect();
    let files =
        [("small.png", "image/png", &small[..]), ("large.zip", "application/zip", &large[..])];
    let raw = mail_with_files(&ann, &shop, &format!("photos.{ann}"), &files);
    append(&shop, "INBOX", &raw).await;
    let received = gw.received(&format!("photos.{ann}")).await;
    let Some(pb::content::Kind::Email(email)) =
        received.content.as_ref().and_then(|c| c.kind.clone())
    else {
        panic!("not email: {received:?}")
    };
    assert_eq!(email.attachments[1].data, Vec::<u8>::new(), "kept in the mailbox");
    assert!(email.attachments[1].url.ends_with("/;SECTION=3"), "{:?}", email.attachments[1].url);

    let fetch = |index| pb::GetMediaRequest { message_id: received.id.clone(), index };
    let mut collect = async |index| {
        let mut stream = gw.client.get_media(fetch(index)).await?.into_inner();
        let (mut mime_type, mut bytes) = (String::new(), Vec::new());
        while let Some(chunk) = stream.message().await? {
            if mime_type.is_empty() {
                mime_type = chunk.mime_type;
            }
            bytes.extend(chunk.data);
        }
        Ok::<_, tonic::Status>((mime_type, bytes))
    };
    assert_eq!(collect(0).await.expect("small"), ("image/png".to_string(), small));
    assert_eq!(collect(1).await.expect("large"), ("application/zip".to_string(), large));
    let past = collect(2).await.expect_err("two attachments");
    assert_eq!(past.code(), tonic::Code::OutOfRange, "{past:?}");

    // The fetch peeked: the mail is as unread as the gateway's own reading left it.
    let mut session = login(&shop, "INBOX").await;
    session.select().await.expect("select");
    let unseen = session.inner_mut().uid_search("UNSEEN").await.expect("search");
    assert_eq!(unseen.len(), 1, "{unseen:?}");
    session.logout().await;
    gw.stop().await;
}

/// An inbound email whose stored attachments pass gRPC's customary 4 MiB: its event leaves
/// the bytes out, `GetMessage` answers it whole, the CLI reads it, and a page of history
/// ends after it.
#[tokio::test]
async fn the_cli_reads_an_email_larger_than_grpcs_usual_limit() {
    use base64::Engine;
    let shop = unique("shop", "omnigate.test");
    let ann = unique("ann", "example.test");
    let mut gw = start_keeping_inline(&shop, 8 << 20).await;
    let scan: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let raw =
        mail_with_files(&ann, &shop, &format!("scan.{ann}"), &[("scan.tiff", "image/tiff", &scan)]);
    append(&shop, "INBOX", &raw).await;
    // The event names the attachment without its bytes: a stream consumer reading the
    // default 4 MiB would otherwise stop at this event for good.
    let received = gw.received(&format!("scan.{ann}")).await;
    let event_copy = received.content.as_ref().map(attachment);
    assert_eq!(event_copy, Some(("scan.tiff".into(), scan.len() as u64, 0)));
    let addr = format!("http://{}", gw.gw().grpc_addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["get", &received.id, "--addr", &addr])
        .output()
        .await
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let data = shown["content"]["email"]["attachments"][0]["data"].as_str().expect("bytes");
    let decoded = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
    assert_eq!(decoded, scan);

    // A page ends before it passes 4 MiB, but holds the one message that alone does.
    append(&shop, "INBOX", &mail(&ann, &shop, &format!("more.{ann}"), "and the rest")).await;
    let more = gw.received(&format!("more.{ann}")).await;
    assert_eq!(more.conversation_id, received.conversation_id);
    let reader = gw.client.clone().max_decoding_message_size(usize::MAX);
    let page = |page_token: String| {
        let request = pb::ListMessagesRequest {
            conversation_id: received.conversation_id.clone(),
            page_size: 10,
            page_token,
        };
        let mut reader = reader.clone();
        async move { reader.list_messages(request).await.expect("page").into_inner() }
    };
    let first = page(String::new()).await;
    assert_eq!(first.messages.iter().map(|m| &m.id).collect::<Vec<_>>(), [&received.id]);
    assert!(!first.next_page_token.is_empty());
    let second = page(first.next_page_token).await;
    assert_eq!(second.messages.iter().map(|m| &m.id).collect::<Vec<_>>(), [&more.id]);
    assert!(second.next_page_token.is_empty());
    gw.stop().await;
}
