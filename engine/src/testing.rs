//! What the integration tests (engine/tests) drive by hand and nothing else outside the crate
//! needs: pieces of the wire protocol (a hand-written edge logs in, opens streams, sends frames
//! and reports), the TLS client side, the firewall's kernel path, and the limits the tests
//! check against. Hidden from the documentation: not an API for embedders, and it may change
//! with the tests.

/// The handshake lines (hello, reply, the edge's report limits).
pub mod handshake {
    pub use crate::transport::handshake::{
        encode_hello, parse_reply, read_line, HubReply, InstanceId, MAX_HELLO_LEN, MAX_REPLY_LEN,
        MAX_REPORTED_BIND_FAILURES,
    };
}

/// The login proofs bound to the TLS or QUIC channel.
pub mod login {
    pub use crate::transport::login::{edge_proof, verify_hub_proof, ChannelBinding};
}

/// PROXY protocol headers, as a client or an edge sends them.
pub mod proxy_protocol {
    pub use crate::proxy_protocol::{ProxyHeader, ProxyTransport};

    /// PROXY v1 (text).
    pub mod v1 {
        pub use crate::proxy_protocol::v1::encode;
    }

    /// PROXY v2 (binary).
    pub mod v2 {
        pub use crate::proxy_protocol::v2::encode;
    }
}

/// The firewall's path into the kernel (nftables over netlink).
pub mod firewall {
    pub use crate::firewall::exemption::{Exemption, OWN_FLOWS_COMMENT};
    pub use crate::firewall::netlink::{Applier, FirewallError};
    pub use crate::firewall::ruleset::{translate, Ruleset};
    pub use crate::firewall::snapshot::{validate, Snapshot};
}

pub use crate::hub::listener::CLIENT_HELLO_DEADLINE;
pub use crate::hub::pending::MAX_PENDING_PER_SOURCE;
pub use crate::reported::MAX_TEXT_LEN;
pub use crate::stun::encode_success;
pub use crate::tls::{edge_client_config, server_name, HubIdentity};
pub use crate::transport::control::ControlMessage;
pub use crate::transport::datagram::{encode_open, UdpMessage};
pub use crate::transport::frame::{encode, Frame};
pub use crate::transport::quic::endpoint::client_config;
pub use crate::transport::quic::STREAM_LIMIT_HEADROOM;
pub use crate::transport::side::Side;
pub use crate::transport::tunnel::{Tunnel, TunnelIncoming, TunnelStream};
