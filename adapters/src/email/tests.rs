//! Email round trips: what `render` writes, `parse` reads back (as a recipient's client
//! would), and bounces in the form real servers send them.

use std::time::Duration;

use super::config::{EmailAccount, Security, SmtpConfig};
use super::parse::{Incoming, MailError, Source, parse};
use super::render::{self, File};
use crate::contract::Thread;
use crate::model::{Attachment, Content, Email, ErrorCode, MessageStatus};

fn account() -> EmailAccount {
    EmailAccount {
        address: "shop@omnigate.test".into(),
        display_name: "Zoë's Shop".into(),
        smtp: SmtpConfig {
            host: "localhost".into(),
            port: 587,
            security: Security::StartTls,
            username: String::new(),
            password: String::new(),
            pool_size: 1,
            timeout: Duration::from_secs(5),
            request_delivery_reports: false,
        },
        ca_file: None,
        max_attachment_bytes: 1 << 20,
        fetch_private_urls: false,
        one_click_unsubscribe: None,
        plus_address_replies: false,
    }
}

fn source() -> Source<'static> {
    Source {
        account_address: "ann@example.test",
        fallback_id: "imap-1-7@omnigate.test".into(),
        url: "imap://localhost/INBOX;UIDVALIDITY=1/;UID=7".into(),
        max_inline_attachment_bytes: 16,
    }
}

/// The account on a server at `port` of this host, without TLS.
fn plain_account(port: u16) -> EmailAccount {
    let mut account = account();
    account.smtp.host = "127.0.0.1".into();
    account.smtp.port = port;
    account.smtp.security = Security::None;
    account
}

fn text_to_ann(message_id: &str) -> crate::contract::Outbound {
    crate::contract::Outbound {
        message_id: message_id.into(),
        to: "ann@example.test".into(),
        content: Content::text("hello"),
        status_callback: None,
        remaining_ttl: None,
        reply_to: None,
        tag: None,
        thread: Thread::default(),
    }
}

fn report_of(raw: &[u8], source: &Source<'_>) -> crate::contract::StatusReport {
    match parse(raw, source) {
        Ok(Incoming::Report(r)) => r,
        other => panic!("not a report: {other:?}"),
    }
}

fn parsed_email(raw: &[u8]) -> (crate::contract::InboundMessage, Email) {
    match parse(raw, &source()) {
        Ok(Incoming::Message(m)) => {
            let Content::Email(e) = m.content.clone() else { panic!("not email: {m:?}") };
            (m, e)
        }
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn rendered_mail_reads_back_with_threading_encoded_headers_and_attachments() {
    let thread = Thread {
        subject: "Ihre Bestellung – Nr. 42".into(),
        references: vec!["root@omnigate.test".into(), "reply1@example.test".into()],
        ..Thread::default()
    };
    let content = Content::Email(Email {
        text: "Hallo Ann,\nwir liefern morgen.".into(),
        html: "<p>Hallo Ann,<br>wir liefern <b>morgen</b>.</p>".into(),
        ..Email::default()
    });
    let body = render::body_of(&content, &thread).expect("body");
    let files = vec![
        File {
            filename: "small.txt".into(),
            mime_type: "text/plain".into(),
            data: b"tiny".to_vec(),
        },
        File {
            filename: "rechnung.pdf".into(),
            mime_type: "application/pdf".into(),
            data: vec![0x25; 64],
        },
    ];
    let id = render::message_id_for("msg_01", &account());
    assert_eq!(id, "msg_01@omnigate.test");
    let mime =
        render::compose(&account(), "ann@example.test", &id, &thread, &body, files).expect("mime");
    let raw = mime.formatted();
    let head = String::from_utf8_lossy(
        &raw[..raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len())],
    )
    .to_string();
    // Non-ASCII subject and display name travel as RFC 2047 encoded words.
    assert!(head.contains("=?utf-8?"), "no encoded words in:\n{head}");
    assert!(head.contains("In-Reply-To: <reply1@example.test>"), "{head}");
    assert!(head.contains("<root@omnigate.test> <reply1@example.test>"), "{head}");
    assert!(head.contains("Message-ID: <msg_01@omnigate.test>"), "{head}");

    // Read as the recipient's mailbox would receive it, from the sender's side.
    let mut reader = source();
    reader.account_address = "other@example.test";
    let (m, e) = match parse(&raw, &reader) {
        Ok(Incoming::Message(m)) => {
            let Content::Email(e) = m.content.clone() else { panic!("not email") };
            (m, e)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(m.provider_message_id, "msg_01@omnigate.test");
    assert_eq!(m.from, "shop@omnigate.test");
    assert_eq!(e.subject, "Re: Ihre Bestellung – Nr. 42");
    assert_eq!(e.text.trim_end(), "Hallo Ann,\nwir liefern morgen.");
    assert!(e.html.contains("<b>morgen</b>"), "{}", e.html);
    assert_eq!(m.reply_to.as_deref(), Some("reply1@example.test"));
    assert_eq!(m.references, vec!["root@omnigate.test", "reply1@example.test"]);
    assert_eq!(e.attachments.len(), 2);
    let small = &e.attachments[0];
    assert_eq!(
        (small.filename.as_str(), small.data.as_slice(), small.size),
        ("small.txt", &b"tiny"[..], 4)
    );
    // Over the inline limit: only a reference to its IMAP section is kept.
    let big = &e.attachments[1];
    assert_eq!(
        (big.filename.as_str(), big.mime_type.as_str(), big.size),
        ("rechnung.pdf", "application/pdf", 64)
    );
    assert!(big.data.is_empty());
    assert_eq!(big.url, "imap://localhost/INBOX;UIDVALIDITY=1/;UID=7/;SECTION=3");
}

#[test]
fn kinds_email_cannot_carry_fail_naming_the_kind() {
    let location = Content::Location(crate::model::Location::default());
    let e = render::body_of(&location, &Thread::default()).expect_err("location");
    assert_eq!(e.code, ErrorCode::InvalidContent);
    assert!(e.message.contains("location"), "{}", e.message);
    let empty = Content::Email(Email::default());
    assert!(render::body_of(&empty, &Thread::default()).is_err());
    // Media becomes an attachment under its caption.
    let media = Content::Media(crate::model::Media {
        url: "https://cdn.example.test/a.png".into(),
        caption: "the photo".into(),
        mime_type: "image/png".into(),
        ..Default::default()
    });
    let body = render::body_of(&media, &Thread::default()).expect("media");
    assert_eq!(body.text, "the photo");
    assert_eq!(body.subject, "the photo");
    assert_eq!(
        body.attachments,
        vec![Attachment {
            url: "https://cdn.example.test/a.png".into(),
            mime_type: "image/png".into(),
            ..Attachment::default()
        }]
    );
}

#[test]
fn replies_keep_full_text_and_trimmed_reply_and_charsets_decode() {
    let raw = b"From: =?iso-8859-1?q?Ren=E9e?= <Renee@Example.TEST>\r\nTo: ann@example.test\r\n\
Subject: =?iso-8859-1?q?R=E9ponse?=\r\nMessage-ID: <r1@example.test>\r\nIn-Reply-To: <msg_01@omnigate.test>\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Tr=E8s bien.\r\n\r\nOn Mon, 2 Nov 2026, Shop <shop@omnigate.test> wrote:\r\n> Hallo\r\n";
    let (m, e) = parsed_email(raw);
    assert_eq!(m.from, "renee@example.test");
    assert_eq!(e.subject, "Réponse");
    assert_eq!(e.reply_text, "Très bien.");
    assert!(e.text.contains("> Hallo"), "full text keeps the quote: {}", e.text);
    assert_eq!(m.reply_to.as_deref(), Some("msg_01@omnigate.test"));
    assert_eq!(m.references, vec!["msg_01@omnigate.test"]);
}

#[test]
fn mail_without_message_id_gets_the_mailbox_position_as_its_id() {
    let (m, _) = parsed_email(b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n");
    assert_eq!(m.provider_message_id, "imap-1-7@omnigate.test");
}

#[test]
fn ids_with_line_breaks_are_dropped_rather_than_threaded_or_echoed_into_replies() {
    // Found by the mime fuzzer: a folded References header that mail-parser cannot read as
    // ids comes back as raw text with its line break.
    let (m, _) =
        parsed_email(b"From: a@example.test\r\nReferences: \x00\x00 \n \xd1\xd1\r\n\r\nbody\r\n");
    assert!(m.references.is_empty(), "{:?}", m.references);
    let (m, _) = parsed_email(
        b"From: a@example.test\r\nMessage-ID: <a b@example.test>\r\nIn-Reply-To: <ok@example.test>\r\n\r\nbody\r\n",
    );
    assert_eq!(m.provider_message_id, "imap-1-7@omnigate.test", "an id with a space is not one");
    assert_eq!(m.references, vec!["ok@example.test"]);
}

#[test]
fn malformed_mail_is_an_error_naming_why() {
    assert_eq!(parse(b"", &source()), Err(MailError::Unparsable));
    assert_eq!(parse(b"this is not mail at all", &source()), Err(MailError::NoSender));
    assert_eq!(parse(b"From: nobody\r\n\r\nx", &source()), Err(MailError::NoSender));
    // A report that names no original message cannot be matched.
    let report = b"From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\nAction: failed\r\nStatus: 5.0.0\r\n--B--\r\n";
    assert!(matches!(parse(report, &source()), Err(MailError::Report(_))));
}

#[test]
fn a_postfix_bounce_fails_the_original_message_with_its_status() {
    let raw = include_bytes!("../../spec/email/postfix-bounce.eml");
    let mut src = source();
    src.account_address = "gw1@omnigate.test";
    let r = report_of(raw, &src);
    assert_eq!(r.provider_message_id, "t2@omnigate.test");
    assert_eq!(r.status, MessageStatus::Failed);
    assert_eq!(r.provider_status, "failed 5.3.0");
    let error = r.error.expect("error");
    assert_eq!((error.provider.as_str(), error.provider_code.as_str()), ("smtp", "5.3.0"));
    assert_eq!(error.code, ErrorCode::Undeliverable);
    assert!(error.message.contains("exit"), "{}", error.message);
}

#[test]
fn a_positive_dsn_marks_the_message_delivered() {
    let raw = include_bytes!("../../spec/email/positive-dsn.eml");
    let r = report_of(raw, &source());
    assert_eq!(r.provider_message_id, "msg_0001@omnigate.test");
    assert_eq!(r.status, MessageStatus::Delivered);
    assert!(r.error.is_none());
}

#[test]
fn a_dsn_without_the_returned_headers_is_matched_by_its_envelope_id() {
    // RFC 3464 2.2.1: Original-Envelope-Id carries the ENVID we submitted, which is our
    // Message-ID; Postfix writes it back as given ("+" and "=" literal, not xtext).
    let raw = include_bytes!("../../spec/email/postfix-dsn-without-headers.eml");
    let r = report_of(raw, &source());
    assert_eq!(r.provider_message_id, "msg_abc+x=y@omnigate.test");
    assert_eq!(r.status, MessageStatus::Failed);
    assert_eq!(r.error.expect("error").code, ErrorCode::InvalidRecipient);
}

#[test]
fn a_free_text_bounce_fails_the_message_it_quotes() {
    let raw = include_bytes!("../../spec/email/qmail-bounce.eml");
    let r = report_of(raw, &source());
    // The id of the returned copy, not the reference number in its text.
    assert_eq!(r.provider_message_id, "msg_0195f1c2a3b4@omnigate.test");
    assert_eq!(r.status, MessageStatus::Failed);
    assert_eq!(r.provider_status, "failed 5.1.1");
    let error = r.error.expect("error");
    assert_eq!(error.code, ErrorCode::InvalidRecipient);
    assert_eq!(error.message, "Sorry, no mailbox here by that name. (#5.1.1)");
}

#[test]
fn free_text_bounces_are_read_by_their_codes_not_by_numbers_that_look_alike() {
    // Exim's older notice: the host's address and the reply code come before the status.
    let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.test>\r\nSubject: Mail delivery failed\r\n\r\nA message that you sent could not be delivered to one or more of its\r\nrecipients. This is a permanent error. The following address(es) failed:\r\n\r\n  nobody@example.test\r\n    host mx.example.test [192.0.2.10]: 550-5.7.1 <nobody@example.test>: relay not permitted\r\n\r\n------ This is a copy of the message, including all the headers. ------\r\n\r\nReturn-path: <shop@omnigate.test>\r\nMessage-Id: <msg_1@omnigate.test>\r\n\r\nhi\r\n";
    let Ok(Incoming::Report(r)) = parse(exim.as_bytes(), &source()) else { panic!("not a report") };
    assert_eq!(
        (r.provider_message_id.as_str(), r.provider_status.as_str()),
        ("msg_1@omnigate.test", "failed 5.7.1")
    );
    // Read as a submission server's 5.7.1 reply is: refused by policy.
    assert_eq!(r.error.expect("error").code, ErrorCode::Rejected);
    // Only a basic reply code: its class stands for the status; a 4xx is a delay, not a failure.
    let basic = |code: &str| {
        format!(
            "From: postmaster@mx.example.test\r\n\r\nDelivery to <a@example.test> failed: {code} mailbox unavailable\r\n\r\nMessage-ID: <msg_2@omnigate.test>\r\n"
        )
    };
    let Ok(Incoming::Report(r)) = parse(basic("550").as_bytes(), &source()) else {
        panic!("not a report")
    };
    assert_eq!(r.provider_status, "failed 5.0.0");
    assert!(matches!(parse(basic("451").as_bytes(), &source()), Ok(Incoming::Ignored(_))));
    // A transcript quotes the replies before the failure: the failure is what counts, and
    // a notice with only 2xx replies in it is no failure notice at all.
    let transcript = |last: &str| {
        format!(
            "From: MAILER-DAEMON@mx.example.test\r\n\r\n>>> MAIL FROM:<shop@omnigate.test>\r\n<<< 250 2.1.0 Ok\r\n>>> RCPT TO:<a@example.test>\r\n<<< {last}\r\n\r\nMessage-ID: <msg_4@omnigate.test>\r\n"
        )
    };
    let Ok(Incoming::Report(r)) = parse(transcript("550 5.1.1 unknown").as_bytes(), &source())
    else {
        panic!("not a report")
    };
    assert_eq!(r.provider_status, "failed 5.1.1");
    let fine = parse(transcript("250 2.1.5 Ok").as_bytes(), &source());
    assert!(matches!(fine, Err(MailError::Report(e)) if e.contains("failure")));
    // A notice that says nothing we can match, or no reason, is rejected with why.
    let unmatched = b"From: MAILER-DAEMON@mx.example.test\r\n\r\n550 5.1.1 no such user\r\n";
    assert!(
        matches!(parse(unmatched, &source()), Err(MailError::Report(e)) if e.contains("Message-ID"))
    );
    let reasonless = b"From: MAILER-DAEMON@mx.example.test\r\n\r\nSee below (v1.2.3 at 192.0.2.1).\r\n\r\nMessage-ID: <msg_3@omnigate.test>\r\n";
    assert!(
        matches!(parse(reasonless, &source()), Err(MailError::Report(e)) if e.contains("status"))
    );
    // Reply codes are three digits with a second digit of 0 to 5 (RFC 5321 4.2.1); other
    // words starting with a 5 are no failure.
    for word in ["5ab", "570", "5501"] {
        let notice = format!(
            "From: MAILER-DAEMON@mx.example.test\r\n\r\nRef {word} at the gateway\r\n\r\nMessage-ID: <msg_5@omnigate.test>\r\n"
        );
        let read = parse(notice.as_bytes(), &source());
        assert!(
            matches!(read, Err(MailError::Report(ref e)) if e.contains("status")),
            "{word}: {read:?}"
        );
    }
    // A quoted Message-ID with a space in it is no id of ours.
    let spaced = b"From: MAILER-DAEMON@mx.example.test\r\n\r\n550 5.1.1 no such user\r\n\r\nMessage-ID: <msg 6@omnigate.test>\r\n";
    assert!(
        matches!(parse(spaced, &source()), Err(MailError::Report(e)) if e.contains("Message-ID"))
    );
}

#[test]
fn an_out_of_office_reply_with_a_null_return_path_is_a_persons_message() {
    let raw = b"Return-Path: <>\r\nFrom: Bob <bob@example.test>\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <ooo@example.test>\r\n\r\nOut of office until 5.1.2027.\r\n";
    assert!(
        matches!(parse(raw, &source()), Ok(Incoming::Message(m)) if m.from == "bob@example.test")
    );
}

#[test]
fn mail_a_program_sent_is_marked_automatic() {
    let automatic = |head: &str| {
        let raw =
            format!("From: bob@example.test\r\nMessage-ID: <m@example.test>\r\n{head}\r\nhi\r\n");
        parsed_email(raw.as_bytes()).1.automatic
    };
    // RFC 3834 2 and 5, and what common responders add.
    for head in [
        "Auto-Submitted: auto-replied (vacation)\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Precedence: bulk\r\n",
        "Precedence: list\r\n",
        "List-Id: <news.example.test>\r\n",
        "Return-Path: <>\r\n",
        "X-Autoreply: yes\r\n",
    ] {
        assert!(automatic(head), "{head}");
    }
    for head in [
        "",
        "Auto-Submitted: no\r\n",
        "Auto-Submitted: No (a person)\r\n",
        "Auto-Submitted: no(a person)\r\n",
        "Precedence: first-class\r\n",
        "Return-Path: <bob@example.test>\r\n",
    ] {
        assert!(!automatic(head), "{head}");
    }
}

#[test]
fn a_feedback_report_is_a_complaint_about_the_message_it_returns() {
    let raw = include_bytes!("../../spec/email/arf-complaint.eml");
    let Ok(Incoming::Complaint(c)) = parse(raw, &source()) else { panic!("not a complaint") };
    assert_eq!(c.original_message_id, "msg_0195f1c2a3b5@omnigate.test");
    assert_eq!(c.feedback_type, "abuse");
    assert!(c.is_opt_out());
    let text = String::from_utf8_lossy(raw);
    // Whoever writes it: from `postmaster` it is still a complaint, not a bounce.
    let postmaster = text.replace("<feedback@fbl.example.test>", "<postmaster@example.test>");
    assert!(matches!(parse(postmaster.as_bytes(), &source()), Ok(Incoming::Complaint(_))));
    // A report of a kind that is no person's complaint opts nobody out.
    for kind in ["not-spam", "auth-failure", "virus"] {
        let other = text.replace("Feedback-Type: abuse", &format!("Feedback-Type: {kind}"));
        let Ok(Incoming::Complaint(c)) = parse(other.as_bytes(), &source()) else {
            panic!("{kind}")
        };
        assert!(!c.is_opt_out(), "{kind}");
    }
    // Redacted (no returned message) or typeless reports cannot be acted on.
    let redacted = text
        .split("--part1_13d.2e68ed54_boundary\nContent-Type: message/rfc822")
        .next()
        .unwrap_or_default();
    assert!(
        matches!(parse(redacted.as_bytes(), &source()), Err(MailError::Report(e)) if e.contains("Message-ID"))
    );
    let typeless = text.replace("Feedback-Type: abuse\n", "");
    assert!(
        matches!(parse(typeless.as_bytes(), &source()), Err(MailError::Report(e)) if e.contains("Feedback-Type"))
    );
}

#[test]
fn mail_the_mime_parser_chokes_on_is_an_error_not_a_panic() {
    // Found by `cargo fuzz run mime`: a mutated bounce on which mail-parser's multipart
    // bookkeeping asserts (in debug builds, as tests and fuzzing run).
    let raw = include_bytes!("../../spec/email/broken-multipart.eml");
    let parsed = parse(raw, &source());
    assert!(matches!(parsed, Err(MailError::Malformed) | Err(MailError::Report(_))), "{parsed:?}");
}

#[test]
fn parts_nested_in_a_cycle_are_read_once() {
    // Found by `cargo fuzz run -O mime`: broken boundaries from which mail-parser builds
    // parts that list each other as children; following them ran out of memory.
    let raw = include_bytes!("../../spec/email/cyclic-multipart.eml");
    match parse(raw, &source()) {
        Ok(Incoming::Message(m)) => {
            let Content::Email(e) = m.content else { panic!("not email") };
            assert!(e.attachments.len() <= raw.len(), "{} attachments", e.attachments.len());
        }
        other => assert!(matches!(other, Err(_) | Ok(Incoming::Report(_))), "{other:?}"),
    }
}

/// Messages one after another travel down one kept connection, not one each.
#[cfg(feature = "sandbox")]
#[tokio::test]
async fn sends_reuse_a_kept_connection() {
    use crate::contract::Sender;
    let sandbox = super::sandbox::start(Default::default()).await.expect("sandbox");
    let sender = super::EmailSender::new(plain_account(sandbox.addr.port())).expect("sender");
    for i in 0..3 {
        let accepted = sender.send(&text_to_ann(&format!("msg_{i}"))).await.expect("sent");
        assert_eq!(accepted.provider_message_id, format!("msg_{i}@omnigate.test"));
    }
    assert_eq!(sandbox.accepted().len(), 3);
    assert_eq!(sandbox.sessions(), 1);
}

/// A server that accepts the connection and then says nothing holds no send forever.
#[tokio::test]
async fn a_silent_server_times_out_as_unreachable() {
    use crate::contract::Sender;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut account = plain_account(listener.local_addr().expect("addr").port());
    account.smtp.timeout = Duration::from_millis(200);
    let sender = super::EmailSender::new(account).expect("sender");
    let failure = sender.send(&text_to_ann("msg_silent")).await.expect_err("no greeting");
    assert!(failure.error.retryable, "{failure:?}");
    assert_eq!(failure.error.code, ErrorCode::ProviderUnavailable);
    assert!(
        failure.error.message.contains("greeting and EHLO timed out"),
        "{}",
        failure.error.message
    );
    drop(listener);
}

#[test]
fn our_own_copies_are_ignored() {
    let raw = b"From: Ann <ANN@example.test>\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n";
    assert!(matches!(parse(raw, &source()), Ok(Incoming::Ignored(_))));
}

/// The fuzz targets (fuzz/, `cargo fuzz run mime`) explore far more; this keeps a seeded
/// slice of that search in every test run: mutated real mail never panics the parser.
#[test]
fn mutated_mail_never_panics_the_parser() {
    let seeds: [&[u8]; 6] = [
        include_bytes!("../../spec/email/postfix-bounce.eml"),
        include_bytes!("../../spec/email/positive-dsn.eml"),
        include_bytes!("../../spec/email/postfix-dsn-without-headers.eml"),
        include_bytes!("../../spec/email/qmail-bounce.eml"),
        include_bytes!("../../spec/email/arf-complaint.eml"),
        b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\nhi\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d\r\n\r\n--b--\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3000 {
        let mut raw = seeds[rng.usize(..seeds.len())].to_vec();
        for _ in 0..rng.usize(1..8) {
            let at = rng.usize(..raw.len());
            match rng.u8(..3) {
                0 => raw[at] = rng.u8(..),
                1 => raw.insert(at, *b"\r\n-:;=<>\\\"".get(rng.usize(..11)).unwrap_or(&b'x')),
                _ => {
                    raw.remove(at);
                }
            }
        }
        let _ = parse(&raw, &source());
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains(super::quote::reply_part(&text)));
    }
}

/// With one-click unsubscribe on, the account sets `List-Unsubscribe` (RFC 2369) and
/// `List-Unsubscribe-Post` (RFC 8058) itself: a request's own is refused, not overwritten.
#[test]
fn one_click_accounts_set_the_unsubscribe_headers_themselves() {
    let one_click = super::unsubscribe::OneClick {
        base_url: "https://gw.example/unsubscribe/mail".into(),
        secret: "a secret of some length".into(),
    };
    let account = EmailAccount { one_click_unsubscribe: Some(one_click.clone()), ..account() };
    let compose = |email: Email| {
        let body = render::body_of(&Content::Email(email), &Thread::default()).expect("body");
        let id = render::message_id_for("msg_u", &account);
        render::compose(&account, "ann@example.test", &id, &Thread::default(), &body, vec![])
    };
    let raw = compose(Email { text: "hi".into(), ..Email::default() }).expect("mime").formatted();
    let Ok(Incoming::Message(m)) = parse(&raw, &source()) else { panic!("not a message") };
    let Content::Email(back) = m.content else { panic!("not email") };
    let link = format!("<{}>", one_click.link("ann@example.test"));
    assert_eq!(back.headers.get("List-Unsubscribe"), Some(&link));
    assert_eq!(
        back.headers.get("List-Unsubscribe-Post").map(String::as_str),
        Some("List-Unsubscribe=One-Click")
    );
    let mut own = Email { text: "hi".into(), ..Email::default() };
    own.headers.insert("list-unsubscribe".into(), "<mailto:stop@omnigate.test>".into());
    let refused = compose(own).expect_err("the account's own header");
    assert_eq!(refused.code, ErrorCode::InvalidContent);
    assert!(refused.message.contains("one-click unsubscribe"), "{}", refused.message);
}

#[test]
fn extra_headers_go_out_and_come_back_while_the_gateways_own_are_refused() {
    let mut email = Email { text: "hi".into(), ..Email::default() };
    email.headers.insert("List-Unsubscribe".into(), "<mailto:stop@omnigate.test>".into());
    email.headers.insert("X-Campaign".into(), "autumn sale".into());
    let body = render::body_of(&Content::Email(email.clone()), &Thread::default()).expect("body");
    let id = render::message_id_for("msg_h", &account());
    let raw =
        render::compose(&account(), "ann@example.test", &id, &Thread::default(), &body, vec![])
            .expect("mime")
            .formatted();
    let mut reader = source();
    reader.account_address = "other@example.test";
    let Ok(Incoming::Message(m)) = parse(&raw, &reader) else { panic!("not a message") };
    let Content::Email(back) = m.content else { panic!("not email") };
    assert_eq!(back.headers.get("X-Campaign").map(String::as_str), Some("autumn sale"));
    assert_eq!(
        back.headers.get("List-Unsubscribe").map(String::as_str),
        Some("<mailto:stop@omnigate.test>")
    );
    assert!(!back.headers.contains_key("Subject") && !back.headers.contains_key("Message-ID"));

    for (name, value, why) in [
        ("Bcc", "x@y.test", "set by the gateway"),
        ("message-id", "<x@y>", "set by the gateway"),
        ("X-Bad", "a\r\nBcc: victim@example.test", "one line"),
        ("X Bad", "a", "not a valid field name"),
    ] {
        let mut bad = email.clone();
        bad.headers = [(name.to_string(), value.to_string())].into();
        let e = render::body_of(&Content::Email(bad), &Thread::default()).expect_err(name);
        assert_eq!(e.code, ErrorCode::InvalidContent);
        assert!(e.message.contains(why), "{name}: {}", e.message);
    }
}

/// Attachment URLs come from API clients: internal hosts are refused for good before any
/// connection, whether named by a literal address or by a name that resolves to one.
#[tokio::test]
async fn attachment_urls_on_internal_hosts_are_refused() {
    let sender = super::EmailSender::new(account()).expect("sender");
    for url in [
        "http://127.0.0.1:9/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/x.png",
    ] {
        let media = Content::Media(crate::model::Media { url: url.into(), ..Default::default() });
        let out = crate::contract::Outbound::new("msg_x", "ann@example.test", media);
        let failure = crate::Sender::send(&sender, &out).await.expect_err(url);
        assert_eq!(failure.class, crate::FailureClass::Permanent, "{url}: {failure:?}");
        assert!(
            failure.error.message.contains("public hosts only"),
            "{url}: {}",
            failure.error.message
        );
    }
}

#[test]
fn a_reply_names_the_conversation_of_the_plus_address_it_was_written_or_delivered_to() {
    let id = "cnv_0195f1c2a3b47c3d8e9f0a1b2c3d4e5f";
    let mut shop = source();
    shop.account_address = "shop@omnigate.test";
    let conversation = |head: String| match parse(format!("{head}\r\n\r\nhi\r\n").as_bytes(), &shop)
    {
        Ok(Incoming::Message(m)) => m.conversation,
        other => panic!("not a message: {other:?}"),
    };
    let from = "From: ann@example.test\r\nMessage-ID: <a@example.test>";
    let written = format!("{from}\r\nTo: \"Zoë's Shop\" <shop+{id}@omnigate.test>");
    assert_eq!(conversation(written).as_deref(), Some(id));
    let copied = format!("{from}\r\nTo: bob@example.test\r\nCc: <shop+{id}@omnigate.test>");
    assert_eq!(conversation(copied).as_deref(), Some(id));
    // A blind copy shows only in what the server added.
    let blind = format!("Delivered-To: shop+{id}@omnigate.test\r\n{from}\r\nTo: bob@example.test");
    assert_eq!(conversation(blind).as_deref(), Some(id));
    let elsewhere = format!("{from}\r\nTo: bob+{id}@example.test");
    assert_eq!(conversation(elsewhere), None);
    assert_eq!(conversation(format!("{from}\r\nTo: shop@omnigate.test")), None);
}

/// The URLs inbound mail stores for attachments it leaves in the mailbox read back to the
/// mail and part they name; anything else is no URL of ours.
#[test]
fn imap_urls_read_back_to_their_mail_and_part() {
    use super::ImapUrl;
    let part =
        ImapUrl::parse("imap://localhost/INBOX;UIDVALIDITY=1/;UID=7/;SECTION=3").expect("url");
    assert_eq!(
        part,
        ImapUrl {
            host: "localhost".into(),
            mailbox: "INBOX".into(),
            uid_validity: 1,
            uid: 7,
            section: vec![3]
        }
    );
    let nested =
        ImapUrl::parse("imap://mx.example.test/Support/2026;UIDVALIDITY=99/;UID=12/;SECTION=2.1");
    assert_eq!(nested.map(|u| (u.mailbox, u.section)), Some(("Support/2026".into(), vec![2, 1])));
    let whole = ImapUrl::parse("imap://localhost/INBOX;UIDVALIDITY=1/;UID=7").expect("url");
    assert!(whole.section.is_empty());
    for bad in [
        "https://localhost/INBOX;UIDVALIDITY=1/;UID=7",
        "imap://localhost/INBOX/;UID=7",
        "imap://localhost/INBOX;UIDVALIDITY=x/;UID=7",
        "imap://localhost/INBOX;UIDVALIDITY=1/;UID=7/;SECTION=0",
        "imap://localhost/INBOX;UIDVALIDITY=1/;UID=7/;SECTION=3/;PARTIAL=0.10",
        "imap:///INBOX;UIDVALIDITY=1/;UID=7",
    ] {
        assert_eq!(ImapUrl::parse(bad), None, "{bad}");
    }
}

#[test]
fn a_plain_text_mail_has_no_html() {
    let raw = b"From: bob@example.test\r\nMessage-ID: <t@example.test>\r\n\r\nJust text.\r\n";
    let (_, email) = parsed_email(raw);
    assert_eq!(email.text, "Just text.\n");
    // mail-parser renders HTML from the text for any mail; only HTML the sender wrote is kept.
    assert_eq!(email.html, "");
}

/// Kept headers leave out the servers' trace (DKIM, ARC, SPF results) and the canonical
/// fields, keep a header's first occurrence, and stop at 16 KiB of names and values, so a
/// mail built to be all headers cannot bloat every stored message and event.
#[test]
fn kept_headers_leave_out_the_trace_and_stop_at_their_budget() {
    let head = |extra: &str| {
        format!(
            "From: bob@example.test\r\nMessage-ID: <h@example.test>\r\n\
             DKIM-Signature: v=1; a=rsa-sha256\r\nARC-Seal: i=1; cv=none\r\n\
             Received-SPF: pass\r\nX-Original-To: shop@omnigate.test\r\n\
             X-Campaign: first\r\nX-Campaign: second\r\n{extra}\r\nhi\r\n"
        )
    };
    let (_, email) = parsed_email(head("").as_bytes());
    let names: Vec<&str> = email.headers.keys().map(String::as_str).collect();
    assert_eq!(names, ["X-Campaign"], "{:?}", email.headers);
    assert_eq!(email.headers["X-Campaign"], "first");

    // "X-Campaign" + "first" use 15 bytes: a header of the rest of the budget is kept whole,
    // one byte more and it (and what follows) is left out.
    let filler = |len: usize| format!("X-Filler: {}\r\nX-After: 1\r\n", "f".repeat(len));
    let exact = 16 * 1024 - 15 - "X-Filler".len();
    let (_, kept) = parsed_email(head(&filler(exact)).as_bytes());
    assert_eq!(kept.headers.get("X-Filler").map(String::len), Some(exact));
    assert!(!kept.headers.contains_key("X-After"), "the budget is spent");
    let (_, over) = parsed_email(head(&filler(exact + 1)).as_bytes());
    assert!(!over.headers.contains_key("X-Filler") && !over.headers.contains_key("X-After"));
    assert_eq!(over.headers["X-Campaign"], "first");
}

/// A part IMAP hands over alone (`BODY[n.MIME]` then `BODY[n]`), decoded from base64.
#[test]
fn a_mime_entity_decodes_to_its_type_and_bytes() {
    let entity = b"Content-Type: image/PNG; name=dot.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
    let (mime_type, bytes) = super::parse::decode_entity(entity).expect("an entity");
    assert_eq!(mime_type, "image/png");
    assert_eq!(bytes, b"\x89PNG\r\n\x1a\n");
}

/// The From carries the account's display name, and the plus-addressed Reply-To (replies
/// thread by it) goes out only where the client set no Reply-To of its own: a second one
/// would make the mail invalid (RFC 5322 3.6 allows one).
#[test]
fn from_carries_the_name_and_a_clients_own_reply_to_wins() {
    let mut account = account();
    account.plus_address_replies = true;
    let thread = Thread { conversation_id: "conv_7".into(), ..Thread::default() };
    let render_with = |headers: &[(&str, &str)]| {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let email = Email { text: "hi".into(), headers, ..Email::default() };
        let body = render::body_of(&Content::Email(email), &thread).expect("body");
        let id = render::message_id_for("msg_r", &account);
        render::compose(&account, "ann@example.test", &id, &thread, &body, vec![])
            .expect("mime")
            .formatted()
    };
    let reply_tos = |raw: &[u8]| {
        let raw = String::from_utf8_lossy(raw).to_ascii_lowercase();
        raw.split("\r\n")
            .filter(|l| l.starts_with("reply-to:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    let plain = render_with(&[]);
    let parsed = mail_parser::MessageParser::default().parse(&plain).expect("mime");
    let from = parsed.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.name(), Some("Zoë's Shop"));
    assert_eq!(from.address(), Some("shop@omnigate.test"));
    let [ours] = &reply_tos(&plain)[..] else { panic!("{:?}", reply_tos(&plain)) };
    assert!(ours.contains("shop+conv_7@omnigate.test"), "{ours}");

    let own = render_with(&[("Reply-To", "team@omnigate.test")]);
    let [theirs] = &reply_tos(&own)[..] else { panic!("{:?}", reply_tos(&own)) };
    assert!(theirs.contains("team@omnigate.test"), "{theirs}");
}
