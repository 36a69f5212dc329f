//! Which client addresses the hub believes an edge about. The edge writes each client's address
//! into the PROXY header the target trusts (for logs, rate limits, allowlists); a compromised
//! edge could claim its clients are `127.0.0.1` and reach what the target grants localhost. So
//! the hub refuses, per stream and UDP session, a source no public client can have:
//!
//! - always: unspecified (`0.0.0.0`, `::`), multicast and broadcast addresses (no TCP peer or
//!   UDP sender has them);
//! - unless the edge serves local clients: loopback, and the edge's own address (the header's
//!   destination, i.e. a client "connecting from" the address it connected to).
//!
//! An edge serves local clients when its allowed entry says so (`privateClients: true`) or when
//! its tunnel comes from a loopback address, i.e. it runs on the hub's own host (where local
//! clients are real and a compromised edge is already on the hub machine). Refusals are counted
//! per edge (`refusedSources`) and warned about with the edge's rate limit.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::proxy_protocol::ProxyHeader;

/// Why a client address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Unspecified, multicast or broadcast.
    Unusable,
    Loopback,
    /// The same address as the one the client connected to on the edge.
    EdgeOwnAddress,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unusable => "unspecified, multicast or broadcast",
            Self::Loopback => "loopback",
            Self::EdgeOwnAddress => "the edge's own address",
        }
    }
}

/// Why `header`'s source cannot be a client of this edge, if it cannot.
pub(crate) fn refusal(header: &ProxyHeader, local_clients: bool) -> Option<Refusal> {
    let source = header.source.ip().to_canonical();
    let unusable = source.is_unspecified()
        || source.is_multicast()
        || matches!(source, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        Some(Refusal::Unusable)
    } else if local_clients {
        None
    } else if source.is_loopback() {
        Some(Refusal::Loopback)
    } else if source == header.destination.ip().to_canonical() {
        Some(Refusal::EdgeOwnAddress)
    } else {
        None
    }
}

/// One edge's setting and count.
#[derive(Debug, Default)]
pub(crate) struct ClientSources {
    local_clients: AtomicBool,
    refused: AtomicU64,
}

impl ClientSources {
    /// Whether loopback and own-address clients are believed (see the module doc).
    pub(crate) fn set_local_clients(&self, allowed: bool) {
        self.local_clients.store(allowed, Ordering::Relaxed);
    }

    /// Checks `header`; a refusal is counted and returned with the total so far.
    pub(crate) fn check(&self, header: &ProxyHeader) -> Result<(), (Refusal, u64)> {
        match refusal(header, self.local_clients.load(Ordering::Relaxed)) {
            None => Ok(()),
            Some(why) => Err((why, self.refused.fetch_add(1, Ordering::Relaxed) + 1)),
        }
    }

    /// Streams and UDP sessions refused for their source so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::new(source.parse().unwrap(), destination.parse().unwrap())
    }

    #[test]
    fn public_clients_pass_impossible_ones_never_and_local_ones_when_allowed() {
        let edge = "198.51.100.1:443";
        assert_eq!(refusal(&header("203.0.113.9:5000", edge), false), None);
        assert_eq!(
            refusal(&header("[2001:db8::9]:5000", "[2001:db8::1]:443"), false),
            None
        );
        for impossible in [
            "0.0.0.0:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[::]:1",
            "[ff02::1]:1",
        ] {
            for local in [false, true] {
                assert_eq!(
                    refusal(&header(impossible, edge), local),
                    Some(Refusal::Unusable),
                    "{impossible}"
                );
            }
        }
        for (source, why) in [
            ("127.0.0.1:5000", Refusal::Loopback),
            ("127.9.9.9:5000", Refusal::Loopback),
            ("[::1]:5000", Refusal::Loopback),
            ("[::ffff:127.0.0.1]:5000", Refusal::Loopback),
            ("198.51.100.1:5000", Refusal::EdgeOwnAddress),
        ] {
            assert_eq!(refusal(&header(source, edge), false), Some(why), "{source}");
            assert_eq!(refusal(&header(source, edge), true), None, "{source}");
        }
    }

    #[test]
    fn refusals_are_counted() {
        let sources = ClientSources::default();
        let loopback = header("127.0.0.1:1", "127.0.0.2:443");
        assert_eq!(sources.check(&loopback), Err((Refusal::Loopback, 1)));
        assert_eq!(
            sources
                .check(&header("0.0.0.0:1", "127.0.0.2:443"))
                .unwrap_err()
                .1,
            2
        );
        sources.set_local_clients(true);
        assert_eq!(sources.check(&loopback), Ok(()));
        assert_eq!(sources.refused(), 2);
    }
}
