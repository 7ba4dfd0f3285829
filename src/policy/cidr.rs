//! CIDR parsing, address sets and the allow/deny decision.
//!
//! Owns the meaning of `allow = [...]` / `deny = [...]` and of
//! `trusted_proxies`: a [`Cidr`] is parsed once at config time, an [`IpSet`]
//! answers "is this address in the list" in `O(log n)` with no allocation (the
//! list is flattened into sorted, disjoint ranges, so 10,000 entries cost about
//! 14 comparisons), and an [`AccessList`] combines two sets into one decision.
//!
//! Every lookup normalises IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to
//! IPv4 first. Security: a dual-stack listener reports IPv4 peers as mapped
//! addresses, and without this `deny = ["203.0.113.0/24"]` would not match
//! `::ffff:203.0.113.9`.
//!
//! It must not do I/O or logging: callers decide what to do with a refusal.

use std::fmt;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Returns the IPv4 address for an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// and every other address unchanged.
///
/// IPv4-compatible addresses (`::a.b.c.d`, deprecated by RFC 4291 §2.5.5.1)
/// are deliberately left as IPv6: no stack produces them for IPv4 peers, and
/// `::1` is one of them.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address; host bits are always zero.
    addr: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

/// Why a CIDR string was rejected; the message quotes the input.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    #[error("{input:?}: not an IP address")]
    InvalidAddress {
        input: String,
        #[source]
        source: AddrParseError,
    },
    #[error("{input:?}: prefix length must be a decimal number")]
    InvalidPrefix { input: String },
    #[error("{input:?}: prefix length {prefix} is larger than {max}")]
    PrefixTooLong { input: String, prefix: u32, max: u8 },
}

impl Cidr {
    /// The network containing `addr` with `prefix` leading bits; host bits are
    /// cleared. IPv4-mapped networks of /96 or longer become IPv4 networks.
    ///
    /// # Errors
    /// [`CidrError::PrefixTooLong`] when `prefix` exceeds the address width.
    pub fn try_new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        Cidr::build(addr, u32::from(prefix), || format!("{addr}/{prefix}"))
    }

    fn build(addr: IpAddr, prefix: u32, input: impl Fn() -> String) -> Result<Cidr, CidrError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > u32::from(max) {
            return Err(CidrError::PrefixTooLong {
                input: input(),
                prefix,
                max,
            });
        }
        // Fits in u8: checked against max above.
        let prefix = prefix as u8;
        let cidr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // "::ffff:10.0.0.0/104" means 10.0.0.0/8. A mapped network
                // shorter than /96 also covers non-mapped IPv6 space, so it
                // stays IPv6 (and, since lookups normalise, matches no IPv4
                // client).
                Some(v4) if prefix >= 96 => Cidr::masked(IpAddr::V4(v4), prefix - 96),
                _ => Cidr::masked(addr, prefix),
            },
            IpAddr::V4(_) => Cidr::masked(addr, prefix),
        };
        Ok(cidr)
    }

    fn masked(addr: IpAddr, prefix: u8) -> Cidr {
        let addr = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(prefix))),
        };
        Cidr { addr, prefix }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (normalised first) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for Cidr {
    /// The single-address network (/32 or /128), normalised.
    fn from(ip: IpAddr) -> Cidr {
        match normalize(ip) {
            ip @ IpAddr::V4(_) => Cidr {
                addr: ip,
                prefix: 32,
            },
            ip @ IpAddr::V6(_) => Cidr {
                addr: ip,
                prefix: 128,
            },
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address (a /32 or
    /// /128). Host bits are accepted and cleared (`"10.1.2.3/8"` is
    /// `10.0.0.0/8`), as nginx's `allow` does, so a typo'd network still means
    /// the network the prefix names.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let input = || s.to_owned();
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part
            .parse()
            .map_err(|source| CidrError::InvalidAddress {
                input: input(),
                source,
            })?;
        let prefix = match prefix_part {
            None => match addr {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            },
            // Digits only: u32::from_str would accept "+8".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u32>()
                .map_err(|_| CidrError::InvalidPrefix { input: input() })?,
            Some(_) => return Err(CidrError::InvalidPrefix { input: input() }),
        };
        Cidr::build(addr, prefix, input)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A set of networks with a lookup cost of `O(log n)` and no allocation.
///
/// Built once from a list of [`Cidr`]s: each family's networks become
/// inclusive `[start, end]` integer ranges, sorted and merged so they are
/// disjoint, and a lookup is one binary search. Overlapping and duplicate
/// entries are harmless.
#[derive(Debug, Clone, Default)]
pub struct IpSet {
    /// Sorted, disjoint, non-adjacent inclusive ranges of IPv4 addresses.
    v4: Vec<(u32, u32)>,
    /// Sorted, disjoint, non-adjacent inclusive ranges of IPv6 addresses.
    v6: Vec<(u128, u128)>,
    /// The networks as given (normalised), for `describe` and `len`.
    cidrs: Vec<Cidr>,
}

impl IpSet {
    /// The set of addresses in any of `cidrs`.
    pub fn new(cidrs: &[Cidr]) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            match cidr.addr {
                IpAddr::V4(a) => {
                    let start = u32::from(a);
                    v4.push((start, start | !mask32(cidr.prefix)));
                }
                IpAddr::V6(a) => {
                    let start = u128::from(a);
                    v6.push((start, start | !mask128(cidr.prefix)));
                }
            }
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
            cidrs: cidrs.to_vec(),
        }
    }

    /// Whether `ip`, normalised first, lies in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalize(ip) {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set was built from no networks.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    /// The number of networks the set was built from.
    pub fn len(&self) -> usize {
        self.cidrs.len()
    }

    /// The networks the set was built from, in the given order.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }

    /// The networks as a comma-separated list, eliding after the first
    /// `limit` entries so a 10,000-entry list prints on one line.
    fn summary(&self, limit: usize) -> String {
        let mut out = self
            .cidrs
            .iter()
            .take(limit)
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if self.cidrs.len() > limit {
            out.push_str(&format!(" and {} more", self.cidrs.len() - limit));
        }
        out
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge<T: Copy + Ord + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(prev) = out.last_mut() {
            // Overlapping or directly adjacent (prev.end + 1 == start); a
            // range ending at the maximum address absorbs everything after it.
            let joins = match prev.1.successor() {
                Some(next) => start <= next,
                None => true,
            };
            if joins {
                if end > prev.1 {
                    prev.1 = end;
                }
                continue;
            }
        }
        out.push((start, end));
    }
    out.shrink_to_fit();
    out
}

fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], ip: T) -> bool {
    // Index of the first range starting after ip; the candidate is the one before.
    let i = ranges.partition_point(|&(start, _)| start <= ip);
    i > 0 && ranges[i - 1].1 >= ip
}

mod num_like {
    /// `x + 1`, or `None` at the maximum.
    pub trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// The allow/deny decision for a client address.
///
/// Deny wins over allow, and an empty allow list means everyone: this is the
/// order operators expect from firewalls ("allow the office, but not that one
/// machine"), and it means adding a deny entry can never open access.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    /// Addresses that may connect; empty means every address.
    pub allow: IpSet,
    /// Addresses that may never connect, even when allowed.
    pub deny: IpSet,
}

impl AccessList {
    /// Whether `ip` may connect: not denied, and allowed (or no allow list).
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.contains(ip) {
            return false;
        }
        self.allow.is_empty() || self.allow.contains(ip)
    }

    /// A one-line human summary of the effective policy, for `check-config`.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 10;
        let allow = if self.allow.is_empty() {
            "every address".to_owned()
        } else {
            format!(
                "only {} network(s): {}",
                self.allow.len(),
                self.allow.summary(SHOWN)
            )
        };
        let deny = if self.deny.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{} network(s): {}",
                self.deny.len(),
                self.deny.summary(SHOWN)
            )
        };
        format!("allow {allow}; deny (wins over allow) {deny}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(list: &[&str]) -> IpSet {
        let cidrs: Vec<Cidr> = list.iter().map(|s| s.parse().unwrap()).collect();
        IpSet::new(&cidrs)
    }

    #[test]
    fn cidr_parses_networks_and_bare_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8::/32");
        let c: Cidr = "1.2.3.4".parse().unwrap();
        assert_eq!(c.to_string(), "1.2.3.4/32");
        let c: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8::1/128");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(c.to_string(), "0.0.0.0/0");
        let c: Cidr = "::/0".parse().unwrap();
        assert_eq!(c.to_string(), "::/0");
    }

    #[test]
    fn cidr_masks_host_bits() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8:ffff::1/33".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8:8000::/33");
    }

    #[test]
    fn cidr_normalises_mapped_networks_to_ipv4() {
        let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/32");
        // Shorter than /96 also covers non-mapped space: stays IPv6.
        let c: Cidr = "::ffff:0:0/80".parse().unwrap();
        assert_eq!(c.to_string(), "::/80");
    }

    #[test]
    fn cidr_rejects_too_long_prefix_with_a_message_naming_the_input() {
        let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""10.0.0.0/33": prefix length 33 is larger than 32"#
        );
        let err = "2001:db8::/129".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""2001:db8::/129": prefix length 129 is larger than 128"#
        );
    }

    #[test]
    fn cidr_rejects_malformed_input() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "10.0.0.0/-1",
            "example.com",
            "10.0.0.0/0008",
            "[::1]/128",
            "10.0.0.0 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be rejected");
        }
        let err = "banana/8".parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), r#""banana/8": not an IP address"#);
    }

    #[test]
    fn normalize_maps_only_ipv4_mapped_addresses() {
        assert_eq!(normalize(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(normalize(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(normalize(ip("::1")), ip("::1"));
        assert_eq!(normalize(ip("::192.0.2.1")), ip("::192.0.2.1"));
        assert_eq!(
            normalize(ip("64:ff9b::192.0.2.1")),
            ip("64:ff9b::192.0.2.1")
        );
    }

    #[test]
    fn ipset_matches_ipv4_and_ipv6_networks() {
        let s = set(&[
            "10.0.0.0/8",
            "192.168.1.0/24",
            "2001:db8::/32",
            "203.0.113.7",
        ]);
        assert!(s.contains(ip("10.255.255.255")));
        assert!(s.contains(ip("10.0.0.0")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("192.168.1.200")));
        assert!(!s.contains(ip("192.168.2.1")));
        assert!(s.contains(ip("203.0.113.7")));
        assert!(!s.contains(ip("203.0.113.8")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn allowlist_rejects_ipv4_mapped_address_outside_range() {
        let s = set(&["10.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn ipset_does_not_match_ipv4_against_ipv6_ranges() {
        let s = set(&["::/0"]);
        assert!(s.contains(ip("2001:db8::1")));
        // A mapped client is an IPv4 client.
        assert!(!s.contains(ip("::ffff:10.0.0.1")));
        assert!(!s.contains(ip("10.0.0.1")));
        let s = set(&["0.0.0.0/0"]);
        assert!(s.contains(ip("::ffff:10.0.0.1")));
        assert!(!s.contains(ip("::1")));
    }

    #[test]
    fn ipset_merges_overlapping_adjacent_and_full_ranges() {
        let s = set(&[
            "10.0.0.0/9",
            "10.128.0.0/9",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "255.255.255.255",
            "255.255.255.254/31",
            "::/0",
            "2001:db8::/32",
        ]);
        assert_eq!(
            s.v4,
            vec![(0x0a00_0000, 0x0aff_ffff), (0xffff_fffe, u32::MAX)]
        );
        assert_eq!(s.v6, vec![(0, u128::MAX)]);
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn ipset_lookup_agrees_with_linear_scan() {
        // Deterministic pseudo-random networks and probes (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cidrs = Vec::new();
        for _ in 0..500 {
            let a = Ipv4Addr::from((next() as u32) & 0xff0f_ffff);
            cidrs.push(Cidr::try_new(IpAddr::V4(a), (next() % 33) as u8 / 2 + 16).unwrap());
            let b = Ipv6Addr::from(((next() as u128) << 64 | next() as u128) & !(0xf0u128 << 112));
            cidrs.push(Cidr::try_new(IpAddr::V6(b), (next() % 129) as u8 / 2 + 60).unwrap());
        }
        let s = IpSet::new(&cidrs);
        for c in &cidrs {
            assert!(s.contains(c.addr()));
        }
        for _ in 0..20_000 {
            let probe = if next() % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from((next() as u32) & 0xff0f_ffff))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    ((next() as u128) << 64 | next() as u128) & !(0xf0u128 << 112),
                ))
            };
            let linear = cidrs.iter().any(|c| c.contains(probe));
            assert_eq!(s.contains(probe), linear, "{probe}");
        }
    }

    #[test]
    fn access_list_lets_deny_win_over_allow() {
        let list = AccessList {
            allow: set(&["10.0.0.0/8"]),
            deny: set(&["10.6.6.0/24"]),
        };
        assert!(list.permits(ip("10.1.1.1")));
        assert!(!list.permits(ip("10.6.6.6")));
        assert!(!list.permits(ip("::ffff:10.6.6.6")));
        assert!(!list.permits(ip("192.0.2.1")));
    }

    #[test]
    fn access_list_with_empty_allow_permits_everyone_not_denied() {
        let list = AccessList {
            allow: IpSet::default(),
            deny: set(&["192.0.2.0/24"]),
        };
        assert!(list.permits(ip("198.51.100.1")));
        assert!(list.permits(ip("::1")));
        assert!(!list.permits(ip("192.0.2.9")));
        assert!(AccessList::default().permits(ip("203.0.113.1")));
    }

    #[test]
    fn access_list_describe_names_the_effective_policy() {
        assert_eq!(
            AccessList::default().describe(),
            "allow every address; deny (wins over allow) none"
        );
        let list = AccessList {
            allow: set(&["10.0.0.0/8", "::ffff:192.168.0.0/112"]),
            deny: set(&["10.6.6.6"]),
        };
        assert_eq!(
            list.describe(),
            "allow only 2 network(s): 10.0.0.0/8, 192.168.0.0/16; \
             deny (wins over allow) 1 network(s): 10.6.6.6/32"
        );
        let many: Vec<Cidr> = (0..25u8)
            .map(|i| Cidr::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))))
            .collect();
        let list = AccessList {
            allow: IpSet::new(&many),
            deny: IpSet::default(),
        };
        assert!(list
            .describe()
            .ends_with("10.0.0.9/32 and 15 more; deny (wins over allow) none"));
    }
}
