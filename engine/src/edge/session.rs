//! A connected tunnel on the edge: publish it to the listeners, apply the hub's configuration
//! (handshake and CONFIG pushes), watch the hub's heartbeat, and end when the tunnel does.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use remoteingress_ipc_schema::{
    Event, PortsEvent, TransportMode, TunnelConnectedEvent, TunnelTransport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dial::{connect_quic, Connected, CONNECT_DEADLINE};
use super::ports::Ports;
use super::EdgeShared;
use crate::backoff::ReconnectDelay;
use crate::transport::control::ControlMessage;
use crate::transport::frame::FrameType;
use crate::transport::handshake::{self, EdgeConfigPush, EdgeReport};
use crate::transport::tunnel::{Tunnel, TunnelIncoming};
use crate::wire_name::Wire;

/// How often the heartbeat watchdog looks.
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// Runs one tunnel session; returns why it ended.
pub(crate) async fn run(
    shared: &Arc<EdgeShared>,
    ports: &mut Ports,
    mut tunnel: Tunnel,
    mut incoming: TunnelIncoming,
    push: EdgeConfigPush,
) -> String {
    publish(shared, &tunnel);
    apply_push(shared, ports, push, Push::NewTunnel(&tunnel));

    // The hub's timeout, as checked when the tunnel was made (`dial::adopt_performance`).
    let timeout = shared.pushed().performance.heartbeat_timeout;
    let mut last_heard = Instant::now();
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    // On the TLS fallback of `quicWithFallback`, keep trying QUIC in the background.
    let mut upgrade = upgrade_attempts(shared, &tunnel);
    let reason = loop {
        tokio::select! {
            () = shared.stop.shutdown.cancelled() => break "edge stopped".to_owned(),
            Some((quic, quic_incoming, quic_push)) = next_upgrade(&mut upgrade) => {
                tracing::info!("QUIC works again: new streams move to QUIC, open ones finish on TLS");
                let old = std::mem::replace(&mut tunnel, quic);
                incoming = quic_incoming;
                ports.udp.clear_sessions();
                publish(shared, &tunnel);
                apply_push(shared, ports, quic_push, Push::NewTunnel(&tunnel));
                drain_then_close(shared, old);
                last_heard = Instant::now();
            }
            reason = tunnel.closed() => break reason,
            opened = incoming.streams.next() => match opened {
                // The hub opens streams only for egress, which needs QUIC: over TLS it fails
                // closed, whatever the hub sends.
                Some((stream, _)) if tunnel.transport() != TunnelTransport::Quic => stream.abort(),
                Some((stream, open)) => {
                    shared.spawn(crate::edge::egress::serve(
                        shared.egress.clone(),
                        stream,
                        open,
                        shared.stop.shutdown.clone(),
                    ));
                }
                None => break tunnel.closed().await,
            },
            message = incoming.control.recv() => match message {
                Some(message) => {
                    last_heard = Instant::now();
                    if message.frame_type == FrameType::Config {
                        match handshake::parse_config(&message.payload) {
                            Ok(push) => apply_push(shared, ports, push, Push::Update),
                            Err(error) => tracing::warn!(%error, "ignoring a bad CONFIG from the hub"),
                        }
                    }
                }
                None => break tunnel.closed().await,
            },
            message = incoming.datagrams.recv() => match message {
                Some(message) => ports.udp.deliver_from_hub(message),
                None => break tunnel.closed().await,
            },
            _ = watchdog.tick() => {
                ports.udp.expire(&tunnel);
                if ports.retry_failed_binds() {
                    report_to_hub(shared);
                }
                if last_heard.elapsed() > timeout {
                    break format!("no heartbeat from the hub for {timeout:?}");
                }
            }
        }
    };
    shared.tunnel.send_replace(None);
    ports.udp.clear_sessions();
    tunnel.close();
    // A QUIC tunnel the upgrade task made but this loop never took: closed here, else its
    // tasks (which answer the hub's PINGs) would keep it up until the edge stops.
    if let Some(mut pending) = upgrade {
        pending.close();
        while let Ok(connected) = pending.try_recv() {
            connected.0.close();
        }
    }
    {
        let mut link = shared.link();
        link.connected = false;
        link.transport = None;
    }
    reason
}

/// Which push [`apply_push`] applies.
#[derive(Debug, Clone, Copy)]
enum Push<'a> {
    /// The hub's reply to a login: a new tunnel (first, after a reconnect, or the QUIC one
    /// replacing the TLS fallback).
    NewTunnel(&'a Tunnel),
    /// A CONFIG push on a running tunnel.
    Update,
}

/// Applies what the hub pushed, in one order for every push: ports (before anything else, so a
/// removed port closes first), egress policy, firewall snapshot, STUN interval; then reports
/// the edge's state to the hub (a new tunnel's hub session starts without it) and tells the
/// listeners: a new tunnel is announced (`tunnelConnected`, once its ports listen, so a client
/// reacting to it connects), then `portsAssigned`; a push gives `portsUpdated`.
fn apply_push(shared: &EdgeShared, ports: &mut Ports, push: EdgeConfigPush, kind: Push<'_>) {
    ports.apply(&push);
    shared.egress.set_policy(push.egress.as_ref());
    shared
        .firewall
        .send_replace(Some(push.firewall_config.clone()));
    {
        let mut pushed = shared.pushed();
        pushed.stun_interval_secs = Some(push.stun_interval_secs);
        pushed.hub_instance_id.clone_from(&push.hub_instance_id);
    }
    report_to_hub(shared);
    let ports_event = PortsEvent {
        listen_ports: push.listen_ports,
        listen_ports_udp: push.listen_ports_udp,
    };
    shared.events.emit(match kind {
        Push::NewTunnel(tunnel) => {
            announce(shared, tunnel);
            Event::PortsAssigned(ports_event)
        }
        Push::Update => Event::PortsUpdated(ports_event),
    });
}

/// Makes `tunnel` the one new client connections use.
fn publish(shared: &EdgeShared, tunnel: &Tunnel) {
    {
        let mut link = shared.link();
        link.connected = true;
        link.transport = Some(tunnel.transport());
    }
    shared.tunnel.send_replace(Some(tunnel.clone()));
}

/// Says the tunnel is up, once its ports listen (so a client reacting to the event connects).
fn announce(shared: &EdgeShared, tunnel: &Tunnel) {
    let transport = tunnel.transport();
    tracing::info!(transport = %Wire(&transport), "tunnel to the hub connected");
    shared
        .events
        .emit(Event::TunnelConnected(TunnelConnectedEvent { transport }));
}

/// First retry of QUIC after falling back to TLS, doubling (with jitter, [`ReconnectDelay`]) up
/// to [`UPGRADE_MAX_INTERVAL`].
const UPGRADE_FIRST_INTERVAL: Duration = Duration::from_secs(5);
const UPGRADE_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// For a `quicWithFallback` edge on its TLS fallback: a task that retries QUIC and hands over
/// the first tunnel that works (it ends with the tunnel or the edge). Otherwise `None`: no task.
fn upgrade_attempts(
    shared: &Arc<EdgeShared>,
    tunnel: &Tunnel,
) -> Option<mpsc::Receiver<Connected>> {
    if shared.settings.transport_mode != TransportMode::QuicWithFallback
        || tunnel.transport() != TunnelTransport::TcpTls
    {
        return None;
    }
    let (tx, rx) = mpsc::channel(1);
    let task_shared = shared.clone();
    let current = tunnel.clone();
    shared.spawn(async move {
        let shared = task_shared;
        let mut pacing = ReconnectDelay::new(UPGRADE_FIRST_INTERVAL, UPGRADE_MAX_INTERVAL);
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let interval = pacing.next(std::time::Instant::now(), &mut rng);
            tokio::select! {
                () = shared.stop.draining.cancelled() => return,
                _ = current.closed() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match tokio::time::timeout(CONNECT_DEADLINE, connect_quic(&shared)).await {
                Ok(Ok(connected)) => {
                    if current.is_closed() {
                        connected.0.close();
                        return;
                    }
                    // The session ended meanwhile: nobody will close it otherwise.
                    if let Err(unsent) = tx.send(connected).await {
                        unsent.0 .0.close();
                    }
                    return;
                }
                Ok(Err(error)) => tracing::debug!(%error, "QUIC still unavailable"),
                Err(_) => tracing::debug!("QUIC still unavailable (timeout)"),
            }
        }
    });
    Some(rx)
}

/// The QUIC tunnel that replaces the TLS fallback; pending for ever when there is nothing to
/// upgrade to (or the attempts ended).
async fn next_upgrade(upgrade: &mut Option<mpsc::Receiver<Connected>>) -> Option<Connected> {
    match upgrade {
        Some(attempts) => attempts.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps a replaced tunnel until its open streams have finished, then closes it. The first
/// look comes after [`DRAIN_POLL`], so a connection accepted just before the switch, still
/// opening its stream on the old tunnel, is counted rather than cut off.
fn drain_then_close(shared: &EdgeShared, old: Tunnel) {
    let shutdown = shared.stop.shutdown.clone();
    shared.spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(DRAIN_POLL) => {}
            }
            if old.active_streams() == 0 || old.is_closed() || Instant::now() >= deadline {
                break;
            }
        }
        old.close();
    });
}

/// How often a replaced tunnel is checked for open streams.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// Sends the edge's report (its public IP, its firewall's state) on the current tunnel, if
/// there is one and something to report.
pub(crate) fn report_to_hub(shared: &EdgeShared) {
    let Some(tunnel) = shared.tunnel.borrow().clone() else {
        return;
    };
    // One lock at a time.
    let public_ip = shared.public_ip().clone();
    let firewall = shared.firewall_view().report();
    let port_bind_failures = Some(shared.ports().port_bind_failures.clone());
    let report = EdgeReport {
        public_ip,
        firewall,
        port_bind_failures,
    };
    match serde_json::to_vec(&report) {
        Ok(json) => {
            if let Err(error) = tunnel.send_control(ControlMessage::config(json)) {
                tracing::debug!(%error, "cannot report to the hub");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot encode the edge report"),
    }
}
