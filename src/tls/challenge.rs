//! Pending ACME challenge answers, shared between the ACME task (which
//! publishes and withdraws them) and the listeners (which serve them).
//!
//! - HTTP-01 (RFC 8555 §8.3): `GET /.well-known/acme-challenge/<token>` on the
//!   plain-HTTP listener answers the key authorization. Only tokens of a
//!   pending order are known; anything else under that path is a 404, so the
//!   path cannot be used to probe for anything.
//! - TLS-ALPN-01 (RFC 8737): a handshake whose ClientHello offers exactly the
//!   one protocol `acme-tls/1` for a name with a pending challenge gets a
//!   self-signed validation certificate carrying the `acmeIdentifier`
//!   extension. No other handshake ever sees it, and a connection that
//!   negotiated `acme-tls/1` is closed after the handshake (`server` checks
//!   [`is_acme_tls_alpn`]), so it never reaches HTTP serving.
//!
//! This module must not talk to the CA: `acme` does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The HTTP-01 path prefix (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Answers for the challenges of the order in progress.
///
/// std `Mutex`: held only to look up or insert, never across an `.await`,
/// and the maps hold at most a few entries per configured domain.
#[derive(Debug, Default)]
pub struct Challenges {
    /// token -> key authorization.
    http01: Mutex<HashMap<String, String>>,
    /// The name a validator sends as SNI (lowercase DNS name, or the
    /// reverse-DNS name of an IP address) -> validation certificate.
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes an HTTP-01 answer.
    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        self.http01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// The key authorization for `token`, if a challenge with it is pending.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .get(token)
            .cloned()
    }

    /// Publishes a TLS-ALPN-01 answer for `domain` (a DNS name or an IP
    /// address). For an IP address the validator names the reverse-DNS
    /// name in SNI (`4.3.2.1.in-addr.arpa`, RFC 8738 §6), since SNI cannot
    /// carry an address; the certificate carries the address itself.
    ///
    /// # Errors
    /// rcgen cannot build the validation certificate.
    pub fn add_tls_alpn01(&self, domain: &str, digest: &[u8]) -> Result<(), rcgen::Error> {
        let cert = validation_certificate(domain, digest)?;
        let sni = match domain.parse::<IpAddr>() {
            Ok(ip) => reverse_dns_name(ip),
            Err(_) => domain.to_ascii_lowercase(),
        };
        self.tls_alpn01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .insert(sni, cert);
        Ok(())
    }

    /// Withdraws every answer: called when an order attempt ends, whatever
    /// its outcome.
    pub fn clear(&self) {
        self.http01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .clear();
        self.tls_alpn01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .clear();
    }

    /// The validation certificate for a handshake, per RFC 8737 §3: only when
    /// the client offers exactly `acme-tls/1` and names (SNI) a domain with a
    /// pending challenge. `None` for everything else.
    pub fn tls_alpn01_for<'a>(
        &self,
        server_name: Option<&str>,
        mut alpn: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Arc<CertifiedKey>> {
        let only = alpn.next()?;
        if only != ACME_TLS_ALPN || alpn.next().is_some() {
            return None;
        }
        let name = server_name?.to_ascii_lowercase();
        self.tls_alpn01
            .lock()
            .expect("challenge map lock is never poisoned: no panics while held")
            .get(&name)
            .cloned()
    }
}

/// The reverse-DNS name of an address (RFC 8738 §6): `d.c.b.a.in-addr.arpa`,
/// or the 32 nibbles of an IPv6 address reversed under `ip6.arpa`.
pub fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// Whether a ClientHello offers exactly the one protocol `acme-tls/1`: such
/// a handshake is a validation attempt and must never be answered with the
/// real certificate.
pub fn offers_only_acme_tls_alpn<'a>(mut alpn: impl Iterator<Item = &'a [u8]>) -> bool {
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// Whether a finished handshake negotiated `acme-tls/1`.
pub fn is_acme_tls_alpn(negotiated: Option<&[u8]>) -> bool {
    negotiated == Some(ACME_TLS_ALPN)
}

/// The token of an HTTP-01 request path, if it is one.
pub fn http01_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    // RFC 8555 §8.1: tokens are base64url, so anything else is not ours.
    (!token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(token)
}

/// RFC 8737 §3: a self-signed certificate for `domain` with the critical
/// `id-pe-acmeIdentifier` extension holding the SHA-256 of the key
/// authorization.
fn validation_certificate(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    super::self_signed_key(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpn<'a>(list: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> {
        list.iter().copied()
    }

    #[test]
    fn validation_certificate_is_served_only_for_exactly_acme_tls_1_and_a_pending_name() {
        let c = Challenges::new();
        c.add_tls_alpn01("nb.example.test", &[7u8; 32])
            .expect("cert");
        assert!(c
            .tls_alpn01_for(Some("NB.example.test"), alpn(&[ACME_TLS_ALPN]))
            .is_some());
        assert!(c
            .tls_alpn01_for(Some("nb.example.test"), alpn(&[b"h2", b"http/1.1"]))
            .is_none());
        assert!(c
            .tls_alpn01_for(Some("nb.example.test"), alpn(&[ACME_TLS_ALPN, b"h2"]))
            .is_none());
        assert!(c
            .tls_alpn01_for(Some("nb.example.test"), alpn(&[]))
            .is_none());
        assert!(c
            .tls_alpn01_for(Some("other.example.test"), alpn(&[ACME_TLS_ALPN]))
            .is_none());
        assert!(c.tls_alpn01_for(None, alpn(&[ACME_TLS_ALPN])).is_none());
        c.clear();
        assert!(c
            .tls_alpn01_for(Some("nb.example.test"), alpn(&[ACME_TLS_ALPN]))
            .is_none());
    }

    #[test]
    fn validation_certificate_carries_the_critical_acme_identifier_extension() {
        let c = Challenges::new();
        c.add_tls_alpn01("nb.example.test", &[9u8; 32])
            .expect("cert");
        let key = c
            .tls_alpn01_for(Some("nb.example.test"), alpn(&[ACME_TLS_ALPN]))
            .expect("cert");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("x509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes wrapping the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &[9u8; 32]);
    }

    #[test]
    fn http01_tokens_are_base64url_under_the_well_known_path() {
        assert_eq!(
            http01_token("/.well-known/acme-challenge/abc-_DEF1"),
            Some("abc-_DEF1")
        );
        assert_eq!(http01_token("/.well-known/acme-challenge/"), None);
        assert_eq!(http01_token("/.well-known/acme-challenge/../x"), None);
        assert_eq!(http01_token("/lab"), None);
        let c = Challenges::new();
        c.add_http01("tok", "tok.thumb");
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01("other"), None);
    }

    #[test]
    fn acme_tls_alpn_offers_and_negotiation_are_recognised() {
        assert!(offers_only_acme_tls_alpn(alpn(&[ACME_TLS_ALPN])));
        assert!(!offers_only_acme_tls_alpn(alpn(&[b"h2", ACME_TLS_ALPN])));
        assert!(!offers_only_acme_tls_alpn(alpn(&[b"h2", b"http/1.1"])));
        assert!(!offers_only_acme_tls_alpn(alpn(&[])));
        assert!(is_acme_tls_alpn(Some(b"acme-tls/1")));
        assert!(!is_acme_tls_alpn(Some(b"h2")));
        assert!(!is_acme_tls_alpn(None));
    }

    #[test]
    fn reverse_dns_names_are_those_of_rfc_8738() {
        assert_eq!(
            reverse_dns_name("127.0.0.1".parse().expect("ip")),
            "1.0.0.127.in-addr.arpa"
        );
        // RFC 8738 §6's example.
        assert_eq!(
            reverse_dns_name("2001:db8::567:89ab".parse().expect("ip")),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn an_ip_address_challenge_is_answered_for_its_reverse_dns_name_only() {
        let c = Challenges::new();
        c.add_tls_alpn01("192.0.2.10", &[7u8; 32]).expect("add");
        let only = [ACME_TLS_ALPN];
        assert!(c
            .tls_alpn01_for(Some("10.2.0.192.in-addr.arpa"), alpn(&only))
            .is_some());
        assert!(c.tls_alpn01_for(Some("192.0.2.10"), alpn(&only)).is_none());
        assert!(c.tls_alpn01_for(None, alpn(&only)).is_none());
    }
}
