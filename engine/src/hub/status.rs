//! The hub's status (`getStatus`, `/status`, `/metrics`): every connected edge with its
//! counters, limits and firewall, every allowed edge's record, and the hub-wide limits.

use std::time::Instant;

use remoteingress_ipc_schema::{
    ConnectedEdgeFirewallStatus, ConnectedEdgeLimitStatus, ConnectedEdgeStatus, FirewallState,
    HubLimitStatus, HubRole, HubStatus, TunnelTransport,
};

use super::{auth, ConnectedEdge, HubActor};
use crate::metrics::UdpStats;
use crate::status_fields::{count, wide};

impl HubActor {
    pub(super) fn status(&self) -> HubStatus {
        let (handshakes_refused, slowed_sources, slowed_edge_ids) = auth::lock(&self.throttle)
            .map_or((0, 0, 0), |throttle| {
                let now = Instant::now();
                (
                    throttle.refused(),
                    count(throttle.slowed_sources(now)),
                    count(throttle.slowed_edge_ids(now)),
                )
            });
        let mut connected_edges: Vec<ConnectedEdgeStatus> = self
            .connected
            .iter()
            .filter_map(|(edge_id, edge)| {
                let (tunnel, transport) = edge.tunnel.as_ref()?;
                let window = tunnel.mux_stats().unwrap_or_default();
                let stats = edge.stats.snapshot();
                let egress_enabled = self
                    .allowed
                    .get(edge_id)
                    .and_then(|a| a.egress.as_ref())
                    .is_some_and(|e| e.enabled);
                Some(ConnectedEdgeStatus {
                    edge_id: edge_id.clone(),
                    instance_id: edge.instance.as_ref().map(ToString::to_string),
                    transport: *transport,
                    remote_addr: edge.remote.to_string(),
                    connected_at_ms: edge.connected_at_ms,
                    public_ip: edge.public_ip.clone(),
                    active_streams: stats.active,
                    streams_opened_total: stats.opened_total,
                    streams_closed_total: stats.closed_total,
                    bytes_in: stats.bytes_in,
                    bytes_out: stats.bytes_out,
                    udp_sessions: edge.udp_stats.sessions(),
                    udp_dropped: edge.udp_stats.dropped(),
                    udp_datagrams_in: edge.udp_stats.datagrams().0,
                    udp_datagrams_out: edge.udp_stats.datagrams().1,
                    target_connect_errors: stats.target_connect_errors,
                    refused_ports: edge.grant.refused(),
                    refused_sources: edge.grant.sources().refused(),
                    capabilities: capabilities(*transport),
                    egress_enabled,
                    egress_streams: self.egress.open_streams(edge_id),
                    limits: ConnectedEdgeLimitStatus {
                        window_budget_resets: window.budget_resets,
                        held_bytes: window.held_bytes,
                        max_udp_sessions: UdpStats::get(&edge.udp_stats.max_sessions),
                        udp_evicted: UdpStats::get(&edge.udp_stats.evicted_capacity),
                        udp_refused: UdpStats::get(&edge.udp_stats.refused),
                        max_streams: edge.stream_cap.max(),
                        streams_refused: edge.stream_cap.refused(),
                    },
                    firewall: firewall_status(edge),
                    port_bind_failures: edge.port_bind_failures.clone(),
                })
            })
            .collect();
        connected_edges.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        let mut edges: Vec<_> = self
            .records
            .iter()
            .map(|(edge_id, record)| {
                let transport = self
                    .connected
                    .get(edge_id)
                    .and_then(|edge| edge.tunnel.as_ref())
                    .map(|(_, transport)| *transport);
                record.state(edge_id, transport)
            })
            .collect();
        edges.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        HubStatus {
            role: HubRole::Hub,
            running: true,
            instance_id: self.instance.to_string(),
            tunnel_port: self.tunnel_port,
            cert_sha256: self.fingerprint.clone(),
            target_host: self.settings.target_host.clone(),
            stream_event_mode: self.settings.stream_event_mode,
            allowed_edges: count(self.allowed.len()),
            connected_edges,
            edges,
            handshakes_refused,
            slowed_sources,
            slowed_edge_ids,
            limits: HubLimitStatus {
                open_file_limit: crate::fd_limit::current(),
                max_udp_sessions: wide(self.settings.udp_budget.capacity()),
                udp_sessions: wide(self.settings.udp_budget.in_use()),
                max_forwarded: wide(self.settings.forwarding_budget.capacity()),
                streams: wide(self.settings.forwarded_streams()),
                shares_reclaimed: self.settings.holders.reclaimed(),
            },
            egress_listeners: self.egress_listeners.status(),
        }
    }
}

/// The edge's firewall as it last reported it, compared with what the hub pushed last.
fn firewall_status(edge: &ConnectedEdge) -> ConnectedEdgeFirewallStatus {
    let Some(report) = &edge.firewall else {
        return ConnectedEdgeFirewallStatus {
            state: FirewallState::None,
            in_sync: false,
            error: None,
        };
    };
    let latest = crate::firewall::digest(edge.pushed.firewall_config.as_ref());
    ConnectedEdgeFirewallStatus {
        state: report.state,
        in_sync: report.digest == latest
            && matches!(report.state, FirewallState::Applied | FirewallState::None),
        error: report.error.clone(),
    }
}

/// Features a tunnel offers: egress needs hub-opened streams, which only QUIC has.
fn capabilities(transport: TunnelTransport) -> Vec<String> {
    let mut list = vec!["tcp".to_owned(), "udp".to_owned()];
    if transport == TunnelTransport::Quic {
        list.push("egress".to_owned());
    }
    list
}
