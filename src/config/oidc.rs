//! `[[auth.oidc]]`: single sign-on providers (OpenID Connect), and
//! `auth.password` (the password form on or off). Only the shape is checked
//! here, and the client secret read from its file or variable; discovery,
//! the flow and the ID token checks live in `auth::oidc`.
//!
//! Rules that keep a provider entry safe to run:
//! - the issuer is `https://`, except `http://` on a loopback host (a
//!   provider on this machine, as the tests start): the ID token's keys,
//!   the code and the client secret travel over these URLs;
//! - the client secret comes from `client_secret_file` or
//!   `client_secret_env`, never from the file itself (configuration files
//!   are shared, pasted and committed) and is redacted from every output;
//! - at least one allow list is set: without one, every account of the
//!   provider (every Google account in the world) could log in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::raw::RawOidc;
use super::values::valid_user_name;
use super::{ConfigError, Ctx, Secret};

/// The claim that names the nbgate user, by default.
pub const DEFAULT_USER_CLAIM: &str = "email";
/// The claim that lists the user's groups, by default.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// One `[[auth.oidc]]` provider, validated.
#[derive(Debug, Clone, Serialize)]
pub struct OidcProvider {
    /// The provider's name in nbgate's URLs (`<prefix>oidc/<name>`) and logs.
    pub name: String,
    /// Shown on the button: "Sign in with <display_name>".
    pub display_name: String,
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` is read
    /// at first use.
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only, no secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Always holds `openid`.
    pub scopes: Vec<String>,
    /// The ID token claim whose value becomes the nbgate user name.
    pub user_claim: String,
    /// The ID token claim that lists groups (`allowed_groups`).
    pub groups_claim: String,
    /// Lower-cased addresses.
    pub allowed_emails: Vec<String>,
    /// Lower-cased domains, without `@`.
    pub allowed_domains: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// Whether an e-mail address counts only with `email_verified = true`.
    pub require_email_verified: bool,
    /// Trust only these roots for the provider's HTTPS (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

/// The key of one entry's field, for error messages.
struct Entry<'c, 'a> {
    ctx: &'c Ctx<'a>,
    index: usize,
}

impl Entry<'_, '_> {
    /// An error naming the file, the line of `field` inside this
    /// `[[auth.oidc]]` entry (when it is written there) and the key.
    fn invalid(&self, key: &'static str, message: String) -> ConfigError {
        let field = key.rsplit('.').next().unwrap_or(key);
        ConfigError::Invalid {
            path: self.ctx.source.clone(),
            line: self
                .ctx
                .text
                .and_then(|t| line_in_entry(t, "auth.oidc", self.index, field)),
            key,
            message,
        }
    }
}

/// The line (1-based) of `field` inside the `index`-th `[[table]]` entry of
/// `text`, or of the entry's header when the field is not written in it
/// (a missing key, or a value in a nested table).
fn line_in_entry(text: &str, table: &str, index: usize, field: &str) -> Option<usize> {
    let header = format!("[[{table}]]");
    let mut seen = 0;
    let mut inside: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            if inside.is_some() {
                break;
            }
            if l.replace(' ', "") == header {
                if seen == index {
                    inside = Some(i + 1);
                }
                seen += 1;
            }
            continue;
        }
        if inside.is_some() && !l.starts_with('#') {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim().trim_matches('"') == field {
                    return Some(i + 1);
                }
            }
        }
    }
    inside
}

/// Whether `issuer` may be used: `https://HOST…`, or `http://` to a
/// loopback host. No query or fragment (OpenID Connect Discovery §2).
pub fn issuer_allowed(issuer: &str) -> Result<(), String> {
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| format!("{issuer:?} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{issuer:?} has no host"))?;
    if uri.query().is_some() || issuer.contains('#') {
        return Err(format!("{issuer:?} must not have a query or fragment"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err(format!(
            "{issuer:?}: the issuer must be https:// (plain http only on a loopback address, \
             for a provider on this machine)"
        )),
        _ => Err(format!("{issuer:?} must be an https:// URL")),
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]` as written in a URL.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A provider name usable in a URL path segment and a log field.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// A claim name: what providers use (`email`, `preferred_username`, `upn`,
/// `groups_direct`, `https://example.com/roles` …), nothing that needs escaping.
fn valid_claim(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
}

/// Validates `[[auth.oidc]]` and `auth.password`; returns the providers.
pub(super) fn validate(
    raw: Vec<RawOidc>,
    password: Option<bool>,
    ctx: &Ctx,
) -> Result<(Vec<OidcProvider>, bool), ConfigError> {
    let mut providers: Vec<OidcProvider> = Vec::new();
    for (index, r) in raw.into_iter().enumerate() {
        let entry = Entry { ctx, index };
        let p = provider(r, &entry)?;
        if providers.iter().any(|o| o.name == p.name) {
            return Err(entry.invalid(
                "auth.oidc.name",
                format!("provider {:?} is defined twice", p.name),
            ));
        }
        providers.push(p);
    }
    let password = password.unwrap_or(true);
    if !password && providers.is_empty() {
        return Err(ctx.invalid(
            "auth.password",
            "can be false only with at least one [[auth.oidc]] provider: otherwise nobody \
             could log in"
                .into(),
        ));
    }
    Ok((providers, password))
}

fn provider(r: RawOidc, entry: &Entry) -> Result<OidcProvider, ConfigError> {
    if r.client_secret.is_some() {
        return Err(entry.invalid(
            "auth.oidc.client_secret",
            "the client secret is never written in the configuration file: set \
             client_secret_file (a file readable by nbgate only) or client_secret_env"
                .into(),
        ));
    }
    if !valid_name(&r.name) || r.name == "callback" {
        return Err(entry.invalid(
            "auth.oidc.name",
            format!(
                "{:?} must be 1-32 lower-case letters, digits, '-' or '_' (it is part of a URL), \
                 and not \"callback\"",
                r.name
            ),
        ));
    }
    issuer_allowed(&r.issuer).map_err(|m| entry.invalid("auth.oidc.issuer", m))?;
    if r.client_id.is_empty()
        || r.client_id.len() > 256
        || r.client_id.chars().any(char::is_control)
    {
        return Err(entry.invalid(
            "auth.oidc.client_id",
            "must be the client id the provider gave (1-256 characters)".into(),
        ));
    }
    let client_secret = read_secret(
        r.client_secret_file.as_deref(),
        r.client_secret_env.as_deref(),
        entry,
    )?;
    let mut scopes = r
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if let Some(bad) = scopes.iter().find(|s| !valid_claim(s)) {
        return Err(entry.invalid(
            "auth.oidc.scopes",
            format!("{bad:?} is not a scope (visible characters, no quotes)"),
        ));
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let user_claim = r
        .user_claim
        .unwrap_or_else(|| DEFAULT_USER_CLAIM.to_owned());
    if !valid_claim(&user_claim) {
        return Err(entry.invalid(
            "auth.oidc.user_claim",
            format!("{user_claim:?} is not a claim name"),
        ));
    }
    let groups_claim = r
        .groups_claim
        .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_owned());
    if !valid_claim(&groups_claim) {
        return Err(entry.invalid(
            "auth.oidc.groups_claim",
            format!("{groups_claim:?} is not a claim name"),
        ));
    }
    let allowed_emails: Vec<String> = r
        .allowed_emails
        .iter()
        .map(|e| e.trim().to_ascii_lowercase())
        .collect();
    if let Some(bad) = allowed_emails
        .iter()
        .find(|e| !valid_user_name(e) || e.matches('@').count() != 1 || e.ends_with('@'))
    {
        return Err(entry.invalid(
            "auth.oidc.allowed_emails",
            format!("{bad:?} is not an e-mail address"),
        ));
    }
    let allowed_domains: Vec<String> = r
        .allowed_domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .collect();
    if let Some(bad) = allowed_domains
        .iter()
        .find(|d| d.is_empty() || d.contains('@') || !valid_user_name(d) || !d.contains('.'))
    {
        return Err(entry.invalid(
            "auth.oidc.allowed_domains",
            format!("{bad:?} is not a domain (e.g. \"example.com\")"),
        ));
    }
    if r.allowed_groups.iter().any(String::is_empty) {
        return Err(entry.invalid(
            "auth.oidc.allowed_groups",
            "an empty group name matches nothing".into(),
        ));
    }
    if allowed_emails.is_empty() && allowed_domains.is_empty() && r.allowed_groups.is_empty() {
        return Err(entry.invalid(
            "auth.oidc.allowed_emails",
            "set at least one of allowed_emails, allowed_domains, allowed_groups: without a \
             list every account of the provider could log in"
                .into(),
        ));
    }
    if let Some(path) = &r.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            entry.invalid(
                "auth.oidc.ca_bundle",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(entry.invalid(
                "auth.oidc.ca_bundle",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
    }
    Ok(OidcProvider {
        display_name: r
            .display_name
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| r.name.clone()),
        name: r.name,
        issuer: r.issuer,
        client_id: r.client_id,
        client_secret,
        client_secret_file: r.client_secret_file,
        client_secret_env: r.client_secret_env,
        scopes,
        user_claim,
        groups_claim,
        allowed_emails,
        allowed_domains,
        allowed_groups: r.allowed_groups,
        require_email_verified: r.require_email_verified.unwrap_or(true),
        ca_bundle: r.ca_bundle,
    })
}

/// The client secret from its file (trimmed) or environment variable.
fn read_secret(
    file: Option<&Path>,
    env: Option<&str>,
    entry: &Entry,
) -> Result<Option<Secret>, ConfigError> {
    let secret = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(entry.invalid(
                "auth.oidc.client_secret_env",
                "set either client_secret_file or client_secret_env, not both".into(),
            ))
        }
        (Some(f), None) => std::fs::read_to_string(f)
            .map_err(|e| {
                entry.invalid(
                    "auth.oidc.client_secret_file",
                    format!("cannot read {}: {e}", f.display()),
                )
            })?
            .trim()
            .to_owned(),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| {
                entry.invalid(
                    "auth.oidc.client_secret_env",
                    format!("environment variable {var} is not set"),
                )
            })?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(entry.invalid(
            "auth.oidc.client_secret_file",
            "the client secret is empty".into(),
        ));
    }
    Ok(Some(Secret::new(secret)))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_text(text, Path::new("test.toml"))
    }

    const GOOD: &str = "[auth]\npassword = false\n\n[[auth.oidc]]\nname = \"corp\"\n\
        display_name = \"Corp SSO\"\nissuer = \"https://login.example.com/realms/corp\"\n\
        client_id = \"nbgate\"\nallowed_domains = [\"@Example.COM\"]\n";

    #[test]
    fn a_provider_gets_defaults_and_normalised_lists() {
        let c = load(GOOD).expect("valid");
        assert!(!c.auth.password);
        let p = &c.auth.oidc[0];
        assert_eq!(p.scopes, ["openid", "email", "profile"]);
        assert_eq!(p.user_claim, "email");
        assert_eq!(p.groups_claim, "groups");
        assert_eq!(p.allowed_domains, ["example.com"]);
        assert!(p.require_email_verified);
        assert!(p.client_secret.is_none());
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let text = GOOD.replace(
            "issuer = \"https://login.example.com/realms/corp\"",
            "issuer = \"http://login.example.com/\"",
        );
        let e = load(&text).expect_err("plain http to a remote issuer");
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml:7: auth.oidc.issuer:"), "{msg}");
        // The second entry's line, not the first's.
        let two = format!(
            "{GOOD}\n[[auth.oidc]]\nname = \"other\"\nissuer = \"https://o.example.com\"\n\
             client_id = \"x\"\nallowed_emails = [\"not-an-address\"]\n"
        );
        let msg = load(&two).expect_err("bad address").to_string();
        assert!(
            msg.starts_with("test.toml:15: auth.oidc.allowed_emails:"),
            "{msg}"
        );
    }

    #[test]
    fn loopback_http_issuers_are_allowed_and_remote_ones_are_not() {
        for ok in [
            "https://accounts.google.com",
            "http://127.0.0.1:9000",
            "http://localhost:9000/oidc",
            "http://[::1]:9000",
        ] {
            assert!(super::issuer_allowed(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://accounts.google.com",
            "http://10.0.0.1",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://x.example/#f",
            "not a url",
        ] {
            assert!(super::issuer_allowed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_inline_secret_is_refused_and_never_echoed() {
        let text = GOOD.replace(
            "client_id = \"nbgate\"\n",
            "client_id = \"nbgate\"\nclient_secret = \"s3cr3t-value\"\n",
        );
        let msg = load(&text).expect_err("inline secret").to_string();
        assert!(msg.contains("client_secret_file"), "{msg}");
        assert!(!msg.contains("s3cr3t-value"), "{msg}");
    }

    #[test]
    fn a_secret_file_is_read_and_redacted_from_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cr3t-value\n").expect("write");
        let text = GOOD.replace(
            "client_id = \"nbgate\"\n",
            &format!("client_id = \"nbgate\"\nclient_secret_file = {:?}\n", f),
        );
        let c = load(&text).expect("valid");
        let secret = c.auth.oidc[0].client_secret.as_ref().expect("secret");
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert!(!c.to_toml().contains("s3cr3t-value"));
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn a_provider_without_an_allow_list_is_refused() {
        let text = GOOD.replace("allowed_domains = [\"@Example.COM\"]\n", "");
        let msg = load(&text).expect_err("no list").to_string();
        assert!(msg.contains("at least one of allowed_emails"), "{msg}");
    }

    #[test]
    fn password_off_needs_a_provider() {
        let msg = load("[auth]\npassword = false\n")
            .expect_err("no way in")
            .to_string();
        assert!(msg.starts_with("test.toml:2: auth.password:"), "{msg}");
    }

    #[test]
    fn names_are_url_safe_and_unique() {
        for bad in ["", "Corp", "a/b", "callback", "-x"] {
            let text = GOOD.replace("name = \"corp\"", &format!("name = {bad:?}"));
            assert!(load(&text).is_err(), "{bad:?}");
        }
        let twice = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[").expect("entry")..]);
        let msg = load(&twice).expect_err("twice").to_string();
        assert!(msg.contains("defined twice"), "{msg}");
    }
}
