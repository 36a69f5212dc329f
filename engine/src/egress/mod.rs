//! Outbound TCP for the hub through an edge (docs/architecture.md, "QUIC transport"; policy in `policy.rs`): the hub asks over a QUIC stream
//! ([`wire`]), the edge decides by its [`policy`] and dials ([`edge`]); the hub serves the
//! result on a one-shot local proxy ([`hub`]) or on a persistent listener ([`listeners`]).

pub(crate) mod edge;
pub(crate) mod hub;
pub(crate) mod listeners;
pub(crate) mod policy;
pub(crate) mod wire;
