//! The default certificate: self-signed, generated on first start, reused
//! on every later start so a browser exception (or a pinned fingerprint)
//! stays valid.
//!
//! Owns `<state_dir>/tls/self-signed.{crt,key}`. The key is written with
//! mode 0600 before anything can read it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{files, fingerprint, TlsError};
use crate::config::Config;
use crate::state::{self, StateFile};

/// How long a generated certificate is valid. Short enough to follow current
/// browser limits (398 days), and regenerated before it runs out.
const VALIDITY_DAYS: i64 = 365;
/// Regenerate when less than this is left, rather than serve an expiring one.
const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

/// Paths of the generated pair under the state directory.
pub fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("self-signed.crt"), dir.join("self-signed.key"))
}

/// The names the certificate must cover: `localhost`, loopback IPs, the
/// machine's host name, configured server names and listen IPs.
pub fn wanted_names(config: &Config) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(h) = hostname() {
        names.insert(h);
    }
    names.extend(config.server.server_names.iter().cloned());
    for addr in &config.server.listen {
        if !addr.ip().is_unspecified() {
            names.insert(addr.ip().to_string());
        }
    }
    names
}

/// Loads the stored pair when it still fits, otherwise generates a new one.
///
/// # Errors
/// The state directory cannot be created or written, or generation fails.
pub fn load_or_generate(config: &Config) -> Result<Arc<CertifiedKey>, TlsError> {
    let (crt, key) = paths(&config.server.state_dir);
    let names = wanted_names(config);
    if crt.exists() && key.exists() {
        match reuse(&crt, &key, &names) {
            Ok(k) => {
                tracing::info!(
                    cert = %crt.display(),
                    sha256_fingerprint = %fingerprint(&k),
                    "using self-signed certificate"
                );
                return Ok(k);
            }
            Err(reason) => {
                tracing::warn!(cert = %crt.display(), %reason, "regenerating self-signed certificate")
            }
        }
    }
    let dir = crt.parent().expect("paths() joins a file name");
    state::ensure_private_dir(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let (cert_pem, key_pem) = generate(&names)?;
    // Both staged before either replaces its old file: a full or read-only
    // state directory keeps the old pair whole (never a new key next to the
    // old certificate). Key first, so a crash between the two renames never
    // leaves a certificate whose key is missing.
    state::write_atomic_all(&[
        StateFile {
            path: &key,
            bytes: key_pem.as_bytes(),
            mode: 0o600,
        },
        StateFile {
            path: &crt,
            bytes: cert_pem.as_bytes(),
            mode: 0o644,
        },
    ])
    .map_err(|e| TlsError::Write {
        path: e.path,
        source: e.source,
    })?;
    let k = files::load(&crt, &key)?;
    tracing::info!(
        cert = %crt.display(),
        names = ?names,
        sha256_fingerprint = %fingerprint(&k),
        "generated self-signed certificate"
    );
    Ok(k)
}

fn reuse(crt: &Path, key: &Path, names: &BTreeSet<String>) -> Result<Arc<CertifiedKey>, String> {
    let k = files::load(crt, key).map_err(|e| e.to_string())?;
    let leaf = k.cert.first().ok_or("empty chain")?;
    if files::seconds_until_expiry(leaf).unwrap_or(0) < RENEW_BEFORE_SECS {
        return Err("certificate expires within 30 days".into());
    }
    let covered = san_names(leaf.as_ref());
    let missing: Vec<_> = names.difference(&covered).collect();
    if !missing.is_empty() {
        return Err(format!("certificate does not cover {missing:?}"));
    }
    Ok(k)
}

fn san_names(der: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    out.insert((*d).to_owned());
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*ip) {
                        out.insert(std::net::IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*ip) {
                        out.insert(std::net::IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn generate(names: &BTreeSet<String>) -> Result<(String, String), TlsError> {
    let mut params = rcgen::CertificateParams::new(names.iter().cloned().collect::<Vec<_>>())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nbgate self-signed");
    // ECDSA P-256: fast handshakes and accepted by every current browser.
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes
    // at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end])
        .ok()?
        .trim()
        .to_ascii_lowercase();
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use std::os::unix::fs::PermissionsExt;

    fn config(state: &Path, names: &[&str]) -> Config {
        let mut text = format!("[server]\nstate_dir = {:?}\n", state.display().to_string());
        text.push_str(&format!("server_names = {names:?}\n"));
        let dir = state.parent().expect("parent");
        let path = dir.join(format!("c{}.toml", names.len()));
        std::fs::write(&path, text).expect("write config");
        Config::load(Some(&path), &Overrides::default()).expect("valid config")
    }

    #[test]
    fn first_start_generates_a_private_key_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let c = config(&state, &[]);
        let first = load_or_generate(&c).expect("generate");
        let (crt, key) = paths(&state);
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_generate(&c).expect("reuse");
        assert_eq!(fingerprint(&first), fingerprint(&again));
        let sans = san_names(
            &std::fs::read(&crt)
                .map(|_| first.cert[0].to_vec())
                .expect("read"),
        );
        assert!(sans.contains("localhost") && sans.contains("127.0.0.1") && sans.contains("::1"));
    }

    #[test]
    fn a_new_server_name_regenerates_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first = load_or_generate(&config(&state, &[])).expect("generate");
        let second = load_or_generate(&config(&state, &["nb.example.test"])).expect("regen");
        assert_ne!(fingerprint(&first), fingerprint(&second));
        assert!(san_names(second.cert[0].as_ref()).contains("nb.example.test"));
    }
}
