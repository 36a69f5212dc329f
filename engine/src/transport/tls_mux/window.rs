//! Flow-control arithmetic of one stream, sans IO (no tokio, no locks).
//!
//! Each side may send at most the credit the receiver granted. Both sides start with
//! [`INITIAL_STREAM_WINDOW`] per stream; the receiver returns credit with WINDOW_UPDATE(_BACK)
//! as the application reads, keeping `outstanding + buffered <= target` where `outstanding` is
//! the credit the peer still holds (granted, not yet used; grants still queued for the wire
//! count as granted) and `buffered` the received bytes the application has not read yet. So the
//! memory a stream can pin is at most `max(INITIAL_STREAM_WINDOW, target)`.
//!
//! The target is `clamp(budget / active_streams, min, max)` ([`WindowSettings::target`]),
//! recomputed at every grant, so a lone stream grows toward `max` and many streams share the
//! budget. A sustained stream (see `qos.rs`; classified from the bytes received) is
//! locked to `min` instead ([`WindowSettings::target_for`]), so bulk transfers do not hold the
//! memory and the tunnel's queues that interactive streams need.

use std::time::Instant;

use super::qos::{QosSettings, SustainedDetector};

/// Credit (bytes) each side starts with per stream, in both directions. Protocol constant.
pub const INITIAL_STREAM_WINDOW: u32 = 1 << 20;

/// Smallest target window ever used, whatever the settings say: a zero or tiny window would
/// stall a stream (or degrade it to one tiny frame per round trip).
pub const MIN_TARGET_WINDOW: u32 = 16 * 1024;

/// A grant is sent once it reaches `min(target / 2, GRANT_THRESHOLD)`: large enough not to send
/// one WINDOW_UPDATE per read, small enough to keep a large window busy.
pub const GRANT_THRESHOLD: u32 = 256 * 1024;

/// Receive window sizing of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    /// Smallest per-stream receive window.
    pub min: u32,
    /// Largest per-stream receive window.
    pub max: u32,
    /// Receive memory the tunnel aims to stay within, shared by all active streams.
    pub budget: u64,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            min: 1 << 20,
            max: 4 << 20,
            budget: 200 << 20,
        }
    }
}

impl WindowSettings {
    /// `clamp(budget / active_streams, min, max)`, floored at [`MIN_TARGET_WINDOW`]. Tolerates
    /// inconsistent settings (`min > max`: `max` wins) instead of panicking.
    pub fn target(&self, active_streams: usize) -> u32 {
        let streams = u64::try_from(active_streams.max(1)).unwrap_or(u64::MAX);
        let share = u32::try_from(self.budget / streams).unwrap_or(u32::MAX);
        let hi = self.max.max(MIN_TARGET_WINDOW);
        let lo = self.min.clamp(MIN_TARGET_WINDOW, hi);
        share.clamp(lo, hi)
    }

    /// The target of a sustained stream: `min`, bounded like [`Self::target`].
    pub fn sustained_target(&self) -> u32 {
        let hi = self.max.max(MIN_TARGET_WINDOW);
        self.min.clamp(MIN_TARGET_WINDOW, hi)
    }

    /// [`Self::sustained_target`] for a sustained stream, else [`Self::target`].
    pub fn target_for(&self, active_streams: usize, sustained: bool) -> u32 {
        if sustained {
            self.sustained_target()
        } else {
            self.target(active_streams)
        }
    }
}

/// The peer sent more than the credit it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditExceeded {
    pub(crate) len: usize,
    pub(crate) credit: u64,
}

/// Receive side of one stream: what the peer may still send, what waits for the application.
#[derive(Debug, Clone)]
pub(crate) struct RecvWindow {
    /// Credit the peer holds: granted (initial window plus sent or queued grants), not yet used.
    outstanding: u64,
    /// Received and not yet read by the application.
    buffered: u64,
    /// Classification from the bytes received.
    qos: SustainedDetector,
}

impl RecvWindow {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            outstanding: u64::from(INITIAL_STREAM_WINDOW),
            buffered: 0,
            qos: SustainedDetector::new(now),
        }
    }

    /// Accounts `len` received bytes; refuses them if they exceed the peer's credit (a protocol
    /// violation: the tunnel must be closed).
    pub(crate) fn on_data(&mut self, len: usize, _now: Instant) -> Result<(), CreditExceeded> {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        if n > self.outstanding {
            return Err(CreditExceeded {
                len,
                credit: self.outstanding,
            });
        }
        self.outstanding -= n;
        self.buffered += n;
        self.qos.record(len);
        Ok(())
    }

    /// Whether the stream is sustained at `now`, judged from the bytes received so far.
    pub(crate) fn is_sustained(&mut self, now: Instant, settings: &QosSettings) -> bool {
        self.qos.update(now, settings)
    }

    /// Accounts `len` bytes the application read.
    pub(crate) fn on_consumed(&mut self, len: usize) {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        self.buffered = self.buffered.saturating_sub(n);
    }

    /// The credit to return now, if it is worth a WINDOW_UPDATE; it counts as granted from here
    /// on, so the caller must queue it.
    pub(crate) fn take_grant(&mut self, target: u32, _now: Instant) -> Option<u32> {
        let target = u64::from(target);
        let room = target.saturating_sub(self.outstanding + self.buffered);
        let threshold = (target / 2).min(u64::from(GRANT_THRESHOLD)).max(1);
        if room < threshold {
            return None;
        }
        let grant = u32::try_from(room).unwrap_or(u32::MAX);
        self.outstanding += u64::from(grant);
        Some(grant)
    }

    /// Bytes received and not yet read.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Credit the peer still holds.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> u64 {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u32 = 1 << 20;

    fn settings(min: u32, max: u32, budget: u64) -> WindowSettings {
        WindowSettings { min, max, budget }
    }

    #[test]
    fn target_shares_the_budget_within_bounds() {
        let s = WindowSettings::default();
        assert_eq!(s.target(0), 4 * MIB);
        assert_eq!(s.target(1), 4 * MIB);
        assert_eq!(s.target(50), 4 * MIB);
        assert_eq!(s.target(100), 2 * MIB);
        assert_eq!(s.target(200), MIB);
        assert_eq!(s.target(10_000), MIB);
        // Inconsistent or degenerate settings never panic.
        assert_eq!(settings(8 * MIB, MIB, 0).target(1), MIB);
        assert_eq!(settings(0, 0, 0).target(1), MIN_TARGET_WINDOW);
        assert_eq!(
            settings(0, u32::MAX, u64::MAX).target(usize::MAX),
            u32::try_from(u64::MAX / u64::try_from(usize::MAX).unwrap())
                .unwrap_or(u32::MAX)
                .max(MIN_TARGET_WINDOW)
        );
    }

    #[test]
    fn target_table_for_the_default_budget() {
        let s = WindowSettings::default();
        for (streams, target) in [
            (1, 4 * MIB),
            (50, 4 * MIB),
            (51, 4_112_062), // 200 MiB / 51: scaling down starts
            (100, 2 * MIB),
            (200, MIB),
            (201, MIB),
            (1000, MIB),
        ] {
            assert_eq!(s.target(streams), target, "{streams} streams");
            assert_eq!(s.target_for(streams, false), target, "{streams} streams");
            assert_eq!(
                s.target_for(streams, true),
                MIB,
                "{streams} streams, sustained"
            );
        }
        assert_eq!(s.sustained_target(), MIB);
        assert_eq!(settings(0, 0, 0).sustained_target(), MIN_TARGET_WINDOW);
        assert_eq!(settings(8 * MIB, MIB, 0).sustained_target(), MIB);
    }

    #[test]
    fn a_fast_old_stream_is_locked_to_the_minimum() {
        let start = Instant::now();
        let qos = QosSettings::default();
        let s = WindowSettings::default();
        let mut w = RecvWindow::new(start);
        // 30 Mbit/s for 11 s, read as it arrives, in 100 ms steps.
        let per_step = 30_000_000 / 8 / 10;
        let mut now = start;
        let mut locked_at = None;
        for step in 1..=110u32 {
            now = start + std::time::Duration::from_millis(100 * u64::from(step));
            let send = per_step.min(usize::try_from(w.outstanding()).unwrap());
            w.on_data(send, now).unwrap();
            w.on_consumed(send);
            let sustained = w.is_sustained(now, &qos);
            if sustained && locked_at.is_none() {
                locked_at = Some(step);
            }
            let _ = w.take_grant(s.target_for(1, sustained), now);
        }
        assert_eq!(locked_at, Some(101), "sustained right after 10 s");
        // The peer's credit is now capped by the minimum window, not the 4 MiB of one stream.
        assert!(w.outstanding() + w.buffered() <= u64::from(MIB));
        assert!(w.is_sustained(now, &qos));
    }

    #[test]
    fn starts_with_the_initial_window_and_refuses_excess() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        assert_eq!(w.outstanding(), u64::from(INITIAL_STREAM_WINDOW));
        w.on_data(INITIAL_STREAM_WINDOW as usize - 1, now).unwrap();
        w.on_data(1, now).unwrap();
        assert_eq!(w.on_data(1, now), Err(CreditExceeded { len: 1, credit: 0 }));
        assert_eq!(w.buffered(), u64::from(INITIAL_STREAM_WINDOW));
    }

    #[test]
    fn small_reads_do_not_trigger_updates() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(100_000, now).unwrap();
        // target == initial: room is only what was consumed.
        w.on_consumed(1000);
        assert_eq!(w.take_grant(MIB, now), None);
        w.on_consumed(99_000);
        assert_eq!(w.take_grant(MIB, now), None, "100 kB < threshold");
        w.on_data(200_000, now).unwrap();
        w.on_consumed(200_000);
        assert_eq!(w.take_grant(MIB, now), Some(300_000));
        assert_eq!(w.outstanding(), u64::from(MIB));
        assert_eq!(w.take_grant(MIB, now), None);
    }

    #[test]
    fn grows_toward_a_larger_target() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(10, now).unwrap();
        w.on_consumed(10);
        assert_eq!(w.take_grant(4 * MIB, now), Some(3 * MIB + 10));
        assert_eq!(w.outstanding(), u64::from(4 * MIB));
        w.on_data(4 * MIB as usize, now).unwrap();
        assert!(w.on_data(1, now).is_err());
    }

    #[test]
    fn shrinks_when_the_target_drops() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(10, now).unwrap();
        w.on_consumed(10);
        assert!(w.take_grant(4 * MIB, now).is_some());
        // Many streams now: no more credit until the peer's holdings fall below the new target.
        w.on_data(3 * MIB as usize, now).unwrap();
        w.on_consumed(3 * MIB as usize);
        assert_eq!(w.take_grant(MIB, now), None);
        w.on_data(MIB as usize, now).unwrap();
        w.on_consumed(MIB as usize);
        assert_eq!(w.take_grant(MIB, now), Some(MIB));
    }

    #[test]
    fn tiny_targets_still_grant() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(INITIAL_STREAM_WINDOW as usize, now).unwrap();
        w.on_consumed(INITIAL_STREAM_WINDOW as usize);
        assert_eq!(
            w.take_grant(MIN_TARGET_WINDOW, now),
            Some(MIN_TARGET_WINDOW)
        );
    }

    proptest! {
        /// Whatever the peer sends (within credit) and the application reads, the peer's credit
        /// plus the buffer never exceed max(initial, largest target used), and a grant is never
        /// smaller than the threshold.
        #[test]
        fn holdings_stay_within_the_window(
            steps in proptest::collection::vec((0u32..300_000, 0u32..300_000, 1usize..500), 1..200)
        ) {
            let now = Instant::now();
            let s = WindowSettings::default();
            let mut w = RecvWindow::new(now);
            let mut max_target = u64::from(INITIAL_STREAM_WINDOW);
            for (send, read, streams) in steps {
                let send = u64::from(send).min(w.outstanding);
                w.on_data(usize::try_from(send).unwrap(), now).unwrap();
                let read = u64::from(read).min(w.buffered());
                w.on_consumed(usize::try_from(read).unwrap());
                let target = s.target(streams);
                max_target = max_target.max(u64::from(target));
                if let Some(grant) = w.take_grant(target, now) {
                    prop_assert!(u64::from(grant) >= (u64::from(target) / 2).min(u64::from(GRANT_THRESHOLD)));
                    prop_assert!(w.outstanding + w.buffered <= u64::from(target));
                }
                prop_assert!(w.outstanding + w.buffered <= max_target);
            }
        }
    }
}
