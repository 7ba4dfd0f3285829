//! `tls.mode = "files"`: a PEM certificate chain and private key from disk
//! (as certbot, an internal CA or a secret store leaves them).
//!
//! Every failure names the file, so a startup error says which of the two
//! files is wrong and why. Nothing here watches files: reload comes later.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// Reads and checks a certificate chain and its key.
///
/// # Errors
/// Missing or unreadable files, PEM without a certificate or key, a key type
/// rustls cannot sign with, a key that does not belong to the leaf
/// certificate, and a leaf outside its validity period.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let signer = super::signing_key(key).map_err(|source| TlsError::BadKey {
        path: key_path.to_path_buf(),
        source,
    })?;
    check_validity(cert_path, &chain[0], time::OffsetDateTime::now_utc())?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => {}
        // aws-lc-rs keys always expose their public half; "Unknown" would only
        // come from a provider that cannot, and is not a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
    }
    Ok(Arc::new(certified))
}

/// Reads every certificate in a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for der in &chain {
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(chain)
}

/// Reads the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsError::BadPem {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// Refuses a leaf certificate outside its validity period: serving an
/// expired certificate only teaches users to click through warnings.
pub fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: time::OffsetDateTime,
) -> Result<(), TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let validity = cert.validity();
    let now = now.unix_timestamp();
    if now > validity.not_after.timestamp() {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before.timestamp() {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// Seconds until the leaf certificate expires (negative once expired).
pub fn seconds_until_expiry(leaf: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(
        dir: &Path,
        name: &str,
        not_after: time::OffsetDateTime,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    fn later() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::days(30)
    }

    #[test]
    fn valid_pair_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), "a", later());
        load(&c, &k).expect("valid pair");
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch_naming_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, _) = write_pair(dir.path(), "a", later());
        let (_, k2) = write_pair(dir.path(), "b", later());
        let e = load(&c, &k2).expect_err("mismatch");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("b.key"), "{e}");
    }

    #[test]
    fn expired_certificate_is_refused_with_its_file_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(
            dir.path(),
            "old",
            time::OffsetDateTime::now_utc() - time::Duration::days(1),
        );
        let e = load(&c, &k).expect_err("expired");
        assert!(matches!(e, TlsError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("old.crt"), "{e}");
    }

    #[test]
    fn missing_and_garbage_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = write_pair(dir.path(), "a", later());
        let missing = dir.path().join("nope.crt");
        let e = load(&missing, &k).expect_err("missing");
        assert!(e.to_string().contains("nope.crt"), "{e}");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "not a key").expect("write");
        let e = load(&c, &garbage).expect_err("garbage");
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        assert!(e.to_string().contains("garbage.key"), "{e}");
    }
}
