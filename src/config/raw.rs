//! The file as written: serde structs that mirror the TOML, every field
//! optional, `deny_unknown_fields` everywhere so a typo is an error and not
//! a silently ignored key. No defaults and no checks here: those live in the
//! section validators, so a start and a reload run the same ones.

use std::path::PathBuf;

use serde::Deserialize;

/// The file as written. Every field optional: defaults live in `try_from_raw`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) users: Vec<RawUser>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) allow: Option<Vec<String>>,
    pub(super) deny: Option<Vec<String>>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) forwarded_header: Option<String>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) max_connections_per_client: Option<usize>,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    #[serde(default)]
    pub(super) lockout: RawLockout,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) requests_per_second: Option<u32>,
    pub(super) burst: Option<u32>,
    pub(super) logged_in_requests_per_second: Option<u32>,
    pub(super) logged_in_burst: Option<u32>,
    pub(super) max_clients: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLockout {
    pub(super) address_threshold: Option<u32>,
    pub(super) user_threshold: Option<u32>,
    pub(super) duration: Option<String>,
    pub(super) address_max: Option<String>,
    pub(super) user_max: Option<String>,
    pub(super) refusal_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) base_url: Option<String>,
    pub(super) default_user: Option<String>,
    pub(super) users_file: Option<PathBuf>,
    pub(super) password_hash_env: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_lifetime: Option<String>,
    pub(super) max_concurrent_verifications: Option<usize>,
    // passkeys (issue 22 §2)
    pub(super) passkeys: Option<RawPasskeys>,
    // totp (issue 22 §1)
    pub(super) require_second_factor: Option<bool>,
    // oidc: single sign-on (config/oidc.rs).
    /// `false`: no password form, SSO only.
    pub(super) password: Option<bool>,
    #[serde(default)]
    pub(super) oidc: Vec<RawOidc>,
}

/// `[[auth.oidc]]`: one OpenID Connect provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub(super) name: String,
    pub(super) display_name: Option<String>,
    pub(super) issuer: String,
    pub(super) client_id: String,
    /// Only read to refuse it with a message that says where secrets go.
    pub(super) client_secret: Option<toml::Value>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) user_claim: Option<String>,
    pub(super) groups_claim: Option<String>,
    #[serde(default)]
    pub(super) allowed_emails: Vec<String>,
    #[serde(default)]
    pub(super) allowed_domains: Vec<String>,
    #[serde(default)]
    pub(super) allowed_groups: Vec<String>,
    pub(super) require_email_verified: Option<bool>,
    pub(super) ca_bundle: Option<PathBuf>,
}

/// `[auth.passkeys]`: WebAuthn's relying party (passkeys, issue 22 §2).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPasskeys {
    pub(super) enabled: Option<bool>,
    pub(super) rp_id: Option<String>,
    pub(super) origins: Option<Vec<String>>,
    pub(super) rp_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) name: String,
    pub(super) password_hash: Option<String>,
    #[serde(default)]
    pub(super) tokens: Vec<String>,
    // totp (issue 22 §1): an unknown value is a parse error naming the line.
    pub(super) totp: Option<super::auth::TotpPolicy>,
    pub(super) totp_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Vec<String>>,
    pub(super) http_listen: Option<Vec<String>>,
    pub(super) server_names: Option<Vec<String>>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) send_timeout: Option<String>,
    pub(super) max_header_bytes: Option<String>,
    pub(super) max_headers: Option<usize>,
    pub(super) shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) mode: Option<String>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) hsts: Option<bool>,
    pub(super) hsts_max_age: Option<String>,
    pub(super) acme: Option<RawAcme>,
}

/// `[tls.acme]`: automatic certificates (RFC 8555).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) domains: Option<Vec<String>>,
    pub(super) directory: Option<String>,
    pub(super) ca_bundle: Option<PathBuf>,
    pub(super) contact: Option<String>,
    pub(super) eab_key_id: Option<String>,
    pub(super) eab_hmac_key_file: Option<PathBuf>,
    pub(super) challenges: Option<Vec<String>>,
    pub(super) key_type: Option<String>,
    pub(super) renew_before: Option<String>,
    pub(super) profile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    pub(super) identity_header: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) websocket_idle_timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) access_log: Option<bool>,
    pub(super) level: Option<String>,
}

/// `[admin]`: the metrics and health listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

/// `[audit]`: the operation audit and its file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) file: Option<PathBuf>,
    pub(super) max_size: Option<String>,
    pub(super) keep: Option<usize>,
    pub(super) code: Option<bool>,
    pub(super) code_max_bytes: Option<String>,
    pub(super) terminal_input: Option<bool>,
}
