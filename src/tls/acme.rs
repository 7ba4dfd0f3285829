//! `tls.mode = "acme"`: certificates obtained, stored and renewed from an
//! ACME CA (RFC 8555) with `instant-acme`.
//!
//! Owns the order flow (account, order, challenges, validation, finalize,
//! download), the storage under `<state_dir>/certs/acme/<directory>/`, and
//! the renewal task. Challenge answers are published through
//! [`Challenges`]; the listeners serve them. It never stops the server: every
//! failure is logged and retried with exponential backoff, and the current
//! certificate keeps being served.
//!
//! Storage layout (one directory per CA directory URL, so switching from
//! staging to production never serves a staging certificate):
//! - `account.json` (0600): the ACME account id, key (PKCS#8) and directory.
//! - `key.pem` (0600): the certificate's private key.
//! - `cert.pem` (0644): the chain, leaf first.
//!
//! Every file is written atomically (temp file + rename). The key is written
//! before the chain: a crash in between leaves a pair that fails to load,
//! which only means a new order on the next start.
//!
//! When renewal is due: inside the window the CA suggests through ACME
//! Renewal Information (ARI, RFC 9773) where its directory offers it (Let's
//! Encrypt does; it moves the window earlier for certificates it will
//! revoke), otherwise when a third of the lifetime remains (half, for
//! short-lived certificates of under ten days); `renew_before` overrides
//! both. A renewal order of a CA that offers ARI names the certificate it
//! replaces (RFC 9773 §5).
//!
//! Identifiers are DNS names and IP addresses (RFC 8738). The profile
//! (`choose_profile`) is the configured one, or `shortlived` when an
//! identifier is an IP address (Let's Encrypt issues IP certificates only
//! under it); a CA without profiles gets none.
//!
//! Not here: OCSP stapling (Let's Encrypt ended OCSP in 2025, and short-lived
//! certificates replace it) and DNS-01 (needs a DNS provider API).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, CertificateIdentifier,
    ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rustls::sign::CertifiedKey;

use super::challenge::Challenges;
use super::{files, serial_hex, CertResolver, TlsError};
use crate::config::{AcmeChallenge, AcmeConfig, AcmeKeyType, Config};
use crate::state;
use crate::telemetry::Chain;

/// The longest wait between two failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4 * 3600);
/// The first wait after a failure; doubles with each further failure.
const BASE_BACKOFF: Duration = Duration::from_secs(60);
/// Test-only: overrides [`BASE_BACKOFF`] (a humantime duration such as
/// `500ms`) so the CA-outage test retries within seconds. Not documented for
/// users: a short backoff against a real CA only earns rate limits.
const BASE_BACKOFF_ENV: &str = "NBGATE_TEST_ACME_RETRY_BASE";
/// One attempt (account, order, validation, download) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// From this much remaining lifetime, a failed renewal is logged as an
/// error; a quarter of the lifetime for shorter-lived certificates.
const ERROR_BEFORE_EXPIRY: i64 = 3 * 24 * 3600;
/// Certificates valid for less than this renew at half their lifetime (Let's
/// Encrypt's `shortlived` profile: 160 hours).
const SHORT_LIVED: i64 = 10 * 24 * 3600;
/// The profile Let's Encrypt issues IP address certificates under.
pub const SHORTLIVED_PROFILE: &str = "shortlived";
/// How long the temporary certificate served during the first order lasts.
const TEMPORARY_VALIDITY_DAYS: i64 = 7;

/// Why an ACME attempt failed. The task logs it and retries.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME request failed")]
    Protocol(#[from] instant_acme::Error),
    #[error(transparent)]
    ClientTls(#[from] super::client::ClientTlsError),
    #[error("{path}: cannot read the EAB HMAC key")]
    EabKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the EAB HMAC key is not base64url")]
    EabKeyEncoding { path: PathBuf },
    #[error("{path}: cannot read or write")]
    Storage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: stored account is unreadable")]
    AccountFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the CA offered no {kind} challenge for {domain}")]
    ChallengeNotOffered { kind: AcmeChallenge, domain: String },
    #[error("authorization for {domain} is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error("{kind} validation failed (order {status:?}): {detail}")]
    Validation {
        kind: AcmeChallenge,
        status: OrderStatus,
        detail: String,
    },
    #[error("cannot build the certificate request")]
    Csr(#[from] rcgen::Error),
    #[error("the issued certificate does not load")]
    Issued(#[from] TlsError),
    #[error("attempt timed out after {0:?}")]
    Timeout(Duration),
    #[error("tls.acme.profile = {profile:?}: the directory offers {offered}")]
    Profile { profile: String, offered: String },
}

impl AcmeError {
    /// The CA no longer knows the stored account (a test CA restarted, or an
    /// account deactivated elsewhere): a new account is needed.
    fn account_gone(&self) -> bool {
        match self {
            AcmeError::Protocol(instant_acme::Error::Api(p)) => p
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist")),
            _ => false,
        }
    }
}

/// The files of one CA directory under the state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path, directory_url: &str) -> Self {
        Store {
            dir: state_dir
                .join("certs")
                .join("acme")
                .join(directory_slug(directory_url)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    pub fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// The stored certificate if it loads, is inside its validity period and
    /// covers exactly the configured domains; why not otherwise.
    pub fn load_valid(&self, domains: &[String]) -> Result<Arc<CertifiedKey>, String> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() {
            return Err("no stored certificate".into());
        }
        let loaded = files::load(&cert, &key).map_err(|e| e.to_string())?;
        let leaf = loaded.cert.first().ok_or("empty chain")?;
        let mut have = san_names(leaf.as_ref());
        have.sort();
        let mut want = domains.to_vec();
        want.sort();
        if have != want {
            return Err(format!(
                "stored certificate covers {have:?}, configured domains are {want:?}"
            ));
        }
        Ok(loaded)
    }

    fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        self.ensure_dir()?;
        let (key, cert) = (self.key_path(), self.cert_path());
        // Staged together (see `state::write_atomic_all`): a failure on the
        // second file no longer leaves a new key beside the old certificate.
        // Key first, so a crash between the renames never leaves a
        // certificate whose key is missing.
        state::write_atomic_all(&[
            state::StateFile {
                path: &key,
                bytes: key_pem.as_bytes(),
                mode: 0o600,
            },
            state::StateFile {
                path: &cert,
                bytes: chain_pem.as_bytes(),
                mode: 0o644,
            },
        ])
        .map_err(|e| AcmeError::Storage {
            path: e.path,
            source: e.source,
        })
    }

    fn load_account(&self) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.account_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AcmeError::Storage { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| AcmeError::AccountFile { path, source })
    }

    fn save_account(&self, credentials: &AccountCredentials) -> Result<(), AcmeError> {
        self.ensure_dir()?;
        let path = self.account_path();
        let json =
            serde_json::to_vec_pretty(credentials).map_err(|source| AcmeError::AccountFile {
                path: path.clone(),
                source,
            })?;
        state::write_atomic(&path, &json, 0o600)
            .map_err(|source| AcmeError::Storage { path, source })
    }

    fn forget_account(&self) {
        let _ = std::fs::remove_file(self.account_path());
    }

    fn ensure_dir(&self) -> Result<(), AcmeError> {
        state::ensure_private_dir(&self.dir).map_err(|source| AcmeError::Storage {
            path: self.dir.clone(),
            source,
        })
    }

    /// Proves, before an order, that a certificate and its key can be
    /// stored: a certificate the CA issues and nbgate cannot keep is lost,
    /// and each one counts against the CA's duplicate-certificate limit
    /// (Let's Encrypt: 5 a week for the same names), so a read-only or
    /// full state directory must fail the attempt before the CA issues.
    fn check_writable(&self) -> Result<(), AcmeError> {
        self.ensure_dir()?;
        let path = self.dir.join(".write-check");
        // A chain and a key take a few KiB; staged the way they will be.
        let result = state::write_atomic(&path, &[0u8; 16 * 1024], 0o600);
        let _ = std::fs::remove_file(&path);
        result.map_err(|source| AcmeError::Storage { path, source })
    }
}

/// A file-name-safe name for a directory URL: `https://ca.example:14000/dir`
/// becomes `ca.example_14000_dir`.
fn directory_slug(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or(url)
        .trim_end_matches('/');
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The DNS names and IP addresses (canonical text form) a certificate is for.
fn san_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            x509_parser::extensions::GeneralName::IPAddress(b) => ip_from_bytes(b),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

/// The ACME identifier of a `tls.acme.domains` entry (validated: a DNS name
/// or an IP address).
fn identifier(name: &str) -> Identifier {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_owned()),
    }
}

/// The profile to order under: `configured` if the directory offers it;
/// otherwise `shortlived` for IP addresses when offered; otherwise none (the
/// CA's default). `offered` is the directory's `meta.profiles` names: empty
/// for a CA without the profiles extension (such as Pebble 2.4).
///
/// # Errors
/// A configured profile the directory does not offer: a configuration
/// error, reported at start (`preflight`).
pub fn choose_profile<'a>(
    configured: Option<&str>,
    has_ip: bool,
    offered: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, AcmeError> {
    let mut offered: Vec<&str> = offered.into_iter().collect();
    offered.sort_unstable();
    match configured {
        Some(p) if offered.contains(&p) => Ok(Some(p.to_owned())),
        Some(p) => Err(AcmeError::Profile {
            profile: p.to_owned(),
            offered: if offered.is_empty() {
                "no profiles (it does not support the profiles extension)".into()
            } else {
                offered.join(", ")
            },
        }),
        None if has_ip && offered.contains(&SHORTLIVED_PROFILE) => {
            Ok(Some(SHORTLIVED_PROFILE.to_owned()))
        }
        None => Ok(None),
    }
}

/// `(not_before, not_after)` of the leaf as Unix seconds.
fn validity(key: &CertifiedKey) -> Option<(i64, i64)> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// The certificate to serve at startup: the stored one when it is still
/// good (no order is placed for it), otherwise a temporary self-signed one
/// for the configured names while the first order runs.
///
/// # Errors
/// Generating the temporary certificate fails.
pub fn initial_certificate(config: &Config) -> Result<Arc<CertifiedKey>, TlsError> {
    let acme = config
        .tls
        .acme
        .as_ref()
        .expect("config validation sets tls.acme in acme mode");
    let store = Store::new(&config.server.state_dir, &acme.directory);
    match store.load_valid(&acme.domains) {
        Ok(key) => {
            tracing::info!(
                cert = %store.cert_path().display(),
                serial = %serial_hex(&key),
                "acme: serving the stored certificate; no order placed"
            );
            Ok(key)
        }
        Err(why) => {
            tracing::info!(
                reason = %why,
                "acme: serving a temporary self-signed certificate while the order runs"
            );
            temporary_certificate(&acme.domains)
        }
    }
}

fn temporary_certificate(domains: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut params = rcgen::CertificateParams::new(domains.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(TEMPORARY_VALIDITY_DAYS);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "nbgate temporary (ACME order pending)",
    );
    Ok(super::self_signed_key(params)?)
}

/// Seconds from now until renewal is due for a certificate valid from
/// `not_before` to `not_after` (Unix seconds): when a third of the lifetime
/// remains (half for one shorter than `SHORT_LIVED`, which a few hours of CA
/// outage would otherwise bring close to expiry; or `renew_before`), earlier by up to 5% of the lifetime of
/// `jitter` (0..1) so that many gates started together do not renew together.
pub fn seconds_until_renewal(
    now: i64,
    not_before: i64,
    not_after: i64,
    renew_before: Option<Duration>,
    jitter: f64,
) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let share = if lifetime < SHORT_LIVED { 2 } else { 3 };
    let before = renew_before.map_or(lifetime / share, |d| {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
    });
    let spread = (lifetime as f64 * 0.05 * jitter.clamp(0.0, 1.0)) as i64;
    not_after.saturating_sub(before).saturating_sub(spread) - now
}

/// When to renew inside an ARI window `[start, end]` (Unix seconds): a
/// uniformly random moment of what is left of it (RFC 9773 §4.2), so that
/// a CA's many clients spread out; `now` when the window has passed.
pub fn ari_renewal_time(now: i64, start: i64, end: i64, random: f64) -> i64 {
    let from = start.max(now);
    if end <= from {
        return now;
    }
    from + ((end - from) as f64 * random.clamp(0.0, 1.0)) as i64
}

/// How long to wait before asking the CA for the renewal window again:
/// its `Retry-After`, kept between a minute and six hours (RFC 9773 §4.3
/// asks clients to check at least daily and to honour `Retry-After`).
fn ari_recheck(retry_after: Duration) -> Duration {
    retry_after.clamp(Duration::from_secs(60), Duration::from_secs(6 * 3600))
}

/// The wait after the `failures`-th consecutive failure: `base` doubled per
/// failure, capped at [`MAX_BACKOFF`], then scaled by `jitter` (0.8..1.2).
pub fn backoff(failures: u32, base: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    raw.mul_f64(jitter.clamp(0.8, 1.2))
}

/// How close to expiry a failed renewal becomes an error: three days, or a
/// quarter of the lifetime when that is shorter (a 160-hour certificate
/// would otherwise be in error from the start).
fn error_before_expiry(lifetime: i64) -> i64 {
    ERROR_BEFORE_EXPIRY.min(lifetime / 4)
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How long the start waits for the CA to check the profile.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);

/// Before serving: checks what only the CA can tell about the
/// configuration, whether it offers the profile to order under, so that a
/// misspelt `tls.acme.profile` stops the start with a clear error instead
/// of failing every order for ever. Loads or creates the account (as the
/// first order would). A CA that cannot be reached now is not an error: the
/// order task retries with backoff, as for any outage.
///
/// # Errors
/// `AcmeError::Profile`: the configured profile is not offered.
pub async fn preflight(config: &Config) -> Result<(), AcmeError> {
    let acme = config
        .tls
        .acme
        .clone()
        .expect("config validation sets tls.acme in acme mode");
    if acme.profile.is_none() && !acme.has_ip() {
        return Ok(());
    }
    let mut client = Client::new(config, acme, Arc::new(Challenges::new()));
    let account = match tokio::time::timeout(PREFLIGHT_TIMEOUT, client.account()).await {
        Ok(Ok(account)) => account,
        Ok(Err(e)) => {
            tracing::warn!(error = %Chain(&e), "acme: cannot reach the CA to check the profile now; the order will");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(timeout = ?PREFLIGHT_TIMEOUT, "acme: the CA did not answer in time to check the profile; the order will");
            return Ok(());
        }
    };
    let offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
    let profile = choose_profile(
        client.acme.profile.as_deref(),
        client.acme.has_ip(),
        offered.iter().copied(),
    )?;
    if client.acme.has_ip() && profile.is_none() && !offered.is_empty() {
        tracing::warn!(
            offered = %offered.join(", "),
            "acme: the CA offers no \"shortlived\" profile; ordering the IP address certificate under its default"
        );
    }
    tracing::info!(
        profile = profile.as_deref().unwrap_or("the CA's default"),
        "acme: certificate profile"
    );
    Ok(())
}

/// Orders the first certificate when none is stored, then renews for as
/// long as the runtime runs. Never returns on failure: logs, backs off,
/// retries, and keeps serving the current certificate meanwhile.
pub async fn run(config: Arc<Config>, resolver: Arc<CertResolver>) {
    let acme = config
        .tls
        .acme
        .clone()
        .expect("config validation sets tls.acme in acme mode");
    let challenges = Arc::clone(
        resolver
            .challenges()
            .expect("load_resolver builds an ACME resolver with challenges"),
    );
    if acme.challenges.contains(&AcmeChallenge::Http01) && config.server.http_listen.is_empty() {
        tracing::warn!(
            "acme: http-01 is configured but server.http_listen is empty; \
             it can only succeed if port 80 reaches another listener of this gate"
        );
    }
    let base = std::env::var(BASE_BACKOFF_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(BASE_BACKOFF);
    let mut client = Client::new(&config, acme, challenges);
    let mut issued: Option<Arc<CertifiedKey>> = client.store.load_valid(&client.acme.domains).ok();
    let mut failures: u32 = 0;
    loop {
        // A certificate whose validity cannot be read is renewed at once.
        let current = issued
            .clone()
            .and_then(|c| validity(&c).map(|v| (c, v)))
            .filter(|_| failures == 0);
        if let Some((cert, (not_before, not_after))) = current {
            let ari = match client.acme.renew_before {
                None => client.renewal_window(&cert).await,
                Some(_) => None,
            };
            let (wait, basis, recheck) = match ari {
                Some((at, recheck)) => (at - now_unix(), "ari", Some(recheck)),
                None => (
                    seconds_until_renewal(
                        now_unix(),
                        not_before,
                        not_after,
                        client.acme.renew_before,
                        rand::random::<f64>(),
                    ),
                    "lifetime",
                    None,
                ),
            };
            crate::metrics::renewal_scheduled(
                std::time::SystemTime::now() + Duration::from_secs(wait.max(0).unsigned_abs()),
            );
            if wait > 0 {
                let wait = Duration::from_secs(wait.unsigned_abs());
                tracing::info!(
                    renew_in = %humantime::format_duration(wait),
                    basis,
                    "acme: renewal scheduled"
                );
                match recheck {
                    // The CA may move its window (a revocation ahead): ask
                    // again when it said to, then decide anew.
                    Some(recheck) if recheck < wait => {
                        tokio::time::sleep(recheck).await;
                        continue;
                    }
                    _ => tokio::time::sleep(wait).await,
                }
            }
        }
        client.replacing = issued
            .as_deref()
            .and_then(|c| c.cert.first())
            .and_then(|leaf| CertificateIdentifier::try_from(leaf).ok())
            .map(CertificateIdentifier::into_owned);
        let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, client.obtain()).await;
        let result = attempt.unwrap_or(Err(AcmeError::Timeout(ATTEMPT_TIMEOUT)));
        client.challenges.clear();
        match result {
            Ok(new) => {
                crate::metrics::renewal_finished(true);
                resolver.replace(Arc::clone(&new));
                issued = Some(new);
                failures = 0;
            }
            Err(e) => {
                crate::metrics::renewal_finished(false);
                failures = failures.saturating_add(1);
                let delay = backoff(failures, base, 0.8 + 0.4 * rand::random::<f64>());
                let retry_in = humantime::format_duration(Duration::from_millis(
                    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                ));
                match issued.as_deref().and_then(validity) {
                    None => tracing::error!(
                        error = %Chain(&e),
                        failures,
                        %retry_in,
                        "acme: no certificate from the CA yet; still serving the temporary one"
                    ),
                    Some((not_before, not_after)) => {
                        let left = not_after - now_unix();
                        if left < error_before_expiry(not_after - not_before) {
                            tracing::error!(error = %Chain(&e), failures, %retry_in, expires_in_secs = left,
                                "acme: renewal failed and the certificate expires soon");
                        } else {
                            tracing::warn!(error = %Chain(&e), failures, %retry_in, expires_in_secs = left,
                                "acme: renewal failed; still serving the current certificate");
                        }
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One CA directory and what is known about it.
struct Client {
    acme: AcmeConfig,
    store: Store,
    challenges: Arc<Challenges>,
    /// The account of earlier attempts; cheap to clone.
    account: Option<Account>,
    /// The last ARI window (start, end) and the renewal time drawn in it.
    ari_choice: Option<(i64, i64, i64)>,
    /// The certificate a renewal replaces (ARI's `replaces`).
    replacing: Option<CertificateIdentifier<'static>>,
    /// The CA did not take `replaces` once: it is not sent again.
    replaces_refused: bool,
}

impl Client {
    fn new(config: &Config, acme: AcmeConfig, challenges: Arc<Challenges>) -> Client {
        Client {
            store: Store::new(&config.server.state_dir, &acme.directory),
            acme,
            challenges,
            account: None,
            ari_choice: None,
            replacing: None,
            replaces_refused: false,
        }
    }

    /// Where the CA offers ARI: when to renew `cert` (Unix seconds) and when
    /// to ask again. `None` when it does not, or cannot be reached: the
    /// lifetime rule then applies (a CA outage never stops renewals).
    async fn renewal_window(&mut self, cert: &CertifiedKey) -> Option<(i64, Duration)> {
        let leaf = cert.cert.first()?;
        let id = match CertificateIdentifier::try_from(leaf) {
            Ok(id) => id.into_owned(),
            Err(e) => {
                tracing::debug!(error = %e, "acme: no ARI identifier for this certificate");
                return None;
            }
        };
        let account = match self.account().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "acme: cannot reach the CA for its renewal window");
                return None;
            }
        };
        let (info, retry_after) = match account.renewal_info(&id).await {
            Ok(r) => r,
            Err(instant_acme::Error::Unsupported(_)) => return None,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "acme: renewal information (ARI) request failed");
                return None;
            }
        };
        let window = &info.suggested_window;
        let (start, end) = (window.start.unix_timestamp(), window.end.unix_timestamp());
        // The same window keeps the moment chosen in it: asking again must
        // not draw a new, on average earlier, time.
        let at = match self.ari_choice {
            Some((s, e, at)) if (s, e) == (start, end) => at,
            _ => ari_renewal_time(now_unix(), start, end, rand::random::<f64>()),
        };
        self.ari_choice = Some((start, end, at));
        tracing::debug!(%id, start, end, at, "acme: renewal window from the CA (ARI)");
        Some((at, ari_recheck(retry_after)))
    }

    /// One attempt: each configured challenge type in turn, each with its
    /// own order (a failed validation invalidates the whole order).
    async fn obtain(&mut self) -> Result<Arc<CertifiedKey>, AcmeError> {
        let mut last = None;
        for kind in self.acme.challenges.clone() {
            let mut result = self.order_with(kind).await;
            if result.as_ref().err().is_some_and(AcmeError::account_gone) {
                tracing::warn!(
                    "acme: the CA no longer knows the stored account; creating a new one"
                );
                self.account = None;
                self.store.forget_account();
                result = self.order_with(kind).await;
            }
            self.challenges.clear();
            match result {
                Ok(key) => return Ok(key),
                Err(e) => {
                    tracing::warn!(challenge = %kind, error = %Chain(&e), "acme: attempt with this challenge failed");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("config validation requires at least one challenge"))
    }

    /// The account builder, over an HTTPS client on nbgate's own crypto
    /// provider (`tls::client`): instant-acme's default client asks
    /// rustls for a process-wide provider, which it cannot choose while two
    /// are compiled in (see Cargo.toml), and would panic.
    fn builder(&self) -> Result<AccountBuilder, AcmeError> {
        let https = super::client::connector_builder(self.acme.ca_bundle.as_deref())?;
        let https = https.https_only().enable_http1().enable_http2().build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Account::builder_with_http(Box::new(client)))
    }

    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let account = match self.store.load_account()? {
            Some(credentials) => {
                let account = self.builder()?.from_credentials(credentials).await?;
                tracing::info!(id = account.id(), "acme: account loaded");
                account
            }
            None => {
                let contact: Vec<&str> = self.acme.contact.iter().map(String::as_str).collect();
                let eab = match &self.acme.eab {
                    Some(e) => Some(ExternalAccountKey::new(
                        e.key_id.clone(),
                        &read_hmac_key(&e.hmac_key_file)?,
                    )),
                    None => None,
                };
                let (account, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.acme.directory.clone(),
                        eab.as_ref(),
                    )
                    .await?;
                self.store.save_account(&credentials)?;
                tracing::info!(id = account.id(), directory = %self.acme.directory, "acme: account created");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    async fn order_with(&mut self, kind: AcmeChallenge) -> Result<Arc<CertifiedKey>, AcmeError> {
        self.store.check_writable()?;
        let account = self.account().await?;
        let identifiers: Vec<Identifier> =
            self.acme.domains.iter().map(|d| identifier(d)).collect();
        let profile = choose_profile(
            self.acme.profile.as_deref(),
            self.acme.has_ip(),
            account.profiles().map(|p| p.name),
        )?;
        let base = || {
            let order = NewOrder::new(&identifiers);
            match &profile {
                Some(p) => order.profile(p),
                None => order,
            }
        };
        // Only to a CA that offers ARI (one without it refuses the field),
        // and not again after it did not take it.
        let replaces = self
            .replacing
            .clone()
            .filter(|_| self.ari_choice.is_some() && !self.replaces_refused);
        let sent_replaces = replaces.is_some();
        let mut order = match replaces {
            None => account.new_order(&base()).await?,
            Some(id) => match account.new_order(&base().replaces(id)).await {
                Ok(order) => order,
                // `replaces` is a courtesy to the CA (RFC 9773 §5): a CA
                // that refuses it, or accepts the order without reflecting
                // it (instant-acme then fails the call), must not turn
                // every renewal into a failure.
                Err(e) => {
                    tracing::info!(error = %Chain(&e), "acme: the CA did not take the order's replaces field; ordering without it");
                    self.replaces_refused = true;
                    account.new_order(&base()).await?
                }
            },
        };
        tracing::info!(
            order = order.url(),
            challenge = %kind,
            domains = ?self.acme.domains,
            profile = profile.as_deref().unwrap_or("the CA's default"),
            replaces = sent_replaces && !self.replaces_refused,
            "acme: order placed"
        );
        self.answer_challenges(&mut order, kind).await?;

        let status = order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await?;
        if status != OrderStatus::Ready {
            let detail = failure_detail(&mut order).await;
            return Err(AcmeError::Validation {
                kind,
                status,
                detail,
            });
        }
        tracing::info!(challenge = %kind, "acme: validation succeeded");

        let alg = match self.acme.key_type {
            AcmeKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            AcmeKeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        let key = rcgen::KeyPair::generate_for(alg)?;
        let mut params = rcgen::CertificateParams::new(self.acme.domains.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await?;
        self.store.save_certificate(&chain, &key.serialize_pem())?;
        let loaded = files::load(&self.store.cert_path(), &self.store.key_path())?;
        tracing::info!(
            serial = %serial_hex(&loaded),
            cert = %self.store.cert_path().display(),
            expires_in_secs = validity(&loaded).map_or(0, |(_, na)| na - now_unix()),
            "acme: certificate issued"
        );
        Ok(loaded)
    }

    /// Publishes an answer for every pending authorization and tells the CA
    /// to validate it.
    async fn answer_challenges(
        &self,
        order: &mut Order,
        kind: AcmeChallenge,
    ) -> Result<(), AcmeError> {
        let wanted = match kind {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let domain = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(AcmeError::Authorization { domain, status }),
            }
            let mut challenge =
                authz
                    .challenge(wanted.clone())
                    .ok_or_else(|| AcmeError::ChallengeNotOffered {
                        kind,
                        domain: domain.clone(),
                    })?;
            let key_auth = challenge.key_authorization();
            match kind {
                AcmeChallenge::Http01 => self
                    .challenges
                    .add_http01(&challenge.token, key_auth.as_str()),
                AcmeChallenge::TlsAlpn01 => self
                    .challenges
                    .add_tls_alpn01(&domain, key_auth.digest().as_ref())?,
            }
            challenge.set_ready().await?;
            tracing::info!(%domain, challenge = %kind, "acme: challenge ready");
        }
        Ok(())
    }
}

/// The CA's reasons for a failed validation, from the challenges' errors.
async fn failure_detail(order: &mut Order) -> String {
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                details.push(format!(
                    "{}: {}",
                    authz.identifier(),
                    p.detail.as_deref().unwrap_or("no detail")
                ));
            }
        }
    }
    if details.is_empty() {
        "the CA gave no reason".into()
    } else {
        details.join("; ")
    }
}

/// EAB HMAC keys are handed out base64url-encoded (RFC 8555 §7.3.4).
fn read_hmac_key(path: &Path) -> Result<Vec<u8>, AcmeError> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).map_err(|source| AcmeError::EabKey {
        path: path.to_path_buf(),
        source,
    })?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| AcmeError::EabKeyEncoding {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_time_is_drawn_from_what_is_left_of_the_window() {
        // A window ahead: anywhere inside it, by the random draw.
        assert_eq!(ari_renewal_time(100, 1000, 2000, 0.0), 1000);
        assert_eq!(ari_renewal_time(100, 1000, 2000, 0.5), 1500);
        assert_eq!(ari_renewal_time(100, 1000, 2000, 1.0), 2000);
        // Inside the window: from now to its end, never in the past.
        assert_eq!(ari_renewal_time(1500, 1000, 2000, 0.0), 1500);
        assert_eq!(ari_renewal_time(1500, 1000, 2000, 0.5), 1750);
        // A window that has passed (or is empty) means now.
        assert_eq!(ari_renewal_time(3000, 1000, 2000, 0.7), 3000);
        assert_eq!(ari_renewal_time(100, 2000, 1000, 0.7), 100);
    }

    #[test]
    fn ari_recheck_honours_retry_after_within_bounds() {
        assert_eq!(
            ari_recheck(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(ari_recheck(Duration::ZERO), Duration::from_secs(60));
        assert_eq!(
            ari_recheck(Duration::from_secs(7 * 24 * 3600)),
            Duration::from_secs(6 * 3600)
        );
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_remains_minus_jitter() {
        // 90-day certificate issued at 0: due at day 60.
        let day = 24 * 3600;
        assert_eq!(seconds_until_renewal(0, 0, 90 * day, None, 0.0), 60 * day);
        // Up to 5% of the lifetime earlier with full jitter.
        let early = seconds_until_renewal(0, 0, 90 * day, None, 1.0);
        assert_eq!(early, 60 * day - 90 * day / 20);
        // An explicit renew_before wins.
        assert_eq!(
            seconds_until_renewal(0, 0, 90 * day, Some(Duration::from_secs(10 * 86400)), 0.0),
            80 * day
        );
        // Already due: negative.
        assert!(seconds_until_renewal(70 * day, 0, 90 * day, None, 0.0) < 0);
    }

    #[test]
    fn a_short_lived_certificate_renews_at_half_its_lifetime_and_errors_scale() {
        // Let's Encrypt's `shortlived` profile: 160 hours.
        let hour = 3600;
        assert_eq!(
            seconds_until_renewal(0, 0, 160 * hour, None, 0.0),
            80 * hour
        );
        assert_eq!(error_before_expiry(160 * hour), 40 * hour);
        assert_eq!(error_before_expiry(90 * 24 * hour), ERROR_BEFORE_EXPIRY);
    }

    fn directory_profiles(json: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(json).expect("directory JSON");
        v["meta"]["profiles"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Against the directories Let's Encrypt publishes (recorded copies; see
    /// tests/fixtures/acme/README.md): Pebble 2.4, which the integration
    /// tests run, advertises no profiles.
    #[test]
    fn the_profile_follows_the_configuration_and_the_directory() {
        for json in [
            include_str!("../../tests/fixtures/acme/letsencrypt-production-directory.json"),
            include_str!("../../tests/fixtures/acme/letsencrypt-staging-directory.json"),
        ] {
            let offered = directory_profiles(json);
            let offered = || offered.iter().map(String::as_str);
            // An IP address: shortlived, the only profile Let's Encrypt
            // issues IP certificates under.
            assert_eq!(
                choose_profile(None, true, offered())
                    .expect("chosen")
                    .as_deref(),
                Some("shortlived")
            );
            // DNS names only: the CA's default.
            assert_eq!(
                choose_profile(None, false, offered()).expect("chosen"),
                None
            );
            // A configured profile the CA offers is taken, whatever the names.
            assert_eq!(
                choose_profile(Some("tlsserver"), true, offered())
                    .expect("chosen")
                    .as_deref(),
                Some("tlsserver")
            );
            let e = choose_profile(Some("shortlive"), false, offered()).expect_err("misspelt");
            assert!(
                e.to_string().contains("\"shortlive\"")
                    && e.to_string().contains("classic, shortlived"),
                "{e}"
            );
        }
        // A CA without profiles (Pebble 2.4): none is sent, even for an IP
        // address, and asking for one is a clear error.
        assert_eq!(choose_profile(None, true, []).expect("chosen"), None);
        let e = choose_profile(Some("classic"), false, []).expect_err("no profiles");
        assert!(
            e.to_string()
                .contains("does not support the profiles extension"),
            "{e}"
        );
    }

    #[test]
    fn ip_addresses_become_ip_identifiers() {
        assert_eq!(
            identifier("203.0.113.7"),
            Identifier::Ip("203.0.113.7".parse().expect("ip"))
        );
        assert_eq!(
            identifier("2001:db8::1"),
            Identifier::Ip("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            identifier("nb.example.com"),
            Identifier::Dns("nb.example.com".into())
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_four_hours() {
        let base = Duration::from_secs(60);
        assert_eq!(backoff(1, base, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(2, base, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(5, base, 1.0), Duration::from_secs(960));
        assert_eq!(backoff(40, base, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(40, base, 1.2), MAX_BACKOFF.mul_f64(1.2));
        assert_eq!(backoff(1, base, 0.0), Duration::from_secs(48));
    }

    #[test]
    fn each_directory_gets_its_own_storage_directory() {
        let a = Store::new(Path::new("/s"), crate::config::LETSENCRYPT_DIRECTORY);
        let b = Store::new(
            Path::new("/s"),
            crate::config::LETSENCRYPT_STAGING_DIRECTORY,
        );
        assert_eq!(
            a.dir(),
            Path::new("/s/certs/acme/acme-v02.api.letsencrypt.org_directory")
        );
        assert_ne!(a.dir(), b.dir());
        assert_eq!(
            directory_slug("https://127.0.0.1:14000/dir/"),
            "127.0.0.1_14000_dir"
        );
    }

    #[test]
    fn stored_certificate_for_other_domains_is_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), "https://ca.test/dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.example.org".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        store
            .save_certificate(&cert.pem(), &key.serialize_pem())
            .expect("save");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.key_path())
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store
            .load_valid(&["a.example.org".to_owned()])
            .expect("same names");
        let e = store
            .load_valid(&["a.example.org".to_owned(), "b.example.org".to_owned()])
            .expect_err("more names");
        assert!(e.contains("b.example.org"), "{e}");
    }
}
