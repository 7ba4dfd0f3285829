//! Access policy: who may connect and how often, decided from plain values.
//!
//! This module owns the pure building blocks of issue 4: CIDR lists and the
//! allow/deny decision ([`cidr`]), the client address behind trusted proxies
//! ([`client_addr`]), the PROXY protocol header reader ([`proxy_protocol`]),
//! per-client request rate limits with bounded memory ([`rate_limit`]) and
//! brute-force lockout for logins and tokens ([`lockout`]).
//!
//! It must not import `server`, `proxy`, `auth` or `config`: it takes
//! `IpAddr`, `&HeaderMap`, `Instant` and `Duration` and returns decisions, so
//! every rule is unit-tested without sockets (the one exception is
//! [`proxy_protocol::read_header`], which reads from a `TcpStream`).

pub mod cidr;
pub mod client_addr;
pub mod lockout;
pub mod proxy_protocol;
pub mod rate_limit;

pub use cidr::{normalize, AccessList, Cidr, CidrError, IpSet};
pub use client_addr::{client_addr, ForwardedHeader};
pub use lockout::{Attempt, Locked, Lockout, LockoutConfig, Refused, Scope};
pub use proxy_protocol::{read_header, ProxyHeader, ProxyProtocolError};
pub use rate_limit::{Class, RateLimiter, RateQuota};

use std::net::IpAddr;

/// The key under which per-client state is kept: an IPv4 address, or the /64
/// network of an IPv6 address.
///
/// Security: one IPv6 host usually owns a whole /64 and can pick any address in
/// it, so keying by the full address would let it rotate around every limit.
/// IPv4-mapped IPv6 addresses are normalised first so that `::ffff:1.2.3.4`
/// and `1.2.3.4` share one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClientKey {
    V4(u32),
    V6Net(u64),
}

impl ClientKey {
    pub(crate) fn of(ip: IpAddr) -> ClientKey {
        match normalize(ip) {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            // The upper 64 bits are the /64 network.
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_groups_ipv6_by_64_and_maps_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(v4), ClientKey::of(mapped));
    }
}
