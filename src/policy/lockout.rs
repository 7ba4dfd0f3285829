//! Brute-force protection for logins and API tokens: failure counting and
//! exponential lockout per client address and per user name.
//!
//! Owns the decisions "may this address / user name try a password now" and
//! "does this failure start a lockout". The caller calls [`Lockout::begin`]
//! *before* verifying a password (so a locked attacker never costs a hash),
//! reports the outcome on the returned [`Attempt`] ([`Attempt::failed`] or
//! [`Attempt::succeeded`]), and turns [`Refused`] into a 429 with
//! `Retry-After` and an audit event.
//!
//! An attempt being verified counts against the threshold until its outcome
//! is known: with only "is it locked?" checked first, attempts sent at the
//! same moment all passed the check while the count was below the threshold,
//! so a guesser got `threshold + concurrent verifications - 1` guesses per
//! lock (73 instead of 10 on a 64-core machine). Now an attempt that would
//! make failures plus attempts in flight exceed the threshold is refused as
//! [`Refused::InFlight`] (retry shortly). Addresses are keyed like the rate limiter
//! (IPv4 address, IPv6 /64), so one IPv6 host cannot rotate around its count.
//!
//! # The trade-off between the two scopes
//! - **Per address** (`ip_threshold`, e.g. 10): the main defence. Ten wrong
//!   passwords from one address lock that address for `base`, then `2·base`,
//!   `4·base` ... up to `ip_max`. Only that address is locked: the account's
//!   owner, logging in from elsewhere, is not affected.
//! - **Per user name** (`user_threshold`, higher, e.g. 50): catches a guess
//!   spread over many addresses. Each lock doubles up to `user_max` (e.g. 5
//!   minutes), and a distributed guesser can renew it, so on its own it could
//!   keep the owner out indefinitely. Hence: addresses the name logged in from
//!   successfully in the last 30 days (up to 8 per name) are exempt from the
//!   name's lock (still subject to their own address lock). The owner at a
//!   usual place is never locked out by guessing elsewhere; from a new
//!   address, for at most `user_max` at a time while the guessing goes on.
//!
//! Failures are counted within a window: a key that has been quiet (no failure
//! and no lock) for `ip_max` starts again from zero, lockout level included.
//! Failures that arrive while a key is locked are not counted and do not
//! extend the lock, so an attacker cannot keep a user name locked for longer
//! than `user_max` by continuing to guess.
//!
//! # Bounded memory
//! Each scope keeps at most `max_keys` records. When a new key arrives at the
//! cap, expired records are dropped; if that frees too little, the oldest
//! records are dropped in a batch (unlocked ones first, so a flood of single
//! failures from fresh addresses cannot evict an active lock).
//!
//! It must not do I/O, logging or hashing; it takes `Instant`s from the
//! caller so tests control time.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ClientKey;

/// Thresholds and durations of the lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Failures from one address (or IPv6 /64) that lock it.
    pub ip_threshold: u32,
    /// Failures for one user name, from anywhere, that lock the name; higher
    /// than `ip_threshold` because this lock also hits the name's owner.
    pub user_threshold: u32,
    /// The first lock's duration; each further lock of the same key doubles.
    pub base: Duration,
    /// The longest address lock; also the quiet time after which a key's
    /// count and level start again from zero.
    pub ip_max: Duration,
    /// The longest user-name lock: how long a distributed guess can keep the
    /// owner out at a time.
    pub user_max: Duration,
    /// Records kept per scope at most.
    pub max_keys: usize,
}

impl Default for LockoutConfig {
    fn default() -> LockoutConfig {
        LockoutConfig {
            ip_threshold: 10,
            user_threshold: 50,
            base: Duration::from_secs(60),
            ip_max: Duration::from_secs(3600),
            user_max: Duration::from_secs(300),
            max_keys: 100_000,
        }
    }
}

/// What is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client address (or IPv6 /64).
    Address,
    /// The user name, from every address.
    User,
}

/// A refusal: what is locked and for how much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// Why an attempt may not be verified now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address or user name is locked.
    Locked(Locked),
    /// Failures so far plus attempts being verified reach the threshold:
    /// once those are decided, this one may be tried (or a lock applies).
    InFlight,
}

/// A table's refusal to admit an attempt.
#[derive(Debug, Clone, Copy)]
enum Reserve {
    Locked(Duration),
    InFlight,
}

impl Reserve {
    fn into_refused(self, scope: Scope) -> Refused {
        match self {
            Reserve::Locked(retry_after) => Refused::Locked(Locked { scope, retry_after }),
            Reserve::InFlight => Refused::InFlight,
        }
    }
}

/// An attempt admitted by [`Lockout::begin`], counted as in flight until its
/// outcome is reported (or it is dropped: a cancelled verification counts as
/// nothing).
#[must_use = "report the outcome with failed() or succeeded()"]
#[derive(Debug)]
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    ip: IpAddr,
    /// The attempted user name's key, when it was reserved against the name.
    user: Option<u64>,
    released: bool,
}

impl Attempt<'_> {
    /// A wrong password or token: counts it as [`Lockout::record_failure`]
    /// does. The attempt leaves the in-flight count and its failure enters
    /// the failure count under one lock, so no other attempt is admitted
    /// in between on the strength of neither.
    pub fn failed(mut self, user: Option<&str>, now: Instant) -> Option<Locked> {
        self.released = true;
        let l = self.lockout;
        let address = {
            let mut table = lock(&l.addresses);
            let key = ClientKey::of(self.ip);
            table.release(&key);
            table.fail(key, now)
        }
        .map(|d| Locked {
            scope: Scope::Address,
            retry_after: d,
        });
        let user = user.and_then(|name| {
            let key = l.user_key(name);
            let mut table = lock(&l.users);
            if self.user == Some(key) {
                table.release(&key);
            }
            table.fail(key, now).map(|d| Locked {
                scope: Scope::User,
                retry_after: d,
            })
        });
        if let (Some(key), None) = (self.user, user) {
            // Reserved against a name but failed without one: release it.
            lock(&l.users).release(&key);
        }
        longer(address, user)
    }

    /// A valid password or token for `user`: see [`Lockout::record_success`].
    pub fn succeeded(mut self, user: &str, now: Instant) {
        self.release();
        self.lockout.record_success(self.ip, user, now);
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        lock(&self.lockout.addresses).release(&ClientKey::of(self.ip));
        if let Some(key) = self.user {
            lock(&self.lockout.users).release(&key);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Failure counts and locks per address and per user name. `Send + Sync`.
///
/// Each scope is one std `Mutex` around a `HashMap`: it is held for a few
/// hundred nanoseconds (never across an `.await`), and login attempts are
/// already capped by the rate limiter and the verification cap.
#[derive(Debug)]
pub struct Lockout {
    /// Replaced whole by [`Lockout::reconfigure`] (a reload); each table
    /// keeps its own copy of the numbers it decides with.
    cfg: Mutex<LockoutConfig>,
    addresses: Mutex<Table<ClientKey>>,
    /// Keyed by a keyed hash of the name, so a record's size does not depend
    /// on attacker-chosen name lengths. The random key makes collisions
    /// unpredictable; 64 bits make them negligible at `max_keys` entries.
    users: Mutex<Table<u64>>,
    /// Addresses each user name logged in from recently: a lock on the name
    /// does not apply to them, so guessers elsewhere cannot keep the owner
    /// out. At most [`KNOWN_PER_USER`] per name and `max_keys` names.
    known: Mutex<HashMap<u64, Vec<(ClientKey, Instant)>>>,
    user_hasher: RandomState,
}

/// Addresses remembered per user name for [`Lockout::record_success`].
pub const KNOWN_PER_USER: usize = 8;

/// How long a successful login keeps its address "known" for the name.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

impl Lockout {
    pub fn new(cfg: LockoutConfig) -> Lockout {
        let addresses = Table::new(cfg.ip_threshold, cfg.base, cfg.ip_max, &cfg);
        let users = Table::new(cfg.user_threshold, cfg.base, cfg.user_max, &cfg);
        Lockout {
            addresses: Mutex::new(addresses),
            users: Mutex::new(users),
            known: Mutex::new(HashMap::new()),
            user_hasher: RandomState::new(),
            cfg: Mutex::new(cfg),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> LockoutConfig {
        lock(&self.cfg).clone()
    }

    /// Puts new thresholds and durations in force (a configuration reload)
    /// and keeps every count, lock and known address.
    ///
    /// Why keep them: a reload must not hand a guesser a fresh set of
    /// attempts, nor let a locked address in. A lock already running keeps
    /// the end it was given; the next one follows the new durations.
    pub fn reconfigure(&self, cfg: LockoutConfig) {
        lock(&self.addresses).set_limits(cfg.ip_threshold, cfg.base, cfg.ip_max, &cfg);
        lock(&self.users).set_limits(cfg.user_threshold, cfg.base, cfg.user_max, &cfg);
        *lock(&self.cfg) = cfg;
    }

    /// Before verifying a password or token: is this address or user name
    /// locked now? `user` is `None` for token attempts. When both are locked,
    /// the longer lock is reported.
    ///
    /// # Errors
    /// [`Locked`] with the scope and the time left.
    pub fn check(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Result<(), Locked> {
        let address = lock(&self.addresses)
            .locked_for(&ClientKey::of(ip), now)
            .map(|d| Locked {
                scope: Scope::Address,
                retry_after: d,
            });
        let user = user.and_then(|name| {
            let key = self.user_key(name);
            if self.is_known(key, ClientKey::of(ip), now) {
                return None;
            }
            lock(&self.users).locked_for(&key, now).map(|d| Locked {
                scope: Scope::User,
                retry_after: d,
            })
        });
        match longer(address, user) {
            Some(locked) => Err(locked),
            None => Ok(()),
        }
    }

    /// Before verifying a password or token: admits the attempt unless the
    /// address or user name is locked ([`Lockout::check`]) or the failures so
    /// far plus the attempts already being verified reach the threshold (so
    /// that all of them failing could not go past it). `user` is `None` for
    /// token attempts; an address the name logged in from recently is not
    /// held to the name's count (as in `check`).
    ///
    /// # Errors
    /// [`Refused::Locked`] with the scope and time left, or
    /// [`Refused::InFlight`].
    pub fn begin(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        now: Instant,
    ) -> Result<Attempt<'_>, Refused> {
        self.check(ip, user, now).map_err(Refused::Locked)?;
        let addr = ClientKey::of(ip);
        // `reserve` looks at the lock again under its own lock: another
        // attempt's failure may have set one since `check`.
        lock(&self.addresses)
            .reserve(addr, now)
            .map_err(|r| r.into_refused(Scope::Address))?;
        let mut attempt = Attempt {
            lockout: self,
            ip,
            user: None,
            released: false,
        };
        if let Some(name) = user {
            let key = self.user_key(name);
            if !self.is_known(key, addr, now) {
                // On refusal, dropping `attempt` releases the address again.
                lock(&self.users)
                    .reserve(key, now)
                    .map_err(|r| r.into_refused(Scope::User))?;
                attempt.user = Some(key);
            }
        }
        Ok(attempt)
    }

    /// After a wrong password or token: counts it against the address and the
    /// user name. Returns `Some` when the address or name is locked after this
    /// failure: because this failure reached a threshold (a new lock, the
    /// caller's audit event), or because it was already locked (then nothing
    /// was counted and the lock is not extended). The longer lock is reported.
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Option<Locked> {
        let address = lock(&self.addresses)
            .fail(ClientKey::of(ip), now)
            .map(|d| Locked {
                scope: Scope::Address,
                retry_after: d,
            });
        let user = user.and_then(|name| {
            lock(&self.users)
                .fail(self.user_key(name), now)
                .map(|d| Locked {
                    scope: Scope::User,
                    retry_after: d,
                })
        });
        longer(address, user)
    }

    /// After a successful login: forgets this address's failures and lockout
    /// level (a legitimate user is there; on a shared NAT their colleagues
    /// should not inherit the count). A current lock is kept: success while
    /// locked means the caller skipped `check`.
    ///
    /// The user name's record is deliberately left alone: its failures came
    /// from other addresses (a distributed guess), and one login by the owner
    /// proves nothing about them. Resetting it would give the guessers a fresh
    /// `user_threshold` every time the owner logs in. The cost: an owner who
    /// mistypes from several addresses keeps that count until it goes quiet.
    ///
    /// Known limit: someone with a valid account of their own can reset their
    /// address's count between guesses at another name; the per-name count,
    /// which success does not reset, still bounds that guess.
    ///
    /// The address is also remembered as known for the name (see
    /// [`Lockout::check`]): a later lock on the name does not apply to it.
    pub fn record_success(&self, ip: IpAddr, user: &str, now: Instant) {
        let addr = ClientKey::of(ip);
        lock(&self.addresses).forget_unless_locked(&addr, now);
        let key = self.user_key(user);
        let max_keys = lock(&self.cfg).max_keys;
        let mut known = lock(&self.known);
        if known.len() >= max_keys && !known.contains_key(&key) {
            known.retain(|_, seen| seen.iter().any(|(_, t)| now.duration_since(*t) < KNOWN_FOR));
            if known.len() >= max_keys {
                return;
            }
        }
        let seen = known.entry(key).or_default();
        seen.retain(|(a, _)| *a != addr);
        if seen.len() >= KNOWN_PER_USER {
            seen.remove(0);
        }
        seen.push((addr, now));
    }

    fn is_known(&self, user: u64, addr: ClientKey, now: Instant) -> bool {
        lock(&self.known).get(&user).is_some_and(|seen| {
            seen.iter()
                .any(|(a, t)| *a == addr && now.duration_since(*t) < KNOWN_FOR)
        })
    }

    /// Drops records that no longer affect any decision: not locked, and
    /// quiet for `ip_max`. The server calls this on a schedule.
    pub fn evict_expired(&self, now: Instant) {
        lock(&self.addresses).evict_expired(now);
        lock(&self.users).evict_expired(now);
    }

    /// Records kept now: (addresses, user names).
    pub fn tracked_keys(&self) -> (usize, usize) {
        (lock(&self.addresses).map.len(), lock(&self.users).map.len())
    }

    fn user_key(&self, name: &str) -> u64 {
        self.user_hasher.hash_one(name)
    }
}

/// A poisoned lock still holds consistent counters (every update is a few
/// field writes that cannot panic halfway), so keep using it rather than
/// turning one panic into a permanently open or closed login.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn longer(a: Option<Locked>, b: Option<Locked>) -> Option<Locked> {
    match (a, b) {
        (Some(a), Some(b)) if b.retry_after > a.retry_after => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// One key's history.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures since the last lock (or since the count started).
    failures: u32,
    /// Locks so far in this window: the next lock lasts `base · 2^lockouts`.
    lockouts: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
    /// Attempts admitted by `begin` whose outcome is not known yet.
    in_flight: u32,
}

impl Record {
    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// The last moment this key did something: a failure or the end of a lock.
    fn active_until(&self) -> Instant {
        match self.locked_until {
            Some(until) if until > self.last_failure => until,
            _ => self.last_failure,
        }
    }

    /// Not locked and quiet for `window`: its count and level no longer
    /// apply (they start again from zero).
    fn stale(&self, now: Instant, window: Duration) -> bool {
        self.locked_for(now).is_none()
            && now.saturating_duration_since(self.active_until()) >= window
    }

    /// Stale with no attempt in flight: the record can be dropped.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0 && self.stale(now, window)
    }
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Record>,
    threshold: u32,
    base: Duration,
    max_lock: Duration,
    /// Quiet time after which a record is forgotten.
    window: Duration,
    max_keys: usize,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(threshold: u32, base: Duration, max_lock: Duration, cfg: &LockoutConfig) -> Table<K> {
        let mut table = Table {
            map: HashMap::new(),
            threshold: 1,
            base,
            max_lock,
            window: cfg.ip_max,
            max_keys: 1,
        };
        table.set_limits(threshold, base, max_lock, cfg);
        table
    }

    fn set_limits(
        &mut self,
        threshold: u32,
        base: Duration,
        max_lock: Duration,
        cfg: &LockoutConfig,
    ) {
        self.threshold = threshold.max(1);
        self.base = base;
        self.max_lock = max_lock;
        self.window = cfg.ip_max;
        self.max_keys = cfg.max_keys.max(1);
    }

    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        self.map.get(key).and_then(|r| r.locked_for(now))
    }

    /// The key's record, made (room permitting) when it has none.
    fn record(&mut self, key: K, now: Instant) -> &mut Record {
        if !self.map.contains_key(&key) && self.map.len() >= self.max_keys {
            self.make_room(now);
        }
        self.map.entry(key).or_insert(Record {
            failures: 0,
            lockouts: 0,
            last_failure: now,
            locked_until: None,
            in_flight: 0,
        })
    }

    /// Admits one more attempt in flight unless the key is locked or its
    /// failures so far plus those in flight reach the threshold.
    fn reserve(&mut self, key: K, now: Instant) -> Result<(), Reserve> {
        let (threshold, window) = (self.threshold, self.window);
        let record = self.record(key, now);
        if let Some(left) = record.locked_for(now) {
            return Err(Reserve::Locked(left));
        }
        let failures = if record.stale(now, window) {
            0
        } else {
            record.failures
        };
        if failures.saturating_add(record.in_flight) >= threshold {
            return Err(Reserve::InFlight);
        }
        record.in_flight += 1;
        Ok(())
    }

    /// An attempt's outcome is known. A record left with nothing in it (an
    /// attempt that was cancelled or refused as busy) is dropped, so that
    /// attempts which never failed do not take room from real counts.
    fn release(&mut self, key: &K) {
        if let Some(record) = self.map.get_mut(key) {
            record.in_flight = record.in_flight.saturating_sub(1);
            let empty = record.failures == 0
                && record.lockouts == 0
                && record.in_flight == 0
                && record.locked_until.is_none();
            if empty {
                self.map.remove(key);
            }
        }
    }

    /// Counts a failure; returns the lock in force afterwards, if any.
    fn fail(&mut self, key: K, now: Instant) -> Option<Duration> {
        let (window, threshold, base, max_lock) =
            (self.window, self.threshold, self.base, self.max_lock);
        let record = self.record(key, now);
        if let Some(left) = record.locked_for(now) {
            return Some(left);
        }
        if record.stale(now, window) {
            record.failures = 0;
            record.lockouts = 0;
            record.locked_until = None;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures < threshold {
            return None;
        }
        let duration = lock_duration(base, record.lockouts, max_lock);
        record.failures = 0;
        record.lockouts = record.lockouts.saturating_add(1);
        record.locked_until = Some(now + duration);
        Some(duration)
    }

    fn forget_unless_locked(&mut self, key: &K, now: Instant) {
        if let Some(record) = self.map.get_mut(key) {
            if record.locked_for(now).is_some() {
                return;
            }
            if record.in_flight > 0 {
                // Other attempts from here are still being verified.
                record.failures = 0;
                record.lockouts = 0;
            } else {
                self.map.remove(key);
            }
        }
    }

    fn evict_expired(&mut self, now: Instant) {
        let window = self.window;
        self.map.retain(|_, r| !r.expired(now, window));
    }

    /// Frees at least an eighth of `max_keys`: expired records first, then
    /// the least recently active, unlocked (and with nothing in flight)
    /// before locked. Batching keeps the
    /// amortised cost per new key constant under a flood.
    fn make_room(&mut self, now: Instant) {
        self.evict_expired(now);
        let batch = (self.max_keys / 8).max(1);
        let target = self.max_keys.saturating_sub(batch);
        if self.map.len() <= target {
            return;
        }
        let excess = self.map.len() - target;
        let mut order: Vec<(bool, Instant, K)> = self
            .map
            .iter()
            .map(|(k, r)| {
                let keep = r.locked_for(now).is_some() || r.in_flight > 0;
                (keep, r.active_until(), *k)
            })
            .collect();
        order.select_nth_unstable_by_key(excess - 1, |&(locked, at, _)| (locked, at));
        for (_, _, key) in &order[..excess] {
            self.map.remove(key);
        }
    }
}

/// `base · 2^level`, capped at `max`.
fn lock_duration(base: Duration, level: u32, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(level)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const BASE: Duration = Duration::from_secs(60);

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            ip_threshold: 10,
            user_threshold: 50,
            base: BASE,
            ip_max: Duration::from_secs(3600),
            user_max: Duration::from_secs(300),
            max_keys: 1000,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail_n(l: &Lockout, ip: IpAddr, user: Option<&str>, now: Instant, n: u32) -> Option<Locked> {
        let mut last = None;
        for _ in 0..n {
            last = l.record_failure(ip, user, now);
        }
        last
    }

    #[test]
    fn attempts_in_flight_count_toward_the_threshold() {
        let l = Lockout::new(cfg());
        let (a, now) = (ip("203.0.113.7"), Instant::now());
        // Ten guesses sent at once: ten are admitted, the eleventh waits.
        let flight: Vec<Attempt<'_>> = (0..10)
            .map(|_| l.begin(a, Some("alice"), now).expect("admitted"))
            .collect();
        assert_eq!(
            l.begin(a, Some("alice"), now).unwrap_err(),
            Refused::InFlight
        );
        // All ten fail: the address is locked, and nothing more got through.
        let locks: Vec<_> = flight
            .into_iter()
            .map(|t| t.failed(Some("alice"), now))
            .collect();
        assert!(locks[..9].iter().all(Option::is_none), "{locks:?}");
        assert_eq!(locks[9].map(|l| l.scope), Some(Scope::Address));
        assert!(matches!(
            l.begin(a, Some("alice"), now),
            Err(Refused::Locked(Locked {
                scope: Scope::Address,
                ..
            }))
        ));
    }

    #[test]
    fn nine_failures_leave_room_for_exactly_one_attempt_at_a_time() {
        let l = Lockout::new(cfg());
        let (a, now) = (ip("203.0.113.8"), Instant::now());
        assert!(fail_n(&l, a, None, now, 9).is_none());
        let last = l.begin(a, None, now).expect("the tenth attempt");
        assert_eq!(l.begin(a, None, now).unwrap_err(), Refused::InFlight);
        // Right after all: the count is forgotten and attempts are admitted.
        last.succeeded("alice", now);
        let again: Vec<_> = (0..10).map(|_| l.begin(a, None, now)).collect();
        assert!(again.iter().all(Result::is_ok));
    }

    #[test]
    fn a_dropped_attempt_counts_nothing_and_frees_its_place() {
        let l = Lockout::new(cfg());
        let (a, now) = (ip("203.0.113.9"), Instant::now());
        assert!(fail_n(&l, a, None, now, 9).is_none());
        // A verification cancelled (client gone) neither counts as a failure
        // nor keeps its place.
        drop(l.begin(a, None, now).expect("admitted"));
        let t = l.begin(a, None, now).expect("admitted again");
        assert_eq!(t.failed(None, now).map(|l| l.scope), Some(Scope::Address));
    }

    #[test]
    fn concurrent_guessers_get_exactly_threshold_attempts_before_the_lock() {
        // Any interleaving: each admitted attempt fails; once ten have, the
        // address is locked and nothing more is admitted.
        let l = Lockout::new(cfg());
        let (a, now) = (ip("203.0.113.10"), Instant::now());
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| loop {
                    match l.begin(a, Some("alice"), now) {
                        Ok(t) => {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            std::thread::yield_now();
                            let _ = t.failed(Some("alice"), now);
                        }
                        Err(Refused::InFlight) => std::thread::yield_now(),
                        Err(Refused::Locked(_)) => break,
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
    }

    #[test]
    fn an_old_count_does_not_hold_up_attempts_in_flight() {
        let l = Lockout::new(cfg());
        let (a, t0) = (ip("203.0.113.11"), Instant::now());
        assert!(fail_n(&l, a, None, t0, 9).is_none());
        // Quiet for the window: the count starts again from zero, also for
        // a second attempt while the first is in flight.
        let later = t0 + Duration::from_secs(3601);
        let first = l.begin(a, None, later).expect("admitted");
        let second = l.begin(a, None, later).expect("admitted too");
        assert!(first.failed(None, later).is_none());
        assert!(second.failed(None, later).is_none());
    }

    #[test]
    fn attempts_that_never_failed_leave_no_records() {
        let l = Lockout::new(cfg());
        let now = Instant::now();
        drop(
            l.begin(ip("203.0.113.12"), Some("dave"), now)
                .expect("admitted"),
        );
        l.begin(ip("203.0.113.13"), None, now)
            .expect("admitted")
            .succeeded("dave", now);
        assert_eq!(l.tracked_keys(), (0, 0));
    }

    #[test]
    fn attempts_in_flight_for_a_name_count_across_addresses() {
        let l = Lockout::new(cfg());
        let now = Instant::now();
        let flight: Vec<_> = (0..50)
            .map(|i| {
                l.begin(ip(&format!("198.51.100.{i}")), Some("bob"), now)
                    .expect("admitted")
            })
            .collect();
        assert_eq!(
            l.begin(ip("198.51.100.200"), Some("bob"), now).unwrap_err(),
            Refused::InFlight
        );
        // Another name is not held up.
        assert!(l.begin(ip("198.51.100.200"), Some("carol"), now).is_ok());
        drop(flight);
        assert!(l.begin(ip("198.51.100.200"), Some("bob"), now).is_ok());
    }

    #[test]
    fn ten_failures_from_one_address_lock_that_address_for_base() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        for i in 0..9 {
            assert_eq!(l.record_failure(a, Some("alice"), t0), None, "failure {i}");
        }
        assert_eq!(l.check(a, Some("alice"), t0), Ok(()));
        let locked = l.record_failure(a, Some("alice"), t0);
        let want = Locked {
            scope: Scope::Address,
            retry_after: BASE,
        };
        assert_eq!(locked, Some(want));
        assert_eq!(l.check(a, Some("alice"), t0), Err(want));
        assert_eq!(l.check(a, None, t0), Err(want));
    }

    #[test]
    fn owner_from_another_address_is_not_locked_by_address_lock() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        fail_n(&l, ip("127.0.0.2"), Some("alice"), t0, 10);
        assert_eq!(l.check(ip("127.0.0.3"), Some("alice"), t0), Ok(()));
    }

    #[test]
    fn address_lock_expires_after_base() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, None, t0, 10);
        let almost = t0 + BASE - Duration::from_secs(1);
        assert_eq!(
            l.check(a, None, almost),
            Err(Locked {
                scope: Scope::Address,
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(l.check(a, None, t0 + BASE), Ok(()));
    }

    #[test]
    fn each_further_lock_doubles_up_to_ip_max() {
        let l = Lockout::new(cfg());
        let a = ip("127.0.0.2");
        let mut now = Instant::now();
        for expected_minutes in [1u64, 2, 4, 8, 16, 32, 60, 60] {
            let locked = fail_n(&l, a, None, now, 10).unwrap();
            assert_eq!(
                locked.retry_after,
                Duration::from_secs(60 * expected_minutes)
            );
            now += locked.retry_after;
            assert_eq!(l.check(a, None, now), Ok(()));
        }
    }

    #[test]
    fn failures_while_locked_are_not_counted_and_do_not_extend_the_lock() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, None, t0, 10);
        let later = t0 + Duration::from_secs(30);
        let again = l.record_failure(a, None, later).unwrap();
        assert_eq!(again.retry_after, Duration::from_secs(30));
        // After the lock, a full threshold is needed again.
        let after = t0 + BASE;
        assert_eq!(fail_n(&l, a, None, after, 9), None);
    }

    #[test]
    fn quiet_window_resets_count_and_level() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, None, t0, 10);
        fail_n(&l, a, None, t0 + BASE, 9);
        // An hour after the last failure: count and level start over.
        let later = t0 + BASE + Duration::from_secs(3600);
        assert_eq!(l.record_failure(a, None, later), None);
        let locked = fail_n(&l, a, None, later, 9).unwrap();
        assert_eq!(locked.retry_after, BASE);
    }

    #[test]
    fn level_is_kept_while_locks_follow_each_other_at_the_cap() {
        let l = Lockout::new(cfg());
        let a = ip("127.0.0.2");
        let mut now = Instant::now();
        for _ in 0..7 {
            now += fail_n(&l, a, None, now, 10).unwrap().retry_after;
        }
        // The last lock lasted an hour (= the window); the quiet time is
        // counted from its end, so the level is kept.
        let locked = fail_n(&l, a, None, now, 10).unwrap();
        assert_eq!(locked.retry_after, Duration::from_secs(3600));
    }

    #[test]
    fn success_resets_the_address_count_and_level() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, Some("alice"), t0, 10);
        let t1 = t0 + BASE;
        fail_n(&l, a, Some("alice"), t1, 9);
        l.record_success(a, "alice", t1);
        assert_eq!(fail_n(&l, a, Some("alice"), t1, 9), None);
        // Level reset too: the next lock is base again, not 2·base.
        assert_eq!(
            l.record_failure(a, Some("alice"), t1),
            Some(Locked {
                scope: Scope::Address,
                retry_after: BASE
            })
        );
    }

    #[test]
    fn success_does_not_lift_a_current_lock() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, None, t0, 10);
        l.record_success(a, "alice", t0);
        assert!(l.check(a, None, t0).is_err());
    }

    #[test]
    fn success_does_not_reset_the_user_count() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        // 49 failures for "alice" from 49 addresses, then alice logs in.
        for i in 0..49u8 {
            l.record_failure(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), Some("alice"), t0);
        }
        l.record_success(ip("127.0.0.3"), "alice", t0);
        let locked = l.record_failure(ip("198.51.100.1"), Some("alice"), t0);
        assert_eq!(
            locked,
            Some(Locked {
                scope: Scope::User,
                retry_after: BASE
            })
        );
    }

    #[test]
    fn distributed_guess_locks_the_user_name_bounded_by_user_max() {
        let l = Lockout::new(cfg());
        let mut now = Instant::now();
        let mut n = 0u32;
        let mut next_ip = || {
            n += 1;
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
        };
        // Each address fails 5 times: below the address threshold.
        let mut seen = Vec::new();
        for _ in 0..6 {
            let mut locked = None;
            while locked.is_none() {
                let a = next_ip();
                for _ in 0..5 {
                    locked = locked.or(l.record_failure(a, Some("alice"), now));
                }
            }
            let locked = locked.unwrap();
            assert_eq!(locked.scope, Scope::User);
            seen.push(locked.retry_after.as_secs());
            // The owner is locked out everywhere, but only for that long.
            assert_eq!(l.check(ip("127.0.0.3"), Some("alice"), now), Err(locked));
            assert_eq!(l.check(ip("127.0.0.3"), Some("bob"), now), Ok(()));
            now += locked.retry_after;
            assert_eq!(l.check(ip("127.0.0.3"), Some("alice"), now), Ok(()));
        }
        assert_eq!(seen, vec![60, 120, 240, 300, 300, 300]);
    }

    #[test]
    fn owner_at_a_known_address_is_exempt_from_a_renewed_user_lock() {
        let l = Lockout::new(cfg());
        let start = Instant::now();
        l.record_success(ip("127.0.0.3"), "alice", start);
        let mut now = start;
        // Guessers keep renewing the name's lock from fresh addresses.
        for round in 0..4u32 {
            let mut locked = None;
            let mut n = 0u32;
            while locked.is_none() {
                n += 1;
                let a = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + round * 1000 + n));
                for _ in 0..5 {
                    locked = locked.or(l.record_failure(a, Some("alice"), now));
                }
            }
            assert_eq!(locked.map(|x| x.scope), Some(Scope::User));
            assert_eq!(
                l.check(ip("127.0.0.3"), Some("alice"), now),
                Ok(()),
                "round {round}"
            );
            assert!(l.check(ip("127.0.0.4"), Some("alice"), now).is_err());
            now += locked.expect("locked").retry_after;
        }
        // Knowledge of the address fades after KNOWN_FOR.
        let later = start + KNOWN_FOR + Duration::from_secs(1);
        assert!(!l.is_known(l.user_key("alice"), ClientKey::of(ip("127.0.0.3")), later));
    }

    #[test]
    fn token_attempts_count_only_against_the_address() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        fail_n(&l, a, None, t0, 9);
        assert_eq!(l.tracked_keys(), (1, 0));
        assert_eq!(l.check(a, None, t0), Ok(()));
    }

    #[test]
    fn ipv6_addresses_in_one_64_share_a_count() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for i in 0..10u16 {
            l.record_failure(
                IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, i)),
                None,
                t0,
            );
        }
        assert!(l.check(ip("2001:db8:0:1::ffff"), None, t0).is_err());
        assert_eq!(l.check(ip("2001:db8:0:2::1"), None, t0), Ok(()));
        // And a mapped address counts as its IPv4 form.
        fail_n(&l, ip("::ffff:192.0.2.1"), None, t0, 10);
        assert!(l.check(ip("192.0.2.1"), None, t0).is_err());
    }

    #[test]
    fn maps_stay_bounded_under_a_flood_of_addresses_and_names() {
        let l = Lockout::new(LockoutConfig {
            max_keys: 1000,
            ..cfg()
        });
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let name = format!("user{i}");
            l.record_failure(IpAddr::V4(Ipv4Addr::from(i)), Some(&name), t0);
            let (addresses, users) = l.tracked_keys();
            assert!(addresses <= 1000 && users <= 1000, "{addresses} {users}");
        }
    }

    #[test]
    fn flood_does_not_evict_an_active_lock() {
        let l = Lockout::new(LockoutConfig {
            max_keys: 100,
            ..cfg()
        });
        let t0 = Instant::now();
        let attacker = ip("127.0.0.2");
        fail_n(&l, attacker, None, t0, 10);
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            l.record_failure(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), None, t);
        }
        assert!(l
            .check(attacker, None, t0 + Duration::from_secs(30))
            .is_err());
    }

    #[test]
    fn evict_expired_drops_only_quiet_unlocked_records() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        l.record_failure(ip("127.0.0.2"), Some("alice"), t0);
        fail_n(&l, ip("127.0.0.4"), None, t0, 10);
        let t1 = t0 + Duration::from_secs(1800);
        l.record_failure(ip("127.0.0.3"), None, t1);
        l.evict_expired(t0 + Duration::from_secs(3600));
        // .2 and alice: quiet for an hour; .4's lock ended at t0+60s, so it
        // is not yet quiet for an hour; .3 is recent.
        assert_eq!(l.tracked_keys(), (2, 0));
        l.evict_expired(t0 + Duration::from_secs(3660 + 1800));
        assert_eq!(l.tracked_keys(), (0, 0));
    }

    #[test]
    fn lockout_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lockout>();
    }

    #[test]
    fn a_reconfigure_keeps_counts_and_locks_and_applies_the_new_numbers() {
        let l = Lockout::new(cfg());
        let now = Instant::now();
        let (counting, locked) = (ip("203.0.113.1"), ip("203.0.113.2"));
        assert!(fail_n(&l, counting, None, now, 4).is_none());
        assert!(fail_n(&l, locked, None, now, 10).is_some());
        l.reconfigure(LockoutConfig {
            ip_threshold: 5,
            ..cfg()
        });
        assert_eq!(l.config().ip_threshold, 5);
        assert!(
            l.check(locked, None, now).is_err(),
            "a running lock survives"
        );
        // Four failures were kept: the fifth locks under the new threshold.
        assert!(fail_n(&l, counting, None, now, 1).is_some());
    }
}
