//! A token bucket (sans-IO: callers pass `now`) that paces new UDP sessions on the edge: each
//! new session costs one token, tokens come back at `per_sec` up to `burst`. Opening a session
//! costs the hub a socket and a task, so a flood of new source addresses must not open them
//! faster than the operator allows.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. Rates and bursts below 1 are taken as 1.
    pub(crate) fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Changes rate and burst, keeping the tokens there are (up to the new burst).
    pub(crate) fn set(&mut self, per_sec: u32, burst: u32, now: Instant) {
        self.refill(now);
        self.per_sec = f64::from(per_sec.max(1));
        self.burst = f64::from(burst.max(1));
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes one token; false when there is none.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        assert_eq!((0..5).filter(|_| bucket.try_take(start)).count(), 3);
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn changes_apply_at_once_and_zero_means_one() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000, start);
        bucket.set(0, 0, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start + Duration::from_millis(500)));
        assert!(bucket.try_take(start + Duration::from_secs(1)));
        // A clock that goes backwards takes nothing back.
        assert!(!bucket.try_take(start));
    }
}
