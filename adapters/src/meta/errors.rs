//! Graph error codes to canonical classes (shared/providers README "Error codes", DETAILS
//! §2 and §3.3). Behaviour keys off numeric codes, never message text.

use std::time::Duration;

use crate::contract::SendFailure;
use crate::model::{ErrorCode, ProviderError};

use super::PROVIDER;

/// Meta's pair rate limit: about one message per 6 s to the same user.
pub const PAIR_RATE_PAUSE: Duration = Duration::from_secs(6);

/// The Graph error object, as far as classification needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphError {
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
    pub is_transient: bool,
}

impl GraphError {
    pub fn provider_code(&self) -> String {
        match self.subcode {
            Some(sub) => format!("{}/{sub}", self.code),
            None => self.code.to_string(),
        }
    }
}

/// How the dispatcher should treat an error a send answered with.
pub fn classify(
    http_status: u16,
    error: &GraphError,
    retry_after: Option<Duration>,
) -> SendFailure {
    let provider_error = |code| ProviderError {
        code,
        message: error.message.clone(),
        provider: PROVIDER.into(),
        provider_code: error.provider_code(),
        retryable: false,
    };
    match error.code {
        // Throughput, spam and application/business rate limits: slow the route down.
        4 | 17 | 32 | 613 | 80007 | 130429 | 131048 | 80001..=80014 => {
            SendFailure::rate_limited(provider_error(ErrorCode::RateLimited), retry_after)
        }
        // The pair rate limit is per recipient: retry that message later, not the route.
        131056 => SendFailure::retryable(
            provider_error(ErrorCode::RateLimited),
            Some(retry_after.unwrap_or(PAIR_RATE_PAUSE)),
        ),
        1 | 2 | 1200 | 131000 | 131016 | 131057 => {
            SendFailure::retryable(provider_error(ErrorCode::ProviderUnavailable), retry_after)
        }
        _ if error.is_transient || http_status >= 500 => {
            SendFailure::retryable(provider_error(ErrorCode::ProviderUnavailable), retry_after)
        }
        code => SendFailure::permanent(provider_error(canonical_code(code, error.subcode))),
    }
}

/// Permanent codes to canonical codes; also used for failed statuses in webhooks.
pub fn canonical_code(code: i64, subcode: Option<i64>) -> ErrorCode {
    match (code, subcode) {
        (131047, _) | (10, Some(2018278 | 2018065)) => ErrorCode::OutsideWindow,
        (100, Some(2018001)) | (133010, _) | (551, _) | (200, Some(1545041)) => {
            ErrorCode::InvalidRecipient
        }
        (190, _) | (10, _) | (200..=299, _) => ErrorCode::Authentication,
        (131050, _) => ErrorCode::RecipientOptedOut,
        (131026, _) => ErrorCode::Undeliverable,
        (100 | 131008 | 131009 | 131051 | 131052 | 131053, _) | (132000..=132999, _) => {
            ErrorCode::InvalidContent
        }
        (4 | 130429 | 131048 | 131056 | 613, _) => ErrorCode::RateLimited,
        (1 | 2 | 131000 | 131016 | 131057, _) => ErrorCode::ProviderUnavailable,
        _ => ErrorCode::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::FailureClass;

    fn e(code: i64, subcode: Option<i64>) -> GraphError {
        GraphError { code, subcode, message: "m".into(), is_transient: false }
    }

    #[test]
    fn each_documented_class() {
        // Retryable: shared/providers README "Error codes: retryable ...".
        for code in [4, 80007, 130429, 131048] {
            let f = classify(400, &e(code, None), None);
            assert!(matches!(f.class, FailureClass::RateLimited { .. }), "{code}");
        }
        let pair = classify(400, &e(131056, None), None);
        assert_eq!(pair.class, FailureClass::Retryable { retry_after: Some(PAIR_RATE_PAUSE) });
        for code in [131000, 131016] {
            assert!(matches!(
                classify(500, &e(code, None), None).class,
                FailureClass::Retryable { .. }
            ));
        }
        assert!(matches!(
            classify(503, &e(999_999, None), None).class,
            FailureClass::Retryable { .. }
        ));
        // Permanent, with the code kept.
        for (code, sub, canonical) in [
            (131047, None, ErrorCode::OutsideWindow),
            (190, None, ErrorCode::Authentication),
            (132001, None, ErrorCode::InvalidContent),
            (131026, None, ErrorCode::Undeliverable),
            (133010, None, ErrorCode::InvalidRecipient),
            (10, Some(2018278), ErrorCode::OutsideWindow),
            (100, Some(2018001), ErrorCode::InvalidRecipient),
        ] {
            let f = classify(400, &e(code, sub), None);
            assert_eq!(f.class, FailureClass::Permanent, "{code}");
            assert_eq!(f.error.code, canonical, "{code}");
            assert!(f.error.provider_code.starts_with(&code.to_string()));
        }
        assert_eq!(classify(400, &e(10, Some(2018278)), None).error.provider_code, "10/2018278");
    }

    /// DETAILS.md §2 and §3.3: 1, 2, 131000, 131016, 131057 (maintenance) and Messenger's
    /// 1200 are temporary whatever HTTP status carries them ("do not rely on HTTP status
    /// alone"), so a 400 with one of them is retried too.
    #[test]
    fn temporary_codes_are_retried_by_code_not_by_status() {
        for code in [1, 2, 1200, 131000, 131016, 131057] {
            let f = classify(400, &e(code, None), None);
            assert_eq!(f.class, FailureClass::Retryable { retry_after: None }, "{code}");
            assert_eq!(f.error.code, ErrorCode::ProviderUnavailable, "{code}");
        }
    }

    /// The codes a failed status in a webhook carries, as the message's final error.
    #[test]
    fn failed_statuses_keep_the_class_of_their_code() {
        for (code, canonical) in [
            (131050, ErrorCode::RecipientOptedOut),
            (4, ErrorCode::RateLimited),
            (130429, ErrorCode::RateLimited),
            (131048, ErrorCode::RateLimited),
            (131056, ErrorCode::RateLimited),
            (613, ErrorCode::RateLimited),
            (131000, ErrorCode::ProviderUnavailable),
            (131057, ErrorCode::ProviderUnavailable),
            (131049, ErrorCode::Rejected),
        ] {
            assert_eq!(canonical_code(code, None), canonical, "{code}");
        }
    }
}
