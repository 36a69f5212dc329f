//! remoteingress: an edge tunnel.
//!
//! ```text
//! client --TCP/UDP--> edge (public ports, nftables) ==TLS or QUIC==> hub --PROXY v1/v2 + bytes--> target
//!                        ^---- config pushes (ports, firewall) ------'
//! ```
//!
//! Glossary (never "client/server" for edge/hub):
//! - **client**: the public peer that connects to an edge's public port.
//! - **edge**: the public node; binds the ports the hub assigns and tunnels what it accepts.
//! - **hub**: the private side; authenticates edges, pushes their config, forwards to the target.
//! - **target**: the local service behind the hub (SmartProxy, HAProxy, nginx, ...).
//! - **tunnel**: one TLS or QUIC connection between an edge and the hub.
//! - **control stream**: stream 0 (TLS) or the first bidirectional stream (QUIC): handshake,
//!   CONFIG, PING/PONG.
//! - **stream**: one tunneled TCP connection. **session**: one tunneled UDP flow.
//! - **frame**: the unit of the TLS multiplexing protocol.
//! - **egress**: an outbound dial the hub asks an edge to make.
//!
//! Module map: [`ipc`] (management protocol) and [`cli`]/[`daemon`] drive a [`service::Service`],
//! which runs a [`hub::Hub`] or an [`edge::Edge`]; [`config`] validates what they run with;
//! [`token`] encodes connection tokens; [`events`] carries events to whoever listens.
//!
//! The whole picture (every module, the path of one TCP connection and one UDP datagram, the
//! wire protocol, the IPC contract and the security model) is in `docs/architecture.md` at the
//! repository's root.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod daemon;
pub mod edge;
pub mod egress;
pub mod events;
pub mod fd_limit;
pub mod firewall;
pub mod hub;
pub mod ident;
pub mod ipc;
pub mod log_limit;
pub mod metrics;
pub mod proxy_protocol;
pub mod relay;
pub mod service;
pub mod shutdown;
pub mod state_dir;
pub mod stun;
mod sync;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod transport;
pub mod udp;
