//! The hub's hard cap on what an edge can make it buffer: the received DATA of all of a tunnel's
//! streams that the application has not read yet stays within the window budget
//! ([`WindowSettings::budget`], `windowBudgetBytes`), however many streams there are.
//!
//! Flow control alone does not give that: every stream starts with
//! [`INITIAL_STREAM_WINDOW`](super::INITIAL_STREAM_WINDOW) (1 MiB, a protocol constant) of
//! credit and its target never drops below the minimum window, so 1,000 streams to a target
//! that does not read held 1,000 MiB whatever the budget said (1,600 MiB RSS, measured). And
//! the edge may be compromised: the cap must not depend on it doing what we ask. So the hub
//! counts the bytes it holds per tunnel (`MuxState::held`), and when DATA
//! takes the count over the budget it resets streams holding more than their fair share
//! (`budget / streams`) until the count is within the budget again. By pigeonhole one such
//! stream exists whenever the count is over, and once none is left the count is at most
//! `streams × share ≤ budget`: the excess is one DATA frame (64 KiB) for an instant. The reset
//! streams end for the application with `ConnectionReset` and for the edge with an abort; the
//! tunnel and the streams within their share go on. Each reset is counted
//! ([`MuxStats::budget_resets`](super::MuxStats)) and logged with the rate limiter.
//!
//! Only the hub enforces it: the edge trusts its hub, and an honest hub's streams to slow
//! clients must not be cut. An honest edge meets the cap only when many of its streams have
//! targets that do not read; its streams over their share are then reset, as an attacker's are.

use super::state::{MuxState, StreamEnd, StreamKey};
use super::Side;
use crate::transport::frame::Frame;

impl MuxState {
    /// Hub: the tunnel holds more than half its budget. Received payloads are then copied out
    /// of the read buffer: a zero-copy payload keeps its whole read allocation alive (up to
    /// twice its size), so held bytes would understate the memory held. Below half the budget,
    /// bulk data stays zero-copy.
    pub(super) fn under_pressure(&self) -> bool {
        self.side == Side::Hub && self.held > self.window.budget / 2
    }

    /// Called after DATA was buffered: enforces the budget.
    pub(super) fn check_budget(&mut self) {
        if self.side == Side::Hub && self.held > self.window.budget {
            self.enforce_budget();
        }
    }

    /// Resets streams over their fair share until the tunnel holds no more than its budget.
    fn enforce_budget(&mut self) {
        let budget = self.window.budget;
        let open: Vec<(u32, StreamKey)> = self.ids.iter().map(|(&id, &key)| (id, key)).collect();
        let count = u64::try_from(open.len().max(1)).unwrap_or(u64::MAX);
        let share = budget / count;
        for (id, key) in open {
            let held = self.held;
            if held <= budget {
                return;
            }
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            let buffered = stream.window.buffered();
            if stream.end.is_some() || buffered <= share {
                continue;
            }
            stream.local_fin = true;
            let queue = stream.queue;
            self.end_stream(key, StreamEnd::Reset);
            // In the stream's own queue, behind its data (as `MuxStream::abort` does).
            let abort = Frame::abort(id, self.sends_back());
            let _ = self.queue_stream_frame(key, queue, abort, false);
            self.unlist(id, key);
            self.stats.budget_resets += 1;
            crate::limited_warn!(
                self.warnings,
                stream = id,
                buffered,
                share,
                held,
                budget,
                "the peer's streams hold more than the window budget; resetting a stream over its share"
            );
        }
    }
}
