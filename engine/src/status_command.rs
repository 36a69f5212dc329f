//! `remoteingress-bin status`: reads `GET /status` from a running hub's or edge's metrics
//! listener (`metricsAddr`) and prints it, as a summary for people or as the JSON itself
//! (`--json`). The JSON is what IPC `getStatus` returns, so there is one source of truth and
//! no secret in it.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use remoteingress_ipc_schema::{
    ConnectedEdgeStatus, EdgeStatus, HubStatus, PortBindFailure, StatusResult,
};

use crate::status_fields::unix_ms;
use crate::wire_name::wire_name;

/// The whole exchange must end within this.
const DEADLINE: Duration = Duration::from_secs(5);
/// A status is a few KiB per edge; more than this is not a status.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusCommandError {
    #[error("cannot reach the metrics listener at {addr}: {why} (is the hub or edge running with --metrics-addr {addr}?)")]
    Unreachable { addr: String, why: String },
    #[error("{addr} answered /status with {code}: is it remoteingress's metrics listener?")]
    NotStatus { addr: String, code: u16 },
    #[error("{addr} sent a status that cannot be read: {why}")]
    Invalid { addr: String, why: String },
}

/// The status of the process whose metrics listener is at `addr` (`host:port`, or an
/// `http://host:port` URL), and its JSON text as served.
pub async fn fetch(addr: &str) -> Result<(StatusResult, String), StatusCommandError> {
    let addr = addr
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let body = tokio::time::timeout(DEADLINE, get(addr))
        .await
        .map_err(|_| StatusCommandError::Unreachable {
            addr: addr.to_owned(),
            why: format!("no answer within {} s", DEADLINE.as_secs()),
        })??;
    let status = serde_json::from_str(&body).map_err(|e| StatusCommandError::Invalid {
        addr: addr.to_owned(),
        why: e.to_string(),
    })?;
    Ok((status, body))
}

async fn get(addr: &str) -> Result<String, StatusCommandError> {
    let unreachable = |why: String| StatusCommandError::Unreachable {
        addr: addr.to_owned(),
        why,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get("/status")
        .header(hyper::header::HOST, addr)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let code = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    driver.abort();
    if !code.is_success() {
        return Err(StatusCommandError::NotStatus {
            addr: addr.to_owned(),
            code: code.as_u16(),
        });
    }
    String::from_utf8(body.to_vec()).map_err(|e| StatusCommandError::Invalid {
        addr: addr.to_owned(),
        why: e.to_string(),
    })
}

/// The status as lines for people.
pub fn summary(status: &StatusResult) -> String {
    let now_ms = unix_ms();
    match status {
        StatusResult::Hub(hub) => hub_summary(hub, now_ms),
        StatusResult::Edge(edge) => edge_summary(edge),
        StatusResult::Idle(_) => "no role is running\n".to_owned(),
    }
}

fn hub_summary(hub: &HubStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let connected = hub.edges.iter().filter(|edge| edge.connected).count();
    let _ = writeln!(
        out,
        "hub: tunnel port {}, certificate sha256 {}",
        hub.tunnel_port, hub.cert_sha256
    );
    let _ = writeln!(
        out,
        "edges: {} allowed, {connected} connected",
        hub.allowed_edges
    );
    for edge in &hub.edges {
        let tunnels = plural(edge.tunnels, "tunnel");
        match hub
            .connected_edges
            .iter()
            .find(|live| live.edge_id == edge.edge_id)
        {
            Some(live) => {
                let _ = writeln!(
                    out,
                    "  {}: connected over {} from {} for {}; {tunnels}; {} open, {} in all",
                    edge.edge_id,
                    wire_name(&live.transport),
                    live.remote_addr,
                    ago(live.connected_at_ms, now_ms),
                    plural(live.active_streams, "stream"),
                    live.streams_opened_total,
                );
                connected_details(&mut out, live);
            }
            None => {
                let _ = writeln!(out, "  {}: not connected; {tunnels}", edge.edge_id);
            }
        }
        if let (Some(error), Some(at)) = (&edge.last_error, edge.last_error_at_ms) {
            let _ = writeln!(out, "    last error ({} ago): {error}", ago(at, now_ms));
        }
    }
    let _ = writeln!(
        out,
        "logins: {} slowed, {} slowed, {} refused",
        plural(u64::from(hub.slowed_sources), "source"),
        plural(u64::from(hub.slowed_edge_ids), "edge id"),
        plural(hub.handshakes_refused, "pending handshake"),
    );
    out
}

fn connected_details(out: &mut String, live: &ConnectedEdgeStatus) {
    if !live.port_bind_failures.is_empty() {
        let _ = writeln!(
            out,
            "    ports not bound: {}",
            bind_failures(&live.port_bind_failures)
        );
    }
    if live.firewall.state != remoteingress_ipc_schema::FirewallState::None {
        let _ = writeln!(
            out,
            "    firewall: {}{}{}",
            wire_name(&live.firewall.state),
            if live.firewall.in_sync {
                ""
            } else {
                " (not the latest snapshot)"
            },
            live.firewall
                .error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        );
    }
}

fn edge_summary(edge: &EdgeStatus) -> String {
    let mut out = String::new();
    let tunnel = match (edge.connected, edge.transport) {
        (true, Some(transport)) => format!("connected over {}", wire_name(&transport)),
        (true, None) => "connected".to_owned(),
        (false, _) => format!(
            "not connected ({})",
            plural(u64::from(edge.reconnect_attempts), "failed attempt")
        ),
    };
    let verified = if edge.hub_verified {
        "hub verified"
    } else {
        "hub NOT verified"
    };
    let _ = writeln!(
        out,
        "edge {}: {tunnel} to {} ({}, {verified})",
        edge.edge_id,
        edge.hub,
        wire_name(&edge.transport_mode)
    );
    let _ = writeln!(
        out,
        "listening: tcp {}; udp {}",
        ports(&edge.listen_ports),
        ports(&edge.listen_ports_udp)
    );
    if !edge.port_bind_failures.is_empty() {
        let _ = writeln!(
            out,
            "ports not bound: {}",
            bind_failures(&edge.port_bind_failures)
        );
    }
    let _ = writeln!(
        out,
        "streams: {} open, {} in all",
        edge.active_streams, edge.streams_opened_total
    );
    if let Some(error) = &edge.last_error {
        let _ = writeln!(out, "last error: {error}");
    }
    out
}

fn ports(list: &[u16]) -> String {
    if list.is_empty() {
        return "none".to_owned();
    }
    list.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn bind_failures(failures: &[PortBindFailure]) -> String {
    failures
        .iter()
        .map(|failure| {
            format!(
                "{}/{} ({})",
                failure.port,
                wire_name(&failure.protocol),
                failure.error
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// How long before `now_ms` `at_ms` was, as people say it (`42s`, `5m 3s`, `2h 1m`, `3d 4h`).
fn ago(at_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_status() -> HubStatus {
        serde_json::from_value(serde_json::json!({
            "role": "hub", "running": true, "tunnelPort": 8443, "certSha256": "ab12",
            "targetHost": "127.0.0.1", "streamEventMode": "perStream", "allowedEdges": 2,
            "connectedEdges": [{
                "edgeId": "paris", "transport": "quic", "remoteAddr": "192.0.2.1:5000",
                "connectedAtMs": 1_000_000, "activeStreams": 1, "streamsOpenedTotal": 7,
                "streamsClosedTotal": 6, "bytesIn": 0, "bytesOut": 0, "udpSessions": 0,
                "udpDropped": 0, "refusedPorts": 0, "capabilities": [], "egressEnabled": false,
                "limits": {"maxUdpSessions": 1, "udpEvicted": 0, "udpRefused": 0, "maxStreams": 1,
                           "streamsRefused": 0, "windowBudgetResets": 0, "heldBytes": 0},
                "firewall": {"state": "unavailable", "inSync": false, "error": "no CAP_NET_ADMIN"},
                "portBindFailures": [{"port": 25, "protocol": "tcp", "error": "Address already in use"}]
            }],
            "edges": [
                {"edgeId": "berlin", "connected": false, "tunnels": 0,
                 "lastError": "login refused: wrong secret", "lastErrorAtMs": 1_003_000},
                {"edgeId": "paris", "connected": true, "transport": "quic", "tunnels": 2}
            ],
            "handshakesRefused": 0, "slowedSources": 3, "slowedEdgeIds": 1,
            "limits": {"openFileLimit": 1024, "maxUdpSessions": 1, "udpSessions": 0,
                       "maxForwarded": 1, "streams": 1, "sharesReclaimed": 0}
        }))
        .unwrap()
    }

    #[test]
    fn the_hub_summary_names_each_edge_its_transport_errors_and_slowed_sources() {
        let text = hub_summary(&hub_status(), 1_065_000);
        assert_eq!(
            text,
            "hub: tunnel port 8443, certificate sha256 ab12\n\
             edges: 2 allowed, 1 connected\n\
             \x20 berlin: not connected; 0 tunnels\n\
             \x20   last error (1m 2s ago): login refused: wrong secret\n\
             \x20 paris: connected over quic from 192.0.2.1:5000 for 1m 5s; 2 tunnels; 1 stream open, 7 in all\n\
             \x20   ports not bound: 25/tcp (Address already in use)\n\
             \x20   firewall: unavailable (not the latest snapshot): no CAP_NET_ADMIN\n\
             logins: 3 sources slowed, 1 edge id slowed, 0 pending handshakes refused\n"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(ago(0, 42_000), "42s");
        assert_eq!(ago(0, 303_000), "5m 3s");
        assert_eq!(ago(0, 7_260_000), "2h 1m");
        assert_eq!(ago(5_000, 0), "0s");
    }
}
