//! The one outbound HTTP client configuration that every HTTP adapter shares.

use std::time::{Duration, SystemTime};

/// A client on rustls with the ring provider, bounded timeouts and pooled connections, that
/// does not follow redirects: provider APIs and webhook receivers answer at the URL they are
/// given, and a 301-303 followed turns a POST into a GET without its body (RFC 9110 15.4)
/// whose 200 would read as success. A 3xx is an answer to report.
pub fn client(timeout: Duration) -> reqwest::Client {
    build(builder(timeout))
}

/// The settings of [`client`], for callers that add their own (a DNS resolver).
pub fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    // Several crates may race to install the process-wide provider; any winner is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(64)
        .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

pub fn build(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// A request to `provider` (`service` in words) that failed in transport, as a send's
/// outcome. Not connected: the provider never saw it, so it is retried. Anything later (a
/// timeout waiting for the answer) may have made the message, which a provider's create
/// cannot be asked twice for: unsure.
pub fn transport_failure(
    err: &reqwest::Error,
    provider: &str,
    service: &str,
) -> crate::SendFailure {
    let error = crate::ProviderError {
        code: crate::ErrorCode::ProviderUnavailable,
        message: format!("{service} unreachable: {err}"),
        provider: provider.into(),
        provider_code: String::new(),
        retryable: true,
    };
    if err.is_connect() {
        crate::SendFailure::retryable(error, None)
    } else {
        crate::SendFailure::unsure(error)
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 10.2.3).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
