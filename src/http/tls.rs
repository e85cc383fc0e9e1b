//! TLS with rustls (ring provider): trust roots, the client configuration and the handshake.
//!
//! Trusted roots are the bundled webpki roots, the system bundle if present,
//! `SSL_CERT_FILE` and any `--ca-cert` files, all at once — a private CA
//! never replaces the public roots.

use super::conn::Wire;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::url::Url;
use crate::error::{Error, Kind, Result};

/// Well-known locations of the system CA bundle; the first one that exists is used.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// What to tell the user when the server certificate is not trusted.
const CERT_HINT: &str = "if the registry uses a private CA, pass --ca-cert FILE (or set \
                         SSL_CERT_FILE); for a plain-HTTP registry use --insecure HOST:PORT";

/// What to tell the user when the server does not speak TLS at all.
const PLAIN_HINT: &str = "if this registry speaks plain HTTP, use --insecure HOST:PORT";

/// Builds the client configuration trusting bundled, system, `SSL_CERT_FILE` and `extra` roots.
pub(crate) fn build_config(extra: &[PathBuf]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
        add_lenient(&mut roots, bundle);
    }
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        add_strict(&mut roots, Path::new(&file)).map_err(|e| e.context("SSL_CERT_FILE"))?;
    }
    for file in extra {
        add_strict(&mut roots, file)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Adds every certificate of a bundle, skipping unreadable files and bad certificates.
fn add_lenient(roots: &mut RootCertStore, path: &Path) {
    if let Ok(iter) = CertificateDer::pem_file_iter(path) {
        roots.add_parsable_certificates(iter.filter_map(|c| c.ok()));
    }
}

/// Adds every certificate of a user-named file; any problem is an error naming the file.
fn add_strict(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    let what = || format!("cannot load CA certificates from {}", path.display());
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::new(pem_error(&e)).context(what()))?;
    let mut count = 0usize;
    for cert in iter {
        let cert = cert.map_err(|e| Error::new(pem_error(&e)).context(what()))?;
        roots
            .add(cert)
            .map_err(|e| Error::new(format!("bad certificate: {e}")).context(what()))?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::new("no PEM certificates found")
            .context(what())
            .hint("the file must contain -----BEGIN CERTIFICATE----- blocks"));
    }
    Ok(())
}

/// A readable text for a PEM reading error.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// Runs the TLS handshake on `tcp` for `url`'s host; errors name host:port and say what to do.
pub(crate) fn handshake(
    config: Arc<ClientConfig>,
    mut tcp: Wire,
    url: &Url,
) -> Result<StreamOwned<ClientConnection, Wire>> {
    let what = || format!("TLS handshake with {} failed", url.authority());
    let name = ServerName::try_from(url.host.clone()).map_err(|_| {
        Error::new(format!("invalid TLS server name {:?}", url.host)).context(what())
    })?;
    let mut conn = ClientConnection::new(config, name)
        .map_err(|e| Error::new(e.to_string()).context(what()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| handshake_error(e).context(what()))?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// Classifies a handshake failure: certificate and protocol problems get hints, I/O is transient.
fn handshake_error(e: std::io::Error) -> Error {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match tls {
        Some(err @ rustls::Error::InvalidCertificate(_)) => {
            Error::new(err.to_string()).hint(CERT_HINT)
        }
        Some(err @ rustls::Error::InvalidMessage(_)) => {
            Error::with_kind(Kind::NotTls, err.to_string()).hint(PLAIN_HINT)
        }
        Some(err) => Error::new(err.to_string()),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::with_kind(Kind::Transient, "connection closed during the handshake")
        }
        None => super::conn::io_error(e),
    }
}
