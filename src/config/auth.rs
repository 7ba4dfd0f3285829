//! `[auth]` and `[[users]]`: where users and passwords come from and how
//! long a login lasts. Only the shape is checked here; hash formats and the
//! users file are read by `auth::users`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oidc::OidcProvider;
use super::raw::{RawAuth, RawUser};
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
