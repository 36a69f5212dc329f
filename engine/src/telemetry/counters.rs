//! Counters of things that are reported as events (login failures, connect failures, egress
//! attempts, firewall applies, ...): the [`crate::events::EventSink`] counts every event it is
//! given, so no call site has to remember a metric, and the counts are exact even when the event
//! consumer falls behind. Also the one measurement that is not an event: the hub's heartbeat
//! round-trip times, observed by each edge's session once per PING.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use remoteingress_ipc_schema::{ConnectFailureReason, EgressOutcome, Event};

use crate::wire_name::wire_name;

/// A label set with one `reason` (or `outcome`, `kind`) value from a fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

/// One edge (the edge ids are the allowed edges: bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EdgeLabel {
    pub edge_id: String,
}

/// Egress attempts per edge and outcome (the edge ids are the allowed edges: bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EgressLabels {
    pub edge_id: String,
    pub outcome: String,
}

/// Buckets of the heartbeat RTT histogram: 0.5 ms doubling to about 4 s.
fn rtt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The event-derived counters of one process (one role).
#[derive(Debug, Clone)]
pub(crate) struct EventCounters {
    /// Hub: PING to PONG time per edge, in seconds.
    pub heartbeat_rtt: Family<EdgeLabel, Histogram, fn() -> Histogram>,
    /// Hub: failed logins by kind (`refused`: wrong secret or unknown id; `handshake`).
    pub login_failures: Family<ReasonLabel, Counter>,
    /// Hub: egress attempts by edge and outcome.
    pub egress: Family<EgressLabels, Counter>,
    /// Hub: logins refused per edge because another instance of it was connected. Not a login
    /// failure (the refused edge knows its secret), so not in `login_failures`.
    pub duplicate_refusals: Family<EdgeLabel, Counter>,
    /// Edge: tunnels lost.
    pub tunnel_disconnects: Counter,
    /// Edge: failed connection attempts by reason.
    pub connect_failures: Family<ReasonLabel, Counter>,
    /// Edge: firewall snapshots applied, and snapshots that could not be (no CAP_NET_ADMIN).
    pub firewall_applies: Counter,
    pub firewall_unavailable: Counter,
    /// Edge: ports that failed to bind (each attempt).
    pub port_bind_failures: Counter,
    /// Both: connections to the metrics/health listener closed to bound them, by reason
    /// (`displaced_idle`, `refused_busy`, `request_timeout`).
    pub http_connections_shed: Family<ReasonLabel, Counter>,
}

/// Kinds of `login_failures`.
const LOGIN_FAILURE_KINDS: [&str; 2] = ["refused", "handshake"];

/// Reasons of `http_connections_shed`.
pub(crate) const SHED_REASONS: [&str; 3] = ["displaced_idle", "refused_busy", "request_timeout"];

/// Every reason of `connect_failures`.
fn connect_failure_reasons() -> [ConnectFailureReason; 7] {
    use ConnectFailureReason as R;
    let all = [
        R::Unreachable,
        R::Handshake,
        R::Unauthorized,
        R::HubNotVerified,
        R::Timeout,
        R::Protocol,
        R::DuplicateEdge,
    ];
    // A new reason is a compile error here, so it cannot be left out of the list above.
    for reason in all {
        match reason {
            R::Unreachable
            | R::Handshake
            | R::Unauthorized
            | R::HubNotVerified
            | R::Timeout
            | R::Protocol
            | R::DuplicateEdge => {}
        }
    }
    all
}

/// Every outcome of `egress` (a new one is a compile error here, as above).
fn egress_outcomes() -> [EgressOutcome; 4] {
    use EgressOutcome as O;
    let all = [O::Connected, O::Denied, O::Failed, O::Timeout];
    for outcome in all {
        match outcome {
            O::Connected | O::Denied | O::Failed | O::Timeout => {}
        }
    }
    all
}

/// Creates the series of `reasons` at 0, so a failure that never happened reads 0 rather than
/// being absent (an alert on `increase(...) > 0` then sees its first failure).
fn at_zero(family: &Family<ReasonLabel, Counter>, reasons: impl IntoIterator<Item = String>) {
    for reason in reasons {
        drop(family.get_or_create(&ReasonLabel { reason }));
    }
}

impl Default for EventCounters {
    fn default() -> Self {
        let counters = Self {
            heartbeat_rtt: Family::new_with_constructor(rtt_histogram),
            login_failures: Family::default(),
            egress: Family::default(),
            duplicate_refusals: Family::default(),
            tunnel_disconnects: Counter::default(),
            connect_failures: Family::default(),
            firewall_applies: Counter::default(),
            firewall_unavailable: Counter::default(),
            port_bind_failures: Counter::default(),
            http_connections_shed: Family::default(),
        };
        at_zero(
            &counters.login_failures,
            LOGIN_FAILURE_KINDS.map(str::to_owned),
        );
        at_zero(
            &counters.connect_failures,
            connect_failure_reasons().map(|reason| wire_name(&reason)),
        );
        at_zero(
            &counters.http_connections_shed,
            SHED_REASONS.map(str::to_owned),
        );
        counters
    }
}

impl EventCounters {
    /// Records one heartbeat round trip of `edge_id`.
    pub(crate) fn heartbeat_rtt(&self, edge_id: &str, rtt: std::time::Duration) {
        self.heartbeat_rtt
            .get_or_create(&EdgeLabel {
                edge_id: edge_id.to_owned(),
            })
            .observe(rtt.as_secs_f64());
    }

    /// An edge was allowed: its egress and duplicate-refusal series start at 0.
    pub(crate) fn edge_allowed(&self, edge_id: &str) {
        drop(self.duplicate_refusals.get_or_create(&EdgeLabel {
            edge_id: edge_id.to_owned(),
        }));
        for outcome in egress_outcomes() {
            drop(self.egress.get_or_create(&EgressLabels {
                edge_id: edge_id.to_owned(),
                outcome: wire_name(&outcome),
            }));
        }
    }

    /// An edge was removed from the allowed list: its series go (the label stays bounded by
    /// the allowed edges).
    pub(crate) fn edge_removed(&self, edge_id: &str) {
        for outcome in egress_outcomes() {
            self.egress.remove(&EgressLabels {
                edge_id: edge_id.to_owned(),
                outcome: wire_name(&outcome),
            });
        }
        self.heartbeat_rtt.remove(&EdgeLabel {
            edge_id: edge_id.to_owned(),
        });
        self.duplicate_refusals.remove(&EdgeLabel {
            edge_id: edge_id.to_owned(),
        });
    }

    /// Counts `event`.
    pub(crate) fn observe(&self, event: &Event) {
        match event {
            Event::EdgeAuthFailed(failed) => {
                let kind = if failed.login_refused {
                    "refused"
                } else {
                    "handshake"
                };
                self.login_failures
                    .get_or_create(&ReasonLabel {
                        reason: kind.to_owned(),
                    })
                    .inc();
            }
            Event::EdgeDuplicateRefused(refused) => {
                self.duplicate_refusals
                    .get_or_create(&EdgeLabel {
                        edge_id: refused.edge_id.clone(),
                    })
                    .inc();
            }
            Event::EgressConnection(attempt) => {
                self.egress
                    .get_or_create(&EgressLabels {
                        edge_id: attempt.edge_id.clone(),
                        outcome: wire_name(&attempt.outcome),
                    })
                    .inc();
            }
            Event::TunnelDisconnected(_) => {
                self.tunnel_disconnects.inc();
            }
            Event::TunnelConnectFailed(failed) => {
                self.connect_failures
                    .get_or_create(&ReasonLabel {
                        reason: wire_name(&failed.reason),
                    })
                    .inc();
            }
            Event::FirewallConfigUpdated(_) => {
                self.firewall_applies.inc();
            }
            Event::FirewallUnavailable(_) => {
                self.firewall_unavailable.inc();
            }
            Event::PortBindFailed(_) => {
                self.port_bind_failures.inc();
            }
            _ => {}
        }
    }
}
