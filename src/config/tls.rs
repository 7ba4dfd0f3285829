//! `[tls]` and `[tls.acme]`: where the certificate comes from.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::raw::{RawAcme, RawTls};
use super::values::{parse_duration, ser_duration, ser_opt_duration};
use super::{ConfigError, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    SelfSigned,
    Files,
    Acme,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    pub mode: TlsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    pub hsts: bool,
    #[serde(serialize_with = "ser_duration")]
    pub hsts_max_age: Duration,
    /// Set exactly when `mode` is `Acme`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeConfig>,
}

/// Let's Encrypt's production directory, the default.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ACME challenge types nbgate can answer itself. DNS-01 needs a DNS
/// provider API and is out of scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AcmeChallenge {
    /// RFC 8737: answered on the HTTPS listener during the TLS handshake.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on the plain-HTTP listener.
    #[serde(rename = "http-01")]
    Http01,
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        })
    }
}

/// The certificate key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeKeyType {
    EcdsaP256,
    EcdsaP384,
}

/// External Account Binding (RFC 8555 §7.3.4), for CAs such as ZeroSSL.
#[derive(Debug, Clone, Serialize)]
pub struct AcmeEab {
    pub key_id: String,
    /// Holds the base64url HMAC key; read when the account is created.
    pub hmac_key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcmeConfig {
    /// Lowercase DNS names and IP addresses (RFC 8738, in their canonical
    /// text form); the certificate covers all of them.
    pub domains: Vec<String>,
    /// The directory URL.
    pub directory: String,
    /// PEM roots that replace the system roots for talking to the directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eab: Option<AcmeEab>,
    /// Tried in this order; a failure of one falls back to the next.
    pub challenges: Vec<AcmeChallenge>,
    pub key_type: AcmeKeyType,
    /// Renew when less than this is left; `None`: a third of the lifetime.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub renew_before: Option<Duration>,
    /// The certificate profile asked for (the directory's `meta.profiles`);
    /// `None`: `shortlived` when an identifier is an IP address and the CA
    /// offers it, else the CA's default (`tls::acme::choose_profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl AcmeConfig {
    /// Whether any identifier is an IP address.
    pub fn has_ip(&self) -> bool {
        self.domains.iter().any(|d| d.parse::<IpAddr>().is_ok())
    }
}

/// Validates `[tls]`. `has_http_listener`: whether `server.http_listen` has
/// a listener, which decides the default ACME challenges.
pub(super) fn validate(
    mut t: RawTls,
    has_http_listener: bool,
    acme_ip: Option<&str>,
    ctx: &Ctx,
) -> Result<TlsConfig, ConfigError> {
    // `--acme-ip ADDR`: the one-line form of an IP address certificate.
    if let Some(ip) = acme_ip {
        t.mode = Some("acme".into());
        t.acme.get_or_insert_with(Default::default).domains = Some(vec![ip.to_owned()]);
    }
    let mode = match t.mode.as_deref() {
        None | Some("self-signed") => TlsMode::SelfSigned,
        Some("files") => TlsMode::Files,
        Some("acme") => TlsMode::Acme,
        Some(other) => {
            return Err(ctx.invalid(
                "tls.mode",
                format!("unknown mode {other:?} (expected \"self-signed\", \"files\" or \"acme\")"),
            ))
        }
    };
    if mode == TlsMode::Files {
        if t.cert_file.is_none() {
            return Err(ctx.invalid(
                "tls.cert_file",
                "must be set when tls.mode = \"files\"".into(),
            ));
        }
        if t.key_file.is_none() {
            return Err(ctx.invalid(
                "tls.key_file",
                "must be set when tls.mode = \"files\"".into(),
            ));
        }
    } else if t.cert_file.is_some() || t.key_file.is_some() {
        return Err(ctx.invalid(
            "tls.cert_file",
            "cert_file/key_file are only used with tls.mode = \"files\"".into(),
        ));
    }
    let acme = match (mode, t.acme) {
        (TlsMode::Acme, raw) => Some(
            acme_from_raw(raw.unwrap_or_default(), has_http_listener)
                .map_err(|(key, m)| ctx.invalid(key, m))?,
        ),
        (_, Some(_)) => {
            return Err(ctx.invalid("tls.acme", "only used with tls.mode = \"acme\"".into()))
        }
        (_, None) => None,
    };
    Ok(TlsConfig {
        mode,
        cert_file: t.cert_file,
        key_file: t.key_file,
        // HSTS pins browsers to this host's certificate chain; with a
        // self-signed certificate that would lock users out after the
        // first certificate change, so it is off by default there.
        hsts: t.hsts.unwrap_or(mode != TlsMode::SelfSigned),
        hsts_max_age: ctx.duration(
            "tls.hsts_max_age",
            t.hsts_max_age,
            Duration::from_secs(365 * 24 * 3600),
        )?,
        acme,
    })
}

/// picks the default challenge list: TLS-ALPN-01 always works on the HTTPS
/// listener; HTTP-01 only where a plain-HTTP listener exists.
fn acme_from_raw(
    raw: RawAcme,
    has_http_listener: bool,
) -> Result<AcmeConfig, (&'static str, String)> {
    let directory = match raw.directory.as_deref() {
        None | Some("letsencrypt") => LETSENCRYPT_DIRECTORY.to_owned(),
        Some("letsencrypt-staging") => LETSENCRYPT_STAGING_DIRECTORY.to_owned(),
        Some(url) if url.starts_with("https://") && url.len() > "https://".len() => url.to_owned(),
        Some(other) => {
            return Err((
                "tls.acme.directory",
                format!(
                "{other:?}: expected \"letsencrypt\", \"letsencrypt-staging\" or an https:// URL"
            ),
            ))
        }
    };
    let domains = identifiers(raw.domains.unwrap_or_default(), &directory)?;
    let profile = match raw.profile {
        Some(p)
            if !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') =>
        {
            Some(p)
        }
        Some(p) => return Err(("tls.acme.profile", format!("{p:?} is not a profile name"))),
        None => None,
    };
    let contact = match raw.contact {
        None => Vec::new(),
        Some(c) if c.contains('@') && !c.contains([' ', ',']) => {
            vec![if c.starts_with("mailto:") {
                c
            } else {
                format!("mailto:{c}")
            }]
        }
        Some(c) => return Err(("tls.acme.contact", format!("{c:?} is not an email address"))),
    };
    let eab = match (raw.eab_key_id, raw.eab_hmac_key_file) {
        (None, None) => None,
        (Some(key_id), Some(hmac_key_file)) => Some(AcmeEab {
            key_id,
            hmac_key_file,
        }),
        (Some(_), None) => {
            return Err((
                "tls.acme.eab_hmac_key_file",
                "must be set together with tls.acme.eab_key_id".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "tls.acme.eab_key_id",
                "must be set together with tls.acme.eab_hmac_key_file".into(),
            ))
        }
    };
    let challenges = match raw.challenges {
        None if has_http_listener => vec![AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01],
        None => vec![AcmeChallenge::TlsAlpn01],
        Some(list) => {
            let mut out = Vec::new();
            for c in list {
                let kind = match c.as_str() {
                    "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                    "http-01" => AcmeChallenge::Http01,
                    "dns-01" => {
                        return Err((
                            "tls.acme.challenges",
                            "dns-01 is not supported; use \"tls-alpn-01\" and/or \"http-01\""
                                .into(),
                        ))
                    }
                    other => {
                        return Err((
                            "tls.acme.challenges",
                            format!(
                            "unknown challenge {other:?} (expected \"tls-alpn-01\" or \"http-01\")"
                        ),
                        ))
                    }
                };
                if !out.contains(&kind) {
                    out.push(kind);
                }
            }
            if out.is_empty() {
                return Err(("tls.acme.challenges", "must not be empty".into()));
            }
            out
        }
    };
    let key_type = match raw.key_type.as_deref() {
        None | Some("ecdsa-p256") => AcmeKeyType::EcdsaP256,
        Some("ecdsa-p384") => AcmeKeyType::EcdsaP384,
        Some(other) => {
            return Err((
                "tls.acme.key_type",
                format!("{other:?}: expected \"ecdsa-p256\" or \"ecdsa-p384\""),
            ))
        }
    };
    let renew_before = raw
        .renew_before
        .map(|t| parse_duration(&t))
        .transpose()
        .map_err(|m| ("tls.acme.renew_before", m))?;
    Ok(AcmeConfig {
        domains,
        directory,
        ca_bundle: raw.ca_bundle,
        contact,
        eab,
        challenges,
        key_type,
        renew_before,
        profile,
    })
}

/// The identifiers of `tls.acme.domains`: public DNS names and public IP
/// addresses (RFC 8738; canonical text form, so `::1` and `0:0::1` are one).
///
/// Why refuse private, loopback, link-local and other special addresses:
/// no public CA can validate them, and an order for one only fails after a
/// round trip to the CA. A directory on a loopback address is a test CA
/// (Pebble), which validates on this machine: any address is allowed there.
fn identifiers(raw: Vec<String>, directory: &str) -> Result<Vec<String>, (&'static str, String)> {
    const KEY: &str = "tls.acme.domains";
    let domains: Vec<String> = raw
        .into_iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if domains.is_empty() {
        return Err((KEY, "must be set when tls.mode = \"acme\"".into()));
    }
    let test_directory = directory_is_local(directory);
    let mut out = Vec::new();
    for d in domains {
        if let Ok(ip) = d.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
            if !test_directory && !is_public(ip) {
                return Err((
                    KEY,
                    format!("{ip} is not a public address: a CA cannot validate it"),
                ));
            }
            out.push(ip.to_string());
            continue;
        }
        if d.starts_with("*.") {
            return Err((
                KEY,
                format!("{d:?}: wildcard names need DNS-01, which nbgate does not support"),
            ));
        }
        let valid_label = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.len() > 253 || !d.contains('.') || !d.split('.').all(valid_label) {
            return Err((KEY, format!("{d:?} is not a public DNS name or IP address")));
        }
        out.push(d);
    }
    Ok(out)
}

/// Whether the directory URL's host is this machine (a test CA).
fn directory_is_local(url: &str) -> bool {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    let host = host.trim_matches(|c| c == '[' || c == ']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a CA on the internet could reach and validate `ip`.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
                || (a == 100 && (64..128).contains(&b))
                // 0.0.0.0/8 and 240.0.0.0/4.
                || a == 0
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // An IPv4-mapped address is the IPv4 address: name that.
                || v6.to_ipv4_mapped().is_some())
        }
    }
}
