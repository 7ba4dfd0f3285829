//! `[auth]` and `[[users]]`: where users and passwords come from and how
//! long a login lasts. Only the shape is checked here; hash formats and the
//! users file are read by `auth::users`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oidc::OidcProvider;
use super::raw::{RawAuth, RawPasskeys, RawUser};
use super::server::ServerConfig;
use super::tls::TlsConfig;
use super::values::{ser_duration, valid_user_name};
use super::{ConfigError, Ctx, Secret};

/// Where users and passwords come from, and how long a login lasts.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// Jupyter's `base_url`; nbgate's own pages live under `<base_url>_nbgate/`.
    pub base_url: String,
    /// The user name for single-password sources (env, file, credential,
    /// embedded default).
    pub default_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub max_lifetime: Duration,
    pub max_concurrent_verifications: usize,
    // oidc: single sign-on (config/oidc.rs).
    /// The password form: `false` when only single sign-on logs in.
    pub password: bool,
    /// `[[auth.oidc]]` providers, in file order (the order of the buttons).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcProvider>,
    /// `[auth.passkeys]`; `None`: passkeys are off (passkeys, issue 22 §2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkeys: Option<PasskeysConfig>,
    /// totp: every user must pass a second factor after the password
    /// (`auth::second_factor`); the single-password sources have no
    /// `[[users]]` entry to say so per user.
    pub require_second_factor: bool,
}

/// totp: whether a user must pass a TOTP step after the password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TotpPolicy {
    /// Asked for once the user enrolled (`nbgate totp enroll` or the
    /// account page); a user who did not logs in with the password alone.
    #[default]
    Optional,
    /// Always asked for: a user not enrolled yet enrols during the login.
    Required,
}

/// A `[[users]]` entry. Hashes are not secrets in the cryptographic sense,
/// but they are redacted from output anyway: offline guessing needs them.
#[derive(Debug, Clone, Serialize)]
pub struct UserEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    pub tokens: Vec<Secret>,
    /// totp: `required` or `optional` (the default).
    pub totp: TotpPolicy,
    /// totp: the user's base32 secret in a file of its own (made with
    /// `nbgate totp enroll --print-secret`) instead of the state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_secret_file: Option<PathBuf>,
}

/// Validates `[auth]`.
pub(super) fn validate(a: RawAuth, ctx: &Ctx) -> Result<AuthConfig, ConfigError> {
    let base_url = a.base_url.unwrap_or_else(|| "/".to_owned());
    if !base_url.starts_with('/') || !base_url.ends_with('/') || base_url.contains(['?', '#', '\\'])
    {
        return Err(ctx.invalid(
            "auth.base_url",
            format!(
                "{base_url:?} must start and end with '/' (Jupyter's base_url, e.g. \"/jupyter/\")"
            ),
        ));
    }
    let default_user = a.default_user.unwrap_or_else(|| "jupyter".to_owned());
    if !valid_user_name(&default_user) {
        return Err(ctx.invalid(
            "auth.default_user",
            format!("{default_user:?} is not a valid user name"),
        ));
    }
    let idle_timeout = ctx.duration(
        "auth.idle_timeout",
        a.idle_timeout,
        Duration::from_secs(24 * 3600),
    )?;
    let max_lifetime = ctx.duration(
        "auth.max_lifetime",
        a.max_lifetime,
        Duration::from_secs(7 * 24 * 3600),
    )?;
    if idle_timeout > max_lifetime {
        return Err(ctx.invalid(
            "auth.idle_timeout",
            "must not exceed auth.max_lifetime".into(),
        ));
    }
    if a.password_env.is_some() && a.password_file.is_some() {
        return Err(ctx.invalid(
            "auth.password_env",
            "set either password_env or password_file, not both".into(),
        ));
    }
    let (oidc, password) = super::oidc::validate(a.oidc, a.password, ctx)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(AuthConfig {
        password,
        oidc,
        base_url,
        default_user,
        users_file: a.users_file,
        password_hash_env: a.password_hash_env,
        password_env: a.password_env,
        password_file: a.password_file,
        idle_timeout,
        max_lifetime,
        max_concurrent_verifications: a.max_concurrent_verifications.unwrap_or(cores).max(1),
        // Set by `passkeys` once `[server]` and `[tls]` are known.
        passkeys: None,
        require_second_factor: a.require_second_factor.unwrap_or(false),
    })
}

/// Validates the `[[users]]` entries.
pub(super) fn users(raw: Vec<RawUser>, ctx: &Ctx) -> Result<Vec<UserEntry>, ConfigError> {
    let mut users = Vec::new();
    for u in raw {
        if !valid_user_name(&u.name) {
            return Err(ctx.invalid(
                "users.name",
                format!(
                    "{:?} is not a valid user name (1-64 letters, digits, '.', '_', '-', '@', not starting with '.')",
                    u.name
                ),
            ));
        }
        if users.iter().any(|e: &UserEntry| e.name == u.name) {
            return Err(ctx.invalid("users.name", format!("user {:?} is defined twice", u.name)));
        }
        if u.totp.is_some() && u.password_hash.is_none() {
            return Err(ctx.invalid(
                "users.totp",
                format!(
                    "user {:?} has a totp setting but no password_hash: the TOTP step follows \
                     a password login (API tokens are not asked for a code)",
                    u.name
                ),
            ));
        }
        if u.password_hash.is_none() && u.tokens.is_empty() {
            return Err(ctx.invalid(
                "users.password_hash",
                format!("user {:?} has neither password_hash nor tokens", u.name),
            ));
        }
        users.push(UserEntry {
            name: u.name,
            password_hash: u.password_hash.map(Secret::new),
            tokens: u.tokens.into_iter().map(Secret::new).collect(),
            totp: u.totp.unwrap_or_default(),
            totp_secret_file: u.totp_secret_file,
        });
    }
    Ok(users)
}

// ---- passkeys (issue 22 §2) ----

/// WebAuthn's relying party: which host name passkeys are made for and
/// which page origins may use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeysConfig {
    /// The relying party id: a DNS name, the host users reach nbgate by (or
    /// a parent domain of it). A passkey works only there: browsers refuse
    /// a ceremony whose page is not on this name or below it, and IP
    /// addresses are never valid (WebAuthn §5.1.4.1 / §13.4.9).
    pub rp_id: String,
    /// Exact `https://host[:port]` origins allowed; empty: any port of
    /// `https://<rp_id>` (nbgate often listens on 8443, or behind a port
    /// mapping whose public port it cannot know).
    pub origins: Vec<String>,
    /// Shown by the browser's passkey dialog.
    pub rp_name: String,
}

/// Validates `[auth.passkeys]`. Passkeys are on unless `enabled = false`;
/// without `rp_id` the relying party is the first DNS name (not an IP
/// address) of `tls.acme.domains`, then of `server.server_names`. With no
/// such name they are off, unless `enabled = true` asks for them: then
/// that is an error naming the key to set.
pub(super) fn passkeys(
    raw: Option<RawPasskeys>,
    server: &ServerConfig,
    tls: &TlsConfig,
    ctx: &Ctx,
) -> Result<Option<PasskeysConfig>, ConfigError> {
    let raw = raw.unwrap_or_default();
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let derived = || {
        let acme = tls.acme.iter().flat_map(|a| a.domains.iter());
        acme.chain(server.server_names.iter())
            .find(|n| valid_rp_id(n))
            .cloned()
    };
    let rp_id = match raw.rp_id {
        Some(id) => {
            let id = id.trim_end_matches('.').to_ascii_lowercase();
            if !valid_rp_id(&id) {
                return Err(ctx.invalid(
                    "auth.passkeys.rp_id",
                    format!("{id:?} must be a DNS name such as \"nb.example.org\" (not an IP address): passkeys are bound to a host name"),
                ));
            }
            id
        }
        None => match derived() {
            Some(id) => id,
            None if raw.enabled == Some(true) => {
                return Err(ctx.invalid(
                    "auth.passkeys.rp_id",
                    "must be set when auth.passkeys.enabled = true and neither tls.acme.domains nor server.server_names has a DNS name".into(),
                ))
            }
            None => return Ok(None),
        },
    };
    let mut origins = Vec::new();
    for o in raw.origins.unwrap_or_default() {
        let host = origin_host(&o).ok_or_else(|| {
            ctx.invalid(
                "auth.passkeys.origins",
                format!("{o:?} must be an origin such as \"https://nb.example.org\" or \"https://nb.example.org:8443\""),
            )
        })?;
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(ctx.invalid(
                "auth.passkeys.origins",
                format!("{o:?} is not on auth.passkeys.rp_id {rp_id:?} or a name below it"),
            ));
        }
        origins.push(o.trim_end_matches('/').to_ascii_lowercase());
    }
    let rp_name = raw.rp_name.unwrap_or_else(|| "nbgate".to_owned());
    if rp_name.is_empty() || rp_name.len() > 64 || rp_name.chars().any(char::is_control) {
        return Err(ctx.invalid(
            "auth.passkeys.rp_name",
            "must be 1 to 64 printable characters".into(),
        ));
    }
    Ok(Some(PasskeysConfig {
        rp_id,
        origins,
        rp_name,
    }))
}

/// A DNS name a relying party id can be: dot-separated labels of letters,
/// digits and hyphens; an IP address is not (WebAuthn needs a domain).
pub fn valid_rp_id(name: &str) -> bool {
    name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The host of `https://host[:port][/]`, lowercased; `None` for anything
/// else (another scheme, a path, user info, a query).
fn origin_host(origin: &str) -> Option<String> {
    let rest = origin.strip_prefix("https://")?.trim_end_matches('/');
    let authority: http::uri::Authority = rest.parse().ok()?;
    if authority.as_str().contains('@') || rest.contains(['/', '?', '#']) {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    valid_rp_id(&host).then_some(host)
}

#[cfg(test)]
mod passkey_tests {
    use std::path::Path;

    use crate::config::Config;

    fn load(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_text(text, Path::new("test.toml"))
    }

    #[test]
    fn passkeys_default_to_the_first_dns_server_name_and_are_off_without_one() {
        let c =
            load("[server]\nserver_names = [\"10.0.0.5\", \"nb.example.org\"]\n").expect("valid");
        let pk = c.auth.passkeys.expect("on");
        assert_eq!(
            pk.rp_id, "nb.example.org",
            "an IP address is never an RP id"
        );
        assert!(pk.origins.is_empty());
        let c = load("[server]\nserver_names = [\"10.0.0.5\"]\n").expect("valid");
        assert!(c.auth.passkeys.is_none(), "no DNS name: off");
        let c = load(
            "[server]\nserver_names = [\"nb.example.org\"]\n[auth.passkeys]\nenabled = false\n",
        )
        .expect("valid");
        assert!(c.auth.passkeys.is_none());
    }

    #[test]
    fn a_bad_rp_id_or_an_origin_off_it_names_the_key() {
        for (text, key) in [
            ("[auth.passkeys]\nrp_id = \"127.0.0.1\"\n", "auth.passkeys.rp_id"),
            ("[auth.passkeys]\nrp_id = \"nb example\"\n", "auth.passkeys.rp_id"),
            ("[auth.passkeys]\nenabled = true\n", "auth.passkeys.rp_id"),
            (
                "[auth.passkeys]\nrp_id = \"example.org\"\norigins = [\"https://evil.org\"]\n",
                "auth.passkeys.origins",
            ),
            (
                "[auth.passkeys]\nrp_id = \"example.org\"\norigins = [\"http://nb.example.org\"]\n",
                "auth.passkeys.origins",
            ),
            (
                "[auth.passkeys]\nrp_id = \"example.org\"\norigins = [\"https://nb.example.org/login\"]\n",
                "auth.passkeys.origins",
            ),
        ] {
            let e = load(text).expect_err(text).to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let c = load(
            "[auth.passkeys]\nrp_id = \"Example.org.\"\norigins = [\"https://nb.example.org:8443/\"]\n",
        )
        .expect("valid");
        let pk = c.auth.passkeys.expect("on");
        assert_eq!(pk.rp_id, "example.org");
        assert_eq!(pk.origins, vec!["https://nb.example.org:8443".to_owned()]);
    }
}
