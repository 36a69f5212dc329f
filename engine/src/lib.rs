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
//! Module map: [`ipc`] (management protocol) and [`cli`]/[`daemon`] drive a [`Service`], which
//! runs a [`Hub`] or an [`Edge`]; [`config`] validates what they run with; [`token`] encodes
//! connection tokens; `events` carries events to whoever listens.
//!
//! The whole picture (every module, the path of one TCP connection and one UDP datagram, the
//! wire protocol, the IPC contract and the security model) is in `docs/architecture.md` at the
//! repository's root.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod backoff;
pub mod build_info;
pub mod check;
pub mod cli;
pub mod config;
pub(crate) mod config_file;
pub mod daemon;
pub(crate) mod edge;
pub(crate) mod egress;
pub(crate) mod events;
mod fair_share;
pub mod fd_limit;
pub(crate) mod field_place;
pub mod firewall;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod host_name;
pub mod hub;
pub mod ident;
pub mod ipc;
pub(crate) mod log_limit;
pub mod log_text;
pub mod logging;
pub(crate) mod metrics;
pub mod plan;
pub mod proxy_protocol;
pub(crate) mod relay;
pub mod reported;
mod secret_files;
pub(crate) mod service;
pub(crate) mod shutdown;
pub mod source_key;
pub mod state_dir;
pub mod status_command;
pub(crate) mod status_fields;
pub mod stun;
mod sync;
mod systemd;
pub(crate) mod telemetry;
pub mod tls;
pub mod token;
pub mod transport;
pub(crate) mod udp;
pub(crate) mod wire_name;

// What an embedder needs: run a role through a `Service` (or drive it over `ipc::serve`), with
// the settings `config` validates and the tokens `token` reads. Modules kept `pub` beyond these
// are there for the integration tests, which drive the wire protocol by hand.
pub use edge::Edge;
pub use hub::Hub;
pub use service::Service;
