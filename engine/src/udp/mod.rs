//! UDP forwarding: sessions per (client address, public port), tunneled as datagrams.
//! [`session`] is the sans-IO table both roles use; [`rate`] paces new sessions on the edge.

pub(crate) mod edge;
pub(crate) mod hub;
pub(crate) mod rate;
pub(crate) mod session;
