//! Certificates for tests: rcgen-made cert/key pairs for `tls.mode = "files"` (valid, expired,
//! mismatched), PEM parsing and the fingerprint format nbgate logs.

use rustls::pki_types::CertificateDer;

/// A PEM certificate and its PEM private key.
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for `names`, valid from `not_before` to `not_after`
/// (`(year, month, day)`).
pub fn self_signed(
    names: &[&str],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> CertPair {
    let key = rcgen::KeyPair::generate().expect("generate key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate params");
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).expect("self-sign");
    CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A certificate for `localhost` and `127.0.0.1` valid from 2020 to 2100.
pub fn localhost() -> CertPair {
    self_signed(&["localhost", "127.0.0.1"], (2020, 1, 1), (2100, 1, 1))
}

/// The certificates in a PEM document.
pub fn parse_pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .expect("parse PEM certificates")
}

/// `AB:CD:...`: uppercase hex SHA-256 of the DER, colon separated.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
