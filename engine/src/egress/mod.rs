//! Outbound TCP for the hub through an edge (DESIGN section 9): the hub asks over a QUIC stream
//! ([`wire`]), the edge decides by its [`policy`] and dials ([`edge`]); the hub serves the
//! result on a one-shot local proxy ([`hub`]).

pub mod edge;
pub mod hub;
pub mod policy;
pub mod wire;
