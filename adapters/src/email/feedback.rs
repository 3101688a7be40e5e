//! Complaint feedback reports (ARF, RFC 5965): the `multipart/report` a mailbox provider's
//! feedback loop sends back when a person marks one of our messages as spam.

use mail_parser::Message;

use super::dsn::{field, field_groups, is_report, kind_of, returned_message_id};

/// What a feedback report says about one of our messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    /// The Message-ID of the message complained about, without angle brackets.
    pub original_message_id: String,
    /// `Feedback-Type` in lower case (RFC 5965 3.1, 7.3): `abuse`, `fraud`, `virus`,
    /// `other`, and the later `auth-failure` (RFC 6591) and `not-spam` (RFC 6430).
    pub feedback_type: String,
}

impl Complaint {
    /// Whether the person said they want none of this mail: a spam (`abuse`) or phishing
    /// (`fraud`) complaint. The other types are a filter's findings (`virus`,
    /// `auth-failure`), a withdrawal (`not-spam`) or unknown, and say nothing of consent.
    pub fn is_opt_out(&self) -> bool {
        matches!(self.feedback_type.as_str(), "abuse" | "fraud")
    }
}

/// `None` when the mail is not a feedback report; `Some(Err)` when it is one we cannot
/// read.
pub fn complaint(message: &Message<'_>) -> Option<Result<Complaint, String>> {
    is_report(message, "feedback-report").then(|| read(message))
}

fn read(message: &Message<'_>) -> Result<Complaint, String> {
    let mut fields = None;
    let mut original = None;
    for part in &message.parts {
        let Some(kind) = kind_of(part) else { continue };
        if kind == "message/feedback-report" {
            fields = Some(String::from_utf8_lossy(part.contents()).into_owned());
        } else {
            original = original.or_else(|| returned_message_id(part, &kind));
        }
    }
    let fields = fields.ok_or("feedback report without a message/feedback-report part")?;
    let groups = field_groups(&fields);
    let feedback_type = groups
        .first()
        .and_then(|g| field(g, "feedback-type"))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .ok_or("feedback report without a Feedback-Type")?;
    // Providers that redact the returned message leave nothing to match it by.
    let original_message_id =
        original.ok_or("feedback report names no original Message-ID (redacted?)")?;
    Ok(Complaint { original_message_id, feedback_type })
}
