//! Micro benches for the policy hot paths, and the flood measurement.
//!
//! - `ipset_10k/*`: allowlist lookup in a set of 10,000 CIDRs (5,000 IPv4,
//!   5,000 IPv6), hits and misses.
//! - `rate_limit/*`: one check for an already tracked key.
//! - Before the benches, a flood of 1,000,000 distinct client keys is driven
//!   through a limiter with the default key cap, and the resident memory before
//!   and after is printed (from /proc/self/statm); for comparison, the same
//!   flood through governor's unbounded keyed limiter.
//!
//! Run: `cargo bench --bench policy -- --quick`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Instant;

use criterion::Criterion;
use nbgate::policy::rate_limit::DEFAULT_MAX_KEYS;
use nbgate::policy::{Cidr, Class, IpSet, RateLimiter, RateQuota};

/// Deterministic xorshift64 so every run benches the same set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// IPv4 networks avoid 240.0.0.0/4 and IPv6 networks avoid 3fff::/16, so
/// probes there are guaranteed misses.
fn random_v4(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from((rng.next() as u32) & 0xefff_ffff)
}

fn random_v6(rng: &mut Rng) -> Ipv6Addr {
    let a = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    Ipv6Addr::from((a & !(0xffffu128 << 112)) | (0x2001u128 << 112))
}

fn allowlist(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cidrs = Vec::with_capacity(10_000);
    for _ in 0..5_000 {
        let prefix = 16 + (rng.next() % 17) as u8;
        cidrs.push(Cidr::try_new(IpAddr::V4(random_v4(&mut rng)), prefix).expect("prefix <= 32"));
        let prefix = 32 + (rng.next() % 97) as u8;
        cidrs.push(Cidr::try_new(IpAddr::V6(random_v6(&mut rng)), prefix).expect("prefix <= 128"));
    }
    let set = IpSet::new(&cidrs);
    let v4_hits: Vec<IpAddr> = cidrs
        .iter()
        .filter(|c| c.addr().is_ipv4())
        .take(256)
        .map(|c| c.addr())
        .collect();
    let v6_hits: Vec<IpAddr> = cidrs
        .iter()
        .filter(|c| c.addr().is_ipv6())
        .take(256)
        .map(|c| c.addr())
        .collect();
    let v4_misses: Vec<IpAddr> = (0..256)
        .map(|_| {
            IpAddr::V4(Ipv4Addr::from(
                0xf000_0000 | (rng.next() as u32 & 0x0fff_ffff),
            ))
        })
        .collect();
    let v6_misses: Vec<IpAddr> = (0..256)
        .map(|_| IpAddr::V6(Ipv6Addr::from((0x3fffu128 << 112) | u128::from(rng.next()))))
        .collect();
    let mapped_hits: Vec<IpAddr> = v4_hits
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(_) => *ip,
        })
        .collect();
    for probes in [&v4_hits, &v6_hits, &mapped_hits] {
        assert!(probes.iter().all(|&ip| set.contains(ip)));
    }
    for probes in [&v4_misses, &v6_misses] {
        assert!(probes.iter().all(|&ip| !set.contains(ip)));
    }

    let mut group = c.benchmark_group("ipset_10k");
    for (name, probes) in [
        ("v4_hit", &v4_hits),
        ("v4_miss", &v4_misses),
        ("v6_hit", &v6_hits),
        ("v6_miss", &v6_misses),
        ("v4_mapped_hit", &mapped_hits),
    ] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 255;
                black_box(set.contains(black_box(probes[i])))
            })
        });
    }
    group.finish();
}

fn quota(per_second: u32, burst: u32) -> RateQuota {
    RateQuota {
        per_second: NonZeroU32::new(per_second).expect("non-zero"),
        burst: NonZeroU32::new(burst).expect("non-zero"),
    }
}

fn rate_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    // Generous enough that the benched key is never refused.
    let limiter = RateLimiter::new(quota(10, 20), quota(u32::MAX, u32::MAX), DEFAULT_MAX_KEYS);
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let v6: IpAddr = "2001:db8::1".parse().expect("literal");
    for ip in [v4, v6] {
        limiter
            .check(ip, Class::LoggedIn)
            .expect("first request passes");
    }
    group.bench_function("tracked_key_allowed_v4", |b| {
        b.iter(|| black_box(limiter.check(black_box(v4), Class::LoggedIn)))
    });
    group.bench_function("tracked_key_allowed_v6", |b| {
        b.iter(|| black_box(limiter.check(black_box(v6), Class::LoggedIn)))
    });
    for _ in 0..20 {
        let _ = limiter.check(v4, Class::Anonymous);
    }
    group.bench_function("tracked_key_refused_v4", |b| {
        b.iter(|| black_box(limiter.check(black_box(v4), Class::Anonymous)))
    });
    group.finish();
}

/// Resident set size in KiB, from /proc/self/statm (Linux).
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / 1024)
}

fn fmt_kib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// The n-th flood address: IPv4 for even n, a distinct IPv6 /64 for odd n.
fn flood_addr(n: u32) -> IpAddr {
    if n.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n / 2))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            ((0x2001_0db8_0000_0000u128 | u128::from(n / 2)) << 64) | 1,
        ))
    }
}

fn flood_report() {
    const KEYS: u32 = 1_000_000;
    let before = rss_kib();
    let limiter = RateLimiter::new(quota(10, 20), quota(50, 200), DEFAULT_MAX_KEYS);
    let started = Instant::now();
    let mut refused = 0u32;
    for n in 0..KEYS {
        if limiter.check(flood_addr(n), Class::Anonymous).is_err() {
            refused += 1;
        }
    }
    let elapsed = started.elapsed();
    let after = rss_kib();
    println!(
        "flood: {KEYS} distinct keys through nbgate RateLimiter (cap {DEFAULT_MAX_KEYS}) in {elapsed:.2?}: \
         RSS before {} after {} (delta {}), tracked keys {}, refused {refused}",
        fmt_kib(before),
        fmt_kib(after),
        fmt_kib(after.zip(before).map(|(a, b)| a.saturating_sub(b))),
        limiter.tracked_keys(),
    );
    // A second flood: memory must not grow further.
    for n in KEYS..2 * KEYS {
        let _ = limiter.check(flood_addr(n), Class::Anonymous);
    }
    let after2 = rss_kib();
    println!(
        "flood: a second {KEYS} distinct keys: RSS {} (tracked keys {})",
        fmt_kib(after2),
        limiter.tracked_keys()
    );
    // The cost of one full sweep of a map at the cap (done on a schedule,
    // and inline at most once per SWEEP_INTERVAL when the map is full).
    let sweep = Instant::now();
    limiter.evict_stale();
    println!(
        "flood: one evict_stale over {} tracked keys took {:.2?}",
        DEFAULT_MAX_KEYS,
        sweep.elapsed()
    );
    drop(limiter);

    // For comparison: governor's own keyed limiter keeps every key.
    let unbounded = governor::RateLimiter::<IpAddr, _, _>::dashmap(governor::Quota::per_second(
        NonZeroU32::new(10).expect("non-zero"),
    ));
    let base = rss_kib();
    for n in 0..KEYS {
        let _ = unbounded.check_key(&flood_addr(n));
    }
    let grown = rss_kib();
    println!(
        "flood: the same {KEYS} keys through governor's unbounded keyed limiter: RSS {} -> {} (keys {})",
        fmt_kib(base),
        fmt_kib(grown),
        unbounded.len()
    );
}

fn main() {
    flood_report();
    let mut c = Criterion::default().configure_from_args();
    allowlist(&mut c);
    rate_limit(&mut c);
    c.final_summary();
}
