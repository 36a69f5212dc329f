//! The edge firewall: the hub's `firewallConfig` snapshot applied to the kernel's nf_tables
//! over netlink (docs/decisions.md, "Firewall").
//!
//! [`snapshot`] validates a snapshot (on the hub before pushing, and again on the edge),
//! [`ruleset`] translates it into nftables objects (pure) behind the edge's [`exemption`] (what
//! no snapshot can block: the edge's hub and the flows it opened), [`expr`] encodes the expressions the
//! netlink crate does not know, and [`netlink`] sends the whole ruleset as one atomic batch.
//! The edge's integration (when to apply, events, status, reports to the hub) lives in
//! `edge::firewall`.

pub(crate) mod exemption;
pub(crate) mod expr;
pub(crate) mod netlink;
pub(crate) mod ruleset;
pub(crate) mod snapshot;

use remoteingress_ipc_schema::FirewallConfig;
use sha2::{Digest, Sha256};

/// Identifies a snapshot: the hub computes it for what it pushed, the edge for what it applied,
/// and the hub's status compares the two. Hex SHA-256 of the snapshot's JSON (`null` for none);
/// both sides serialise the same type, so equal snapshots give equal digests.
pub(crate) fn digest(config: Option<&FirewallConfig>) -> String {
    let json = serde_json::to_vec(&config).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_tells_snapshots_apart() {
        let a = FirewallConfig {
            blocked_ips: Some(vec!["192.0.2.1".into()]),
            ..Default::default()
        };
        assert_eq!(digest(Some(&a)), digest(Some(&a.clone())));
        assert_ne!(digest(Some(&a)), digest(None));
        assert_ne!(digest(Some(&a)), digest(Some(&FirewallConfig::default())));
        assert_eq!(digest(None).len(), 64);
    }
}
