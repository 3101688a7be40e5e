//! Twilio error codes to canonical classes. Codes and their meaning: Twilio's error
//! dictionary as summarised in shared/providers (DETAILS.md §1.4).

use std::time::Duration;

use crate::contract::SendFailure;
use crate::model::{ErrorCode, ProviderError};

use super::PROVIDER;
use super::wire::ErrorBody;

/// Classifies a non-2xx answer to a create request.
pub fn classify_http(status: u16, body: &[u8], retry_after: Option<Duration>) -> SendFailure {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|b| b.code);
    let message =
        parsed.and_then(|b| b.message).unwrap_or_else(|| format!("HTTP {status} from Twilio"));
    let error = |canonical| ProviderError {
        code: canonical,
        message: message.clone(),
        provider: PROVIDER.into(),
        provider_code: code.map(|c| c.to_string()).unwrap_or_else(|| status.to_string()),
        retryable: false,
    };
    match (status, code) {
        // 20429 "never processed, always safe to retry"; 21611 the sender's queue is full.
        (429, _) | (_, Some(20429)) | (_, Some(21611)) => {
            SendFailure::rate_limited(error(ErrorCode::RateLimited), retry_after)
        }
        (500..=599, _) => {
            SendFailure::retryable(error(ErrorCode::ProviderUnavailable), retry_after)
        }
        (401, _) => SendFailure::permanent(error(ErrorCode::Authentication)),
        (_, Some(c)) => SendFailure::permanent(error(canonical_code(c))),
        _ => SendFailure::permanent(error(ErrorCode::Rejected)),
    }
}

/// A transport error: one before the connection was made, or one after it, when Twilio
/// may have taken the request.
pub fn classify_transport(err: &reqwest::Error) -> SendFailure {
    crate::http::transport_failure(err, PROVIDER, "Twilio")
}

/// The error a delivery callback reports (`ErrorCode` on failed/undelivered).
pub fn callback_error(code: Option<&str>, status_word: &str) -> ProviderError {
    let canonical = code
        .and_then(|c| c.parse::<u32>().ok())
        .map(canonical_code)
        .unwrap_or(ErrorCode::Undeliverable);
    ProviderError {
        code: canonical,
        message: format!("Twilio reported the message {status_word}"),
        provider: PROVIDER.into(),
        provider_code: code.unwrap_or_default().to_string(),
        retryable: false,
    }
}

/// Twilio codes to canonical codes. An invalid recipient is a number that can never take
/// an SMS (no such number, not a mobile one, a landline), which the gateway then bars
/// from later sends; numbers this sender or account may not reach (21408 geographic
/// permissions, 21608 a trial account's unverified number, 21612 no route from this
/// sender) are a refusal of this sender, and another may reach them.
pub fn canonical_code(code: u32) -> ErrorCode {
    match code {
        20003 => ErrorCode::Authentication,
        20429 | 21611 => ErrorCode::RateLimited,
        21211 | 21614 | 21635 | 30005 | 30006 => ErrorCode::InvalidRecipient,
        21408 | 21608 => ErrorCode::Rejected,
        21610 => ErrorCode::RecipientOptedOut,
        21617 | 21602 | 21619 => ErrorCode::InvalidContent,
        21612 | 30003 | 30004 | 30008 => ErrorCode::Undeliverable,
        30001 => ErrorCode::ProviderUnavailable,
        _ => ErrorCode::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::FailureClass;

    fn body(code: u32, status: u16) -> Vec<u8> {
        format!(
            r#"{{"code": {code}, "message": "m", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        let f = classify_http(429, &body(20429, 429), Some(Duration::from_secs(3)));
        assert_eq!(
            f.class,
            FailureClass::RateLimited { retry_after: Some(Duration::from_secs(3)) }
        );
        assert_eq!(f.error.provider_code, "20429");
        let f = classify_http(503, b"<html>oops</html>", None);
        assert_eq!(f.class, FailureClass::Retryable { retry_after: None });
        assert_eq!(f.error.provider_code, "503");
    }

    #[test]
    fn invalid_recipient_and_opt_out_are_permanent_with_the_code_kept() {
        for (code, canonical) in [
            (21211, ErrorCode::InvalidRecipient),
            (21614, ErrorCode::InvalidRecipient),
            (21610, ErrorCode::RecipientOptedOut),
        ] {
            let f = classify_http(400, &body(code, 400), None);
            assert_eq!(f.class, FailureClass::Permanent);
            assert_eq!(f.error.code, canonical);
            assert_eq!(f.error.provider_code, code.to_string());
            assert!(!f.error.retryable);
        }
        let f = classify_http(401, &body(20003, 401), None);
        assert_eq!(f.error.code, ErrorCode::Authentication);
    }

    #[test]
    fn only_numbers_that_can_never_take_an_sms_are_invalid_recipients() {
        // shared/providers/DETAILS.md 1.4: 21211 invalid `To`, 21614 not SMS-capable, 21635
        // a landline, 30005 the number does not exist, 30006 landline or unreachable
        // carrier; 21408 geographic permissions and 21608 a trial account's unverified
        // number are the sender's, and 21612 an unroutable pair of numbers.
        for code in [21211, 21614, 21635, 30005, 30006] {
            assert_eq!(canonical_code(code), ErrorCode::InvalidRecipient, "{code}");
        }
        for code in [21408, 21608] {
            assert_eq!(canonical_code(code), ErrorCode::Rejected, "{code}");
        }
        assert_eq!(canonical_code(21612), ErrorCode::Undeliverable);
        assert_eq!(canonical_code(30003), ErrorCode::Undeliverable);
    }

    /// DETAILS.md 1.4 for the codes a callback's `ErrorCode` may carry: 30001 queue
    /// overflow (transient), 21611 a full sender queue, 20003 authentication, 21617 a body
    /// over 1,600 characters; an unknown or missing code is an undelivered message.
    #[test]
    fn callback_error_codes_keep_their_class() {
        for (code, canonical) in [
            ("30001", ErrorCode::ProviderUnavailable),
            ("21611", ErrorCode::RateLimited),
            ("20429", ErrorCode::RateLimited),
            ("20003", ErrorCode::Authentication),
            ("21617", ErrorCode::InvalidContent),
            ("30007", ErrorCode::Rejected),
        ] {
            let e = callback_error(Some(code), "failed");
            assert_eq!((e.code, e.provider_code.as_str()), (canonical, code));
        }
        let e = callback_error(None, "undelivered");
        assert_eq!((e.code, e.provider_code.as_str()), (ErrorCode::Undeliverable, ""));
        assert!(e.message.contains("undelivered"), "{}", e.message);
    }

    /// A 401 is an authentication failure whatever code (or none) its body has.
    #[test]
    fn unauthorized_is_authentication_without_a_code() {
        let f = classify_http(401, b"Unauthorized", None);
        assert_eq!((f.class, f.error.code), (FailureClass::Permanent, ErrorCode::Authentication));
        assert_eq!(f.error.provider_code, "401");
    }
}
