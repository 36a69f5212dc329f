//! Sustained ("elephant") stream classification, sans IO (no tokio, no locks, no clock: every
//! method takes `now`).
//!
//! A stream older than [`QosSettings::sustained_after`] whose average rate since it opened
//! exceeds [`QosSettings::sustained_threshold_bytes_per_sec`] is *sustained*. Each side
//! classifies each direction of a stream from its own byte counts: the sender from the DATA it
//! wrote (its DATA then goes to the writer's sustained queue), the receiver from the DATA it
//! received (its receive window target then locks to the minimum). The two ends see the same
//! bytes (minus what is in flight), so they agree up to a round trip.
//!
//! A sustained stream returns to normal once its average falls to half the threshold
//! (hysteresis, so a stream near the threshold does not flap between the queues).

use std::time::{Duration, Instant};

/// Default of [`QosSettings::sustained_after`].
pub(crate) const SUSTAINED_AFTER: Duration = Duration::from_secs(1);

/// Default of [`QosSettings::sustained_threshold_bytes_per_sec`]: 20 Mbit/s.
pub(crate) const SUSTAINED_THRESHOLD_BYTES_PER_SEC: u64 = 2_500_000;

/// Default of [`QosSettings::sustained_drain_bytes_per_sec`]: 1 MiB/s.
pub(crate) const SUSTAINED_DRAIN_BYTES_PER_SEC: u64 = 1 << 20;

/// Quality-of-service settings of a tunnel: when a stream counts as sustained and how much of
/// the tunnel sustained streams are guaranteed while other data is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QosSettings {
    /// A stream is never sustained before it is this old.
    pub sustained_after: Duration,
    /// Average rate since the stream opened (bytes per second, one direction) above which an
    /// old enough stream is sustained. `u64::MAX` disables the classification.
    pub sustained_threshold_bytes_per_sec: u64,
    /// Bytes per second the writer's sustained queue is guaranteed even while the data queue is
    /// never empty. 0: sustained frames only go out when no other data waits.
    pub sustained_drain_bytes_per_sec: u64,
}

impl Default for QosSettings {
    fn default() -> Self {
        Self {
            sustained_after: SUSTAINED_AFTER,
            sustained_threshold_bytes_per_sec: SUSTAINED_THRESHOLD_BYTES_PER_SEC,
            sustained_drain_bytes_per_sec: SUSTAINED_DRAIN_BYTES_PER_SEC,
        }
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Classification of one direction of one stream.
#[derive(Debug, Clone)]
pub(crate) struct SustainedDetector {
    opened: Instant,
    bytes: u64,
    sustained: bool,
}

impl SustainedDetector {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            opened: now,
            bytes: 0,
            sustained: false,
        }
    }

    /// Accounts `len` bytes sent or received.
    pub(crate) fn record(&mut self, len: usize) {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        self.bytes = self.bytes.saturating_add(n);
    }

    /// Reclassifies the stream at `now` and returns whether it is sustained.
    pub(crate) fn update(&mut self, now: Instant, settings: &QosSettings) -> bool {
        let age = now.saturating_duration_since(self.opened);
        self.sustained = if age <= settings.sustained_after {
            false
        } else {
            // rate > threshold  <=>  bytes * 1e9 > threshold * age_ns (no division, no floats).
            let scaled = u128::from(self.bytes).saturating_mul(NANOS_PER_SEC);
            let scaled = if self.sustained {
                scaled.saturating_mul(2)
            } else {
                scaled
            };
            let limit = u128::from(settings.sustained_threshold_bytes_per_sec)
                .saturating_mul(age.as_nanos());
            scaled > limit
        };
        self.sustained
    }

    /// The classification of the last [`Self::update`].
    #[cfg(test)]
    pub(crate) fn is_sustained(&self) -> bool {
        self.sustained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes_per_sec` in 10 ms steps for `seconds`, reclassifying at every step; returns
    /// the detector and whether it was ever sustained.
    fn run(bytes_per_sec: u64, seconds: u64) -> (SustainedDetector, bool) {
        let settings = QosSettings::default();
        let start = Instant::now();
        let mut d = SustainedDetector::new(start);
        let mut ever = false;
        let step = Duration::from_millis(10);
        let per_step = usize::try_from(bytes_per_sec / 100).unwrap();
        let mut now = start;
        for _ in 0..seconds * 100 {
            now += step;
            d.record(per_step);
            ever |= d.update(now, &settings);
        }
        (d, ever)
    }

    #[test]
    fn thirty_mbit_for_two_seconds_is_sustained() {
        let (d, _) = run(30_000_000 / 8, 2);
        assert!(d.is_sustained());
        // Exactly at the boundary it was not yet.
        let (d, ever) = run(30_000_000 / 8, 1);
        assert!(!d.is_sustained() && !ever);
    }

    #[test]
    fn ten_mbit_is_never_sustained() {
        let (d, ever) = run(10_000_000 / 8, 60);
        assert!(!d.is_sustained() && !ever);
    }

    #[test]
    fn young_fast_streams_are_not_sustained() {
        // 1 GB/s, but only for a second.
        let (d, ever) = run(1_000_000_000, 1);
        assert!(!d.is_sustained() && !ever);
    }

    #[test]
    fn slowing_down_returns_to_normal_with_hysteresis() {
        let settings = QosSettings::default();
        let (mut d, _) = run(30_000_000 / 8, 11);
        assert!(d.is_sustained());
        // Idle: the average decays; still sustained just under the threshold ...
        let total = 30_000_000 / 8 * 11;
        let at_threshold = Duration::from_secs_f64(total as f64 / 2_500_000.0);
        let mut now = d.opened + at_threshold + Duration::from_millis(100);
        assert!(d.update(now, &settings), "hysteresis keeps it sustained");
        // ... and normal again at half of it.
        now = d.opened + at_threshold * 2 + Duration::from_millis(100);
        assert!(!d.update(now, &settings));
        // Back above the threshold (not just above half of it) to become sustained again.
        d.record(usize::try_from(total).unwrap() / 2);
        assert!(
            !d.update(now, &settings),
            "1.5x total at 2x the time is below"
        );
        d.record(usize::try_from(total).unwrap());
        assert!(d.update(now, &settings));
    }

    #[test]
    fn extreme_settings_never_panic() {
        let start = Instant::now();
        let mut d = SustainedDetector::new(start);
        d.record(usize::MAX);
        d.record(usize::MAX);
        let off = QosSettings {
            sustained_threshold_bytes_per_sec: u64::MAX,
            ..QosSettings::default()
        };
        let late = start + Duration::from_secs(1_000_000);
        assert!(!d.update(late, &off), "u64::MAX disables it");
        let zero = QosSettings {
            sustained_after: Duration::ZERO,
            sustained_threshold_bytes_per_sec: 0,
            ..QosSettings::default()
        };
        assert!(d.update(late, &zero));
        // A clock going backwards counts as age zero.
        assert!(!d.update(start - Duration::from_secs(1), &zero));
        let never = QosSettings {
            sustained_after: Duration::MAX,
            ..zero
        };
        assert!(!d.update(late, &never));
    }
}
