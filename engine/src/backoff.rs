//! How long an edge waits before its next attempt to reach the hub. Sans-IO: the caller passes
//! the time and a random source, and sleeps itself.
//!
//! - After a tunnel that worked is lost: every [`FAST_RETRY`] (±50 %) for
//!   [`FAST_RETRY_WINDOW`]; a restarting hub is usually back within seconds, and the edge should
//!   be back within about a second of it, not a backoff step later.
//! - Otherwise (never connected, wrong secret, or a longer outage): [`MIN`] doubling to [`MAX`],
//!   each delay plus up to [`JITTER`] of itself. The jitter is not capped at the maximum: a fleet
//!   of edges that lost their hub together must not retry in lock-step while it stays down.
//! - When the hub said how long to wait (a second instance of a connected edge): that long,
//!   between [`MIN`] and [`HOLD_OFF_CAP`], plus the jitter; neither the fast retries nor the
//!   backoff's short start, which would only repeat the refusal.
//!
//! Written by hand (about 20 lines of logic): the crates (`backoff`, `backon`) would need this
//! much code around them for the fast-retry window and the uncapped jitter.

use std::time::{Duration, Instant};

use rand::Rng;

/// First backoff delay (before jitter).
pub(crate) const MIN: Duration = Duration::from_secs(1);
/// Longest backoff delay (before jitter).
pub(crate) const MAX: Duration = Duration::from_secs(30);
/// Each backoff delay grows by up to this share of itself.
pub(crate) const JITTER: f64 = 0.5;
/// How long after losing a working tunnel the edge retries fast.
pub(crate) const FAST_RETRY_WINDOW: Duration = Duration::from_secs(15);
/// The pause between attempts within [`FAST_RETRY_WINDOW`] (±50 % jitter).
pub(crate) const FAST_RETRY: Duration = Duration::from_millis(500);
/// Longest pause a hub can ask for (before jitter): a hub configured with a long heartbeat
/// timeout must not park an edge for longer.
pub(crate) const HOLD_OFF_CAP: Duration = Duration::from_secs(300);

/// The reconnect pacing of one edge.
#[derive(Debug, Clone)]
pub(crate) struct ReconnectDelay {
    min: Duration,
    max: Duration,
    next_base: Duration,
    lost_at: Option<Instant>,
}

impl Default for ReconnectDelay {
    /// [`MIN`] doubling to [`MAX`]: reaching the hub at all.
    fn default() -> Self {
        Self::new(MIN, MAX)
    }
}

impl ReconnectDelay {
    /// `min` doubling to `max` (each plus its jitter).
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next_base: min,
            lost_at: None,
        }
    }

    /// A tunnel came up: the backoff starts over.
    pub(crate) fn connected(&mut self) {
        self.next_base = self.min;
    }

    /// A tunnel that worked was lost at `now`: fast retries follow.
    pub(crate) fn lost(&mut self, now: Instant) {
        self.lost_at = Some(now);
    }

    /// The pause before the next attempt.
    pub(crate) fn next<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Duration {
        if self
            .lost_at
            .is_some_and(|at| now.saturating_duration_since(at) < FAST_RETRY_WINDOW)
        {
            return FAST_RETRY.mul_f64(rng.random_range(0.5..1.5));
        }
        let base = self.next_base;
        self.next_base = base.saturating_mul(2).min(self.max);
        base.mul_f64(1.0 + JITTER * rng.random::<f64>())
    }

    /// The pause before the next attempt when the hub asked for `wait` (see the module docs).
    pub(crate) fn hold_off<R: Rng + ?Sized>(&mut self, wait: Duration, rng: &mut R) -> Duration {
        wait.clamp(MIN, HOLD_OFF_CAP)
            .mul_f64(1.0 + JITTER * rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn doubles_to_the_maximum_with_jitter_on_top() {
        let (mut delay, mut rng, now) = (ReconnectDelay::default(), rng(), Instant::now());
        let mut base = MIN;
        for _ in 0..12 {
            let next = delay.next(now, &mut rng);
            assert!(
                next >= base && next <= base.mul_f64(1.0 + JITTER),
                "{next:?} for {base:?}"
            );
            base = (base * 2).min(MAX);
        }
        assert_eq!(base, MAX);
        delay.connected();
        let first = delay.next(now, &mut rng);
        assert!(
            first >= MIN && first <= MIN.mul_f64(1.0 + JITTER),
            "starts over: {first:?}"
        );
    }

    #[test]
    fn waits_what_the_hub_asked_even_right_after_a_loss() {
        let (mut delay, mut rng, now) = (ReconnectDelay::default(), rng(), Instant::now());
        delay.lost(now);
        for (asked, base) in [
            (MAX, MAX),
            (Duration::from_secs(9), Duration::from_secs(9)),
            (Duration::ZERO, MIN),
            (Duration::from_secs(3600), HOLD_OFF_CAP),
        ] {
            let wait = delay.hold_off(asked, &mut rng);
            assert!(
                wait >= base && wait <= base.mul_f64(1.0 + JITTER),
                "{wait:?} for {asked:?}"
            );
        }
    }

    #[test]
    fn retries_fast_for_a_while_after_losing_a_working_tunnel() {
        let (mut delay, mut rng, now) = (ReconnectDelay::default(), rng(), Instant::now());
        for _ in 0..5 {
            delay.next(now, &mut rng);
        }
        delay.connected();
        delay.lost(now);
        for _ in 0..100 {
            let fast = delay.next(now + Duration::from_secs(10), &mut rng);
            assert!(
                fast >= FAST_RETRY / 2 && fast <= FAST_RETRY.mul_f64(1.5),
                "{fast:?}"
            );
        }
        let later = delay.next(now + FAST_RETRY_WINDOW, &mut rng);
        assert!(
            later >= MIN && later <= MIN.mul_f64(1.0 + JITTER),
            "then the backoff, from its start: {later:?}"
        );
    }
}
