//! Rate-limited warnings: a peer that provokes one warning per message (100,000 bad PINGs made
//! 13 MB of log in 2 s) cannot flood the log. Each peer gets its own limiter; past the burst,
//! warnings are counted instead of written, and the count is reported once per window.
//!
//! `tracing` has no per-key rate limiting of its own, and the crates that add it limit by call
//! site, not by peer; this is a few lines of counting (sans-IO: callers pass `now`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings written per window before the rest are only counted.
pub(crate) const BURST: u32 = 10;
/// Length of a window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Counts warnings of one peer (or one source of repeated warnings).
#[derive(Debug)]
pub(crate) struct LogLimiter {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    /// [`BURST`] warnings per [`WINDOW`].
    fn default() -> Self {
        Self::new(BURST, WINDOW)
    }
}

impl LogLimiter {
    /// `burst` warnings per `window`, the rest counted.
    pub(crate) const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            window_start: None,
            written: 0,
            suppressed: 0,
        }
    }

    /// One line per second at most (a failure that repeats in a tight loop).
    pub(crate) const fn once_a_second() -> Self {
        Self::new(1, Duration::from_secs(1))
    }

    /// True when a warning may be written now; otherwise it is counted as suppressed.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if fresh {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written < self.burst {
            self.written += 1;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            false
        }
    }

    /// The number of warnings suppressed so far, once their window has ended (then reset):
    /// call it periodically and write one line with the count.
    pub(crate) fn take_suppressed(&mut self, now: Instant) -> Option<u64> {
        let ended = self
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) >= self.window);
        if ended && self.suppressed > 0 {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

/// A [`LogLimiter`] shared by the tasks of one peer.
#[derive(Debug, Default)]
pub(crate) struct SharedLogLimiter(Mutex<LogLimiter>);

impl SharedLogLimiter {
    pub(crate) const fn new(limiter: LogLimiter) -> Self {
        Self(Mutex::new(limiter))
    }

    /// See [`LogLimiter::allow`]. A poisoned lock writes nothing (it only guards a counter).
    pub(crate) fn allow(&self) -> bool {
        self.0
            .lock()
            .map(|mut limiter| limiter.allow(Instant::now()))
            .unwrap_or(false)
    }

    /// See [`LogLimiter::take_suppressed`].
    pub(crate) fn take_suppressed(&self) -> Option<u64> {
        self.0
            .lock()
            .ok()
            .and_then(|mut limiter| limiter.take_suppressed(Instant::now()))
    }
}

/// Writes a warning through a limiter: `limited_warn!(limiter, field = ..., "message")`.
#[macro_export]
macro_rules! limited_warn {
    ($limiter:expr, $($arg:tt)+) => {
        if $limiter.allow() {
            tracing::warn!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_a_count() {
        let mut limiter = LogLimiter::default();
        let start = Instant::now();
        let written = (0..100_000).filter(|_| limiter.allow(start)).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(limiter.take_suppressed(start), None, "window still open");
        let next = start + WINDOW;
        assert_eq!(
            limiter.take_suppressed(next),
            Some(100_000 - u64::from(BURST))
        );
        assert_eq!(limiter.take_suppressed(next), None);
        assert!(limiter.allow(next));
    }

    #[test]
    fn once_a_second_writes_one_line_then_counts() {
        let mut limiter = LogLimiter::once_a_second();
        let start = Instant::now();
        assert!(limiter.allow(start));
        assert!(!limiter.allow(start + Duration::from_millis(500)));
        assert!(!limiter.allow(start + Duration::from_millis(900)));
        let next = start + Duration::from_secs(1);
        assert_eq!(limiter.take_suppressed(next), Some(2));
        assert!(limiter.allow(next));
    }
}
