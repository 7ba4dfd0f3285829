//! TLS termination: the rustls server configuration and the certificate
//! resolver that every handshake asks for its certificate.
//!
//! Owns protocol choices (TLS 1.2 + 1.3, AEAD suites with forward secrecy
//! only, ALPN `h2` and `http/1.1`) and where certificates come from
//! (`self_signed`, `files`). It does not accept connections: `server` does.

pub mod files;
pub mod self_signed;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{Config, TlsMode};

/// Errors that stop nbgate from serving TLS. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, RSA or EC)")]
    NoKey { path: PathBuf },
    #[error("{path}: invalid PEM: {source}")]
    BadPem {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: unsupported or invalid private key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{key}: the private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate expired on {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: certificate is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Hands each handshake the current certificate. The certificate sits behind
/// an `ArcSwap` so a renewal or reload replaces it atomically: handshakes in
/// progress keep the key they started with, new ones get the new key, and
/// established connections are never touched.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        CertResolver {
            current: ArcSwap::new(key),
        }
    }

    /// Swaps in a new certificate for all later handshakes.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the server configuration around a resolver.
///
/// The `ring` provider's default suites are exactly the AEAD suites with
/// ECDHE key exchange (AES-GCM, ChaCha20-Poly1305), so forward secrecy holds
/// for every handshake; TLS 1.0/1.1 and CBC suites are not compiled in.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Stateless tickets let returning browsers resume without a full
    // handshake; the ticketer key rotates in memory and never touches disk.
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        cfg.ticketer = ticketer;
    }
    Arc::new(cfg)
}

/// Loads the certificate the configuration asks for (generating the
/// self-signed one on first start) and returns the resolver to serve it.
///
/// # Errors
/// A `TlsError` naming the file that is missing, unreadable or invalid.
pub fn load_resolver(config: &Config) -> Result<Arc<CertResolver>, TlsError> {
    let key = match config.tls.mode {
        TlsMode::SelfSigned => self_signed::load_or_generate(config)?,
        TlsMode::Files => {
            let cert = config
                .tls
                .cert_file
                .as_deref()
                .expect("config validation requires cert_file in files mode");
            let key = config
                .tls
                .key_file
                .as_deref()
                .expect("config validation requires key_file in files mode");
            let loaded = files::load(cert, key)?;
            tracing::info!(
                cert = %cert.display(),
                sha256_fingerprint = %fingerprint(&loaded),
                "loaded certificate"
            );
            loaded
        }
    };
    Ok(Arc::new(CertResolver::new(key)))
}

/// SHA-256 fingerprint of the leaf certificate, as browsers show it
/// (`AB:CD:...`), so a user can check a self-signed certificate by eye.
pub fn fingerprint(key: &CertifiedKey) -> String {
    let Some(leaf) = key.cert.first() else {
        return String::new();
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
