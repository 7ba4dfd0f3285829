//! The running access policy: the `[policy]` configuration turned into the
//! lookup structures of `crate::policy`, plus the little state that needs a
//! server around it (open connections per client, throttled audit lines).
//!
//! Decisions stay in `crate::policy`; this module only holds them together
//! so that `server` (at accept) and the request path ask one object. It does
//! not log requests or build responses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::PolicyConfig;
use crate::policy::{
    self, AccessList, Cidr, Class, IpSet, Locked, Lockout, LockoutConfig, RateLimiter, RateQuota,
};

/// How often stale rate-limit keys and expired lockouts are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Audit lines about refused connections per second at most; the rest are
/// counted and reported with the next line (a port scan must not flood the
/// log or the disk).
const REFUSAL_LINES_PER_SECOND: u32 = 5;

/// The policy a running server enforces.
pub struct Guard {
    pub access: AccessList,
    /// Peers whose forwarding headers and PROXY headers are believed.
    pub trusted: IpSet,
    forwarded_header: policy::ForwardedHeader,
    pub proxy_protocol: bool,
    /// The state below is shared with the guard a reload makes
    /// (`Guard::reloaded`), so counts survive it.
    limiter: Arc<RateLimiter>,
    /// The quotas `limiter` was made with.
    quotas: (RateQuota, RateQuota, usize),
    pub lockout: Arc<Lockout>,
    conns: Arc<ConnCounts>,
    refusal_lines: DefaultDirectRateLimiter,
    refusals_suppressed: AtomicU64,
    refusal_delay: Duration,
}

fn ip_set(nets: &[IpNet]) -> IpSet {
    let cidrs: Vec<Cidr> = nets
        .iter()
        .map(|n| Cidr::try_new(n.addr(), n.prefix_len()).expect("ipnet prefixes are in range"))
        .collect();
    IpSet::new(&cidrs)
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn quotas(p: &PolicyConfig) -> (RateQuota, RateQuota, usize) {
    let quota = |rate: u32, burst: u32| RateQuota {
        per_second: non_zero(rate),
        burst: non_zero(burst),
    };
    let rl = &p.rate_limit;
    (
        quota(rl.requests_per_second, rl.burst),
        quota(rl.logged_in_requests_per_second, rl.logged_in_burst),
        rl.max_clients,
    )
}

fn lockout_config(p: &PolicyConfig) -> LockoutConfig {
    let l = &p.lockout;
    LockoutConfig {
        ip_threshold: l.address_threshold,
        user_threshold: l.user_threshold,
        base: l.duration,
        ip_max: l.address_max,
        user_max: l.user_max,
        max_keys: p.rate_limit.max_clients,
    }
}

impl Guard {
    pub fn new(p: &PolicyConfig) -> Guard {
        let quotas = quotas(p);
        let limiter = Arc::new(RateLimiter::new(quotas.0, quotas.1, quotas.2));
        let conns = Arc::new(ConnCounts {
            max: AtomicUsize::new(p.max_connections_per_client),
            open: Mutex::new(HashMap::new()),
        });
        let lockout = Arc::new(Lockout::new(lockout_config(p)));
        Guard::with_state(p, limiter, quotas, lockout, conns)
    }

    /// The guard for a reloaded `[policy]`, sharing this one's state: the
    /// open connections per client, the lockout's counts and locks (under
    /// the new thresholds, `Lockout::reconfigure`) and the rate limiter's
    /// buckets. Only new rate quotas start new buckets (governor fixes a
    /// limiter's quota when it is made), which is named in the log: a
    /// bucket refills within seconds anyway, while lockout state, which
    /// lasts hours, is never lost.
    pub fn reloaded(&self, p: &PolicyConfig) -> Guard {
        let quotas = quotas(p);
        let limiter = if quotas == self.quotas {
            Arc::clone(&self.limiter)
        } else {
            tracing::info!(
                "policy.rate_limit changed: request budgets start full under the new quotas"
            );
            Arc::new(RateLimiter::new(quotas.0, quotas.1, quotas.2))
        };
        self.lockout.reconfigure(lockout_config(p));
        self.conns
            .max
            .store(p.max_connections_per_client, Ordering::Relaxed);
        Guard::with_state(
            p,
            limiter,
            quotas,
            Arc::clone(&self.lockout),
            Arc::clone(&self.conns),
        )
    }

    fn with_state(
        p: &PolicyConfig,
        limiter: Arc<RateLimiter>,
        quotas: (RateQuota, RateQuota, usize),
        lockout: Arc<Lockout>,
        conns: Arc<ConnCounts>,
    ) -> Guard {
        Guard {
            access: AccessList {
                allow: ip_set(&p.allow),
                deny: ip_set(&p.deny),
            },
            trusted: ip_set(&p.trusted_proxies),
            forwarded_header: if p.forwarded_header == "forwarded" {
                policy::ForwardedHeader::Forwarded
            } else {
                policy::ForwardedHeader::XForwardedFor
            },
            proxy_protocol: p.proxy_protocol,
            limiter,
            quotas,
            lockout,
            conns,
            refusal_lines: governor::RateLimiter::direct(
                Quota::per_second(non_zero(REFUSAL_LINES_PER_SECOND))
                    .allow_burst(non_zero(REFUSAL_LINES_PER_SECOND * 4)),
            ),
            refusals_suppressed: AtomicU64::new(0),
            refusal_delay: p.lockout.refusal_delay,
        }
    }

    /// Holds a refused login or token attempt (locked out, or every
    /// verification slot taken) before it is answered.
    ///
    /// Why: a refusal costs no hashing, so a guesser that sends its next
    /// attempt as soon as the last is answered would otherwise get tens of
    /// thousands of answers per second per core, each a page, an audit line
    /// and CPU taken from logged-in users. Held on a timer, a connection
    /// gets at most one refused answer per `refusal_delay`; waiting costs
    /// the server a timer entry, and the number of waiting connections is
    /// bounded by the per-client and overall connection caps. The delay is
    /// at most `Retry-After`, so a legitimate client loses nothing.
    pub async fn hold_refusal(&self) {
        if !self.refusal_delay.is_zero() {
            tokio::time::sleep(self.refusal_delay).await;
        }
    }

    /// Whether the accept loop may skip the allowlist for this peer: a
    /// trusted proxy speaks for other clients, whose addresses are checked
    /// once known (PROXY header or forwarding headers).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.contains(peer)
    }

    /// The client a request speaks for: the connection's client, or, when
    /// that is a trusted proxy, the address its forwarding header names.
    /// `None`: a trusted proxy's header hides the client (the allowlist
    /// then refuses it; limits count it against the proxy's address).
    ///
    /// With PROXY protocol the connection's client is already the real one
    /// and headers are never read: a layer-4 balancer cannot write HTTP
    /// headers, so any there came from the client itself.
    pub fn client_of(&self, conn_client: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let ip = policy::normalize(conn_client);
        if self.trusted.is_empty() || self.proxy_protocol {
            return Some(ip);
        }
        policy::client_addr(ip, headers, &self.trusted, self.forwarded_header)
            .map(policy::normalize)
    }

    /// Counts a request against the client's budget.
    ///
    /// # Errors
    /// The whole seconds to wait (at least 1), for `Retry-After`.
    pub fn check_rate(&self, client: IpAddr, logged_in: bool) -> Result<(), u64> {
        let class = if logged_in {
            Class::LoggedIn
        } else {
            Class::Anonymous
        };
        self.limiter.check(client, class).map_err(retry_secs)
    }

    /// Takes a connection slot for `client`, or `None` at the per-client cap.
    pub fn open_connection(&self, client: IpAddr) -> Option<ConnSlot> {
        ConnCounts::acquire(&self.conns, client)
    }

    /// Logs a refused connection on `nbgate::audit`, at most a few lines a
    /// second; suppressed ones are counted in the next line.
    pub fn audit_refusal(&self, client: IpAddr, reason: &'static str) {
        crate::metrics::denied(reason);
        if self.refusal_lines.check().is_err() {
            self.refusals_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.refusals_suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(target: "nbgate::audit", event = "connection_refused", %client, reason, suppressed, "connection refused");
    }

    /// Drops state that no longer changes a decision (called on a timer).
    pub fn sweep(&self) {
        self.limiter.evict_stale();
        self.lockout.evict_expired(Instant::now());
    }

    /// A one-paragraph summary for `check-config`.
    pub fn describe(&self) -> String {
        let trusted = if self.trusted.is_empty() {
            "none (forwarding headers are ignored and replaced)".to_owned()
        } else {
            let list: Vec<String> = self
                .trusted
                .cidrs()
                .iter()
                .map(ToString::to_string)
                .collect();
            list.join(", ")
        };
        format!(
            "{}\ntrusted proxies: {trusted}\nPROXY protocol: {}",
            self.access.describe(),
            if self.proxy_protocol {
                "required on every listener"
            } else {
                "off"
            }
        )
    }
}

/// `Retry-After` seconds for a wait: rounded up, never 0.
pub fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The lockout's wait in whole seconds, for the page and `Retry-After`.
pub fn locked_secs(locked: &Locked) -> u64 {
    retry_secs(locked.retry_after)
}

/// Open connections per client key (IPv4 address, IPv6 /64). Entries are
/// removed at zero, so the map never holds more than the open connections.
struct ConnCounts {
    /// `policy.max_connections_per_client`; a reload changes it in place.
    max: AtomicUsize,
    /// std Mutex: a counter update, never held across `.await`.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client; gives its slot back on drop.
pub struct ConnSlot {
    counts: Arc<ConnCounts>,
    key: IpAddr,
}

/// The map key: the address, or the /64 of an IPv6 address (one IPv6 host
/// owns a whole /64 and could otherwise open `max` per address).
fn conn_key(ip: IpAddr) -> IpAddr {
    match policy::normalize(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

impl ConnCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn acquire(this: &Arc<Self>, client: IpAddr) -> Option<ConnSlot> {
        let key = conn_key(client);
        let mut open = this.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= this.max.load(Ordering::Relaxed) {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            counts: Arc::clone(this),
            key,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn guard(toml: &str) -> Guard {
        let c = Config::from_text(toml, std::path::Path::new("t.toml")).expect("config");
        Guard::new(&c.policy)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn connection_cap_is_per_client_and_slots_come_back() {
        let g = guard("[policy]\nmax_connections_per_client = 2\n");
        let a1 = g.open_connection(ip("127.0.0.2")).expect("first");
        let _a2 = g
            .open_connection(ip("::ffff:127.0.0.2"))
            .expect("second (mapped)");
        assert!(
            g.open_connection(ip("127.0.0.2")).is_none(),
            "third refused"
        );
        assert!(g.open_connection(ip("127.0.0.3")).is_some(), "other client");
        drop(a1);
        assert!(
            g.open_connection(ip("127.0.0.2")).is_some(),
            "slot returned"
        );
    }

    #[test]
    fn ipv6_connections_are_counted_per_64() {
        let g = guard("[policy]\nmax_connections_per_client = 1\n");
        let _a = g.open_connection(ip("2001:db8::1")).expect("first");
        assert!(g.open_connection(ip("2001:db8::2")).is_none());
        assert!(g.open_connection(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9".parse().expect("hv"));
        let open = guard("");
        assert_eq!(open.client_of(ip("127.0.0.2"), &h), Some(ip("127.0.0.2")));
        let behind = guard("[policy]\ntrusted_proxies = [\"127.0.0.4\"]\n");
        assert_eq!(behind.client_of(ip("127.0.0.2"), &h), Some(ip("127.0.0.2")));
        assert_eq!(
            behind.client_of(ip("127.0.0.4"), &h),
            Some(ip("203.0.113.9"))
        );
        // Behind a layer-4 balancer headers come from the client: ignored.
        let l4 = guard("[policy]\ntrusted_proxies = [\"127.0.0.4\"]\nproxy_protocol = true\n");
        assert_eq!(l4.client_of(ip("127.0.0.4"), &h), Some(ip("127.0.0.4")));
        // Garbage reached by the walk: unknown, never the proxy's address.
        h.insert("x-forwarded-for", "junk".parse().expect("hv"));
        assert_eq!(behind.client_of(ip("127.0.0.4"), &h), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }

    #[test]
    fn anonymous_budget_runs_out_before_the_logged_in_one() {
        let g = guard("[policy.rate_limit]\nrequests_per_second = 1\nburst = 2\n");
        let c = ip("127.0.0.2");
        assert!(g.check_rate(c, false).is_ok());
        assert!(g.check_rate(c, false).is_ok());
        assert_eq!(g.check_rate(c, false), Err(1));
        assert!(
            g.check_rate(c, true).is_ok(),
            "logged-in budget is separate"
        );
    }

    #[test]
    fn a_reloaded_guard_keeps_locks_and_open_connections_under_new_rules() {
        let g = guard(
            "[policy]\nmax_connections_per_client = 2\n[policy.lockout]\naddress_threshold = 2\n",
        );
        let now = Instant::now();
        let locked = ip("203.0.113.9");
        g.lockout.record_failure(locked, None, now);
        assert!(g.lockout.record_failure(locked, None, now).is_some());
        let _a = g.open_connection(ip("127.0.0.2")).expect("first");
        let _b = g.open_connection(ip("127.0.0.2")).expect("second");

        let c = Config::from_text(
            "[policy]\nallow = [\"127.0.0.0/8\"]\nmax_connections_per_client = 3\n",
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        let r = g.reloaded(&c.policy);
        assert!(
            r.lockout.check(locked, None, now).is_err(),
            "the lock is kept"
        );
        assert!(r.access.permits(ip("127.0.0.5")) && !r.access.permits(ip("10.0.0.1")));
        // Two slots are still open; the new cap allows one more.
        let _c = r
            .open_connection(ip("127.0.0.2"))
            .expect("third under the new cap");
        assert!(r.open_connection(ip("127.0.0.2")).is_none());
    }
}
