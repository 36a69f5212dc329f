//! Is the connected instance of an edge still there? Asked when another instance of the same
//! edge logs in. A process that was killed (or whose machine lost power) leaves its tunnel in
//! the registry until the heartbeat timeout: over QUIC nothing tells the hub, and over TCP only
//! the kernel's reset, if the machine is still up. Refusing the newcomer then would keep a
//! restarted edge out for the timeout and its retry pause (tens of seconds). So the hub sends
//! the connected tunnel a PING and watches, for a short while, whether anything arrives on it:
//! the PONG (the edge's transport answers at once), QUIC's acknowledgement of the PING, or any
//! other traffic. Anything keeps the connected instance and the newcomer is refused; silence
//! lets the newcomer replace it. The transport counts what arrives as it arrives, so a hub
//! session that is busy (waiting for a budget, a DNS answer) does not make a live edge look dead.

use std::time::Duration;

use tokio::time::Instant;

use crate::transport::control::ControlMessage;
use crate::transport::tunnel::Tunnel;

/// How long a live edge has to be heard from. An answer takes one round trip; this is generous
/// even across continents, and delays only the login of a second instance.
pub(crate) const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// How often the probe looks at the tunnel's received-bytes count.
const POLL: Duration = Duration::from_millis(20);

/// PING payload of a probe, apart from the session's numbered heartbeats (their round-trip
/// times are measured; a probe's is not).
const PROBE_PING: u64 = u64::MAX;

/// A probe of one connected session, run outside the actor (it waits for the network).
#[derive(Debug)]
pub(crate) struct LivenessProbe {
    pub(crate) session_id: u64,
    pub(crate) tunnel: Tunnel,
    pub(crate) deadline: Duration,
}

/// What a probe found, for the actor's second look at the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    pub(crate) session_id: u64,
    pub(crate) alive: bool,
}

/// What a login of another instance meets while the edge's entry is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contest {
    /// Ask the connected tunnel first ([`LivenessProbe`]), then look again.
    Probe,
    /// The holder is gone: the newcomer replaces it like a reconnect.
    Replace,
    /// The holder is there: the newcomer is refused as a second instance.
    Refuse,
}

/// The rule, apart from the registry: `session_id` holds the entry; `abandoned` when its login
/// was dropped before its session started (no one will end the entry); `has_tunnel` once its
/// session runs; `probed` on the second look.
pub(crate) fn contest(
    session_id: u64,
    abandoned: bool,
    has_tunnel: bool,
    probed: Option<ProbeOutcome>,
) -> Contest {
    match probed {
        _ if abandoned => Contest::Replace,
        None if has_tunnel => Contest::Probe,
        // Still logging in: it was there a moment ago.
        None => Contest::Refuse,
        Some(probed) if probed.session_id == session_id && !probed.alive => Contest::Replace,
        // It answered, or another session holds the entry by now (fresh: no second probe).
        Some(_) => Contest::Refuse,
    }
}

impl LivenessProbe {
    pub(crate) async fn run(self) -> ProbeOutcome {
        let before = self.tunnel.received_bytes();
        let until = Instant::now() + self.deadline;
        let mut alive = false;
        if self
            .tunnel
            .send_control(ControlMessage::ping(PROBE_PING))
            .is_ok()
        {
            while !self.tunnel.is_closed() && Instant::now() < until {
                if self.tunnel.received_bytes() > before {
                    alive = true;
                    break;
                }
                tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
            }
        }
        ProbeOutcome {
            session_id: self.session_id,
            alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_probed_once_then_kept_or_replaced() {
        let found = |session_id, alive| Some(ProbeOutcome { session_id, alive });
        assert_eq!(contest(7, false, true, None), Contest::Probe);
        assert_eq!(contest(7, false, true, found(7, true)), Contest::Refuse);
        assert_eq!(contest(7, false, true, found(7, false)), Contest::Replace);
        // Another session took the entry while the probe ran: it is fresh.
        assert_eq!(contest(8, false, true, found(7, false)), Contest::Refuse);
        // Between its login and its first frame: there a moment ago.
        assert_eq!(contest(7, false, false, None), Contest::Refuse);
    }

    #[test]
    fn an_entry_whose_login_was_dropped_is_replaced_without_a_probe() {
        assert_eq!(contest(7, true, false, None), Contest::Replace);
        assert_eq!(contest(7, true, true, None), Contest::Replace);
    }
}
