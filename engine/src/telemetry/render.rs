//! A status snapshot (what `getStatus` returns) and the event counters, as Prometheus/OpenMetrics
//! text. Labels are bounded: an edge id (the allowed edges), a transport, a reason from a fixed
//! set; never a client address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remoteingress_ipc_schema::{EdgeStatus, EgressListenerStatus, HubStatus, StatusResult};

use super::counters::EventCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabel {
    edge_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The metrics text for `/metrics`.
pub(crate) fn render(status: &StatusResult, counters: &EventCounters) -> String {
    let mut registry = Registry::with_prefix("remoteingress");
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: crate::build_info::VERSION.to_owned(),
            commit: crate::build_info::COMMIT.to_owned(),
        })
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the labels say which build runs",
        build,
    );
    let running = !matches!(status, StatusResult::Idle(_));
    gauge(
        &mut registry,
        "running",
        "1 while a role runs",
        u64::from(running),
    );
    registry.register(
        "http_connections_shed",
        "Connections to this metrics/health listener closed to bound them, by reason",
        counters.http_connections_shed.clone(),
    );
    match status {
        StatusResult::Hub(hub) => hub_metrics(&mut registry, hub, counters),
        StatusResult::Edge(edge) => edge_metrics(&mut registry, edge, counters),
        StatusResult::Idle(_) => {}
    }
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "cannot encode the metrics");
    }
    text
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric: Gauge = Gauge::default();
    metric.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, metric);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric: Counter = Counter::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

/// One value per connected edge, as a gauge or a counter family. The hub keeps an edge's
/// counters across its reconnects, so a counter never goes down while the edge stays allowed.
struct PerEdge<'a> {
    registry: &'a mut Registry,
    edges: &'a [remoteingress_ipc_schema::ConnectedEdgeStatus],
}

impl PerEdge<'_> {
    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        value: impl Fn(&remoteingress_ipc_schema::ConnectedEdgeStatus) -> u64,
    ) {
        let family = Family::<EdgeLabel, Gauge>::default();
        for edge in self.edges {
            family
                .get_or_create(&EdgeLabel {
                    edge_id: edge.edge_id.clone(),
                })
                .set(i64::try_from(value(edge)).unwrap_or(i64::MAX));
        }
        self.registry.register(name, help, family);
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        value: impl Fn(&remoteingress_ipc_schema::ConnectedEdgeStatus) -> u64,
    ) {
        let family = Family::<EdgeLabel, Counter>::default();
        for edge in self.edges {
            family
                .get_or_create(&EdgeLabel {
                    edge_id: edge.edge_id.clone(),
                })
                .inc_by(value(edge));
        }
        self.registry.register(name, help, family);
    }
}

fn hub_metrics(registry: &mut Registry, hub: &HubStatus, counters: &EventCounters) {
    gauge(
        registry,
        "hub_allowed_edges",
        "Edges in the allowed list",
        hub.allowed_edges.into(),
    );
    let by_transport = Family::<TransportLabel, Gauge>::default();
    // Both series exist from the start (at 0), so a dashboard sees them before any edge.
    for transport in ["tcpTls", "quic"] {
        by_transport
            .get_or_create(&TransportLabel {
                transport: transport.to_owned(),
            })
            .set(0);
    }
    for edge in &hub.connected_edges {
        by_transport
            .get_or_create(&TransportLabel {
                transport: crate::wire_name::wire_name(&edge.transport),
            })
            .inc();
    }
    registry.register(
        "hub_connected_edges",
        "Edges connected now, by transport",
        by_transport,
    );
    counter(
        registry,
        "hub_handshakes_refused",
        "Pending tunnel connections that made way for newer ones (handshake caps)",
        hub.handshakes_refused,
    );
    gauge(
        registry,
        "hub_slowed_sources",
        "Sources whose logins are being slowed after failures",
        hub.slowed_sources.into(),
    );
    gauge(
        registry,
        "hub_slowed_edge_ids",
        "Edge ids whose logins are being slowed after failures",
        hub.slowed_edge_ids.into(),
    );
    gauge(
        registry,
        "hub_forwarded_streams",
        "TCP streams forwarded to the target now",
        hub.limits.streams,
    );
    gauge(
        registry,
        "hub_max_forwarded",
        "Most streams and UDP sessions forwarded at once (from the open-file limit)",
        hub.limits.max_forwarded,
    );
    counter(
        registry,
        "hub_shares_reclaimed",
        "Streams reset and UDP sessions closed of edges over their fair share, for an edge within its own",
        hub.limits.shares_reclaimed,
    );
    gauge(
        registry,
        "hub_udp_sessions",
        "UDP sessions towards the target now",
        hub.limits.udp_sessions,
    );
    registry.register(
        "hub_login_failures",
        "Failed edge logins by kind (refused: wrong secret or unknown id)",
        counters.login_failures.clone(),
    );
    registry.register(
        "hub_duplicate_edge_refusals",
        "Logins refused because another process with the same edge id is connected, by edge",
        counters.duplicate_refusals.clone(),
    );
    registry.register(
        "hub_egress_connections",
        "Egress attempts by edge and outcome",
        counters.egress.clone(),
    );
    registry.register(
        "hub_heartbeat_rtt_seconds",
        "Time from the hub's PING to the edge's PONG",
        counters.heartbeat_rtt.clone(),
    );
    // Every allowed edge, connected or not, so an alert on `== 0` fires for an edge that
    // never came up.
    let connected = Family::<EdgeLabel, Gauge>::default();
    let tunnels = Family::<EdgeLabel, Counter>::default();
    for edge in &hub.edges {
        let label = EdgeLabel {
            edge_id: edge.edge_id.clone(),
        };
        connected
            .get_or_create(&label)
            .set(i64::from(edge.connected));
        tunnels.get_or_create(&label).inc_by(edge.tunnels);
    }
    registry.register(
        "hub_edge_connected",
        "1 while a tunnel of this allowed edge is up, else 0",
        connected,
    );
    registry.register(
        "hub_edge_tunnels",
        "Tunnels this allowed edge has established (each reconnect adds one)",
        tunnels,
    );
    let mut per_edge = PerEdge {
        registry,
        edges: &hub.connected_edges,
    };
    per_edge.gauge("hub_edge_streams_active", "Streams open now", |e| {
        e.active_streams
    });
    per_edge.counter(
        "hub_edge_streams",
        "Streams opened (across the edge's reconnects)",
        |e| e.streams_opened_total,
    );
    per_edge.counter(
        "hub_edge_bytes_in",
        "Bytes from clients towards the target (finished streams)",
        |e| e.bytes_in,
    );
    per_edge.counter(
        "hub_edge_bytes_out",
        "Bytes from the target towards clients (finished streams)",
        |e| e.bytes_out,
    );
    per_edge.gauge("hub_edge_udp_sessions", "UDP sessions open now", |e| {
        e.udp_sessions
    });
    per_edge.counter("hub_edge_udp_dropped", "UDP datagrams dropped", |e| {
        e.udp_dropped
    });
    per_edge.counter(
        "hub_edge_udp_datagrams_in",
        "UDP datagrams from clients towards the target",
        |e| e.udp_datagrams_in,
    );
    per_edge.counter(
        "hub_edge_udp_datagrams_out",
        "UDP datagrams from the target towards clients",
        |e| e.udp_datagrams_out,
    );
    per_edge.counter(
        "hub_edge_target_connect_errors",
        "Streams whose target could not be reached",
        |e| e.target_connect_errors,
    );
    per_edge.counter(
        "hub_edge_refused_ports",
        "Streams and UDP sessions refused: port not assigned",
        |e| e.refused_ports,
    );
    per_edge.counter(
        "hub_edge_refused_sources",
        "Streams and UDP sessions refused: a client address no public client can have",
        |e| e.refused_sources,
    );
    per_edge.counter(
        "hub_edge_streams_refused",
        "Streams refused: the edge's stream cap or the hub's budget",
        |e| e.limits.streams_refused,
    );
    per_edge.counter("hub_edge_udp_refused", "UDP sessions refused: caps", |e| {
        e.limits.udp_refused
    });
    per_edge.counter(
        "hub_edge_window_budget_resets",
        "Streams reset: the hub held more of the edge's unread data than its window budget",
        |e| e.limits.window_budget_resets,
    );
    per_edge.gauge(
        "hub_edge_held_bytes",
        "Bytes received from the edge that its targets have not read yet (TLS)",
        |e| e.limits.held_bytes,
    );
    per_edge.gauge("hub_edge_egress_streams", "Egress streams open now", |e| {
        e.egress_streams
    });
    per_edge.gauge(
        "hub_edge_connected_since_seconds",
        "Unix time the tunnel came up",
        |e| e.connected_at_ms / 1000,
    );
    egress_listener_metrics(registry, &hub.egress_listeners);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listen_addr: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerResultLabels {
    listen_addr: String,
    result: String,
}

/// Per egress listener (labelled by its address: the configured listeners, bounded): open
/// connections, and what became of the accepted ones, every result from 0.
fn egress_listener_metrics(registry: &mut Registry, listeners: &[EgressListenerStatus]) {
    let open = Family::<ListenerLabels, Gauge>::default();
    let results = Family::<ListenerResultLabels, Counter>::default();
    for listener in listeners {
        let listen_addr = listener.listen_addr.clone();
        open.get_or_create(&ListenerLabels {
            listen_addr: listen_addr.clone(),
        })
        .set(i64::try_from(listener.open_connections).unwrap_or(i64::MAX));
        for (result, value) in [
            ("connected", listener.connected),
            ("failed", listener.failed),
            (
                "refused_edge_not_connected",
                listener.refused_edge_not_connected,
            ),
            ("refused_full", listener.refused_full),
        ] {
            results
                .get_or_create(&ListenerResultLabels {
                    listen_addr: listen_addr.clone(),
                    result: result.to_owned(),
                })
                .inc_by(value);
        }
    }
    registry.register(
        "hub_egress_listener_open_connections",
        "Connections open now on a persistent egress listener",
        open,
    );
    registry.register(
        "hub_egress_listener_connections",
        "Connections accepted by a persistent egress listener, by result",
        results,
    );
}

fn edge_metrics(registry: &mut Registry, edge: &EdgeStatus, counters: &EventCounters) {
    gauge(
        registry,
        "edge_tunnel_connected",
        "1 while the tunnel to the hub is up",
        u64::from(edge.connected),
    );
    counter(
        registry,
        "edge_tunnel_disconnects",
        "Tunnels lost",
        counters.tunnel_disconnects.get(),
    );
    registry.register(
        "edge_connect_failures",
        "Failed connection attempts by reason",
        counters.connect_failures.clone(),
    );
    gauge(
        registry,
        "edge_streams_active",
        "Client connections open now",
        edge.active_streams,
    );
    counter(
        registry,
        "edge_streams",
        "Client connections tunnelled",
        edge.streams_opened_total,
    );
    counter(
        registry,
        "edge_bytes_in",
        "Bytes from clients towards the hub (finished connections)",
        edge.bytes_in,
    );
    counter(
        registry,
        "edge_bytes_out",
        "Bytes from the hub towards clients (finished connections)",
        edge.bytes_out,
    );
    gauge(
        registry,
        "edge_listen_ports",
        "TCP ports listening",
        edge.listen_ports.len() as u64,
    );
    gauge(
        registry,
        "edge_listen_ports_udp",
        "UDP ports listening",
        edge.listen_ports_udp.len() as u64,
    );
    gauge(
        registry,
        "edge_port_bind_failures",
        "Assigned ports that cannot be bound now",
        edge.port_bind_failures.len() as u64,
    );
    counter(
        registry,
        "edge_port_bind_attempts_failed",
        "Failed attempts to bind an assigned port",
        counters.port_bind_failures.get(),
    );
    gauge(
        registry,
        "edge_udp_sessions",
        "UDP sessions open now",
        edge.udp_sessions,
    );
    counter(
        registry,
        "edge_udp_datagrams_in",
        "UDP datagrams from clients towards the hub",
        edge.udp_datagrams_in,
    );
    counter(
        registry,
        "edge_udp_datagrams_out",
        "UDP datagrams from the hub towards clients",
        edge.udp_datagrams_out,
    );
    counter(
        registry,
        "edge_udp_dropped",
        "UDP datagrams dropped",
        edge.udp_dropped,
    );
    let limits = &edge.limits;
    let refused = Family::<ReasonLabel, Counter>::default();
    for (reason, value) in [
        ("tcp_per_source", limits.tcp_refused_per_source),
        ("tcp_capacity", limits.tcp_refused_capacity),
        ("udp_evicted_per_source", limits.udp_evicted_per_source),
        ("udp_evicted_capacity", limits.udp_evicted_capacity),
        ("udp_rate_limited", limits.udp_rate_limited),
    ] {
        refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc_by(value);
    }
    registry.register(
        "edge_refused",
        "Client connections and UDP sessions refused or evicted by the limits",
        refused,
    );
    counter(
        registry,
        "edge_firewall_applies",
        "Firewall snapshots applied",
        counters.firewall_applies.get(),
    );
    counter(
        registry,
        "edge_firewall_unavailable",
        "Firewall snapshots that could not be applied (no CAP_NET_ADMIN)",
        counters.firewall_unavailable.get(),
    );
}
