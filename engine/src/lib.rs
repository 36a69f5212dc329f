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
//! connection tokens; an [`EventSink`] carries events to whoever listens.
//!
//! The whole picture (every module, the path of one TCP connection and one UDP datagram, the
//! wire protocol, the IPC contract and the security model) is in `docs/architecture.md` at the
//! repository's root.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod backoff;
pub(crate) mod build_info;
pub(crate) mod check;
pub mod cli;
pub mod config;
pub(crate) mod config_file;
pub mod daemon;
pub(crate) mod edge;
pub(crate) mod egress;
pub(crate) mod events;
mod fair_share;
pub(crate) mod fd_limit;
pub(crate) mod field_place;
pub(crate) mod firewall;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod host_name;
pub(crate) mod hub;
pub(crate) mod ident;
pub mod ipc;
pub(crate) mod log_limit;
pub(crate) mod log_text;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod proxy_protocol;
pub(crate) mod relay;
pub(crate) mod reported;
mod secret_files;
pub(crate) mod service;
pub(crate) mod shutdown;
pub(crate) mod source_key;
pub(crate) mod state_dir;
pub(crate) mod status_command;
pub(crate) mod status_fields;
pub(crate) mod stun;
mod sync;
mod systemd;
pub(crate) mod telemetry;
#[doc(hidden)]
pub mod testing;
pub(crate) mod tls;
pub mod token;
pub(crate) mod transport;
pub(crate) mod udp;
pub(crate) mod wire_name;

// The public API, and all of it: what the binary (engine/src/main.rs, a separate crate that
// sees only this) and an embedder use. An embedder runs a role through a `Service` (or drives
// one over `ipc::serve`), with the settings `config` validates and the tokens `token` reads;
// the binary parses its command line with `cli` and runs through `daemon`. Everything else is
// the crate's own; the integration tests reach the wire-protocol pieces they drive by hand
// through the hidden `testing` module.
pub use check::check;
pub use edge::{Edge, EdgeStartError};
pub use events::EventSink;
pub use fd_limit::raise_to_hard as raise_fd_limit;
pub use hub::{Hub, HubStartError};
pub use ident::new_secret;
pub use logging::init as init_logging;
pub use plan::plan;
pub use service::{Service, ServiceError};
pub use status_command::{fetch as fetch_status, summary as status_summary, StatusCommandError};
