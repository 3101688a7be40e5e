//! Trust roots for every outbound TLS connection (provider APIs, webhook receivers, mail
//! servers, PostgreSQL): the system's, read once per process, plus a CA file for private
//! deployments.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The system's certificates (the distribution's bundle and directory, or `SSL_CERT_FILE`
/// and `SSL_CERT_DIR`) that can serve as trust anchors, read on first use. Reading and
/// parsing a few hundred files takes milliseconds (tens in a debug build); every provider
/// account's HTTP client used to read its own copy, which gateways with many accounts paid
/// for at start and in memory. Unreadable or unusable certificates are left out rather than
/// failing every connection: a CA file may be all that is needed.
pub fn system_certs() -> &'static [CertificateDer<'static>] {
    &system().0
}

/// The usable system certificates and the same as parsed trust anchors, made in one pass,
/// so that each client config clones anchors rather than parsing every certificate again.
fn system() -> &'static (Vec<CertificateDer<'static>>, RootCertStore) {
    static SYSTEM: OnceLock<(Vec<CertificateDer<'static>>, RootCertStore)> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let certs = rustls_native_certs::load_native_certs().certs;
        let usable = certs.into_iter().filter(|cert| roots.add(cert.clone()).is_ok()).collect();
        (usable, roots)
    })
}

/// The PEM certificates in `path`.
pub fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// A rustls client config (ring) that trusts the system roots and those of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = system().1.clone();
    if let Some(path) = ca_file {
        for cert in read_pem(path)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
