//! TLS termination: the rustls server configuration and the certificate
//! resolver that every handshake asks for its certificate.
//!
//! Owns protocol choices (TLS 1.2 + 1.3, AEAD suites with forward secrecy
//! only, the hybrid post-quantum key exchange X25519MLKEM768 ahead of the
//! classical groups, ALPN `h2` and `http/1.1`, plus `acme-tls/1` for
//! validation handshakes in ACME mode), the one crypto provider every TLS
//! config of nbgate is built with, and where certificates come from
//! (`self_signed`, `files` with `reload`, `acme` with `challenge`), and the
//! HTTPS connector of nbgate's own outgoing clients (`client`). It does
//! not accept connections: `server` does.

pub mod acme;
pub mod challenge;
pub mod client;
pub mod files;
pub mod reload;
pub mod self_signed;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, SupportedKxGroup};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{NamedGroup, ProtocolVersion, ServerConfig};

use crate::config::{Config, TlsMode};
use challenge::Challenges;

/// Errors that stop nbgate from serving TLS. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, RSA or EC)")]
    NoKey { path: PathBuf },
    #[error("{path}: invalid PEM")]
    BadPem {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: unsupported or invalid private key")]
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
    #[error("cannot generate a self-signed certificate")]
    Generate(#[from] rcgen::Error),
}

/// Hands each handshake the current certificate. The certificate sits behind
/// an `ArcSwap` so a renewal or reload replaces it atomically: handshakes in
/// progress keep the key they started with, new ones get the new key, and
/// established connections are never touched.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    /// ACME mode only: pending challenge answers (TLS-ALPN-01 certificates
    /// for this resolver, HTTP-01 tokens for the plain listener).
    challenges: Option<Arc<Challenges>>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        CertResolver {
            current: ArcSwap::new(key),
            challenges: None,
        }
    }

    /// A resolver that also answers TLS-ALPN-01 validation handshakes.
    pub fn with_challenges(key: Arc<CertifiedKey>, challenges: Arc<Challenges>) -> Self {
        CertResolver {
            current: ArcSwap::new(key),
            challenges: Some(challenges),
        }
    }

    /// The pending ACME answers, in ACME mode.
    pub fn challenges(&self) -> Option<&Arc<Challenges>> {
        self.challenges.as_ref()
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
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A client offering only `acme-tls/1` is a CA validating a challenge
        // (RFC 8737 §3): it gets the validation certificate or nothing (the
        // handshake fails), never the real certificate under that protocol.
        // A client that also offers h2 or http/1.1 negotiates one of those
        // (server preference) and gets the real certificate.
        if let Some(alpn) = hello.alpn() {
            if challenge::offers_only_acme_tls_alpn(alpn) {
                let alpn = hello.alpn()?;
                return self
                    .challenges
                    .as_ref()?
                    .tls_alpn01_for(hello.server_name(), alpn);
            }
        }
        Some(self.current.load_full())
    }
}

/// The ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The key exchange groups the server accepts, as rustls' aws-lc-rs
/// provider lists them with `prefer-post-quantum`: the hybrid X25519MLKEM768
/// (X25519 and ML-KEM-768, FIPS 203) first, so a recorded session cannot be
/// decrypted later by whoever breaks X25519 alone ("harvest now, decrypt
/// later"); then X25519, P-256 and P-384 for clients without ML-KEM.
///
/// rustls takes the client's first choice among these (Chrome, Firefox and
/// OpenSSL 3.5 list the hybrid first). It is TLS 1.3 only; a TLS 1.2
/// handshake uses ECDHE over X25519, P-256 or P-384.
static KX_GROUPS: [LoggedKxGroup; 4] = [
    LoggedKxGroup(kx_group::X25519MLKEM768),
    LoggedKxGroup(kx_group::X25519),
    LoggedKxGroup(kx_group::SECP256R1),
    LoggedKxGroup(kx_group::SECP384R1),
];

/// A key exchange group that logs, at debug level, that a handshake
/// uses it: the one per-handshake record of which group a client got
/// (`tls key exchange group=X25519MLKEM768`). One `debug!` per handshake,
/// nothing per request; the server calls `start_and_complete` once per
/// TLS 1.3 handshake and `start` once per TLS 1.2 one.
#[derive(Debug)]
struct LoggedKxGroup(&'static dyn SupportedKxGroup);

impl SupportedKxGroup for LoggedKxGroup {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        tracing::debug!(group = ?self.0.name(), "tls key exchange");
        self.0.start()
    }

    fn start_and_complete(
        &self,
        peer_pub_key: &[u8],
    ) -> Result<CompletedKeyExchange, rustls::Error> {
        tracing::debug!(group = ?self.0.name(), "tls key exchange");
        self.0.start_and_complete(peer_pub_key)
    }

    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        self.0.ffdhe_group()
    }

    fn name(&self) -> NamedGroup {
        self.0.name()
    }

    fn fips(&self) -> bool {
        self.0.fips()
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        self.0.usable_for_version(version)
    }
}

/// The crypto provider of nbgate's TLS server: rustls' aws-lc-rs provider
/// (ring's has no ML-KEM) with its default suites and [`KX_GROUPS`]. Its
/// suites are exactly the AEAD suites with ECDHE key exchange (TLS 1.3
/// AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2 ECDHE-ECDSA and
/// ECDHE-RSA with the same ciphers), so forward secrecy holds for every
/// handshake; TLS 1.0/1.1 and CBC suites are not compiled in.
///
/// Every config and signing key of the server is built from this value by
/// name: two providers are compiled into the binary (crates nbgate uses
/// still bring ring), and rustls cannot pick a process default then.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups = KX_GROUPS
            .iter()
            .map(|g| g as &'static dyn SupportedKxGroup)
            .collect();
        Arc::new(provider)
    }))
}

/// The crypto provider of nbgate's TLS clients (the ACME client): the same
/// aws-lc-rs provider as the server's, without the per-handshake log.
pub fn client_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server configuration around a resolver, on [`provider`].
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let answers_tls_alpn01 = resolver.challenges().is_some();
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's suite order wins (testssl.sh: "no cipher order"): a
    // client, or an attacker tampering with a TLS 1.2 hello's list order,
    // cannot steer the handshake to the weakest suite both support; the
    // provider's list starts with AES-256-GCM, then AES-128-GCM and
    // ChaCha20-Poly1305.
    cfg.ignore_client_order = true;
    if answers_tls_alpn01 {
        // Last: rustls picks the first server protocol the client offers, so
        // a client offering h2 or http/1.1 never negotiates `acme-tls/1`; only
        // a CA offering nothing else does, and the resolver answers it with
        // the validation certificate.
        cfg.alpn_protocols.push(challenge::ACME_TLS_ALPN.to_vec());
    }
    // Stateless tickets let returning browsers resume without a full
    // handshake; the ticketer key rotates in memory and never touches disk.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        cfg.ticketer = ticketer;
    }
    Arc::new(cfg)
}

/// Loads a private key for signing handshakes with [`provider`].
///
/// # Errors
/// A key type the provider cannot sign with (rustls' error says which).
pub fn signing_key(
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
    provider().key_provider.load_private_key(key)
}

/// Loads the certificate the configuration asks for (generating the
/// self-signed one on first start) and returns the resolver to serve it.
///
/// # Errors
/// A `TlsError` naming the file that is missing, unreadable or invalid.
pub fn load_resolver(config: &Config) -> Result<Arc<CertResolver>, TlsError> {
    if config.tls.mode == TlsMode::Acme {
        let challenges = Arc::new(Challenges::new());
        let key = acme::initial_certificate(config)?;
        return Ok(Arc::new(CertResolver::with_challenges(key, challenges)));
    }
    Ok(Arc::new(CertResolver::new(load_certificate(config)?)))
}

/// The certificate of `self-signed` or `files` mode (ACME mode starts with
/// `acme::initial_certificate`). Reads files and may generate a key: call
/// it off the async workers once they serve (a reload does).
///
/// # Errors
/// A `TlsError` naming the file that is missing, unreadable or invalid.
///
/// # Panics
/// In ACME mode, which has no certificate of its own to load.
pub fn load_certificate(config: &Config) -> Result<Arc<CertifiedKey>, TlsError> {
    match config.tls.mode {
        TlsMode::SelfSigned => self_signed::load_or_generate(config),
        TlsMode::Files => {
            let (cert, key) = cert_files(config);
            let loaded = files::load(cert, key)?;
            tracing::info!(
                cert = %cert.display(),
                sha256_fingerprint = %fingerprint(&loaded),
                "loaded certificate"
            );
            Ok(loaded)
        }
        TlsMode::Acme => unreachable!("ACME mode starts with acme::initial_certificate"),
    }
}

/// `tls.cert_file` and `tls.key_file` of files mode.
pub fn cert_files(config: &Config) -> (&std::path::Path, &std::path::Path) {
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
    (cert, key)
}

/// What keeps the certificate current: the ACME order and renewal task, or
/// the file watcher (mtime polling) in files mode; nothing in self-signed
/// mode. A reload that changes the TLS settings restarts it.
pub struct Maintenance {
    resolver: Arc<CertResolver>,
    task: Option<tokio::task::AbortHandle>,
}

impl Maintenance {
    /// Starts maintenance for `config`. Call after the listeners are bound,
    /// so a challenge can be answered from the first request.
    pub fn start(config: &Arc<Config>, resolver: &Arc<CertResolver>) -> Maintenance {
        let mut m = Maintenance {
            resolver: Arc::clone(resolver),
            task: None,
        };
        m.restart(config);
        m
    }

    /// Stops the running task and starts the one `config` asks for.
    pub fn restart(&mut self, config: &Arc<Config>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let resolver = Arc::clone(&self.resolver);
        self.task = match config.tls.mode {
            TlsMode::SelfSigned => None,
            TlsMode::Files => {
                Some(tokio::spawn(reload::run(Arc::clone(config), resolver)).abort_handle())
            }
            TlsMode::Acme => {
                Some(tokio::spawn(acme::run(Arc::clone(config), resolver)).abort_handle())
            }
        };
    }

    /// The resolver this maintenance keeps current.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Signs `params` with a fresh ECDSA P-256 key into a certificate the
/// resolver can serve (the ACME temporary and validation certificates).
pub(crate) fn self_signed_key(
    params: rcgen::CertificateParams,
) -> Result<Arc<CertifiedKey>, rcgen::Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer =
        signing_key(der).expect("rcgen generates ECDSA P-256 keys the provider signs with");
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    )))
}

/// The leaf certificate's serial number as lowercase hex, for logs: it is
/// what a user compares against a browser's certificate viewer.
pub fn serial_hex(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
        .map(|(_, cert)| hex::encode(cert.raw_serial()))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_picks_its_own_first_suite_whatever_the_client_order() {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let key = self_signed_key(params).expect("self-signed key");
        let cfg = server_config(Arc::new(CertResolver::new(key)));
        let ours = provider();
        // A client that prefers the server's last choice.
        let mut theirs = rustls::crypto::aws_lc_rs::default_provider();
        theirs.cipher_suites.reverse();
        let client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(theirs))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).expect("client");
        let mut server = rustls::ServerConnection::new(cfg).expect("server");
        let mut hello = Vec::new();
        client.write_tls(&mut hello).expect("client hello");
        server.read_tls(&mut hello.as_slice()).expect("read hello");
        server.process_new_packets().expect("process hello");
        let chosen = server.negotiated_cipher_suite().expect("suite chosen");
        assert_eq!(chosen.suite(), ours.cipher_suites[0].suite());
    }

    #[test]
    fn hybrid_post_quantum_group_is_offered_first_then_the_classical_ones() {
        let names: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
        // The same list as rustls' own with `prefer-post-quantum`: a rustls
        // upgrade that changes its defaults shows up here.
        let upstream: Vec<NamedGroup> = rustls::crypto::aws_lc_rs::DEFAULT_KX_GROUPS
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(names, upstream);
        assert!(!provider().kx_groups[0].usable_for_version(ProtocolVersion::TLSv1_2));
    }

    #[test]
    fn every_suite_is_an_aead_suite_with_ecdhe() {
        for suite in &provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            let tls13 = name.starts_with("TLS13_");
            let ecdhe = name.starts_with("TLS_ECDHE_");
            let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
            assert!((tls13 || ecdhe) && aead, "{name}");
        }
    }
}
