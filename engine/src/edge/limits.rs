//! Caps on the edge's open public TCP connections: per client (`maxConnectionsPerSource`; a
//! client is an IPv4 address or an IPv6 prefix of `ipv6SourcePrefix` bits, see
//! [`SourceKey`]) and in all (derived from the open-file limit, since each
//! connection holds a descriptor). A connection over a cap is reset at once and counted, so
//! the edge refuses cleanly instead of running into EMFILE, where it could accept nobody.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::source_key::SourceKey;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source (address or IPv6 prefix) held `maxConnectionsPerSource` connections.
    PerSource,
    /// The edge held as many connections as its descriptors allow.
    Capacity,
}

/// The caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionCaps {
    pub(crate) max_total: u64,
    /// Never more than half of `max_total`, so that one source cannot lock out the rest.
    pub(crate) max_per_source: u64,
    /// IPv6 addresses sharing this many leading bits are one source.
    pub(crate) ipv6_prefix: u8,
}

impl ConnectionCaps {
    pub(crate) fn new(max_total: u64, configured_per_source: u32, ipv6_prefix: u8) -> Self {
        Self {
            max_total,
            max_per_source: u64::from(configured_per_source).min((max_total / 2).max(1)),
            ipv6_prefix,
        }
    }
}

#[derive(Debug)]
struct Open {
    by_source: HashMap<SourceKey, u64>,
    total: u64,
    caps: ConnectionCaps,
}

/// Counts open connections per source; hands out a [`ConnectionSlot`] per admitted one.
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    open: Mutex<Open>,
    refused_per_source: AtomicU64,
    refused_capacity: AtomicU64,
}

impl ConnectionLimiter {
    pub(crate) fn new(caps: ConnectionCaps) -> Self {
        Self {
            open: Mutex::new(Open {
                by_source: HashMap::new(),
                total: 0,
                caps,
            }),
            refused_per_source: AtomicU64::new(0),
            refused_capacity: AtomicU64::new(0),
        }
    }

    /// Changes the caps; connections already open stay (new ones wait for room).
    pub(crate) fn set_caps(&self, caps: ConnectionCaps) {
        self.lock().caps = caps;
    }

    pub(crate) fn caps(&self) -> ConnectionCaps {
        self.lock().caps
    }

    /// Admits a connection from `source`, or refuses it (and counts why).
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.lock();
        let source = SourceKey::with_ipv6_prefix(source, open.caps.ipv6_prefix);
        let refusal = if open.total >= open.caps.max_total {
            Some((Refusal::Capacity, &self.refused_capacity))
        } else if open.by_source.get(&source).copied().unwrap_or(0) >= open.caps.max_per_source {
            Some((Refusal::PerSource, &self.refused_per_source))
        } else {
            None
        };
        if let Some((refusal, counter)) = refusal {
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        *open.by_source.entry(source).or_insert(0) += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            source,
        })
    }

    /// Connections refused per source and for capacity, so far.
    pub(crate) fn refused(&self) -> (u64, u64) {
        (
            self.refused_per_source.load(Ordering::Relaxed),
            self.refused_capacity.load(Ordering::Relaxed),
        )
    }

    fn release(&self, source: SourceKey) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_source.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_source.remove(&source);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        crate::sync::lock(&self.open)
    }
}

/// One admitted connection; gives its place back when dropped (however its task ends).
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    /// The key it was counted under (the prefix in force when it was admitted).
    source: SourceKey,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn per_source_and_total_caps_refuse_and_count_and_slots_give_back() {
        let limiter = Arc::new(ConnectionLimiter::new(ConnectionCaps::new(5, 2, 64)));
        let a1 = limiter.admit(A).unwrap();
        let _a2 = limiter.admit(A).unwrap();
        assert_eq!(limiter.admit(A).unwrap_err(), Refusal::PerSource);
        // The IPv4-mapped form of A is A.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(limiter.admit(mapped).unwrap_err(), Refusal::PerSource);
        let _b: Vec<_> = (0..2).map(|_| limiter.admit(B).unwrap()).collect();
        let c = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
        let _c1 = limiter.admit(c).unwrap();
        assert_eq!(limiter.admit(c).unwrap_err(), Refusal::Capacity);
        assert_eq!(limiter.refused(), (2, 1));
        drop(a1);
        assert!(limiter.admit(A).is_ok());
    }

    #[test]
    fn ipv6_clients_are_capped_per_configured_prefix() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let limiter = Arc::new(ConnectionLimiter::new(ConnectionCaps::new(100, 2, 64)));
        let _a = limiter.admit(v6("2001:db8:1:1::a")).unwrap();
        let b = limiter.admit(v6("2001:db8:1:1::b")).unwrap();
        assert_eq!(
            limiter.admit(v6("2001:db8:1:1:ffff::c")).unwrap_err(),
            Refusal::PerSource
        );
        let _other = limiter.admit(v6("2001:db8:1:2::a")).unwrap();
        // With /128 each address is its own source; the slots admitted under /64 still give
        // back what they took.
        limiter.set_caps(ConnectionCaps::new(100, 2, 128));
        let _c = limiter.admit(v6("2001:db8:1:1::c")).unwrap();
        drop(b);
        assert_eq!(limiter.lock().by_source.len(), 3);
    }

    #[test]
    fn one_source_never_gets_more_than_half() {
        assert_eq!(ConnectionCaps::new(894, 1024, 64).max_per_source, 447);
        assert_eq!(
            ConnectionCaps::new(1_000_000, 1024, 64).max_per_source,
            1024
        );
        assert_eq!(ConnectionCaps::new(1, 1024, 64).max_per_source, 1);
        assert_eq!(ConnectionCaps::new(0, 1024, 64).max_per_source, 1);
    }
}
