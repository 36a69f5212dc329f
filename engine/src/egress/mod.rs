//! Outbound TCP for the hub through an edge (DESIGN section 9): the hub asks, the edge decides by
//! its [`policy`] and dials.

pub mod policy;
