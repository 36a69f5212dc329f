//! Jittered exponential backoff for reconnect loops, sans-IO.
//!
//! Modelled on linkerd's `exp-backoff`: a validated [`ExponentialBackoff`] configuration, and a
//! [`BackoffStream`] that hands out one delay per failed attempt. This module never sleeps and
//! owns no random source: the caller passes an RNG to [`BackoffStream::next_delay`] and sleeps
//! itself, so tests run instantly and deterministically with a seeded RNG.
//!
//! # Delays
//!
//! The n-th delay (counting from 0, since creation or the last [`BackoffStream::reset`]) is
//!
//! ```text
//! base(n)  = min(min * 2^n, max)
//! delay(n) = base(n) + base(n) * jitter * r,   r drawn uniformly from [0, 1)
//! ```
//!
//! so every delay lies in `[base(n), base(n) * (1 + jitter)]`, and overall in
//! `[min, max * (1 + jitter)]` (see [`ExponentialBackoff::max_delay`]); with `jitter == 0.0` the
//! delays are exactly `base(n)`. All arithmetic saturates, so even `max == Duration::MAX` never
//! overflows or panics; there the upper bound is `Duration::MAX`.
//!
//! Unlike linkerd, the jitter is *not* capped at `max`: a capped jitter shrinks to nothing once the
//! base reaches `max`, and a fleet of edges that lost their hub together would then retry in
//! lock-step for as long as the hub stays down — the moment jitter matters most.

use std::time::Duration;

use rand::Rng;
use thiserror::Error;

/// Why a backoff configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum InvalidBackoff {
    /// A zero minimum would never grow, and would retry in a tight loop.
    #[error("minimum backoff must be greater than zero")]
    ZeroMin,
    #[error("maximum backoff ({max:?}) must not be less than the minimum ({min:?})")]
    MaxBelowMin { min: Duration, max: Duration },
    #[error("backoff jitter must be a finite number")]
    JitterNotFinite,
    #[error("backoff jitter must be in [0.0, 1.0), got {jitter}")]
    JitterOutOfRange { jitter: f64 },
}

/// A validated backoff configuration: `0 < min <= max`, `jitter` finite in `[0.0, 1.0)`.
///
/// The fields are private so that every value obeys these rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl ExponentialBackoff {
    /// An edge reconnecting to its hub: 1 s, doubling to 30 s, plus up to 50 % jitter, so delays
    /// lie in [1 s, 45 s].
    pub const EDGE_RECONNECT: Self = Self {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
        jitter: 0.5,
    };

    /// Checks and builds a configuration. `min == max` is allowed (a constant base delay).
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if min.is_zero() {
            return Err(InvalidBackoff::ZeroMin);
        }
        if max < min {
            return Err(InvalidBackoff::MaxBelowMin { min, max });
        }
        if !jitter.is_finite() {
            return Err(InvalidBackoff::JitterNotFinite);
        }
        if !(0.0..1.0).contains(&jitter) {
            return Err(InvalidBackoff::JitterOutOfRange { jitter });
        }
        Ok(Self {
            min,
            max,
            // Turns -0.0 into 0.0, so the "no jitter" case is exactly zero.
            jitter: jitter.abs(),
        })
    }

    /// Same as [`ExponentialBackoff::EDGE_RECONNECT`].
    pub const fn edge_reconnect() -> Self {
        Self::EDGE_RECONNECT
    }

    /// The first base delay.
    pub const fn min(&self) -> Duration {
        self.min
    }

    /// The largest base delay.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The largest fraction of the base delay added as jitter.
    pub const fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Upper bound of every delay: `max * (1 + jitter)`, saturating at `Duration::MAX`.
    pub fn max_delay(&self) -> Duration {
        self.max.saturating_add(self.jitter_for(self.max, 1.0))
    }

    /// A fresh sequence of delays, starting at `min`.
    pub const fn stream(&self) -> BackoffStream {
        BackoffStream {
            backoff: *self,
            base: self.min,
        }
    }

    /// `base * jitter * factor`, never more than `base`, never panicking (the float product is
    /// converted with a checked conversion, and is at most `base` anyway since both factors are
    /// below 1).
    fn jitter_for(&self, base: Duration, factor: f64) -> Duration {
        Duration::try_from_secs_f64(base.as_secs_f64() * self.jitter * factor)
            .map_or(base, |jitter| jitter.min(base))
    }
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self::EDGE_RECONNECT
    }
}

/// The state of one reconnect loop: which base delay comes next.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffStream {
    backoff: ExponentialBackoff,
    base: Duration,
}

impl BackoffStream {
    /// The delay to wait before the next attempt; doubles the base for the attempt after.
    ///
    /// Draws exactly one `f64` from `rng` when jitter is non-zero, and none otherwise.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let base = self.base;
        let jitter = if self.backoff.jitter > 0.0 {
            let factor: f64 = rng.random();
            self.backoff.jitter_for(base, factor)
        } else {
            Duration::ZERO
        };
        self.base = base.saturating_mul(2).min(self.backoff.max);
        base.saturating_add(jitter)
    }

    /// Starts over at `min`; call after a connection that worked for a while.
    pub fn reset(&mut self) {
        self.base = self.backoff.min;
    }

    /// The base of the next delay, before jitter.
    pub const fn next_base(&self) -> Duration {
        self.base
    }

    /// The configuration this stream follows.
    pub const fn backoff(&self) -> &ExponentialBackoff {
        &self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn validates_configuration() {
        let s = Duration::from_secs;
        assert_eq!(
            ExponentialBackoff::try_new(Duration::ZERO, s(1), 0.1),
            Err(InvalidBackoff::ZeroMin)
        );
        assert_eq!(
            ExponentialBackoff::try_new(s(2), s(1), 0.1),
            Err(InvalidBackoff::MaxBelowMin {
                min: s(2),
                max: s(1)
            })
        );
        for jitter in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                ExponentialBackoff::try_new(s(1), s(2), jitter),
                Err(InvalidBackoff::JitterNotFinite)
            );
        }
        for jitter in [-0.1, 1.0, 1.5] {
            assert_eq!(
                ExponentialBackoff::try_new(s(1), s(2), jitter),
                Err(InvalidBackoff::JitterOutOfRange { jitter })
            );
        }
        assert!(ExponentialBackoff::try_new(s(1), s(1), 0.0).is_ok());
        assert!(ExponentialBackoff::try_new(s(1), s(1), 0.999).is_ok());
        assert_eq!(
            ExponentialBackoff::try_new(s(1), s(1), -0.0).map(|b| b.jitter().to_bits()),
            Ok(0.0_f64.to_bits())
        );
        assert_eq!(
            InvalidBackoff::JitterOutOfRange { jitter: 1.0 }.to_string(),
            "backoff jitter must be in [0.0, 1.0), got 1"
        );
    }

    #[test]
    fn edge_reconnect_preset() {
        let preset = ExponentialBackoff::edge_reconnect();
        assert_eq!(
            Ok(preset),
            ExponentialBackoff::try_new(Duration::from_secs(1), Duration::from_secs(30), 0.5)
        );
        assert_eq!(preset.max_delay(), Duration::from_secs(45));
        assert_eq!(ExponentialBackoff::default(), preset);
    }

    #[test]
    fn without_jitter_doubles_to_max() {
        let backoff =
            ExponentialBackoff::try_new(Duration::from_secs(1), Duration::from_secs(30), 0.0)
                .unwrap();
        let mut stream = backoff.stream();
        let mut rng = StdRng::seed_from_u64(0);
        let delays: Vec<u64> = (0..8)
            .map(|_| stream.next_delay(&mut rng).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        stream.reset();
        assert_eq!(stream.next_delay(&mut rng), Duration::from_secs(1));
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut stream = ExponentialBackoff::EDGE_RECONNECT.stream();
            (0..10)
                .map(|_| stream.next_delay(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        for (n, delay) in run(7).into_iter().enumerate() {
            let base = Duration::from_secs(1 << n.min(5)).min(Duration::from_secs(30));
            assert!(
                delay >= base && delay <= base.mul_f64(1.5),
                "{n}: {delay:?}"
            );
        }
    }

    #[test]
    fn saturates_at_duration_max() {
        let backoff = ExponentialBackoff::try_new(MS, Duration::MAX, 0.999).unwrap();
        assert_eq!(backoff.max_delay(), Duration::MAX);
        let mut stream = backoff.stream();
        let mut rng = StdRng::seed_from_u64(1);
        let mut last = Duration::ZERO;
        for _ in 0..1000 {
            let delay = stream.next_delay(&mut rng);
            assert!(delay >= stream.backoff().min());
            last = delay;
        }
        assert_eq!(stream.next_base(), Duration::MAX);
        assert_eq!(last, Duration::MAX);
    }

    fn config() -> impl Strategy<Value = ExponentialBackoff> {
        (1..=u64::MAX / 2, 0..=u64::MAX / 2, 0.0..1.0_f64).prop_map(|(min, extra, jitter)| {
            let min = Duration::from_nanos(min);
            let max = min.saturating_add(Duration::from_nanos(extra));
            ExponentialBackoff::try_new(min, max, jitter).unwrap()
        })
    }

    proptest! {
        #[test]
        fn delays_stay_within_documented_bounds(backoff in config(), seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut stream = backoff.stream();
            let mut previous_base = Duration::ZERO;
            for _ in 0..1000 {
                let base = stream.next_base();
                prop_assert!(base >= previous_base, "base went down");
                prop_assert!(base >= backoff.min() && base <= backoff.max());
                let delay = stream.next_delay(&mut rng);
                prop_assert!(delay >= base && delay >= backoff.min());
                prop_assert!(delay <= base.saturating_add(base.mul_f64(backoff.jitter())) + Duration::from_nanos(1));
                prop_assert!(delay <= backoff.max_delay());
                previous_base = base;
            }
            prop_assert_eq!(stream.next_base(), backoff.max());
        }

        #[test]
        fn reset_starts_over_at_min(backoff in config(), steps in 0..100_usize, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut stream = backoff.stream();
            for _ in 0..steps {
                stream.next_delay(&mut rng);
            }
            stream.reset();
            prop_assert_eq!(stream.next_base(), backoff.min());
            let delay = stream.next_delay(&mut rng);
            prop_assert!(delay >= backoff.min());
            prop_assert!(delay <= backoff.min().saturating_add(backoff.min().mul_f64(backoff.jitter())) + Duration::from_nanos(1));
        }

        #[test]
        fn arbitrary_input_never_panics(min in any::<u64>(), max in any::<u64>(), jitter in any::<f64>(), seed in any::<u64>()) {
            let built = ExponentialBackoff::try_new(Duration::from_secs(min), Duration::from_secs(max), jitter);
            if let Ok(backoff) = built {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut stream = backoff.stream();
                for _ in 0..1000 {
                    prop_assert!(stream.next_delay(&mut rng) <= backoff.max_delay());
                }
            }
        }
    }
}
