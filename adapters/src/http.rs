//! The one outbound HTTP client configuration that every HTTP adapter shares.

use std::time::{Duration, SystemTime};

/// How long an unused connection stays open for the next request.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A client on rustls with the ring provider, bounded timeouts and pooled connections, that
/// does not follow redirects. The pool keeps every connection a burst opened until it has
/// been idle for a while: capping idle connections per host below the sends in flight
/// (`dispatch.max_in_flight`) closed the surplus after each burst and opened it again for the
/// next, a connection (and against a real provider a TLS handshake) per few messages.
/// Redirects are not followed: provider APIs and webhook receivers answer at the URL they are
/// given, and a 301-303 followed turns a POST into a GET without its body (RFC 9110 15.4)
/// whose 200 would read as success. A 3xx is an answer to report.
pub fn client(timeout: Duration) -> reqwest::Client {
    build(builder(timeout))
}

/// Turns Nagle's algorithm off on a connection. Answers and messages go out in several
/// writes (HTTP/2 headers, data and trailers; an SMTP body and its closing dot): with Nagle
/// on, a write waits for the peer's delayed acknowledgement of the one before, up to 40 ms
/// on Linux. Failing to set it costs only that latency, so the connection is used anyway.
pub fn no_nagle(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// The settings of [`client`], for callers that add their own (a DNS resolver).
pub fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    // Several crates may race to install the process-wide provider; any winner is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = match tls() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls.clone()),
        None => reqwest::Client::builder(),
    };
    builder
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(POOL_IDLE)
        .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// The TLS settings every client shares, on the process's one copy of the system roots
/// (reqwest would read its own for each client), offering HTTP/2 and HTTP/1.1 as reqwest
/// does. `None` (no config could be made) leaves reqwest to its own.
fn tls() -> Option<&'static rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Option<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let mut config = (*crate::tls::client_config(None).ok()?).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Some(config)
    })
    .as_ref()
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

/// Redirects a media fetch follows: a provider's media URL may answer with one to where the
/// bytes are kept (Twilio, with HTTP auth on media: a URL on its CDN valid for 4 hours,
/// support.twilio.com article 223183748).
const MEDIA_REDIRECTS: usize = 5;
/// How long a media fetch may take, body included: far longer than a send, since media run
/// to 100 MB (WhatsApp documents).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(300);

/// The credentials a media fetch presents to the origin of the URL it was given.
pub enum MediaAuth<'a> {
    None,
    Basic { user: &'a str, password: &'a str },
    Bearer(&'a str),
}

/// The client of media fetches: unlike [`client`], it follows redirects, and reqwest drops
/// the credentials of a request redirected to another host, port or scheme, so a CDN's
/// pre-signed URL never receives the account's secret (a CDN that signs its URLs refuses a
/// request that carries a second credential).
fn media_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        build(builder(MEDIA_TIMEOUT).redirect(reqwest::redirect::Policy::limited(MEDIA_REDIRECTS)))
    })
}

/// GETs media at `url` for `provider`, presenting `auth` to the origin of `url` only.
pub async fn fetch_media(
    url: &str,
    auth: &MediaAuth<'_>,
    provider: &str,
) -> Result<crate::MediaDownload, crate::ProviderError> {
    let fail = |code, message: String, provider_code: String, retryable| crate::ProviderError {
        code,
        message,
        provider: provider.into(),
        provider_code,
        retryable,
    };
    let at = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            let message = format!("the media URL {url:?} is not an http(s) URL");
            fail(crate::ErrorCode::InvalidContent, message, String::new(), false)
        })?;
    let request = match auth {
        MediaAuth::None => media_client().get(at),
        MediaAuth::Basic { user, password } => {
            media_client().get(at).basic_auth(user, Some(password))
        }
        MediaAuth::Bearer(token) => media_client().get(at).bearer_auth(token),
    };
    let response = request.send().await.map_err(|e| match e.is_redirect() {
        true => {
            fail(crate::ErrorCode::Rejected, format!("fetching media: {e}"), String::new(), false)
        }
        false => fail(
            crate::ErrorCode::ProviderUnavailable,
            format!("fetching media: {e}"),
            String::new(),
            true,
        ),
    })?;
    let status = response.status();
    if !status.is_success() {
        let (code, why, retryable) = match status.as_u16() {
            401 | 403 => {
                (crate::ErrorCode::Authentication, "refused the account's credentials for", false)
            }
            // Providers keep media for a while only (WhatsApp: 30 days).
            404 | 410 => (crate::ErrorCode::Expired, "no longer has", false),
            429 => (crate::ErrorCode::RateLimited, "throttled the fetch of", true),
            500.. => (crate::ErrorCode::ProviderUnavailable, "failed to serve", true),
            _ => (crate::ErrorCode::Rejected, "refused to serve", false),
        };
        let message = format!("{provider} {why} this media (HTTP {status})");
        return Err(fail(code, message, status.as_u16().to_string(), retryable));
    }
    let mime_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(crate::MediaDownload {
        mime_type,
        size: response.content_length(),
        body: Box::new(MediaResponse { response, provider: provider.to_string() }),
    })
}

struct MediaResponse {
    response: reqwest::Response,
    provider: String,
}

#[async_trait::async_trait]
impl crate::MediaBody for MediaResponse {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, crate::ProviderError> {
        self.response.chunk().await.map_err(|e| crate::ProviderError {
            code: crate::ErrorCode::ProviderUnavailable,
            message: format!("reading media: {e}"),
            provider: self.provider.clone(),
            provider_code: String::new(),
            retryable: true,
        })
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

    /// reqwest takes a preconfigured rustls config only of the rustls version it was built
    /// with; another would fail every build, and `build` fall back to a client reading its
    /// own roots.
    #[test]
    fn clients_take_the_shared_tls_config() {
        assert!(tls().is_some());
        assert!(builder(Duration::from_secs(1)).build().is_ok());
    }

    /// A URL whose server answers every request with `status` and no body.
    async fn answering(status: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/media/1", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    /// A failed media fetch says whether fetching again may work: throttling and server
    /// errors may pass, refused credentials and media the provider no longer keeps will not.
    #[tokio::test]
    async fn media_fetch_failures_say_whether_fetching_again_may_work() {
        use crate::ErrorCode::*;
        for (status, code, retryable) in [
            (429, RateLimited, true),
            (503, ProviderUnavailable, true),
            (401, Authentication, false),
            (404, Expired, false),
            (410, Expired, false),
            (400, Rejected, false),
        ] {
            let url = answering(status).await;
            let Err(e) = fetch_media(&url, &MediaAuth::None, "Test").await else {
                panic!("HTTP {status} fetched");
            };
            assert_eq!((e.code, e.retryable), (code, retryable), "{status}: {e:?}");
            assert_eq!(e.provider_code, status.to_string());
            assert!(e.message.contains(&format!("HTTP {status}")), "{}", e.message);
        }
    }

    /// Sends beyond what a cap on idle connections would keep: every connection of the
    /// first burst serves the second, none is opened again.
    #[tokio::test]
    async fn a_second_burst_reuses_the_connections_of_the_first() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const BURST: usize = 100;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.clear();
                            // Slow enough that the whole burst is in flight at once.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if conn.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let http = client(Duration::from_secs(10));
        for _ in 0..2 {
            let burst: Vec<_> = (0..BURST)
                .map(|_| {
                    let (http, url) = (http.clone(), url.clone());
                    tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
                })
                .collect();
            for answer in burst {
                assert_eq!(answer.await.expect("task").expect("answered"), 200);
            }
        }
        assert_eq!(opened.load(Ordering::SeqCst), BURST);
    }

    #[tokio::test]
    async fn accepted_connections_lose_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("option"), "Nagle is on by default");
        no_nagle(&mut accepted);
        assert!(accepted.nodelay().expect("option"));
    }

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
