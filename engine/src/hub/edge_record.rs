//! What the hub keeps about each allowed edge from the moment it is allowed until it is
//! removed, across its tunnels: the counters its tunnels add to (so a reconnect does not reset
//! them, and `/metrics` shows counters that only go up), its port grant and stream cap (kept
//! current by the actor whether the edge is connected or not), how many tunnels it has
//! established and the last thing that went wrong. Bounded by the allowed-edge list.

use std::collections::HashMap;
use std::sync::Arc;

use remoteingress_ipc_schema::{AllowedEdgeState, TunnelTransport};

use super::grant::PortGrant;
use super::stream_cap::StreamCap;
use crate::config::AllowedEdgeSettings;
use crate::metrics::{StreamStats, UdpStats};
use crate::status_fields::unix_ms;

/// One allowed edge's state that outlives its tunnels.
#[derive(Debug)]
pub(super) struct EdgeRecord {
    pub(super) stats: Arc<StreamStats>,
    pub(super) udp_stats: Arc<UdpStats>,
    pub(super) grant: Arc<PortGrant>,
    pub(super) stream_cap: Arc<StreamCap>,
    /// Tunnels established (a session that became ready).
    tunnels: u64,
    /// Why the last tunnel ended or the last login was refused, and when (Unix ms).
    last_error: Option<(String, u64)>,
}

impl EdgeRecord {
    fn new(allowed: &AllowedEdgeSettings) -> Self {
        let record = Self {
            stats: Arc::default(),
            udp_stats: Arc::default(),
            grant: Arc::new(PortGrant::default()),
            stream_cap: Arc::new(StreamCap::new(allowed.limits.max_streams)),
            tunnels: 0,
            last_error: None,
        };
        record.apply(allowed);
        record
    }

    /// Applies the edge's current settings: ports and their PROXY choices (before any push, so a
    /// removed port is refused from now on), stream cap, UDP cap.
    fn apply(&self, allowed: &AllowedEdgeSettings) {
        self.grant.set_allowed(allowed);
        self.stream_cap.set_max(allowed.limits.max_streams);
        self.udp_stats.max_sessions.store(
            u64::from(allowed.limits.max_udp_sessions),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// A tunnel of this edge is up.
    pub(super) fn tunnel_up(&mut self) {
        self.tunnels += 1;
    }

    /// Something went wrong for this edge (a tunnel ended, a login was refused).
    pub(super) fn failed(&mut self, why: impl Into<String>) {
        self.last_error = Some((why.into(), unix_ms()));
    }

    /// The edge's state for status; `transport` is its tunnel's while connected.
    pub(super) fn state(
        &self,
        edge_id: &str,
        transport: Option<TunnelTransport>,
    ) -> AllowedEdgeState {
        AllowedEdgeState {
            edge_id: edge_id.to_owned(),
            connected: transport.is_some(),
            transport,
            tunnels: self.tunnels,
            last_error: self.last_error.as_ref().map(|(why, _)| why.clone()),
            last_error_at_ms: self.last_error.as_ref().map(|(_, at)| *at),
        }
    }
}

/// The records of the allowed edges.
#[derive(Debug, Default)]
pub(super) struct EdgeRecords(HashMap<String, EdgeRecord>);

impl EdgeRecords {
    /// Follows a new allowed list: records of removed edges are dropped (their series go with
    /// them), new edges get one, the others take their new settings and keep their counters.
    pub(super) fn sync(&mut self, allowed: &HashMap<String, AllowedEdgeSettings>) {
        self.0.retain(|edge_id, _| allowed.contains_key(edge_id));
        for (edge_id, settings) in allowed {
            match self.0.get(edge_id) {
                Some(record) => record.apply(settings),
                None => {
                    self.0.insert(edge_id.clone(), EdgeRecord::new(settings));
                }
            }
        }
    }

    pub(super) fn get(&self, edge_id: &str) -> Option<&EdgeRecord> {
        self.0.get(edge_id)
    }

    pub(super) fn get_mut(&mut self, edge_id: &str) -> Option<&mut EdgeRecord> {
        self.0.get_mut(edge_id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &EdgeRecord)> {
        self.0.iter()
    }
}
