//! UDP forwarding: sessions per (client address, public port), tunneled as datagrams. This
//! folder holds the sans-IO parts both roles use: [`session`], the session table, and [`rate`],
//! which paces new sessions on the edge. The roles' I/O is `edge::udp` and `hub::udp`.

pub(crate) mod rate;
pub(crate) mod session;
