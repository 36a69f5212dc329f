//! Is the connected instance of an edge still there? Asked when another instance of the same
//! edge logs in. A process that was killed (or whose machine lost power) leaves its tunnel in
//! the registry until the heartbeat timeout: over QUIC nothing tells the hub, and over TCP only
//! the kernel's reset, if the machine is still up. Refusing the newcomer then would keep a
//! restarted edge out for the timeout and its retry pause (tens of seconds). So the hub sends
//! the connected tunnel a PING and waits briefly for its PONG (the transport of a live edge
//! answers it at once, whatever its session is busy with): an answer keeps the connected
//! instance and the newcomer is refused; silence lets the newcomer replace it.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::transport::control::ControlMessage;
use crate::transport::tunnel::Tunnel;

/// How long a live edge has to answer. A PONG takes one round trip and is sent ahead of data
/// (control frames have priority on both transports), so this is generous even across
/// continents; it delays only the login of a second instance.
pub(crate) const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// PING payload of a probe, apart from the session's numbered heartbeats (their round-trip
/// times are measured; a probe's is not).
const PROBE_PING: u64 = u64::MAX;

/// When the session last heard its edge answer a PING (its sender is the session's).
pub(crate) type Heard = watch::Receiver<Instant>;

/// A probe of one connected session, run outside the actor (it waits for the network).
#[derive(Debug)]
pub(crate) struct LivenessProbe {
    pub(crate) session_id: u64,
    pub(crate) tunnel: Tunnel,
    pub(crate) heard: Heard,
    pub(crate) deadline: Duration,
}

/// What a probe found, for the actor's second look at the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    pub(crate) session_id: u64,
    pub(crate) alive: bool,
}

impl LivenessProbe {
    pub(crate) async fn run(mut self) -> ProbeOutcome {
        self.heard.mark_unchanged();
        let alive = self
            .tunnel
            .send_control(ControlMessage::ping(PROBE_PING))
            .is_ok()
            && matches!(
                tokio::time::timeout(self.deadline, self.heard.changed()).await,
                Ok(Ok(()))
            );
        ProbeOutcome {
            session_id: self.session_id,
            alive,
        }
    }
}
