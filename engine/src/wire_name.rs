//! The wire spelling of an IPC enum value (`quic`, `tcpTls`, `unauthorized`), as serde writes
//! it in status and events: metrics labels, log fields and the `status` summary use it too, so
//! an operator greps for one spelling everywhere (Debug would write `Quic`).

use std::fmt;

/// The wire name of a serializable enum value; "other" for a value that is not a string.
pub(crate) fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

/// Displays a value by its wire name, for log fields: `transport = %Wire(&transport)`.
pub(crate) struct Wire<'a, T>(pub(crate) &'a T);

impl<T: serde::Serialize> fmt::Display for Wire<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&wire_name(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoteingress_ipc_schema::{ConnectFailureReason, TunnelTransport};

    #[test]
    fn enum_values_are_spelt_as_on_the_wire() {
        assert_eq!(Wire(&TunnelTransport::Quic).to_string(), "quic");
        assert_eq!(wire_name(&TunnelTransport::TcpTls), "tcpTls");
        assert_eq!(
            wire_name(&ConnectFailureReason::HubNotVerified),
            "hubNotVerified"
        );
        assert_eq!(wire_name(&3u8), "other");
    }
}
