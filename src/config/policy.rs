//! `[policy]`: who may connect, how often, and how many wrong passwords
//! they get.

use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::raw::RawPolicy;
use super::values::{parse_cidr, parse_duration, ser_duration};
use super::{ConfigError, Ctx};

/// Who may connect, how often, and how many wrong passwords they get.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    /// Client networks allowed in; empty means everyone.
    pub allow: Vec<IpNet>,
    /// Client networks refused; wins over `allow`.
    pub deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers and PROXY
    /// protocol headers are believed. Nobody else's are.
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write: `x-forwarded-for` or
    /// `forwarded`. Only that one is read; the other passes through from
    /// the client untouched by most proxies and is therefore ignored.
    pub forwarded_header: String,
    /// HTTPS listeners expect a PROXY protocol v1/v2 header first.
    pub proxy_protocol: bool,
    pub max_connections_per_client: usize,
    pub rate_limit: RateLimitConfig,
    pub lockout: LockoutConfig,
}

/// Per-client request rates (GCRA: a steady rate plus a burst).
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitConfig {
    /// Clients without a session: login pages, refused requests.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Logged-in users: JupyterLab fires a hundred requests at page load.
    pub logged_in_requests_per_second: u32,
    pub logged_in_burst: u32,
    /// Hard cap on tracked client addresses (memory stays flat in a flood).
    pub max_clients: usize,
}

/// Brute-force protection for logins and API tokens.
#[derive(Debug, Clone, Serialize)]
pub struct LockoutConfig {
    /// Wrong attempts from one address before it is locked.
    pub address_threshold: u32,
    /// Wrong attempts for one user name (from anywhere) before it is locked.
    pub user_threshold: u32,
    /// The first lockout; each further one doubles.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub address_max: Duration,
    /// Bound on a user-name lockout: how long a guessing flood from
    /// elsewhere can keep the owner out.
    #[serde(serialize_with = "ser_duration")]
    pub user_max: Duration,
    /// How long a refused login or token attempt (locked out, or too many
    /// verifications in flight) waits for its answer. See `Guard::hold_refusal`.
    #[serde(serialize_with = "ser_duration")]
    pub refusal_delay: Duration,
}

/// Validates `[policy]` and applies its defaults.
pub(super) fn validate(p: RawPolicy, ctx: &Ctx) -> Result<PolicyConfig, ConfigError> {
    let nets = |key: &'static str, v: Option<Vec<String>>| -> Result<Vec<IpNet>, ConfigError> {
        v.unwrap_or_default()
            .iter()
            .map(|t| parse_cidr(t).map_err(|m| ctx.invalid(key, m)))
            .collect()
    };
    let allow = nets("policy.allow", p.allow)?;
    let deny = nets("policy.deny", p.deny)?;
    let trusted_proxies = nets("policy.trusted_proxies", p.trusted_proxies)?;
    let forwarded_header = p
        .forwarded_header
        .unwrap_or_else(|| "x-forwarded-for".to_owned())
        .to_ascii_lowercase();
    if !matches!(forwarded_header.as_str(), "x-forwarded-for" | "forwarded") {
        return Err(ctx.invalid(
            "policy.forwarded_header",
            format!("{forwarded_header:?}: expected \"x-forwarded-for\" or \"forwarded\""),
        ));
    }
    let proxy_protocol = p.proxy_protocol.unwrap_or(false);
    if proxy_protocol && trusted_proxies.is_empty() {
        return Err(ctx.invalid(
            "policy.proxy_protocol",
            "needs policy.trusted_proxies: PROXY headers are only accepted from trusted proxies"
                .into(),
        ));
    }
    let positive = |key: &'static str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(ctx.invalid(key, "must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let r = p.rate_limit;
    let rate_limit = RateLimitConfig {
        requests_per_second: positive(
            "policy.rate_limit.requests_per_second",
            r.requests_per_second,
            10,
        )?,
        burst: positive("policy.rate_limit.burst", r.burst, 40)?,
        logged_in_requests_per_second: positive(
            "policy.rate_limit.logged_in_requests_per_second",
            r.logged_in_requests_per_second,
            200,
        )?,
        logged_in_burst: positive("policy.rate_limit.logged_in_burst", r.logged_in_burst, 1000)?,
        max_clients: match r.max_clients {
            Some(n) if n < 100 => {
                return Err(ctx.invalid(
                    "policy.rate_limit.max_clients",
                    "must be at least 100".into(),
                ))
            }
            Some(n) => n,
            None => 100_000,
        },
    };
    let l = p.lockout;
    let dur = |key: &'static str, v: Option<String>, default: Duration| match v {
        Some(t) => match parse_duration(&t) {
            Ok(d) if d.is_zero() => Err(ctx.invalid(key, "must be longer than 0s".into())),
            // Bounded so that `Instant + duration` can never overflow.
            Ok(d) if d > Duration::from_secs(30 * 24 * 3600) => {
                Err(ctx.invalid(key, "must be at most 30 days".into()))
            }
            Ok(d) => Ok(d),
            Err(m) => Err(ctx.invalid(key, m)),
        },
        None => Ok(default),
    };
    let lockout = LockoutConfig {
        address_threshold: positive("policy.lockout.address_threshold", l.address_threshold, 10)?,
        user_threshold: positive("policy.lockout.user_threshold", l.user_threshold, 50)?,
        duration: dur(
            "policy.lockout.duration",
            l.duration,
            Duration::from_secs(60),
        )?,
        address_max: dur(
            "policy.lockout.address_max",
            l.address_max,
            Duration::from_secs(3600),
        )?,
        user_max: dur(
            "policy.lockout.user_max",
            l.user_max,
            Duration::from_secs(300),
        )?,
        refusal_delay: match l.refusal_delay {
            Some(t) => match parse_duration(&t) {
                // 0s switches the delay off; more than 10s only makes
                // legitimate users wait without slowing a guesser further.
                Ok(d) if d > Duration::from_secs(10) => {
                    return Err(
                        ctx.invalid("policy.lockout.refusal_delay", "must be at most 10s".into())
                    )
                }
                Ok(d) => d,
                Err(m) => return Err(ctx.invalid("policy.lockout.refusal_delay", m)),
            },
            None => Duration::from_secs(1),
        },
    };
    if lockout.duration > lockout.address_max || lockout.duration > lockout.user_max {
        return Err(ctx.invalid(
            "policy.lockout.duration",
            "must not exceed policy.lockout.address_max or user_max".into(),
        ));
    }
    let max_connections_per_client = p.max_connections_per_client.unwrap_or(256);
    if max_connections_per_client == 0 {
        return Err(ctx.invalid(
            "policy.max_connections_per_client",
            "must be at least 1".into(),
        ));
    }
    Ok(PolicyConfig {
        allow,
        deny,
        trusted_proxies,
        forwarded_header,
        proxy_protocol,
        max_connections_per_client,
        rate_limit,
        lockout,
    })
}
