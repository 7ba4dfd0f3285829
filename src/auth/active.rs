//! The registry of active login sessions: which sessions of a user exist
//! right now, when each started, when and from where it was last seen, and
//! what browser it is (the sessions page lists them).
//!
//! The cookie stays the whole session (`session`): this registry is a
//! memory of what the request path saw, kept only in memory, and nothing
//! is decided from it except which sessions a user is shown and may end.
//! Ending one still goes through `session::Revocations` (by session id);
//! this module must not be what makes a cookie valid or invalid.
//!
//! Choices, and why:
//! - **Bounded.** At most [`MAX_PER_USER`] entries per user; a new session
//!   beyond that evicts the user's least recently seen one. Only a valid
//!   cookie (made with nbgate's key) creates an entry, so the whole is
//!   bounded by the configured users times that cap. Eviction removes a
//!   session from the *list*, never from validity: an evicted session that
//!   is used again is listed again (by its next connection's first
//!   request, or by the periodic last-seen update of a connection it
//!   already has), and "end all other sessions" does not rely on the list
//!   at all (it bumps the user's generation, which ends every cookie of the
//!   user, listed or not; see `Authenticator::end_other_sessions`).
//! - **Cookies from before a restart** are not in the registry: a session
//!   is added on first sight (its first valid request), with "started" the
//!   cookie's own issue time, so it shows as it would have.
//! - **Cheap on the request path.** A connection remembers its session's
//!   entry (`SessionCache`); each request then costs one relaxed atomic
//!   load, and a store at most once per [`TOUCH_EVERY`] seconds. The
//!   registry's locks (one per shard, by user name) are taken only on a
//!   connection's first request with a cookie, at login, and by the pages.
//! - **Dropped** when logged out, revoked, or past the session's idle or
//!   absolute lifetime (swept per shard at most once a minute, and whenever
//!   a user's list is read).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::session::{short_id, Claims, Lifetime};
use super::user_agent::{self, Summary};

/// Sessions listed per user; beyond it the least recently seen is evicted
/// from the list (not logged out).
pub const MAX_PER_USER: usize = 32;

/// Seconds between two updates of a session's last-seen time: "last seen"
/// is precise to this, and a busy session's requests write no shared
/// memory in between.
pub const TOUCH_EVERY: u64 = 30;

/// Independent locks, so that first requests of different users'
/// connections do not wait for each other.
const SHARDS: usize = 16;

/// Seconds between sweeps of a shard for expired sessions.
const SWEEP_EVERY: u64 = 60;

/// Where a session's request came from: the request path's view of it.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    /// The client address (as the policy resolved it behind trusted proxies).
    pub client: IpAddr,
    /// The raw `User-Agent` header; only its summary is kept.
    pub user_agent: Option<&'a str>,
}

/// One session as the registry holds it.
pub struct Entry {
    user: Box<str>,
    sid: Box<str>,
    /// The cookie's issue time (login).
    started: u64,
    /// Unix seconds; written at most once per `TOUCH_EVERY`.
    last_seen: AtomicU64,
    /// False once evicted or removed from the user's list: a connection
    /// still holding it lists it again on its next update.
    listed: AtomicBool,
    /// std Mutex: locked on a connection's first request and by the page.
    seen_from: Mutex<(IpAddr, Summary)>,
}

/// A snapshot of one session for the sessions page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub sid: String,
    pub started: u64,
    pub last_seen: u64,
    /// The address of its latest connection.
    pub client: IpAddr,
    pub agent: Summary,
}

impl Entry {
    fn snapshot(&self) -> ActiveSession {
        let (client, agent) = *lock(&self.seen_from);
        ActiveSession {
            sid: self.sid.to_string(),
            started: self.started,
            last_seen: self.last_seen.load(Ordering::Relaxed),
            client,
            agent,
        }
    }

    fn expired(&self, now: u64, life: Lifetime) -> bool {
        // Last seen lags the cookie's own idle clock by up to TOUCH_EVERY:
        // keep the entry that much longer rather than drop a live session.
        let idle_end = self
            .last_seen
            .load(Ordering::Relaxed)
            .saturating_add(life.idle.as_secs())
            .saturating_add(TOUCH_EVERY);
        now >= self.started.saturating_add(life.max.as_secs()) || now >= idle_end
    }

    fn unlist(&self) {
        self.listed.store(false, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Shard {
    users: HashMap<Box<str>, Vec<Arc<Entry>>>,
    last_sweep: u64,
}

impl Shard {
    fn sweep_if_due(&mut self, now: u64, life: Lifetime) {
        if now < self.last_sweep.saturating_add(SWEEP_EVERY) {
            return;
        }
        self.last_sweep = now;
        self.users.retain(|_, list| {
            retain_live(list, now, life);
            !list.is_empty()
        });
    }

    /// Puts `entry` in its user's list, evicting the least recently seen
    /// when the list is full.
    fn insert(&mut self, entry: Arc<Entry>) {
        let list = self.users.entry(entry.user.clone()).or_default();
        if list.len() >= MAX_PER_USER {
            let oldest = list
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_seen.load(Ordering::Relaxed))
                .map(|(i, _)| i)
                .expect("a full list is not empty");
            list.swap_remove(oldest).unlist();
        }
        entry.listed.store(true, Ordering::Relaxed);
        list.push(entry);
    }
}

fn retain_live(list: &mut Vec<Arc<Entry>>, now: u64, life: Lifetime) {
    list.retain(|e| {
        let keep = !e.expired(now, life);
        if !keep {
            e.unlist();
        }
        keep
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while one of these is held; a poisoned lock still
    // holds consistent data (every update is a single assignment).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Active sessions of every user (one per running server, kept across
/// configuration reloads).
pub struct ActiveSessions {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for ActiveSessions {
    fn default() -> Self {
        ActiveSessions {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

impl ActiveSessions {
    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        lock(&self.shards[(h.finish() % SHARDS as u64) as usize])
    }

    /// Records a session seen with a valid cookie (at login, and on a
    /// connection's first request with it): adds it when unknown (a cookie
    /// from before a restart, or evicted), else updates where it was seen
    /// from (the address always, the browser when the request names one).
    /// Returns the entry for the connection to keep.
    pub fn observe(
        &self,
        claims: &Claims,
        seen: Sighting<'_>,
        now: u64,
        life: Lifetime,
    ) -> Arc<Entry> {
        let agent = user_agent::summarize(seen.user_agent);
        let mut shard = self.shard(&claims.u);
        shard.sweep_if_due(now, life);
        let known = shard
            .users
            .get(claims.u.as_str())
            .and_then(|list| list.iter().find(|e| *e.sid == *claims.sid))
            .cloned();
        if let Some(e) = known {
            let mut from = lock(&e.seen_from);
            from.0 = seen.client;
            // A request without a `User-Agent` (a script's WebSocket) says
            // nothing about the browser: the summary it had stays.
            if seen.user_agent.is_some() {
                from.1 = agent;
            }
            drop(from);
            e.last_seen.fetch_max(now, Ordering::Relaxed);
            return e;
        }
        let entry = Arc::new(Entry {
            user: claims.u.as_str().into(),
            sid: claims.sid.as_str().into(),
            started: claims.iat,
            last_seen: AtomicU64::new(now),
            listed: AtomicBool::new(false),
            seen_from: Mutex::new((seen.client, agent)),
        });
        shard.insert(Arc::clone(&entry));
        entry
    }

    /// A request of a connection that already holds `entry`: the request
    /// path's per-request cost, one atomic load in most calls.
    pub fn touch(&self, entry: &Arc<Entry>, now: u64) {
        let last = entry.last_seen.load(Ordering::Relaxed);
        if now < last.saturating_add(TOUCH_EVERY) {
            return;
        }
        entry.last_seen.store(now, Ordering::Relaxed);
        if !entry.listed.load(Ordering::Relaxed) {
            // Evicted (or swept) while still in use: list it again.
            let mut shard = self.shard(&entry.user);
            let present = shard
                .users
                .get(&*entry.user)
                .is_some_and(|list| list.iter().any(|e| e.sid == entry.sid));
            if !present {
                shard.insert(Arc::clone(entry));
            }
        }
    }

    /// The live sessions of `user`, most recently seen first; sessions
    /// `is_revoked` names are left out (a request that raced a revocation
    /// may have listed one again).
    pub fn list(
        &self,
        user: &str,
        now: u64,
        life: Lifetime,
        is_revoked: impl Fn(&str) -> bool,
    ) -> Vec<ActiveSession> {
        let mut shard = self.shard(user);
        let Some(list) = shard.users.get_mut(user) else {
            return Vec::new();
        };
        retain_live(list, now, life);
        list.retain(|e| {
            let keep = !is_revoked(&e.sid);
            if !keep {
                e.unlist();
            }
            keep
        });
        let mut out: Vec<ActiveSession> = list.iter().map(|e| e.snapshot()).collect();
        out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.sid.cmp(&b.sid)));
        out
    }

    /// The session of `user` whose short id (`session::short_id`) is
    /// `handle`. Only `user`'s own list is searched: no handle, guessed or
    /// copied, reaches another user's session.
    pub fn find(&self, user: &str, handle: &str) -> Option<ActiveSession> {
        let shard = self.shard(user);
        let mut found = shard
            .users
            .get(user)?
            .iter()
            .filter(|e| short_id(&e.sid) == handle);
        let e = found.next()?;
        // Two sessions sharing a short id (48 random bits) cannot be told
        // apart: neither is ended by handle.
        found.next().is_none().then(|| e.snapshot())
    }

    /// Removes one session of `user` (logged out or revoked).
    pub fn forget(&self, user: &str, sid: &str) {
        let mut shard = self.shard(user);
        if let Some(list) = shard.users.get_mut(user) {
            list.retain(|e| {
                let keep = *e.sid != *sid;
                if !keep {
                    e.unlist();
                }
                keep
            });
        }
    }

    /// Removes every session of `user` but `keep`; returns the removed ids.
    pub fn forget_others(&self, user: &str, keep: Option<&str>) -> Vec<String> {
        let mut shard = self.shard(user);
        let Some(list) = shard.users.get_mut(user) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        list.retain(|e| {
            if Some(&*e.sid) == keep {
                return true;
            }
            e.unlist();
            removed.push(e.sid.to_string());
            false
        });
        if list.is_empty() {
            shard.users.remove(user);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIFE: Lifetime = Lifetime {
        idle: Duration::from_secs(3600),
        max: Duration::from_secs(86400),
    };

    fn claims(user: &str, sid: &str, iat: u64) -> Claims {
        Claims {
            u: user.into(),
            sid: sid.into(),
            iat,
            lst: iat,
            gen: 0,
            pw: "fp".into(),
        }
    }

    fn from(ip: &str, ua: &'static str) -> Sighting<'static> {
        Sighting {
            client: ip.parse().expect("ip"),
            user_agent: Some(ua),
        }
    }

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (Windows NT 10.0; rv:133.0) Gecko/20100101 Firefox/133.0";

    fn sids(list: &[ActiveSession]) -> Vec<&str> {
        list.iter().map(|s| s.sid.as_str()).collect()
    }

    #[test]
    fn a_user_sees_only_their_own_sessions_with_address_and_browser() {
        let reg = ActiveSessions::default();
        reg.observe(
            &claims("alice", "a1", 100),
            from("127.0.0.1", CHROME),
            100,
            LIFE,
        );
        reg.observe(
            &claims("alice", "a2", 110),
            from("127.0.0.2", FIREFOX),
            110,
            LIFE,
        );
        reg.observe(
            &claims("bob", "b1", 120),
            from("10.0.0.9", CHROME),
            120,
            LIFE,
        );
        let alice = reg.list("alice", 130, LIFE, |_| false);
        assert_eq!(sids(&alice), ["a2", "a1"], "most recently seen first");
        assert_eq!(alice[0].client, "127.0.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            alice[0].agent.browser_label().as_deref(),
            Some("Firefox 133")
        );
        assert_eq!(alice[1].agent.os, Some("Linux"));
        assert_eq!(alice[1].started, 100);
        assert_eq!(sids(&reg.list("bob", 130, LIFE, |_| false)), ["b1"]);
        // Handles are looked up in the asking user's list only.
        assert!(reg.find("alice", short_id("b1")).is_none());
        assert_eq!(reg.find("bob", short_id("b1")).expect("own").sid, "b1");
    }

    #[test]
    fn a_cookie_from_before_a_restart_is_added_on_first_sight_with_its_issue_time() {
        let reg = ActiveSessions::default();
        let e = reg.observe(
            &claims("alice", "old", 1_000),
            from("127.0.0.1", CHROME),
            5_000,
            LIFE,
        );
        assert!(e.listed.load(Ordering::Relaxed));
        let list = reg.list("alice", 5_000, LIFE, |_| false);
        assert_eq!((list[0].started, list[0].last_seen), (1_000, 5_000));
        // Seen again from elsewhere: one entry, the new address.
        reg.observe(
            &claims("alice", "old", 1_000),
            from("127.0.0.3", CHROME),
            5_010,
            LIFE,
        );
        let list = reg.list("alice", 5_010, LIFE, |_| false);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].client, "127.0.0.3".parse::<IpAddr>().expect("ip"));
        // A request without a User-Agent keeps the browser it had.
        let bare = Sighting {
            client: "127.0.0.4".parse().expect("ip"),
            user_agent: None,
        };
        reg.observe(&claims("alice", "old", 1_000), bare, 5_020, LIFE);
        let list = reg.list("alice", 5_020, LIFE, |_| false);
        assert_eq!(list[0].client, "127.0.0.4".parse::<IpAddr>().expect("ip"));
        assert_eq!(list[0].agent.browser_label().as_deref(), Some("Chrome 131"));
    }

    #[test]
    fn last_seen_is_written_at_most_once_per_touch_interval() {
        let reg = ActiveSessions::default();
        let e = reg.observe(
            &claims("alice", "s", 100),
            from("127.0.0.1", CHROME),
            100,
            LIFE,
        );
        reg.touch(&e, 100 + TOUCH_EVERY - 1);
        assert_eq!(e.last_seen.load(Ordering::Relaxed), 100);
        reg.touch(&e, 100 + TOUCH_EVERY);
        assert_eq!(e.last_seen.load(Ordering::Relaxed), 100 + TOUCH_EVERY);
    }

    #[test]
    fn a_full_list_evicts_the_least_recently_seen_which_comes_back_when_used() {
        let reg = ActiveSessions::default();
        let first = reg.observe(
            &claims("alice", "s0", 100),
            from("127.0.0.1", CHROME),
            100,
            LIFE,
        );
        for i in 1..MAX_PER_USER {
            let t = 100 + i as u64;
            reg.observe(
                &claims("alice", &format!("s{i}"), t),
                from("127.0.0.1", CHROME),
                t,
                LIFE,
            );
        }
        assert_eq!(reg.list("alice", 200, LIFE, |_| false).len(), MAX_PER_USER);
        reg.observe(
            &claims("alice", "new", 300),
            from("127.0.0.1", CHROME),
            300,
            LIFE,
        );
        let list = reg.list("alice", 300, LIFE, |_| false);
        assert_eq!(list.len(), MAX_PER_USER);
        assert!(!sids(&list).contains(&"s0"), "the oldest is evicted");
        assert!(!first.listed.load(Ordering::Relaxed));
        // Its connection's next update lists it again (evicting the next oldest).
        reg.touch(&first, 400);
        let list = reg.list("alice", 400, LIFE, |_| false);
        assert_eq!(list.len(), MAX_PER_USER);
        assert_eq!(list[0].sid, "s0");
        assert!(!sids(&list).contains(&"s1"));
    }

    #[test]
    fn expired_and_revoked_sessions_are_dropped() {
        let reg = ActiveSessions::default();
        reg.observe(
            &claims("alice", "idle", 100),
            from("127.0.0.1", CHROME),
            100,
            LIFE,
        );
        reg.observe(
            &claims("alice", "old", 0),
            from("127.0.0.1", CHROME),
            86_000,
            LIFE,
        );
        reg.observe(
            &claims("alice", "gone", 86_000),
            from("127.0.0.1", CHROME),
            86_000,
            LIFE,
        );
        reg.observe(
            &claims("alice", "ok", 86_000),
            from("127.0.0.1", CHROME),
            86_000,
            LIFE,
        );
        let list = reg.list("alice", 86_401, LIFE, |sid| sid == "gone");
        assert_eq!(sids(&list), ["ok"]);
    }

    #[test]
    fn forgetting_removes_one_or_all_others() {
        let reg = ActiveSessions::default();
        for sid in ["a", "b", "c"] {
            reg.observe(
                &claims("alice", sid, 100),
                from("127.0.0.1", CHROME),
                100,
                LIFE,
            );
        }
        reg.forget("alice", "b");
        reg.forget("bob", "a");
        assert_eq!(sids(&reg.list("alice", 100, LIFE, |_| false)), ["a", "c"]);
        let mut removed = reg.forget_others("alice", Some("c"));
        removed.sort();
        assert_eq!(removed, ["a"]);
        assert_eq!(sids(&reg.list("alice", 100, LIFE, |_| false)), ["c"]);
        assert_eq!(reg.forget_others("alice", None), ["c"]);
        assert!(reg.list("alice", 100, LIFE, |_| false).is_empty());
    }
}
