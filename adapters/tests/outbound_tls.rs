//! Outbound TLS trusts the system's roots, read once per process and shared by every
//! client: the HTTP clients of provider accounts and webhook deliveries, and the rustls
//! config of mail servers and PostgreSQL. The system roots come from `SSL_CERT_FILE`, which
//! only a fresh process reads, so the test runs its checks in a child of itself.

#![cfg(all(feature = "twilio", feature = "email"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// Set in the child: the directory holding the `trusted` and `other` certificate sets.
const CHILD: &str = "OMNIGATE_OUTBOUND_TLS_CERTS";

/// A CA and a server certificate for localhost from `scripts/test-certs.sh`, in `dir`.
fn certificates(dir: &Path, ca_name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-certs.sh");
    let status = Command::new("bash")
        .args([script, &dir.display().to_string(), ca_name])
        .status()
        .expect("bash runs");
    assert!(status.success(), "scripts/test-certs.sh needs openssl");
    dir.to_path_buf()
}

/// A TLS server on loopback offering HTTP/2 and HTTP/1.1 with `certs`' server certificate;
/// answers its port and, for its first connection, the protocol the handshake chose or why
/// the handshake failed (a client that distrusts the certificate aborts it).
async fn server(certs: &Path) -> (u16, tokio::task::JoinHandle<Result<Option<Vec<u8>>, String>>) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).expect("server.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handshake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    });
    (port, handshake)
}

/// What an HTTP client of `omnigate_adapters::http` makes of a server with `certs`' chain.
async fn http_handshake(certs: &Path) -> Result<Option<Vec<u8>>, String> {
    let (port, handshake) = server(certs).await;
    let client = omnigate_adapters::http::client(Duration::from_secs(5));
    // The request itself fails either way: the server answers no HTTP.
    let _ = client.get(format!("https://localhost:{port}/")).send().await;
    handshake.await.expect("server task")
}

/// What a connection on `omnigate_adapters::tls::client_config(ca_file)` makes of it.
async fn rustls_handshake(certs: &Path, ca_file: Option<&Path>) -> Result<(), String> {
    let (port, handshake) = server(certs).await;
    let config = omnigate_adapters::tls::client_config(ca_file).expect("client config");
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let client = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
    let server = handshake.await.expect("server task");
    client.map(|_| ()).map_err(|e| e.to_string()).and(server.map(|_| ()))
}

#[test]
fn outbound_tls_trusts_the_system_roots_and_offers_http2() {
    let Some(dir) = std::env::var_os(CHILD).map(PathBuf::from) else {
        let dir = tempfile::tempdir().expect("tempdir");
        let trusted = certificates(&dir.path().join("trusted"), "omnigate system CA");
        certificates(&dir.path().join("other"), "omnigate unknown CA");
        let empty = dir.path().join("no-system-dir");
        std::fs::create_dir_all(&empty).expect("dir");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "outbound_tls_trusts_the_system_roots_and_offers_http2"])
            .arg("--nocapture")
            .env(CHILD, dir.path())
            .env("SSL_CERT_FILE", trusted.join("ca.pem"))
            .env("SSL_CERT_DIR", &empty)
            .output()
            .expect("the test binary runs");
        assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
        // `--exact` with a name that matched nothing would pass too.
        assert!(String::from_utf8_lossy(&child.stdout).contains("1 passed"), "{child:?}");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (trusted, other) = (dir.join("trusted"), dir.join("other"));
        let certs = omnigate_adapters::tls::system_certs();
        assert_eq!(certs.len(), 1, "SSL_CERT_FILE holds the system roots: {}", certs.len());

        let negotiated = http_handshake(&trusted).await.expect("the system's CA is trusted");
        assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]), "HTTP/2 is offered first");
        let refused = http_handshake(&other).await.expect_err("an unknown CA is refused");
        assert!(!refused.is_empty());

        rustls_handshake(&trusted, None).await.expect("mail and PostgreSQL trust the system");
        rustls_handshake(&other, None).await.expect_err("but not an unknown CA");
        let ca_file = other.join("ca.pem");
        rustls_handshake(&other, Some(&ca_file)).await.expect("unless its CA file is given");
    });
}
