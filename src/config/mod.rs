//! Configuration: the TOML file as written (`RawConfig`), and the validated
//! `Config` the rest of nbgate runs on.
//!
//! Parse, then validate: serde mirrors the file with `deny_unknown_fields`
//! (a typo is an error, not a silently ignored key), and `Config::try_from_raw`
//! applies defaults, parses durations, sizes and addresses, and rejects bad
//! combinations with a message naming the key. Only `Config` leaves this
//! module. This module imports nothing else of the crate.
//!
//! [`Config::load`] is the one way in, for a start and for a reload alike:
//! it reads the file and everything the file points at (the upstream token),
//! then runs every section's validation, so a reload can never accept what a
//! start would refuse.
//!
//! Layout: `raw` (serde structs), `load` (file and environment reads),
//! `values` (value parsers), and one file per section with its validated
//! type and its validation: `server`, `tls`, `upstream`, `logging`, `auth`
//! (with `oidc`, the single sign-on providers), `policy`, `admin`.

mod admin;
mod audit;
mod auth;
mod load;
mod logging;
mod oidc;
mod policy;
mod raw;
mod server;
mod tls;
mod upstream;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use admin::{AdminConfig, MIN_ADMIN_TOKEN_LEN};
pub use audit::AuditConfig;
pub use auth::{valid_rp_id, AuthConfig, PasskeysConfig, TotpPolicy, UserEntry};
pub use load::default_state_dir;
pub use logging::{LogConfig, LogFormat};
pub use oidc::{is_loopback_host, OidcProvider};
pub use policy::{LockoutConfig, PolicyConfig, RateLimitConfig};
pub use raw::RawConfig;
pub use server::{ServerConfig, DEFAULT_HTTPS_PORT};
pub use tls::{
    AcmeChallenge, AcmeConfig, AcmeEab, AcmeKeyType, TlsConfig, TlsMode, LETSENCRYPT_DIRECTORY,
    LETSENCRYPT_STAGING_DIRECTORY,
};
pub use upstream::{IdentityKey, UpstreamAddr, UpstreamConfig};
pub use values::{
    parse_cidr, parse_duration, parse_size, parse_upstream, valid_upstream_token, valid_user_name,
};

/// Errors from loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// `line`: where the key is set in the file, when it is set there (not
    /// for a default or a command-line value).
    #[error("{}: {key}: {message}", at(path, *line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: &'static str,
        message: String,
    },
}

/// Command-line values that override the file (`--listen`, `--upstream`, ...).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// `--acme-ip`: an ACME certificate for this IP address.
    pub acme_ip: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the configuration came from ("<defaults>" when no file was given).
    #[serde(skip)]
    pub source: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub policy: PolicyConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserEntry>,
    /// The metrics and health listener; `None`: off (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    pub audit: AuditConfig,
}

/// The Jupyter token, kept out of `Debug` and serialized output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `path` or `path:line`.
fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// What every section's validation needs to report a problem: the file it
/// came from, and its text to find the line a key is on.
struct Ctx<'a> {
    source: PathBuf,
    text: Option<&'a str>,
}

impl Ctx<'_> {
    /// A validation error naming the file, the line (when the key is in
    /// the file) and the dotted key.
    fn invalid(&self, key: &'static str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            line: self.text.and_then(|t| load::line_of(t, key)),
            key,
            message,
        }
    }

    /// The duration at `key`, or `default` when the key is absent.
    fn duration(
        &self,
        key: &'static str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(t) => parse_duration(&t).map_err(|m| self.invalid(key, m)),
            None => Ok(default),
        }
    }
}

impl Config {
    /// Loads `path` (or embedded defaults when `None`), applies CLI overrides
    /// and validates. The upstream token is read here, from a file or an
    /// environment variable, never from the command line. A reload calls
    /// this again: everything a start checks, a reload checks.
    ///
    /// # Errors
    /// A `ConfigError` that names the file, the key and the problem.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = load::read_file(p)?;
                let raw = load::parse(&text, p)?;
                Self::validate(raw, p.to_path_buf(), Some(&text), overrides)
            }
            None => {
                Self::try_from_raw(RawConfig::default(), PathBuf::from("<defaults>"), overrides)
            }
        }
    }

    /// Parses and validates configuration text as if read from `path`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::validate(
            load::parse(text, path)?,
            path.to_path_buf(),
            Some(text),
            &Overrides::default(),
        )
    }

    /// Validates a parsed file, section by section; `source` is used in
    /// error messages.
    pub fn try_from_raw(
        raw: RawConfig,
        source: PathBuf,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::validate(raw, source, None, overrides)
    }

    /// Every section's validation, in file order; `text` (the file) lets
    /// errors name the line of their key.
    fn validate(
        raw: RawConfig,
        source: PathBuf,
        text: Option<&str>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let ctx = Ctx { source, text };
        let server = server::validate(raw.server, overrides, &ctx)?;
        let tls = tls::validate(
            raw.tls,
            !server.http_listen.is_empty(),
            overrides.acme_ip.as_deref(),
            &ctx,
        )?;
        let upstream = upstream::validate(raw.upstream, overrides, &ctx)?;
        let log = logging::validate(raw.log, &ctx)?;
        // passkeys (issue 22 §2): the default relying party comes from [server] and [tls].
        let mut raw_auth = raw.auth;
        let raw_passkeys = raw_auth.passkeys.take();
        let mut auth = auth::validate(raw_auth, &ctx)?;
        auth.passkeys = auth::passkeys(raw_passkeys, &server, &tls, &ctx)?;
        let policy = policy::validate(raw.policy, &ctx)?;
        let users = auth::users(raw.users, &ctx)?;
        let admin = admin::validate(raw.admin, &server, &ctx)?;
        let audit = audit::validate(raw.audit, &ctx)?;
        Ok(Config {
            source: ctx.source,
            server,
            tls,
            upstream,
            log,
            auth,
            policy,
            users,
            admin,
            audit,
        })
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = load_str("").expect("defaults are valid");
        assert_eq!(c.server.listen, vec!["0.0.0.0:8443".parse().expect("addr")]);
        assert_eq!(c.tls.mode, TlsMode::SelfSigned);
        assert!(!c.tls.hsts, "no HSTS with a self-signed certificate");
        assert_eq!(
            c.upstream.url,
            UpstreamAddr::Tcp {
                authority: "127.0.0.1:8888".into()
            }
        );
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.send_timeout, Duration::from_secs(60));
    }

    /// A send timeout under a second would cut off any answer larger than
    /// the socket's send buffer: refused with the file and line.
    #[test]
    fn a_send_timeout_under_a_second_is_refused() {
        let e = load_str("[server]\nsend_timeout = \"0s\"\n").expect_err("zero");
        assert!(e.to_string().contains("server.send_timeout"), "{e}");
        assert!(e.to_string().contains("at least 1s"), "{e}");
        let c = load_str("[server]\nsend_timeout = \"5m\"\n").expect("valid");
        assert_eq!(c.server.send_timeout, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_line_and_key() {
        let e = load_str("[server]\nlisten = [\"127.0.0.1:1\"]\nlistne = 3\n")
            .expect_err("typo must fail");
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml:3:"), "{msg}");
        assert!(msg.contains("listne"), "{msg}");
    }

    #[test]
    fn acme_identifiers_may_be_public_ip_addresses() {
        let c = load_str(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"203.0.113.7\", \"2001:DB8:0::1\", \"nb.example.com\"]\n",
        )
        .expect("public addresses");
        let acme = c.tls.acme.expect("acme");
        assert_eq!(
            acme.domains,
            ["203.0.113.7", "2001:db8::1", "nb.example.com"]
        );
        assert!(acme.has_ip());
        for private in [
            "10.1.2.3",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:8.8.8.8",
        ] {
            let e = load_str(&format!(
                "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"{private}\"]\n"
            ))
            .expect_err(private);
            assert!(
                e.to_string().contains("not a public address"),
                "{private}: {e}"
            );
        }
        // A test CA on this machine (Pebble) validates here: loopback is fine.
        let c = load_str(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"127.0.0.1\"]\ndirectory = \"https://127.0.0.1:14000/dir\"\n",
        )
        .expect("loopback with a local directory");
        assert_eq!(c.tls.acme.expect("acme").domains, ["127.0.0.1"]);
    }

    #[test]
    fn acme_ip_on_the_command_line_is_an_ip_certificate() {
        let o = Overrides {
            acme_ip: Some("203.0.113.9".into()),
            ..Overrides::default()
        };
        let c = Config::try_from_raw(RawConfig::default(), "<defaults>".into(), &o).expect("valid");
        assert_eq!(c.tls.mode, TlsMode::Acme);
        assert_eq!(c.tls.acme.expect("acme").domains, ["203.0.113.9"]);
        let o = Overrides {
            acme_ip: Some("192.168.1.5".into()),
            ..Overrides::default()
        };
        assert!(Config::try_from_raw(RawConfig::default(), "<defaults>".into(), &o).is_err());
    }

    #[test]
    fn an_acme_profile_name_is_checked() {
        let c = load_str("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"nb.example.com\"]\nprofile = \"tlsserver\"\n")
            .expect("valid");
        assert_eq!(
            c.tls.acme.expect("acme").profile.as_deref(),
            Some("tlsserver")
        );
        let e = load_str("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"nb.example.com\"]\nprofile = \"short lived\"\n")
            .expect_err("a space");
        assert!(e.to_string().contains("tls.acme.profile"), "{e}");
    }

    #[test]
    fn an_invalid_value_names_file_line_and_key() {
        let e =
            load_str("[server]\nlisten = [\"127.0.0.1:1\"]\n\n[policy]\nallow = [\"nonsense\"]\n")
                .expect_err("bad network");
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml:5: policy.allow: "), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_dotted_key() {
        let e = load_str("[server]\nmax_connections = \"many\"\n").expect_err("bad type");
        let msg = e.to_string();
        assert!(
            msg.contains("test.toml:2:") && msg.contains("server.max_connections"),
            "{msg}"
        );
    }

    #[test]
    fn bad_duration_names_the_key() {
        let e = load_str("[server]\nheader_read_timeout = \"ten seconds\"\n").expect_err("bad");
        assert!(e.to_string().contains("server.header_read_timeout"), "{e}");
    }

    #[test]
    fn policy_cidrs_are_parsed_masked_and_bad_ones_name_the_key() {
        let c = load_str("[policy]\nallow = [\"10.1.2.3/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n")
            .expect("valid policy");
        let shown: Vec<String> = c.policy.allow.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert!(c.policy.deny.is_empty() && !c.policy.proxy_protocol);
        let e = load_str("[policy]\ndeny = [\"10.0.0.0/33\"]\n").expect_err("bad prefix");
        let msg = e.to_string();
        assert!(
            msg.contains("policy.deny") && msg.contains("10.0.0.0/33"),
            "{msg}"
        );
        let e = load_str("[policy]\nallow = [\"example.com\"]\n").expect_err("not an address");
        assert!(e.to_string().contains("policy.allow"), "{e}");
    }

    #[test]
    fn proxy_protocol_without_trusted_proxies_is_refused() {
        let e = load_str("[policy]\nproxy_protocol = true\n").expect_err("no trusted proxies");
        assert!(e.to_string().contains("policy.trusted_proxies"), "{e}");
        let c = load_str("[policy]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n")
            .expect("valid");
        assert!(c.policy.proxy_protocol);
    }

    #[test]
    fn rate_limit_and_lockout_defaults_and_bounds() {
        let c = load_str("").expect("defaults");
        assert_eq!(c.policy.rate_limit.requests_per_second, 10);
        assert!(c.policy.rate_limit.logged_in_burst > c.policy.rate_limit.burst);
        assert!(c.policy.lockout.user_threshold > c.policy.lockout.address_threshold);
        assert!(load_str("[policy.rate_limit]\nburst = 0\n").is_err());
        assert!(load_str("[policy.lockout]\nduration = \"2h\"\n").is_err());
        assert!(load_str("[policy.lockout]\nunknown = 1\n").is_err());
        // Bounded: Instant + duration must never overflow.
        assert!(load_str("[policy.lockout]\naddress_max = \"1000000000years\"\n").is_err());
        assert_eq!(c.policy.lockout.refusal_delay, Duration::from_secs(1));
        let off = load_str("[policy.lockout]\nrefusal_delay = \"0s\"\n").expect("0s");
        assert!(off.policy.lockout.refusal_delay.is_zero());
        let e = load_str("[policy.lockout]\nrefusal_delay = \"1m\"\n").expect_err("too long");
        assert!(
            e.to_string().contains("policy.lockout.refusal_delay"),
            "{e}"
        );
        let e = load_str("[policy]\nforwarded_header = \"x-real-ip\"\n").expect_err("header");
        assert!(e.to_string().contains("policy.forwarded_header"), "{e}");
        assert_eq!(
            load_str("").expect("defaults").policy.forwarded_header,
            "x-forwarded-for"
        );
    }

    #[test]
    fn files_mode_requires_cert_and_key() {
        let e = load_str("[tls]\nmode = \"files\"\n").expect_err("missing cert");
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
    }

    #[test]
    fn acme_mode_without_domains_names_the_key() {
        let e = load_str("[tls]\nmode = \"acme\"\n").expect_err("no domains");
        assert!(
            e.to_string()
                .contains("tls.acme.domains: must be set when tls.mode = \"acme\""),
            "{e}"
        );
    }

    #[test]
    fn acme_defaults_are_letsencrypt_p256_and_challenges_follow_the_listeners() {
        let c = load_str("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"NB.Example.org\"]\n")
            .expect("valid");
        let a = c.tls.acme.expect("acme section");
        assert_eq!(a.domains, ["nb.example.org"]);
        assert_eq!(a.directory, LETSENCRYPT_DIRECTORY);
        assert_eq!(a.key_type, AcmeKeyType::EcdsaP256);
        assert_eq!(a.challenges, [AcmeChallenge::TlsAlpn01]);
        assert!(c.tls.hsts, "a CA-issued certificate gets HSTS by default");
        let c = load_str(
            "[server]\nhttp_listen = [\"0.0.0.0:80\"]\n[tls]\nmode = \"acme\"\n\
             [tls.acme]\ndomains = [\"nb.example.org\"]\ncontact = \"ops@example.org\"\n\
             directory = \"letsencrypt-staging\"\n",
        )
        .expect("valid");
        let a = c.tls.acme.expect("acme section");
        assert_eq!(
            a.challenges,
            [AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01]
        );
        assert_eq!(a.contact, ["mailto:ops@example.org"]);
        assert_eq!(a.directory, LETSENCRYPT_STAGING_DIRECTORY);
    }

    #[test]
    fn acme_rejects_wildcards_private_addresses_dns01_and_half_an_eab() {
        let base = "[tls]\nmode = \"acme\"\n[tls.acme]\n";
        for (extra, key) in [
            ("domains = [\"*.example.org\"]", "tls.acme.domains"),
            ("domains = [\"10.0.0.1\"]", "tls.acme.domains"),
            (
                "domains = [\"a.example.org\"]\nchallenges = [\"dns-01\"]",
                "tls.acme.challenges",
            ),
            (
                "domains = [\"a.example.org\"]\neab_key_id = \"kid\"",
                "tls.acme.eab_hmac_key_file",
            ),
            (
                "domains = [\"a.example.org\"]\ndirectory = \"http://ca.example\"",
                "tls.acme.directory",
            ),
        ] {
            let e = load_str(&format!("{base}{extra}\n")).expect_err(extra);
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
        let e = load_str("[tls.acme]\ndomains = [\"a.example.org\"]\n").expect_err("wrong mode");
        assert!(e.to_string().contains("tls.acme"), "{e}");
    }

    #[test]
    fn upstream_tokens_are_limited_to_characters_no_page_escapes() {
        assert!(valid_upstream_token("0123abcdef"));
        assert!(valid_upstream_token("base64url-_token~x.y"));
        for bad in ["", "a\"b", "a<b", "a&b", "a+b", "a/b", "a b", "a%20"] {
            assert!(!valid_upstream_token(bad), "{bad:?}");
        }
        std::env::set_var("NBGATE_TEST_TOKEN_CHARS", "tok/en");
        let err =
            load_str("[upstream]\ntoken_env = \"NBGATE_TEST_TOKEN_CHARS\"\n").expect_err("refused");
        assert!(err.to_string().contains("letters, digits"), "{err}");
    }

    #[test]
    fn check_config_output_redacts_the_token() {
        std::env::set_var("NBGATE_TEST_TOKEN_CONFIG", "s3cr3t-token");
        let c = load_str("[upstream]\ntoken_env = \"NBGATE_TEST_TOKEN_CONFIG\"\n").expect("valid");
        let out = c.to_toml();
        assert!(!out.contains("s3cr3t-token"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn a_bad_value_names_file_line_and_key() {
        let e = load_str("[server]\nmax_connections = 0\n").expect_err("zero");
        assert_eq!(
            e.to_string(),
            "test.toml:2: server.max_connections: must be at least 1"
        );
        // The same key written as a dotted key under its parent table.
        let e = load_str("[policy]\nlockout.duration = \"2h\"\n").expect_err("too long");
        assert!(
            e.to_string()
                .starts_with("test.toml:2: policy.lockout.duration:"),
            "{e}"
        );
    }

    #[test]
    fn identity_header_is_off_by_default_and_a_reserved_one_names_file_line_and_key() {
        assert!(load_str("")
            .expect("defaults")
            .upstream
            .identity_header
            .is_none());
        let c = load_str("[upstream]\nidentity_header = \"X-Nbgate-User\"\n").expect("valid");
        assert_eq!(
            c.upstream.identity_header.expect("set").as_str(),
            "x-nbgate-user"
        );
        let e = load_str("[upstream]\n\nidentity_header = \"Cookie\"\n").expect_err("reserved");
        assert!(
            e.to_string()
                .starts_with("test.toml:3: upstream.identity_header: \"Cookie\""),
            "{e}"
        );
    }

    #[test]
    fn log_level_is_an_env_filter_and_a_bad_one_names_file_line_and_key() {
        assert_eq!(load_str("").expect("defaults").log.level, "info");
        let c = load_str("[log]\nlevel = \"warn,nbgate::access=info\"\n").expect("valid");
        assert_eq!(c.log.level, "warn,nbgate::access=info");
        let e = load_str("[log]\nformat = \"text\"\nlevel = \"nbgate=loud\"\n").expect_err("bad");
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml:3: log.level: "), "{msg}");
    }

    #[test]
    fn admin_is_off_by_default_and_loopback_only_without_a_token() {
        assert!(load_str("").expect("defaults").admin.is_none());
        let c = load_str("[admin]\nlisten = \"127.0.0.1:9180\"\n").expect("loopback");
        let a = c.admin.expect("admin on");
        assert!(!a.tls(), "loopback without a token is plain HTTP");
        assert!(load_str("[admin]\nlisten = \"[::1]:9180\"\n").is_ok());
        for addr in ["0.0.0.0:9180", "192.0.2.1:9180", "[::]:9180"] {
            let e = load_str(&format!("[admin]\nlisten = \"{addr}\"\n")).expect_err(addr);
            let msg = e.to_string();
            assert!(
                msg.contains("test.toml:2: admin.listen:") && msg.contains("admin.token_file"),
                "{msg}"
            );
        }
        let e = load_str("[admin]\ntoken_file = \"/x\"\n").expect_err("no listen");
        assert!(e.to_string().contains("admin.token_file"), "{e}");
        let e = load_str(
            "[server]\nlisten = [\"0.0.0.0:9180\"]\n[admin]\nlisten = \"127.0.0.1:9180\"\n",
        )
        .expect_err("clash");
        assert!(e.to_string().contains("admin.listen"), "{e}");
    }

    #[test]
    fn admin_with_a_token_file_serves_tls_anywhere_and_refuses_short_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").expect("write");
        let short = dir.path().join("short");
        std::fs::write(&short, "letmein").expect("write");
        let c = load_str(&format!(
            "[admin]\nlisten = \"0.0.0.0:9180\"\ntoken_file = {:?}\n",
            good.display().to_string()
        ))
        .expect("token makes any address valid");
        let a = c.admin.clone().expect("admin on");
        assert!(a.tls());
        assert_eq!(
            a.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(!c.to_toml().contains("0123456789abcdef"), "token printed");
        let e = load_str(&format!(
            "[admin]\nlisten = \"127.0.0.1:9180\"\ntoken_file = {:?}\n",
            short.display().to_string()
        ))
        .expect_err("short token");
        assert!(e.to_string().contains("at least 16"), "{e}");
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nbgate.example.toml");
        Config::load(Some(&path), &Overrides::default()).expect("example is valid");
    }
}
