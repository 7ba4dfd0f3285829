//! Per-client request rate limits (GCRA via `governor`) with bounded memory.
//!
//! Owns the decision "may this client make one more request now, and if not,
//! how long until it may". Clients are keyed by IPv4 address or IPv6 /64 (see
//! [`ClientKey`]); anonymous and logged-in requests draw on separate budgets
//! so JupyterLab's burst of parallel requests at page load never meets the
//! limit meant for unauthenticated scanners.
//!
//! # Bounded memory
//! A keyed limiter that adds one entry per new address grows without bound
//! under a flood of distinct source addresses (Traefik's does: traefik#13704),
//! and IPv6 makes distinct addresses free. Here the number of tracked keys has
//! a hard cap, `max_keys`, shared by both classes:
//!
//! - A key already tracked always uses its own bucket.
//! - A new key gets its own bucket while fewer than `max_keys` are tracked.
//! - At the cap, stale keys (whose bucket is back to full burst, so forgetting
//!   them changes no decision) are swept first, at most once per
//!   [`SWEEP_INTERVAL`] so a flood cannot make every request pay for a sweep.
//! - If the map is still full, the new key is checked against one shared
//!   *overflow* bucket per class, with the class's quota.
//!
//! Trade-off: during a flood large enough to fill the map, clients that were
//! not already tracked share one budget with the flood, so they may be
//! refused; clients that were tracked keep their own budget, and memory stays
//! flat. Refusing new clients under attack is preferred to either growing
//! without bound or evicting active buckets (which would hand an attacker a
//! fresh burst on every eviction).
//!
//! It must not do I/O or decide on status codes: it returns `Err(retry_after)`
//! and the caller answers 429 with `Retry-After` (rounded up to whole seconds).

use std::fmt;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::Quota;

use super::ClientKey;

/// The default hard cap on tracked keys (both classes together). At about
/// 40 bytes per entry including the hash table's slack, 100,000 keys are a
/// few megabytes, and more distinct clients than that within a few seconds
/// is an attack, not a user base.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// At the cap, stale keys are swept inline at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A request budget: a sustained rate and a burst on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Requests per second replenished.
    pub per_second: NonZeroU32,
    /// Requests that may arrive at once after a quiet period.
    pub burst: NonZeroU32,
}

impl RateQuota {
    fn to_governor(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No valid session or token: the strict budget meant for strangers.
    Anonymous,
    /// A valid session or API token: the generous budget.
    LoggedIn,
}

/// A governor keyed limiter over the capped store.
type Keyed<C> =
    governor::RateLimiter<ClientKey, CappedStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Two keyed GCRA limiters (anonymous and logged-in) sharing one hard cap on
/// tracked keys. `Send + Sync`; `check` takes `&self`.
///
/// Generic over the clock only so tests can use governor's
/// `FakeRelativeClock`; production code names it as plain `RateLimiter`.
pub struct RateLimiter<C: Clock = DefaultClock> {
    anonymous: Keyed<C>,
    logged_in: Keyed<C>,
    /// Keys tracked by both stores together; each store reserves a slot here
    /// before inserting, so the cap holds under concurrent inserts.
    tracked: Arc<AtomicUsize>,
    max_keys: usize,
    clock: C,
    /// Origin for `last_sweep`.
    start: C::Instant,
    /// Nanoseconds after `start` of the last at-cap sweep, plus one; 0 = never.
    last_sweep: AtomicU64,
}

impl RateLimiter<DefaultClock> {
    /// A limiter on the real monotonic clock. `max_keys` is the hard cap on
    /// tracked keys for both classes together (at least 1).
    pub fn new(anonymous: RateQuota, logged_in: RateQuota, max_keys: usize) -> RateLimiter {
        RateLimiter::with_clock(anonymous, logged_in, max_keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on `clock`; tests pass a `governor::clock::FakeRelativeClock`
    /// and keep a clone of it to advance time.
    pub fn with_clock(
        anonymous: RateQuota,
        logged_in: RateQuota,
        max_keys: usize,
        clock: C,
    ) -> RateLimiter<C> {
        let max_keys = max_keys.max(1);
        let tracked = Arc::new(AtomicUsize::new(0));
        let store = || CappedStore::new(Arc::clone(&tracked), max_keys);
        RateLimiter {
            anonymous: governor::RateLimiter::new(anonymous.to_governor(), store(), clock.clone()),
            logged_in: governor::RateLimiter::new(logged_in.to_governor(), store(), clock.clone()),
            start: clock.now(),
            tracked,
            max_keys,
            clock,
            last_sweep: AtomicU64::new(0),
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// Counts one request from `ip` against `class`'s budget.
    ///
    /// Returns `Err(wait)` when refused: `wait` is the exact time until a
    /// request from this client would pass (the caller rounds it up to whole
    /// seconds for `Retry-After`). Refused requests do not use up budget.
    pub fn check(&self, ip: IpAddr, class: Class) -> Result<(), Duration> {
        let key = ClientKey::of(ip);
        if self.tracked.load(Ordering::Relaxed) >= self.max_keys {
            self.sweep_if_due();
        }
        let limiter = match class {
            Class::Anonymous => &self.anonymous,
            Class::LoggedIn => &self.logged_in,
        };
        match limiter.check_key(&key) {
            Ok(_) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Drops keys whose bucket is back to full burst: forgetting them changes
    /// no decision. The server calls this on a schedule (every ~10 s).
    pub fn evict_stale(&self) {
        self.anonymous.retain_recent();
        self.logged_in.retain_recent();
    }

    /// The number of keys tracked now, both classes together; never more than
    /// `max_keys`.
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// The hard cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Sweeps stale keys if none was swept within [`SWEEP_INTERVAL`]; only
    /// one caller wins the race to sweep.
    fn sweep_if_due(&self) {
        let now = self.clock.now().duration_since(self.start).as_u64() + 1;
        let last = self.last_sweep.load(Ordering::Relaxed);
        let interval = Nanos::from(SWEEP_INTERVAL).as_u64();
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.evict_stale();
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("tracked_keys", &self.tracked_keys())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

/// One GCRA state: the theoretical arrival time in nanoseconds since the
/// limiter's start; 0 means "never used" (governor's convention).
#[derive(Default)]
struct Slot(AtomicU64);

impl Slot {
    /// governor's compare-and-swap loop (`InMemoryState::measure_and_replace_one`,
    /// which is crate-private there).
    fn measure<T, F, E>(&self, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (result, next) = f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get())))?;
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(result),
                Err(actual) => prev = actual,
            }
        }
    }
}

/// A governor state store with a hard cap on keys and an overflow bucket.
///
/// Keys are hashed with std's randomly keyed SipHash (DashMap's default):
/// client addresses are attacker-chosen, and a fixed hash would let a flood
/// aim at one bucket chain.
struct CappedStore {
    map: DashMap<ClientKey, Slot>,
    /// The bucket shared by new keys while the map is full.
    overflow: Slot,
    tracked: Arc<AtomicUsize>,
    max_keys: usize,
}

impl CappedStore {
    fn new(tracked: Arc<AtomicUsize>, max_keys: usize) -> CappedStore {
        CappedStore {
            map: DashMap::new(),
            overflow: Slot::default(),
            tracked,
            max_keys,
        }
    }

    /// Takes one of the `max_keys` slots, if any is free.
    fn reserve(&self) -> bool {
        self.tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

impl StateStore for CappedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Fast path: a tracked key under the shard's read lock.
        if let Some(slot) = self.map.get(key) {
            return slot.measure(f);
        }
        match self.map.entry(*key) {
            Entry::Occupied(slot) => slot.get().measure(f),
            Entry::Vacant(vacant) => {
                if self.reserve() {
                    vacant.insert(Slot::default()).measure(f)
                } else {
                    drop(vacant);
                    self.overflow.measure(f)
                }
            }
        }
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.map.retain(|_, slot| {
            let keep = slot.0.load(Ordering::Relaxed) > drop_below;
            if !keep {
                self.tracked.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn quota(per_second: u32, burst: u32) -> RateQuota {
        RateQuota {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(max_keys: usize) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(quota(2, 5), quota(10, 50), max_keys, clock.clone());
        (l, clock)
    }

    fn burst(l: &RateLimiter<FakeRelativeClock>, ip: IpAddr, class: Class, n: u32) {
        for i in 0..n {
            assert_eq!(l.check(ip, class), Ok(()), "request {i} of the burst");
        }
    }

    #[test]
    fn burst_passes_then_next_is_refused_with_exact_retry_after_then_passes_again() {
        let (l, clock) = limiter(100);
        let a = ip("192.0.2.1");
        burst(&l, a, Class::Anonymous, 5);
        // 2 per second: one cell every 500 ms.
        assert_eq!(
            l.check(a, Class::Anonymous),
            Err(Duration::from_millis(500))
        );
        clock.advance(Duration::from_millis(200));
        assert_eq!(
            l.check(a, Class::Anonymous),
            Err(Duration::from_millis(300))
        );
        clock.advance(Duration::from_millis(299));
        assert_eq!(l.check(a, Class::Anonymous), Err(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check(a, Class::Anonymous), Ok(()));
        assert_eq!(
            l.check(a, Class::Anonymous),
            Err(Duration::from_millis(500))
        );
    }

    #[test]
    fn refused_requests_do_not_use_up_budget() {
        let (l, clock) = limiter(100);
        let a = ip("192.0.2.1");
        burst(&l, a, Class::Anonymous, 5);
        for _ in 0..100 {
            assert!(l.check(a, Class::Anonymous).is_err());
        }
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check(a, Class::Anonymous), Ok(()));
    }

    #[test]
    fn full_burst_is_available_again_after_burst_over_rate() {
        let (l, clock) = limiter(100);
        let a = ip("192.0.2.1");
        burst(&l, a, Class::Anonymous, 5);
        clock.advance(Duration::from_millis(2500));
        burst(&l, a, Class::Anonymous, 5);
        assert!(l.check(a, Class::Anonymous).is_err());
    }

    #[test]
    fn clients_have_separate_buckets() {
        let (l, _clock) = limiter(100);
        burst(&l, ip("192.0.2.1"), Class::Anonymous, 5);
        assert!(l.check(ip("192.0.2.1"), Class::Anonymous).is_err());
        burst(&l, ip("192.0.2.2"), Class::Anonymous, 5);
    }

    #[test]
    fn ipv6_addresses_in_the_same_64_share_a_bucket() {
        let (l, _clock) = limiter(100);
        for i in 0..5u16 {
            let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
            assert_eq!(l.check(a, Class::Anonymous), Ok(()));
        }
        assert!(l
            .check(ip("2001:db8:1:2:ffff::1"), Class::Anonymous)
            .is_err());
        // A different /64 has its own budget.
        burst(&l, ip("2001:db8:1:3::1"), Class::Anonymous, 5);
        assert_eq!(l.tracked_keys(), 2);
    }

    #[test]
    fn mapped_ipv4_shares_the_bucket_of_its_ipv4_address() {
        let (l, _clock) = limiter(100);
        burst(&l, ip("192.0.2.1"), Class::Anonymous, 3);
        burst(&l, ip("::ffff:192.0.2.1"), Class::Anonymous, 2);
        assert!(l.check(ip("::ffff:192.0.2.1"), Class::Anonymous).is_err());
        assert!(l.check(ip("192.0.2.1"), Class::Anonymous).is_err());
    }

    #[test]
    fn logged_in_budget_is_separate_and_larger() {
        let (l, clock) = limiter(100);
        let a = ip("192.0.2.1");
        burst(&l, a, Class::Anonymous, 5);
        assert!(l.check(a, Class::Anonymous).is_err());
        burst(&l, a, Class::LoggedIn, 50);
        assert_eq!(l.check(a, Class::LoggedIn), Err(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(100));
        assert_eq!(l.check(a, Class::LoggedIn), Ok(()));
    }

    #[test]
    fn evict_stale_drops_only_keys_back_at_full_burst() {
        let (l, clock) = limiter(100);
        l.check(ip("192.0.2.1"), Class::Anonymous).unwrap();
        clock.advance(Duration::from_secs(10));
        burst(&l, ip("192.0.2.2"), Class::Anonymous, 5);
        l.check(ip("192.0.2.3"), Class::LoggedIn).unwrap();
        assert_eq!(l.tracked_keys(), 3);
        l.evict_stale();
        // 192.0.2.1 is long replenished; .2 is drained and .3 just used.
        assert_eq!(l.tracked_keys(), 2);
        assert!(l.check(ip("192.0.2.2"), Class::Anonymous).is_err());
        clock.advance(Duration::from_secs(10));
        l.evict_stale();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn cap_holds_under_a_flood_of_one_million_distinct_addresses() {
        let cap = 10_000;
        let (l, clock) = limiter(cap);
        for i in 0..1_000_000u32 {
            let _ = l.check(
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                Class::Anonymous,
            );
            if i % 10_000 == 0 {
                clock.advance(Duration::from_millis(100));
                assert!(l.tracked_keys() <= cap);
            }
        }
        assert!(l.tracked_keys() <= cap, "{}", l.tracked_keys());
        assert_eq!(
            l.anonymous.len() + l.logged_in.len(),
            l.tracked_keys(),
            "the shared counter matches the maps"
        );
    }

    #[test]
    fn ipv6_flood_across_distinct_64s_is_capped_too() {
        let cap = 1_000;
        let (l, _clock) = limiter(cap);
        for i in 0..50_000u64 {
            let a = Ipv6Addr::from(((0x2001_0db8_0000_0000u128 | u128::from(i)) << 64) | 1);
            let _ = l.check(IpAddr::V6(a), Class::Anonymous);
            let _ = l.check(IpAddr::V6(a), Class::LoggedIn);
        }
        assert_eq!(l.tracked_keys(), cap);
    }

    #[test]
    fn tracked_client_keeps_its_budget_while_a_flood_fills_the_map() {
        let (l, _clock) = limiter(10);
        let regular = ip("192.0.2.1");
        l.check(regular, Class::Anonymous).unwrap();
        for i in 0..1000u32 {
            let _ = l.check(
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                Class::Anonymous,
            );
        }
        assert_eq!(l.tracked_keys(), 10);
        // Its own bucket: 4 of 5 left.
        burst(&l, regular, Class::Anonymous, 4);
        // New clients share the exhausted overflow bucket.
        assert!(l.check(ip("198.51.100.1"), Class::Anonymous).is_err());
    }

    #[test]
    fn overflow_bucket_retry_after_is_exact_and_new_keys_get_slots_after_a_sweep() {
        let (l, clock) = limiter(2);
        l.check(ip("192.0.2.1"), Class::Anonymous).unwrap();
        l.check(ip("192.0.2.2"), Class::Anonymous).unwrap();
        for i in 0..5u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(l.check(a, Class::Anonymous), Ok(()), "overflow burst {i}");
        }
        assert_eq!(
            l.check(ip("10.9.9.9"), Class::Anonymous),
            Err(Duration::from_millis(500))
        );
        // Once the tracked keys are stale, the at-cap sweep frees their slots.
        clock.advance(Duration::from_secs(5));
        burst(&l, ip("203.0.113.5"), Class::Anonymous, 5);
        assert!(l.check(ip("203.0.113.5"), Class::Anonymous).is_err());
        assert_eq!(l.tracked_keys(), 1);
    }

    #[test]
    fn rate_limiter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimiter>();
        assert_send_sync::<RateLimiter<FakeRelativeClock>>();
    }

    #[test]
    fn real_clock_limiter_refuses_after_the_burst() {
        let l = RateLimiter::new(quota(1, 3), quota(100, 100), DEFAULT_MAX_KEYS);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.check(a, Class::Anonymous), Ok(()));
        }
        let wait = l.check(a, Class::Anonymous).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
    }
}
