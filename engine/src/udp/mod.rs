//! UDP forwarding: sessions per (client address, public port), tunneled as datagrams.
//! [`session`] is the sans-IO table both roles use; [`rate`] paces new sessions on the edge.

pub mod edge;
pub mod hub;
pub mod rate;
pub mod session;
