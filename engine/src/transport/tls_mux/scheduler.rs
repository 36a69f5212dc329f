//! Which writer queue the next frame comes from, sans IO (every method takes `now`).
//!
//! Control frames always go first. Then the data queue, except that the sustained queue is
//! guaranteed a rate (a token bucket): its credit grows at that rate while time passes, and
//! while it is positive the sustained queue is served even though data is waiting; each frame
//! served that way costs its size. Sustained frames served because no data was waiting cost
//! nothing: they use capacity nobody else wanted. The credit is capped
//! ([`Scheduler::new`]), so after a quiet period the sustained queue overtakes data by at most
//! a short burst.

use std::time::{Duration, Instant};

use crate::transport::frame::{HEADER_LEN, MAX_DATA_PAYLOAD};

/// The writer's queues, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Queue {
    /// PING, PONG, WINDOW_UPDATE(_BACK), OPEN, CONFIG.
    Control,
    /// DATA(_BACK) and CLOSE(_BACK) of normal streams, UDP frames, reader-generated CLOSEs.
    Data,
    /// DATA(_BACK) and CLOSE(_BACK) of sustained streams.
    Sustained,
}

/// Which queues have a frame ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) control: bool,
    pub(crate) data: bool,
    pub(crate) sustained: bool,
}

/// The sustained queue's credit is capped at this much time of its rate ...
const BURST_TIME: Duration = Duration::from_millis(100);

/// ... but at least this many bytes (two full DATA frames), so a low rate still gets whole
/// frames out.
const MIN_BURST: u64 = 2 * (HEADER_LEN + MAX_DATA_PAYLOAD) as u64;

/// Credit is kept in bytes × nanoseconds per second, so that adding `rate × elapsed` never
/// loses fractions of a byte, however often the writer asks.
const SCALE: i128 = 1_000_000_000;

/// The writer's queue selection.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    /// Guaranteed rate of the sustained queue, bytes per second.
    rate: u64,
    /// Credit of the sustained queue (scaled by [`SCALE`]); negative by at most one frame.
    credit: i128,
    /// Largest credit (scaled).
    cap: i128,
    /// When the credit was last brought up to date.
    last: Instant,
    /// The last pick served the sustained queue ahead of waiting data: charge it.
    charge: bool,
}

impl Scheduler {
    /// Guarantees the sustained queue `rate` bytes per second; its credit caps at
    /// `max(rate × 100 ms, two full DATA frames)` and starts at zero.
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        let burst =
            (u128::from(rate) * BURST_TIME.as_nanos() / 1_000_000_000).max(u128::from(MIN_BURST));
        Self {
            rate,
            credit: 0,
            cap: i128::try_from(burst)
                .unwrap_or(i128::MAX)
                .saturating_mul(SCALE),
            last: now,
            charge: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed.is_zero() {
            return;
        }
        self.last = now;
        let add = i128::try_from(u128::from(self.rate).saturating_mul(elapsed.as_nanos()))
            .unwrap_or(i128::MAX);
        self.credit = self.credit.saturating_add(add).min(self.cap);
    }

    /// The queue to take the next frame from, `None` if none is ready. Call [`Self::sent`]
    /// with the frame's size once it is taken.
    pub(crate) fn pick(&mut self, now: Instant, ready: Ready) -> Option<Queue> {
        self.refill(now);
        self.charge = false;
        if ready.control {
            return Some(Queue::Control);
        }
        match (ready.data, ready.sustained) {
            (true, true) if self.credit > 0 => {
                self.charge = true;
                Some(Queue::Sustained)
            }
            (true, _) => Some(Queue::Data),
            (false, true) => Some(Queue::Sustained),
            (false, false) => None,
        }
    }

    /// Accounts a frame of `bytes` (header included) taken from `queue` after [`Self::pick`].
    pub(crate) fn sent(&mut self, queue: Queue, bytes: usize) {
        if queue == Queue::Sustained && self.charge {
            let cost = i128::try_from(bytes).unwrap_or(i128::MAX);
            self.credit = self.credit.saturating_sub(cost.saturating_mul(SCALE));
        }
        self.charge = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const FRAME: usize = HEADER_LEN + MAX_DATA_PAYLOAD;

    fn ready(control: bool, data: bool, sustained: bool) -> Ready {
        Ready {
            control,
            data,
            sustained,
        }
    }

    /// Simulates a link of `link` bytes per second for `seconds`, every frame a full DATA
    /// frame; `data`/`sustained` say whether those queues are always full. Returns the bytes
    /// each queue got per simulated second.
    fn simulate(link: u64, seconds: u64, data: bool, sustained: bool) -> Vec<(u64, u64)> {
        let start = Instant::now();
        let mut s = Scheduler::new(MIB, start);
        let frame_time = Duration::from_nanos(FRAME as u64 * 1_000_000_000 / link);
        let mut per_second = vec![(0u64, 0u64); usize::try_from(seconds).unwrap()];
        let mut now = start;
        loop {
            let second = usize::try_from((now - start).as_secs()).unwrap();
            if second >= per_second.len() {
                break;
            }
            let queue = s.pick(now, ready(false, data, sustained));
            match queue {
                Some(Queue::Data) => per_second[second].0 += FRAME as u64,
                Some(Queue::Sustained) => per_second[second].1 += FRAME as u64,
                other => panic!("unexpected {other:?}"),
            }
            if let Some(queue) = queue {
                s.sent(queue, FRAME);
            }
            now += frame_time;
        }
        per_second
    }

    #[test]
    fn control_always_goes_first() {
        let start = Instant::now();
        let mut s = Scheduler::new(MIB, start);
        // Plenty of credit for the sustained queue: control still wins.
        let later = start + Duration::from_secs(100);
        for (data, sustained) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                s.pick(later, ready(true, data, sustained)),
                Some(Queue::Control)
            );
            s.sent(Queue::Control, 20);
        }
        assert_eq!(s.pick(later, ready(false, false, false)), None);
    }

    #[test]
    fn sustained_gets_its_rate_while_data_is_always_waiting() {
        // 100 MB/s link, both queues always full, 10 simulated seconds.
        let seconds = simulate(100_000_000, 10, true, true);
        let mut total = 0;
        for (second, &(data, sustained)) in seconds.iter().enumerate() {
            // At least 1 MiB per second, give or take the frame in progress at a boundary ...
            assert!(
                sustained + FRAME as u64 >= MIB,
                "second {second}: sustained got only {sustained}"
            );
            // ... and not much more: the rest goes to data.
            assert!(
                sustained <= MIB + 2 * FRAME as u64,
                "second {second}: {sustained}"
            );
            assert!(data >= 90_000_000, "second {second}: data got only {data}");
            total += sustained;
        }
        assert!(total + FRAME as u64 >= 10 * MIB, "{total}");
    }

    #[test]
    fn sustained_gets_everything_when_data_is_empty() {
        let seconds = simulate(100_000_000, 3, false, true);
        for &(data, sustained) in &seconds {
            assert_eq!(data, 0);
            assert!(sustained >= 99_000_000, "{sustained}");
        }
    }

    #[test]
    fn data_gets_everything_when_sustained_is_empty() {
        let seconds = simulate(100_000_000, 3, true, false);
        for &(data, sustained) in &seconds {
            assert_eq!(sustained, 0);
            assert!(data >= 99_000_000, "{data}");
        }
    }

    #[test]
    fn credit_is_capped_after_a_quiet_period() {
        let start = Instant::now();
        let mut s = Scheduler::new(MIB, start);
        // Nothing to preempt at first: data wins until credit accrues.
        assert_eq!(
            s.pick(start, ready(false, true, true)),
            Some(Queue::Data),
            "no credit at start"
        );
        s.sent(Queue::Data, FRAME);
        // Sustained served for free (no data) does not use up its credit.
        let t = start + Duration::from_secs(1000);
        for _ in 0..100 {
            assert_eq!(s.pick(t, ready(false, false, true)), Some(Queue::Sustained));
            s.sent(Queue::Sustained, FRAME);
        }
        // After a long quiet period the burst is capped: 100 ms of 1 MiB/s = 104,857 bytes,
        // at least two frames; then data gets its turn (at the same instant).
        let mut burst = 0;
        while s.pick(t, ready(false, true, true)) == Some(Queue::Sustained) {
            s.sent(Queue::Sustained, FRAME);
            burst += 1;
            assert!(burst <= 10, "unbounded burst");
        }
        assert_eq!(burst, 2, "two frames' worth of credit");
        // Then credit accrues at the rate again: 10 ms of 1 MiB/s is positive credit, the frame
        // it buys makes it negative, and 65 KiB take ~62.5 ms to earn back.
        let ms = |n| t + Duration::from_millis(n);
        assert_eq!(
            s.pick(ms(10), ready(false, true, true)),
            Some(Queue::Sustained)
        );
        s.sent(Queue::Sustained, FRAME);
        for n in [20, 40, 60] {
            assert_eq!(s.pick(ms(n), ready(false, true, true)), Some(Queue::Data));
            s.sent(Queue::Data, FRAME);
        }
        assert_eq!(
            s.pick(ms(80), ready(false, true, true)),
            Some(Queue::Sustained)
        );
    }

    #[test]
    fn zero_rate_only_uses_idle_capacity() {
        let start = Instant::now();
        let mut s = Scheduler::new(0, start);
        let t = start + Duration::from_secs(1000);
        assert_eq!(s.pick(t, ready(false, true, true)), Some(Queue::Data));
        assert_eq!(s.pick(t, ready(false, false, true)), Some(Queue::Sustained));
        // Extreme rates never panic.
        let mut s = Scheduler::new(u64::MAX, start);
        assert_eq!(s.pick(t, ready(false, true, true)), Some(Queue::Sustained));
        s.sent(Queue::Sustained, usize::MAX);
        // A clock going backwards adds nothing.
        assert_eq!(s.pick(start, ready(false, true, true)), Some(Queue::Data));
    }
}
