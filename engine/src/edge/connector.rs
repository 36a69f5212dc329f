//! Keeps the edge's tunnel up: dial ([`super::dial`]: transport and login), run the session;
//! on failure or loss, wait ([`crate::backoff`]: fast retries after a loss, then a jittered
//! exponential backoff, 1 s doubling to 30 s; the hub's pause after a duplicate-edge refusal)
//! and try again.
//! Listeners survive reconnects; they are closed only when the edge stops.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use remoteingress_ipc_schema::{Event, TunnelConnectFailedEvent, TunnelDisconnectedEvent};

use super::dial::{connect, ConnectError};
use super::ports::Ports;
use super::{session, EdgeShared};
use crate::backoff::ReconnectDelay;
use crate::wire_name::Wire;

/// Runs until the edge stops.
pub(crate) async fn run(shared: Arc<EdgeShared>) {
    let mut ports = Ports::new(shared.clone());
    let mut pacing = ReconnectDelay::default();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    loop {
        let result = tokio::select! {
            () = shared.stop.draining.cancelled() => break,
            result = connect(&shared) => result,
        };
        let failure = match result {
            Ok((tunnel, incoming, push)) => {
                pacing.connected();
                {
                    let mut state = shared.link();
                    state.reconnect_attempts = 0;
                    state.last_error = None;
                    state.last_error_reason = None;
                }
                let reason = session::run(&shared, &mut ports, tunnel, incoming, push).await;
                pacing.lost(std::time::Instant::now());
                shared.link().last_error = Some(reason.clone());
                tracing::warn!(%reason, "tunnel to the hub lost");
                shared
                    .events
                    .emit(Event::TunnelDisconnected(TunnelDisconnectedEvent {
                        reason,
                    }));
                if shared.stop.draining.is_cancelled() {
                    break;
                }
                None
            }
            Err(error) => Some(error),
        };
        let delay = match failure.as_ref().and_then(|error| error.retry_after) {
            // Another instance of this edge holds the tunnel: asking sooner only repeats the
            // refusal; the hub's pause lets this one take over soon after the other is gone.
            Some(wait) => pacing.hold_off(wait, &mut rng),
            None => pacing.next(std::time::Instant::now(), &mut rng),
        };
        match failure {
            Some(error) => report_failure(&shared, error, delay),
            None => tracing::info!(?delay, "reconnecting to the hub after a pause"),
        }
        tokio::select! {
            () = shared.stop.draining.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    ports.close_all();
}

/// Records a failed attempt in status and tells whoever listens: a log line and a
/// `tunnelConnectFailed` event with the reason and when the next attempt comes.
fn report_failure(shared: &EdgeShared, error: ConnectError, delay: Duration) {
    let attempt = {
        let mut state = shared.link();
        state.reconnect_attempts = state.reconnect_attempts.saturating_add(1);
        state.last_error = Some(error.message.clone());
        state.last_error_reason = Some(error.reason);
        state.reconnect_attempts
    };
    tracing::warn!(%error, reason = %Wire(&error.reason), attempt, retry_in = ?delay, "cannot connect to the hub");
    shared
        .events
        .emit(Event::TunnelConnectFailed(TunnelConnectFailedEvent {
            reason: error.reason,
            message: error.message,
            attempt,
            retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }));
}
