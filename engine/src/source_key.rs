//! What counts as one client when capping or throttling per source: an IPv4 address, or the
//! IPv6 prefix around an IPv6 address. One customer typically holds a whole IPv6 /64 (and can
//! pick any of its 2^64 addresses per connection), so a cap keyed on the exact IPv6 address
//! does not cap anyone. Used by the hub's login throttle (always /64) and by the edge's
//! per-client caps (the prefix the hub pushes as `limits.ipv6SourcePrefix`).

use std::net::{IpAddr, Ipv6Addr};

/// The IPv6 prefix length that is one source unless configured otherwise.
pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A source: the IPv4 address (IPv4-mapped IPv6 included), or an IPv6 address with the bits
/// past its prefix cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey(IpAddr);

impl SourceKey {
    /// The source of `ip` with IPv6 grouped by /64.
    pub(crate) fn of(ip: IpAddr) -> Self {
        Self::with_ipv6_prefix(ip, DEFAULT_IPV6_PREFIX)
    }

    /// The source of `ip` with IPv6 grouped by `/prefix` (values over 128 mean 128).
    pub(crate) fn with_ipv6_prefix(ip: IpAddr, prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
            }
            v4 => Self(v4),
        }
    }

    /// The address that stands for the source (the prefix's first address for IPv6).
    pub(crate) fn addr(self) -> IpAddr {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_its_prefix_and_ipv4_by_its_address() {
        let a = SourceKey::of(ip("2001:db8:1:2::1"));
        assert_eq!(a, SourceKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, SourceKey::of(ip("2001:db8:1:3::1")));
        assert_eq!(a.addr(), ip("2001:db8:1:2::"));
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.7")),
            SourceKey::of(ip("192.0.2.7"))
        );
        assert_ne!(
            SourceKey::of(ip("192.0.2.7")),
            SourceKey::of(ip("192.0.2.8"))
        );
        let exact = |s| SourceKey::with_ipv6_prefix(ip(s), 128);
        assert_ne!(exact("2001:db8::1"), exact("2001:db8::2"));
        assert_eq!(
            SourceKey::with_ipv6_prefix(ip("2001:db8:ab:cd::1"), 48).addr(),
            ip("2001:db8:ab::")
        );
        assert_eq!(
            SourceKey::with_ipv6_prefix(ip("2001:db8::1"), 0).addr(),
            ip("::")
        );
        assert_eq!(
            SourceKey::with_ipv6_prefix(ip("2001:db8::1"), 200),
            exact("2001:db8::1")
        );
    }
}
