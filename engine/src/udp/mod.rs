//! UDP forwarding: sessions per (client address, public port), tunneled as datagrams.
//! [`session`] is the sans-IO table both roles use.

pub mod edge;
pub mod hub;
pub mod session;
