//! What the hub pushes to an edge (its ports, firewall, egress policy, limits and timing), and
//! the warning for PROXY v1 asked of UDP ports.

use remoteingress_ipc_schema::ProxyProtocolVersion;

use crate::config::{AllowedEdgeSettings, EdgeLimitSettings, HubSettings, PerformancePush};
use crate::status_fields::count;
use crate::transport::handshake::{EdgeConfigPush, InstanceId};

/// Says, for every edge whose UDP ports were explicitly given PROXY v1, that they get v2:
/// v1 has no UDP form, and sending v2 without saying so surprised operators (issue #28).
pub(super) fn warn_v1_on_udp<'a>(
    edges: impl Iterator<Item = &'a AllowedEdgeSettings>,
    hub: Option<ProxyProtocolVersion>,
) {
    for edge in edges {
        let ports = edge
            .proxy_protocol
            .udp_ports_asking_for_v1(&edge.listen_ports_udp, hub);
        if !ports.is_empty() {
            tracing::warn!(
                edge_id = %edge.id,
                udp_ports = ?ports,
                "proxyProtocol v1 has no UDP form: these UDP ports get PROXY v2 headers; set \
                 proxyProtocol per port (targetPorts) to v2 to say so, or to none for bare datagrams"
            );
        }
    }
}

/// The configuration pushed to an edge.
pub(super) fn push_for(
    allowed: &AllowedEdgeSettings,
    settings: &HubSettings,
    hub_instance: &InstanceId,
) -> EdgeConfigPush {
    let performance = settings.performance.to_ipc();
    EdgeConfigPush {
        heartbeat_timeout_secs: Some(performance.heartbeat_timeout_secs),
        udp_session_idle_secs: Some(performance.udp_session_idle_secs),
        performance: Some(PerformancePush::from(&settings.performance)),
        listen_ports: allowed.listen_ports.clone(),
        listen_ports_udp: allowed.listen_ports_udp.clone(),
        stun_interval_secs: allowed.stun_interval_secs,
        firewall_config: allowed.firewall_config.clone(),
        egress: allowed.egress.clone(),
        hub_instance_id: Some(hub_instance.to_string()),
        // The edge caps its public connections (each one a stream here) by `maxStreams`: it gets
        // no more than this hub can forward, so one busy address at the edge (held to half the
        // edge's cap) cannot take every stream the hub has.
        limits: Some(EdgeLimitSettings {
            max_streams: allowed
                .limits
                .max_streams
                .min(count(settings.forwarding_budget.capacity())),
            ..allowed.limits
        }),
    }
}
