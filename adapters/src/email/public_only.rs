//! Attachment URLs come from API clients, and the gateway fetches them from inside the
//! network: by default only public addresses are reachable, so a URL cannot make the
//! gateway read an internal service or a cloud metadata endpoint. Names are checked when
//! they are resolved (so DNS rebinding cannot swap in a private address after a check),
//! and literal IP hosts before the request.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is reachable from the public internet: not loopback, private,
/// link-local, carrier-grade NAT, unique-local, multicast or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// A resolver that answers only public addresses.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} has no public address; attachments are fetched from public hosts only"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Refuses a URL whose host is a literal non-public IP (those skip name resolution).
pub fn check_literal(url: &reqwest::Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!("{ip} is not a public address; attachments are fetched from public hosts only"))
    }
}

/// Hops an attachment URL may take (CDNs and signed storage URLs redirect once or twice).
pub const MAX_REDIRECTS: usize = 5;

/// Attachment hosts may redirect, so redirects are followed, each hop checked as the first
/// URL is: a redirect to a literal private address skips name resolution, so without this
/// check it would reach what [`PublicOnly`] refuses.
pub fn redirects(public_only: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_literal(attempt.url()) {
            Err(refused) if public_only => attempt.error(refused),
            _ => attempt.follow(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback HTTP server: `/hop` redirects to the literal `127.0.0.1` address of
    /// `/secret` (which counts its requests), `/loop` to itself.
    async fn redirecting_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 4096];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&request[..n]).to_string();
                    let answer = match request.split_whitespace().nth(1) {
                        Some("/hop") => {
                            format!("302 Found\r\nLocation: http://127.0.0.1:{port}/secret")
                        }
                        Some("/loop") => "302 Found\r\nLocation: /loop".to_string(),
                        _ => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            "200 OK".to_string()
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        (port, hits)
    }

    fn chain(e: &reqwest::Error) -> String {
        let causes = std::iter::successors(std::error::Error::source(e), |s| s.source());
        causes.map(|s| s.to_string()).collect::<Vec<_>>().join(": ")
    }

    /// A redirect to a literal address skips name resolution, where public hosts are
    /// otherwise enforced: each hop is checked by the redirect policy itself.
    #[tokio::test]
    async fn redirects_to_private_literal_addresses_are_refused_per_hop() {
        use std::sync::atomic::Ordering;
        let (port, secret_hits) = redirecting_server().await;
        let client = |public_only| {
            let builder = crate::http::builder(std::time::Duration::from_secs(5));
            crate::http::build(builder.redirect(redirects(public_only)))
        };
        let hop = format!("http://localhost:{port}/hop");
        let refused = client(true).get(&hop).send().await.expect_err("private hop");
        assert!(chain(&refused).contains("public hosts only"), "{}", chain(&refused));
        assert_eq!(secret_hits.load(Ordering::SeqCst), 0, "the private address was not reached");

        let followed = client(false).get(&hop).send().await.expect("private URLs allowed");
        assert_eq!(followed.status(), 200);
        assert_eq!(secret_hits.load(Ordering::SeqCst), 1, "redirects are followed");

        let looped = client(false).get(format!("http://localhost:{port}/loop")).send().await;
        let looped = looped.expect_err("endless redirects");
        assert!(chain(&looped).contains("more than 5 redirects"), "{}", chain(&looped));
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
        let url = |u: &str| reqwest::Url::parse(u).expect("url");
        assert!(check_literal(&url("http://169.254.169.254/latest/meta-data")).is_err());
        assert!(check_literal(&url("http://[::1]:8080/x")).is_err());
        assert!(check_literal(&url("https://cdn.example.com/a.png")).is_ok());
    }
}
