//! Outbound TCP for the hub through an edge (docs/architecture.md, "QUIC transport"): the hub
//! asks over a QUIC stream ([`wire`]), the edge decides by its [`policy`] and dials
//! (`edge::egress`); the hub serves the result on a one-shot local proxy (`hub::egress`) or on a
//! persistent listener (`hub::egress_listeners`). This folder holds the sans-IO parts both
//! roles use.

pub(crate) mod policy;
pub(crate) mod wire;
