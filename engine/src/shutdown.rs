//! Graceful stop, the same for the hub and the edge: stop taking new work, let open streams
//! finish for a grace period (`shutdownGraceSecs`), then abort what is left (the peers see
//! resets, never a close that looks complete) and wait for the tasks.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default of `shutdownGraceSecs`.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Longest `shutdownGraceSecs` accepted.
pub(crate) const MAX_GRACE_SECS: u32 = 3600;
/// How often the open streams are counted during the grace period.
const POLL: Duration = Duration::from_millis(50);
/// How long the role's tasks get to end once everything was told to stop.
const TASKS_DEADLINE: Duration = Duration::from_secs(5);

/// The two stages of a role's stop.
#[derive(Debug, Clone)]
pub(crate) struct StopTokens {
    /// Cancelled first: listeners close, no new streams are taken.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the grace period is over: everything still open is aborted.
    pub(crate) shutdown: CancellationToken,
}

impl StopTokens {
    pub(crate) fn new() -> Self {
        let shutdown = CancellationToken::new();
        // Stopping at once implies no longer accepting.
        let draining = shutdown.child_token();
        Self { draining, shutdown }
    }
}

/// Stops a role: drain, wait until `open_streams()` is 0, `grace` is over or `hurry` is
/// cancelled (a second signal), then abort the rest and wait for `tasks` (bounded).
pub(crate) async fn stop(
    role: &str,
    tokens: &StopTokens,
    tasks: &TaskTracker,
    grace: Duration,
    hurry: &CancellationToken,
    open_streams: impl Fn() -> u64,
) {
    tokens.draining.cancel();
    let open = open_streams();
    if open > 0 && !grace.is_zero() {
        tracing::info!(
            role,
            open,
            ?grace,
            "stopping: no new connections; open streams may finish"
        );
        let left = wait_for_streams(grace, hurry, &open_streams).await;
        if left > 0 {
            tracing::warn!(
                role,
                left,
                "stopping: grace period over; resetting the streams still open"
            );
        }
    }
    tokens.shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(TASKS_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            role,
            "tasks still running {TASKS_DEADLINE:?} after stop; abandoning them"
        );
    }
}

/// Polls `open_streams` until it is 0 (returns 0), or `grace` is over or `hurry` fires
/// (returns what is still open).
async fn wait_for_streams(
    grace: Duration,
    hurry: &CancellationToken,
    open_streams: &impl Fn() -> u64,
) -> u64 {
    let deadline = Instant::now() + grace;
    loop {
        let open = open_streams();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        tokio::select! {
            () = hurry.cancelled() => return open_streams(),
            () = tokio::time::sleep_until(deadline.min(Instant::now() + POLL)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_streams_are_done_or_the_grace_is_over() {
        let open = Arc::new(AtomicU64::new(2));
        let hurry = CancellationToken::new();
        let finisher = open.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            finisher.store(0, Ordering::Relaxed);
        });
        let started = Instant::now();
        let count = || open.load(Ordering::Relaxed);
        assert_eq!(
            wait_for_streams(Duration::from_secs(10), &hurry, &count).await,
            0
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
            "{took:?}"
        );

        open.store(5, Ordering::Relaxed);
        let started = Instant::now();
        assert_eq!(
            wait_for_streams(Duration::from_secs(10), &hurry, &count).await,
            5
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_ends_the_wait() {
        let hurry = CancellationToken::new();
        let trigger = hurry.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        assert_eq!(
            wait_for_streams(Duration::from_secs(10), &hurry, &|| 7).await,
            7
        );
        assert!(started.elapsed() < Duration::from_millis(1100));
    }

    #[tokio::test]
    async fn stop_drains_then_shuts_down() {
        let tokens = StopTokens::new();
        let tasks = TaskTracker::new();
        stop(
            "test",
            &tokens,
            &tasks,
            Duration::ZERO,
            &CancellationToken::new(),
            || 3,
        )
        .await;
        assert!(tokens.draining.is_cancelled() && tokens.shutdown.is_cancelled());
    }
}
