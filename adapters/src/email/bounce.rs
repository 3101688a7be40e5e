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
    let (status, line) = status_in(notice).ok_or("a bounce without a failure's status code")?;
    let action = if status.starts_with('5') { Action::Failed } else { Action::Delayed };
    let diagnostic: String = line.trim().chars().take(MAX_DIAGNOSTIC).collect();
    Ok(Report {
        original_message_id,
        // Only a report without a diagnostic names its recipient in the error; this one
        // always has the status line.
        recipient: String::new(),
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

/// The failure the notice reports, with its line: the first enhanced status code (RFC
/// 3463) of class 5, else of class 4, else the class of the first 5xx or 4xx reply code
/// (`550` stands for `5.0.0`). Classes are tried worst first because a notice may quote the
/// server's earlier replies (`250 2.1.0 Ok`) before the one that failed.
fn status_in(text: &str) -> Option<(String, &str)> {
    let found = |class: char, code: &dyn Fn(&str) -> bool| {
        text.lines().find_map(|line| {
            let word = status_words(line).find(|w| w.starts_with(class) && code(w))?;
            Some((word.to_string(), line))
        })
    };
    let enhanced = |w: &str| enhanced_status(w) == Some(w);
    let reply =
        |w: &str| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) && w.as_bytes()[1] <= b'5';
    ['5', '4'].into_iter().find_map(|class| {
        found(class, &enhanced)
            .or_else(|| found(class, &reply).map(|(_, line)| (format!("{class}.0.0"), line)))
    })
}
