//! The edge's public listeners, reconciled with each configuration the hub pushes: new ports
//! listen at once, removed ports stop accepting (their open connections finish), and a port that
//! cannot be bound is reported (`portBindFailed`, status) while the others keep working.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use remoteingress_ipc_schema::{Event, PortBindFailedEvent, PortBindFailure, PortProtocol};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use super::accept;
use super::limits::ConnectionCaps;
use super::{EdgeShared, PortsState};
use crate::config::PerformanceSettings;
use crate::edge::udp::EdgeUdp;
use crate::events::EventSink;
use crate::fd_limit;
use crate::transport::handshake::EdgeConfigPush;
use crate::wire_name::Wire;

/// Backlog of each public listener.
const LISTEN_BACKLOG: i32 = 4096;

/// The set of bound public listeners, TCP and UDP.
pub(crate) struct Ports {
    shared: Arc<EdgeShared>,
    tcp: BTreeMap<u16, CancellationToken>,
    pub(crate) udp: EdgeUdp,
    /// The configuration last applied, re-applied to retry ports that could not be bound.
    last: Option<EdgeConfigPush>,
    /// When to retry failed binds, and the pause after that (1 s doubling to 30 s).
    retry: Option<(std::time::Instant, Duration)>,
}

/// First and longest pause between retries of a port that could not be bound.
const BIND_RETRY_FIRST: Duration = Duration::from_secs(1);
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

impl Ports {
    pub(crate) fn new(shared: Arc<EdgeShared>) -> Self {
        let udp = EdgeUdp::new(
            shared.settings.bind_address,
            PerformanceSettings::default().udp_session_idle,
            shared.tunnel.subscribe(),
            shared.udp_stats.clone(),
            shared.events.clone(),
            shared.stop.draining.clone(),
            shared.tasks.clone(),
        );
        Self {
            shared,
            tcp: BTreeMap::new(),
            udp,
            last: None,
            retry: None,
        }
    }

    /// Makes the listeners match `config`; records and reports ports that cannot be bound.
    pub(crate) fn apply(&mut self, config: &EdgeConfigPush) {
        if self.shared.stop.draining.is_cancelled() {
            // Stopping: no listener opens again.
            return;
        }
        let shared = self.shared.clone();
        let mut failures = reconcile(
            &mut self.tcp,
            &config.listen_ports,
            PortProtocol::Tcp,
            &shared.events,
            &shared.stop.draining,
            |port| {
                let address = shared.settings.bind_address;
                bind_tcp(address, port).map_err(|e| naming_address(address, port, "TCP", e))
            },
            |port, listener, stop| {
                shared.spawn(accept::accept_loop(listener, port, shared.clone(), stop));
            },
        );
        // The hub's idle time, as checked when the tunnel was made (`dial::adopt_performance`).
        self.udp
            .set_idle(shared.pushed().performance.udp_session_idle);
        let limits = config.limits.unwrap_or_default().sanitised();
        self.udp.set_limits(&limits);
        let (udp_ports, udp_failures) = self.udp.apply(&config.listen_ports_udp);
        failures.extend(udp_failures);
        let listeners = u64::try_from(self.tcp.len() + udp_ports.len()).unwrap_or(u64::MAX);
        // Each public connection is one stream at the hub, which forwards at most `maxStreams`.
        let capacity = fd_limit::edge_connections(fd_limit::current(), listeners)
            .min(u64::from(limits.max_streams));
        self.shared.connections.set_caps(ConnectionCaps::new(
            capacity,
            limits.max_connections_per_source,
            limits.ipv6_source_prefix,
        ));
        self.retry = match (failures.is_empty(), self.retry) {
            (true, _) => None,
            (false, None) => Some((
                std::time::Instant::now() + BIND_RETRY_FIRST,
                BIND_RETRY_FIRST,
            )),
            (false, kept) => kept,
        };
        self.last = Some(config.clone());
        self.shared.pushed().limits = limits;
        *self.shared.ports() = PortsState {
            listen_ports: self.tcp.keys().copied().collect(),
            listen_ports_udp: udp_ports,
            port_bind_failures: failures,
        };
    }

    /// Retries the ports that could not be bound once their pause is over (a busy port may be
    /// freed, a capability granted); true when it tried, so the caller reports to the hub.
    pub(crate) fn retry_failed_binds(&mut self) -> bool {
        let (Some((due, pause)), Some(config)) = (self.retry, self.last.clone()) else {
            return false;
        };
        if std::time::Instant::now() < due {
            return false;
        }
        self.retry = None;
        self.apply(&config);
        if self.retry.is_some() {
            // Still failing: wait twice as long next time.
            let next = (pause * 2).min(BIND_RETRY_MAX);
            self.retry = Some((std::time::Instant::now() + next, next));
        }
        true
    }

    /// Stops every listener (edge shutdown).
    pub(crate) fn close_all(&mut self) {
        for (_, token) in std::mem::take(&mut self.tcp) {
            token.cancel();
        }
        self.udp.close_all();
        let mut state = self.shared.ports();
        state.listen_ports.clear();
        state.listen_ports_udp.clear();
    }
}

/// Makes the set of `open` ports (TCP or UDP) equal `wanted`: ports no longer wanted are
/// stopped (their token cancelled: they stop accepting, open connections finish), new ones are
/// bound and started with a child token of `parent`. Returns, and reports as `portBindFailed`,
/// the ports that could not be bound.
pub(crate) fn reconcile<L>(
    open: &mut BTreeMap<u16, CancellationToken>,
    wanted: &[u16],
    protocol: PortProtocol,
    events: &EventSink,
    parent: &CancellationToken,
    mut bind: impl FnMut(u16) -> std::io::Result<L>,
    mut start: impl FnMut(u16, L, CancellationToken),
) -> Vec<PortBindFailure> {
    let removed: Vec<u16> = open
        .keys()
        .filter(|port| !wanted.contains(port))
        .copied()
        .collect();
    for port in removed {
        if let Some(token) = open.remove(&port) {
            tracing::info!(port, protocol = %Wire(&protocol), "public port removed");
            token.cancel();
        }
    }
    let mut failures = Vec::new();
    for &port in wanted {
        if open.contains_key(&port) {
            continue;
        }
        match bind(port) {
            Ok(listener) => {
                let token = parent.child_token();
                open.insert(port, token.clone());
                tracing::info!(port, protocol = %Wire(&protocol), "public port listening");
                start(port, listener, token);
            }
            Err(error) => {
                let error = describe_bind_error(port, &error);
                tracing::warn!(port, protocol = %Wire(&protocol), %error, "cannot bind public port");
                events.emit(Event::PortBindFailed(PortBindFailedEvent {
                    port,
                    protocol,
                    error: error.clone(),
                }));
                failures.push(PortBindFailure {
                    port,
                    protocol,
                    error,
                });
            }
        }
    }
    failures
}

/// `error` of a bind of `port` on `address` (every address when `None`), saying which address
/// it was: "Address already in use" alone does not say which listener of which process.
pub(crate) fn naming_address(
    address: Option<IpAddr>,
    port: u16,
    protocol: &str,
    error: std::io::Error,
) -> std::io::Error {
    let place = address.map_or_else(
        || format!("port {port} of every address"),
        |ip| SocketAddr::new(ip, port).to_string(),
    );
    std::io::Error::new(
        error.kind(),
        format!("cannot listen on {place} ({protocol}): {error}"),
    )
}

/// The error of a failed bind, with the usual fix where there is one.
fn describe_bind_error(port: u16, error: &std::io::Error) -> String {
    if port < 1024 && error.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "{error} (ports below 1024 need root or CAP_NET_BIND_SERVICE, e.g. \
             `setcap cap_net_bind_service=+ep remoteingress-bin`)"
        )
    } else {
        error.to_string()
    }
}

/// Binds a public TCP port on `address`, or on every address (dual-stack) when none is given.
fn bind_tcp(address: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    match address {
        Some(ip) => listen(SocketAddr::new(ip, port), false),
        None => listen(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        )
        .or_else(|_| listen(SocketAddr::from(([0, 0, 0, 0], port)), false)),
    }
}

fn listen(addr: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privileged_port_refused_names_the_capability() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(describe_bind_error(443, &denied).contains("CAP_NET_BIND_SERVICE"));
        assert!(!describe_bind_error(8443, &denied).contains("CAP_NET_BIND_SERVICE"));
        let busy = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert!(!describe_bind_error(443, &busy).contains("CAP_NET_BIND_SERVICE"));
    }
}
