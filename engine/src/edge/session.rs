//! A connected tunnel on the edge: publish it to the listeners, apply the hub's configuration
//! (handshake and CONFIG pushes), watch the hub's heartbeat, and end when the tunnel does.

use std::time::Duration;

use remoteingress_ipc_schema::{Event, PortsEvent, TunnelConnectedEvent};
use tokio::time::Instant;

use super::ports::Ports;
use super::EdgeShared;
use crate::config::PerformanceSettings;
use crate::transport::control::ControlMessage;
use crate::transport::frame::FrameType;
use crate::transport::handshake::{self, EdgeConfigPush, EdgeReport};
use crate::transport::tunnel::{Tunnel, TunnelIncoming};

/// How often the heartbeat watchdog looks.
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// Runs one tunnel session; returns why it ended.
pub(crate) async fn run(
    shared: &EdgeShared,
    ports: &mut Ports,
    tunnel: Tunnel,
    mut incoming: TunnelIncoming,
    push: EdgeConfigPush,
) -> String {
    let transport = tunnel.transport();
    {
        let mut state = shared.state();
        state.connected = true;
        state.transport = Some(transport);
    }
    shared.tunnel.send_replace(Some(tunnel.clone()));
    tracing::info!(?transport, "tunnel to the hub connected");
    shared
        .events
        .emit(Event::TunnelConnected(TunnelConnectedEvent { transport }));
    ports.apply(&push);
    shared.state().stun_interval_secs = Some(push.stun_interval_secs);
    report_to_hub(shared);
    shared.events.emit(Event::PortsAssigned(PortsEvent {
        listen_ports: push.listen_ports.clone(),
        listen_ports_udp: push.listen_ports_udp.clone(),
    }));

    let timeout = push
        .heartbeat_timeout_secs
        .map(|secs| Duration::from_secs(secs.into()))
        .unwrap_or_else(|| PerformanceSettings::default().heartbeat_timeout);
    let mut last_heard = Instant::now();
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    let reason = loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break "edge stopped".to_owned(),
            reason = tunnel.closed() => break reason,
            opened = incoming.streams.next() => match opened {
                // Hub-initiated streams (egress) arrive with their own issue.
                Some((stream, _)) => drop(stream),
                None => break tunnel.closed().await,
            },
            message = incoming.control.next() => match message {
                Some(message) => {
                    last_heard = Instant::now();
                    if message.frame_type == FrameType::Config {
                        match handshake::parse_config(&message.payload) {
                            Ok(push) => {
                                ports.apply(&push);
                                shared.state().stun_interval_secs = Some(push.stun_interval_secs);
                                shared.events.emit(Event::PortsUpdated(PortsEvent {
                                    listen_ports: push.listen_ports,
                                    listen_ports_udp: push.listen_ports_udp,
                                }));
                            }
                            Err(error) => tracing::warn!(%error, "ignoring a bad CONFIG from the hub"),
                        }
                    }
                }
                None => break tunnel.closed().await,
            },
            message = incoming.datagrams.next() => match message {
                Some(message) => ports.udp.from_hub(message),
                None => break tunnel.closed().await,
            },
            _ = watchdog.tick() => {
                ports.udp.expire(&tunnel);
                if last_heard.elapsed() > timeout {
                    break format!("no heartbeat from the hub for {timeout:?}");
                }
            }
        }
    };
    shared.tunnel.send_replace(None);
    ports.udp.clear_sessions();
    tunnel.close();
    {
        let mut state = shared.state();
        state.connected = false;
        state.transport = None;
    }
    reason
}

/// Sends the edge's report (its public IP) on the current tunnel, if there is one.
pub(crate) fn report_to_hub(shared: &EdgeShared) {
    let Some(tunnel) = shared.tunnel.borrow().clone() else {
        return;
    };
    let report = EdgeReport {
        public_ip: shared.state().public_ip.clone(),
    };
    if report.public_ip.is_none() {
        return;
    }
    match serde_json::to_vec(&report) {
        Ok(json) => {
            if let Err(error) = tunnel.send_control(ControlMessage::config(json)) {
                tracing::debug!(%error, "cannot report to the hub");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot encode the edge report"),
    }
}
