//! Bounces in free text: mail systems that send no RFC 3464 report (qmail's "failure
//! notice", older Exim and Exchange) still say in words which message failed and why.
//! Read by the heuristics the DSN notes suggest (a reply code and an `x.y.z` status in the
//! body, our Message-ID in the returned copy), and only in mail from the mail system.

use mail_parser::Message;

use super::dsn::{Action, Report, kind_of, returned_message_id};
use super::smtp::{enhanced_status, status_words};

/// The longest diagnostic kept: the line that carries the status, not the whole notice.
const MAX_DIAGNOSTIC: usize = 300;

/// `None` when the mail is not from a mail system; `Some(Err)` when it is, and says too
/// little to match it to a message of ours or to tell what happened.
pub fn free_text(message: &Message<'_>) -> Option<Result<Report, String>> {
    from_mail_system(message).then(|| read(message))
}

/// `MAILER-DAEMON` and `postmaster` are the senders RFC 5321 (4.5.1) and custom give the
/// mail system's own notices; a person's out-of-office reply also comes with a null
/// return path, so that alone does not make a bounce.
fn from_mail_system(message: &Message<'_>) -> bool {
    message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.split('@').next())
        .is_some_and(|local| {
            local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster")
        })
}

fn read(message: &Message<'_>) -> Result<Report, String> {
    let text = message.body_text(0).unwrap_or_default();
    // The notice ends where the returned copy of our message begins.
    let notice = &text[..returned_copy_start(&text)];
    let attached = message.parts.iter().find_map(|p| returned_message_id(p, &kind_of(p)?));
    let original_message_id = attached
        .or_else(|| quoted_message_id(&text[notice.len()..]))
        .ok_or("a bounce that names no Message-ID of the message it returns")?;
    let (status, line) = status_in(notice).ok_or("a bounce without a status code")?;
    let action = match status.as_bytes().first() {
        Some(b'5') => Action::Failed,
        Some(b'4') => Action::Delayed,
        _ => Action::Delivered,
    };
    let diagnostic: String = line.trim().chars().take(MAX_DIAGNOSTIC).collect();
    Ok(Report {
        original_message_id,
        recipient: first_address(notice).unwrap_or_default(),
        action,
        status,
        diagnostic,
    })
}

/// Where the copy of the returned message starts: its first header line.
fn returned_copy_start(text: &str) -> usize {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let name = line.split_once(':').map(|(n, _)| n.trim_start().to_ascii_lowercase());
        if matches!(name.as_deref(), Some("return-path" | "received" | "message-id")) {
            return at;
        }
        at += line.len();
    }
    text.len()
}

/// The Message-ID header of the returned copy, when the bounce quotes it as text.
fn quoted_message_id(copy: &str) -> Option<String> {
    copy.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("message-id") {
            return None;
        }
        let id = value.trim().trim_start_matches('<').split('>').next()?.trim();
        (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
    })
}

/// The first enhanced status code (RFC 3463, `2.x.x`, `4.x.x` or `5.x.x`) in `text`, else
/// the class of the first SMTP reply code (`550 ` becomes `5.0.0`), with its line.
fn status_in(text: &str) -> Option<(String, &str)> {
    let lines = || text.lines();
    lines().find_map(|line| enhanced_status(line).map(|code| (code.to_string(), line))).or_else(
        || lines().find_map(|line| reply_class(line).map(|class| (format!("{class}.0.0"), line))),
    )
}

/// The class digit of an SMTP reply code (`4xx` or `5xx`) standing as a word in `line`.
fn reply_class(line: &str) -> Option<char> {
    status_words(line)
        .find(|word| {
            let b = word.as_bytes();
            b.len() == 3
                && matches!(b[0], b'4' | b'5')
                && (b'0'..=b'5').contains(&b[1])
                && b[2].is_ascii_digit()
        })
        .and_then(|word| word.chars().next())
}

/// The first `<address>` the notice names: the recipient it is about.
fn first_address(notice: &str) -> Option<String> {
    notice.split('<').skip(1).find_map(|rest| {
        let address = rest.split('>').next()?;
        (address.contains('@') && !address.contains(char::is_whitespace))
            .then(|| address.to_string())
    })
}
