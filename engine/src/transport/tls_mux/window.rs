//! Flow-control arithmetic of one stream, sans IO (no tokio, no locks).
//!
//! Each side may send at most the credit the receiver granted. Both sides start with
//! [`INITIAL_STREAM_WINDOW`] per stream; the receiver returns credit with WINDOW_UPDATE(_BACK)
//! as the application reads, keeping `outstanding + buffered <= target` where `outstanding` is
//! the credit the peer still holds (granted, not yet used; grants still queued for the wire
//! count as granted) and `buffered` the received bytes the application has not read yet. So the
//! memory a stream can pin is at most `max(INITIAL_STREAM_WINDOW, target)`.
//!
//! The target starts at `clamp(budget / active_streams, min, START_WINDOW)`
//! ([`WindowSettings::start_target`]) and a sustained stream (see `qos.rs`; classified from the
//! bytes received) at `min`, so bulk transfers do not hold the memory and the tunnel's queues
//! that interactive streams need. **Auto-tuning** then raises a stream's target when the path
//! needs it: once per path round trip (the tunnel socket's minimum RTT, as the kernel measured
//! it), if the application read at least half the target in one round trip, the window may be
//! what limits the stream (a window moves at most itself per round trip), so the target becomes
//! twice the bytes read per round trip, as TCP's receive-buffer auto-tuning does. It never
//! exceeds `clamp(budget / active_streams, min, max)` ([`WindowSettings::target`]), so the
//! budget still bounds the memory of all streams. On loopback the round trip is tens of
//! microseconds and nothing grows; at 80 ms a 1 Gbit/s stream needs about 20 MiB.

use std::time::{Duration, Instant};

use super::qos::{QosSettings, SustainedDetector};

/// Credit (bytes) each side starts with per stream, in both directions. Protocol constant.
pub(crate) const INITIAL_STREAM_WINDOW: u32 = 1 << 20;

/// Smallest target window ever used, whatever the settings say: a zero or tiny window would
/// stall a stream (or degrade it to one tiny frame per round trip).
pub(crate) const MIN_TARGET_WINDOW: u32 = 16 * 1024;

/// A grant is sent once it reaches `min(target / 2, GRANT_THRESHOLD)`: large enough not to send
/// one WINDOW_UPDATE per read, small enough to keep a large window busy.
pub(crate) const GRANT_THRESHOLD: u32 = 256 * 1024;

/// The most a stream's target is before auto-tuning has seen the path need more (what one stream
/// got before there was auto-tuning): enough for loopback and LAN paths.
pub(crate) const START_WINDOW: u32 = 4 << 20;

/// Receive window sizing of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowSettings {
    /// Smallest per-stream receive window.
    pub min: u32,
    /// Largest per-stream receive window auto-tuning may grow to.
    pub max: u32,
    /// Receive memory the tunnel aims to stay within, shared by all active streams.
    pub budget: u64,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            min: 1 << 20,
            max: 32 << 20,
            budget: 200 << 20,
        }
    }
}

impl WindowSettings {
    /// `clamp(budget / active_streams, min, max)`, floored at [`MIN_TARGET_WINDOW`]. Tolerates
    /// inconsistent settings (`min > max`: `max` wins) instead of panicking.
    pub(crate) fn target(&self, active_streams: usize) -> u32 {
        let streams = u64::try_from(active_streams.max(1)).unwrap_or(u64::MAX);
        let share = u32::try_from(self.budget / streams).unwrap_or(u32::MAX);
        let hi = self.max.max(MIN_TARGET_WINDOW);
        let lo = self.min.clamp(MIN_TARGET_WINDOW, hi);
        share.clamp(lo, hi)
    }

    /// Where a stream's target starts: [`Self::target`], at most [`START_WINDOW`].
    pub(crate) fn start_target(&self, active_streams: usize) -> u32 {
        self.target(active_streams)
            .min(START_WINDOW.max(self.floor()))
    }

    /// `min`, bounded like [`Self::target`]: where a sustained stream's target starts.
    pub(crate) fn floor(&self) -> u32 {
        let hi = self.max.max(MIN_TARGET_WINDOW);
        self.min.clamp(MIN_TARGET_WINDOW, hi)
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
    /// The target auto-tuning found the path needs (0: no evidence yet).
    tuned: u64,
    /// Bytes the application has read, ever.
    consumed: u64,
    /// Start of the current measurement: when, and `consumed` then.
    epoch: (Instant, u64),
}

/// What the receiver's target depends on besides the stream itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetInputs<'a> {
    pub(crate) settings: &'a WindowSettings,
    pub(crate) qos: &'a QosSettings,
    pub(crate) active_streams: usize,
    /// Minimum round-trip time of the tunnel's path, if known.
    pub(crate) path_rtt: Option<Duration>,
}

impl RecvWindow {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            outstanding: u64::from(INITIAL_STREAM_WINDOW),
            buffered: 0,
            qos: SustainedDetector::new(now),
            tuned: 0,
            consumed: 0,
            epoch: (now, 0),
        }
    }

    /// Accounts `len` received bytes; refuses them if they exceed the peer's credit (a protocol
    /// violation: the tunnel must be closed).
    pub(crate) fn on_data(&mut self, len: usize) -> Result<(), CreditExceeded> {
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

    /// Accounts `len` bytes the application read.
    pub(crate) fn on_consumed(&mut self, len: usize) {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        self.buffered = self.buffered.saturating_sub(n);
        self.consumed = self.consumed.saturating_add(n);
    }

    /// The stream's target at `now` (see the module doc): reclassifies the stream and, once a
    /// path round trip has passed since the last measurement, auto-tunes.
    pub(crate) fn target(&mut self, inputs: TargetInputs<'_>, now: Instant) -> u32 {
        let ceiling = u64::from(inputs.settings.target(inputs.active_streams));
        let start = if self.qos.update(now, inputs.qos) {
            inputs.settings.floor()
        } else {
            inputs.settings.start_target(inputs.active_streams)
        };
        let bounded = |tuned: u64| tuned.max(u64::from(start)).min(ceiling);
        let current = bounded(self.tuned);
        if let Some(rtt) = inputs.path_rtt.filter(|rtt| !rtt.is_zero()) {
            let (since, consumed_then) = self.epoch;
            let elapsed = now.saturating_duration_since(since);
            if elapsed >= rtt {
                // Bytes read per round trip, averaged over the measurement.
                let read = u128::from(self.consumed - consumed_then);
                let per_rtt = read.saturating_mul(rtt.as_nanos()) / elapsed.as_nanos().max(1);
                let per_rtt = u64::try_from(per_rtt).unwrap_or(u64::MAX);
                if per_rtt.saturating_mul(2) >= current {
                    self.tuned = self.tuned.max(per_rtt.saturating_mul(2).min(ceiling));
                }
                self.epoch = (now, self.consumed);
            }
        }
        u32::try_from(bounded(self.tuned)).unwrap_or(u32::MAX)
    }

    /// The credit to return now, if it is worth a WINDOW_UPDATE; it counts as granted from here
    /// on, so the caller must queue it.
    pub(crate) fn take_grant(&mut self, target: u32) -> Option<u32> {
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
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The buffered bytes were thrown away (the stream ended): forgets them, returns how many.
    pub(crate) fn discard(&mut self) -> u64 {
        std::mem::take(&mut self.buffered)
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

    fn inputs<'a>(s: &'a WindowSettings, qos: &'a QosSettings, rtt_ms: u64) -> TargetInputs<'a> {
        TargetInputs {
            settings: s,
            qos,
            active_streams: 1,
            path_rtt: (rtt_ms > 0).then(|| Duration::from_millis(rtt_ms)),
        }
    }

    #[test]
    fn target_shares_the_budget_within_bounds() {
        let s = WindowSettings::default();
        assert_eq!(s.target(0), 32 * MIB);
        assert_eq!(s.target(1), 32 * MIB);
        assert_eq!(s.target(6), 32 * MIB);
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
    fn start_table_for_the_default_budget() {
        let s = WindowSettings::default();
        for (streams, start) in [
            (1, 4 * MIB),
            (50, 4 * MIB),
            (51, 4_112_062), // 200 MiB / 51: scaling down starts
            (100, 2 * MIB),
            (200, MIB),
            (201, MIB),
            (1000, MIB),
        ] {
            assert_eq!(s.start_target(streams), start, "{streams} streams");
        }
        assert_eq!(s.floor(), MIB);
        assert_eq!(settings(0, 0, 0).floor(), MIN_TARGET_WINDOW);
        assert_eq!(settings(8 * MIB, MIB, 0).floor(), MIB);
        // A small ceiling bounds the start too.
        assert_eq!(
            settings(MIB, 2 * MIB, 200 * u64::from(MIB)).start_target(1),
            2 * MIB
        );
    }

    /// `rate` bytes per second sent, all read as it arrives, for `seconds`, in 10 ms steps, on a
    /// path of `rtt_ms`; the peer sends no more than its credit. Returns the targets per step.
    fn run(rate: u64, seconds: u64, rtt_ms: u64) -> Vec<u32> {
        let s = WindowSettings::default();
        let qos = QosSettings::default();
        let start = Instant::now();
        let mut w = RecvWindow::new(start);
        let per_step = rate / 100;
        let mut targets = Vec::new();
        for step in 1..=seconds * 100 {
            let now = start + Duration::from_millis(10 * step);
            let send = per_step.min(w.outstanding());
            w.on_data(usize::try_from(send).unwrap()).unwrap();
            w.on_consumed(usize::try_from(send).unwrap());
            let target = w.target(inputs(&s, &qos, rtt_ms), now);
            let _ = w.take_grant(target);
            targets.push(target);
        }
        targets
    }

    #[test]
    fn a_fast_old_stream_on_a_short_path_is_locked_to_the_minimum() {
        // 30 Mbit/s for 11 s on a 1 ms path: 3.75 kB per round trip, nothing to tune.
        let targets = run(30_000_000 / 8, 11, 1);
        let locked_at = targets.iter().position(|&t| t == MIB);
        assert_eq!(locked_at, Some(100), "sustained right after 1 s");
        assert_eq!(targets[..100].iter().max(), Some(&(4 * MIB)));
    }

    #[test]
    fn a_long_fat_path_grows_the_window_to_twice_what_a_round_trip_moves() {
        // 1 Gbit/s offered on an 80 ms path: 10 MB per round trip once the window allows it.
        let targets = run(1_000_000_000 / 8, 20, 80);
        let last = *targets.last().unwrap();
        assert!(last >= 16 * MIB, "grew to {last}");
        assert!(last <= 32 * MIB);
        // And stays there once sustained: the path needs it.
        assert!(
            targets[1100..].iter().all(|&t| t == last),
            "{:?}",
            &targets[1090..1110]
        );
    }

    #[test]
    fn no_rtt_no_tuning() {
        let targets = run(1_000_000_000 / 8, 3, 0);
        // The start window, then (sustained after 1 s) the minimum: never more.
        assert!(targets[..100].iter().all(|&t| t == 4 * MIB));
        assert!(targets[100..].iter().all(|&t| t == MIB));
    }

    #[test]
    fn a_slow_reader_on_a_long_path_does_not_grow_the_window() {
        // 10 Mbit/s at 80 ms: 100 kB per round trip, far below half the window.
        let targets = run(10_000_000 / 8, 5, 80);
        assert!(targets.iter().all(|&t| t == 4 * MIB));
    }

    #[test]
    fn many_streams_cap_a_tuned_window_at_their_share() {
        let s = WindowSettings::default();
        let qos = QosSettings::default();
        let start = Instant::now();
        let mut w = RecvWindow::new(start);
        w.tuned = u64::from(30 * MIB);
        let mut many = inputs(&s, &qos, 80);
        many.active_streams = 100;
        assert_eq!(w.target(many, start), 2 * MIB);
        assert_eq!(w.target(inputs(&s, &qos, 80), start), 30 * MIB);
    }

    #[test]
    fn starts_with_the_initial_window_and_refuses_excess() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        assert_eq!(w.outstanding(), u64::from(INITIAL_STREAM_WINDOW));
        w.on_data(INITIAL_STREAM_WINDOW as usize - 1).unwrap();
        w.on_data(1).unwrap();
        assert_eq!(w.on_data(1), Err(CreditExceeded { len: 1, credit: 0 }));
        assert_eq!(w.buffered(), u64::from(INITIAL_STREAM_WINDOW));
    }

    #[test]
    fn small_reads_do_not_trigger_updates() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(100_000).unwrap();
        // target == initial: room is only what was consumed.
        w.on_consumed(1000);
        assert_eq!(w.take_grant(MIB), None);
        w.on_consumed(99_000);
        assert_eq!(w.take_grant(MIB), None, "100 kB < threshold");
        w.on_data(200_000).unwrap();
        w.on_consumed(200_000);
        assert_eq!(w.take_grant(MIB), Some(300_000));
        assert_eq!(w.outstanding(), u64::from(MIB));
        assert_eq!(w.take_grant(MIB), None);
    }

    #[test]
    fn grows_toward_a_larger_target() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(10).unwrap();
        w.on_consumed(10);
        assert_eq!(w.take_grant(4 * MIB), Some(3 * MIB + 10));
        assert_eq!(w.outstanding(), u64::from(4 * MIB));
        w.on_data(4 * MIB as usize).unwrap();
        assert!(w.on_data(1).is_err());
    }

    #[test]
    fn shrinks_when_the_target_drops() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(10).unwrap();
        w.on_consumed(10);
        assert!(w.take_grant(4 * MIB).is_some());
        // Many streams now: no more credit until the peer's holdings fall below the new target.
        w.on_data(3 * MIB as usize).unwrap();
        w.on_consumed(3 * MIB as usize);
        assert_eq!(w.take_grant(MIB), None);
        w.on_data(MIB as usize).unwrap();
        w.on_consumed(MIB as usize);
        assert_eq!(w.take_grant(MIB), Some(MIB));
    }

    #[test]
    fn tiny_targets_still_grant() {
        let now = Instant::now();
        let mut w = RecvWindow::new(now);
        w.on_data(INITIAL_STREAM_WINDOW as usize).unwrap();
        w.on_consumed(INITIAL_STREAM_WINDOW as usize);
        assert_eq!(w.take_grant(MIN_TARGET_WINDOW), Some(MIN_TARGET_WINDOW));
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
                w.on_data(usize::try_from(send).unwrap()).unwrap();
                let read = u64::from(read).min(w.buffered());
                w.on_consumed(usize::try_from(read).unwrap());
                let target = s.target(streams);
                max_target = max_target.max(u64::from(target));
                if let Some(grant) = w.take_grant(target) {
                    prop_assert!(u64::from(grant) >= (u64::from(target) / 2).min(u64::from(GRANT_THRESHOLD)));
                    prop_assert!(w.outstanding + w.buffered <= u64::from(target));
                }
                prop_assert!(w.outstanding + w.buffered <= max_target);
            }
        }
    }
}
