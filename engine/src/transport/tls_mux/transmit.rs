//! The writer's side of [`MuxState`]: the three queues of outgoing frames, their bounds
//! (see the module doc of `tls_mux`) and [`MuxState::poll_transmit`], which moves frames into
//! the writer's batch in the order the [`Scheduler`] picks. The writer encodes and writes them
//! outside the lock.

use std::collections::VecDeque;
use std::time::Instant;

use super::scheduler::{Queue, Ready, Scheduler};
use super::state::{MuxState, Slot, StreamKey};
use super::{
    MuxCloseReason, MuxError, CONTROL_QUEUE_FRAMES, DATA_QUEUE_FRAMES, MAX_PENDING_ANSWERS,
    MAX_PENDING_CLOSES, MAX_PENDING_PONGS, MAX_QUEUED_FRAMES_PER_STREAM, SUSTAINED_QUEUE_FRAMES,
    UDP_FRAME_MIN_COST, UDP_QUEUE_BYTES,
};
use crate::transport::frame::{Frame, HEADER_LEN};

/// A batch is written once it holds this many bytes (it may exceed it by one frame).
pub(crate) const BATCH_MAX: usize = 256 * 1024;

/// A queued outgoing frame and what it holds until the writer takes it.
#[derive(Debug)]
pub(crate) enum Item {
    /// Any frame that needs no accounting.
    Frame(Frame),
    /// Automatic PONG (counted against [`MAX_PENDING_PONGS`]).
    Pong(Frame),
    /// Reader-generated CLOSE (counted against [`MAX_PENDING_ANSWERS`]).
    Answer(Frame),
    /// UDP frame holding this much of the UDP byte budget.
    Udp(Frame, usize),
    /// DATA (holding a slot of its queue) or CLOSE (counted against [`MAX_PENDING_CLOSES`])
    /// of a stream, counted in the stream's `queued`.
    Stream {
        key: StreamKey,
        frame: Frame,
        slot: bool,
    },
}

/// The DATA slots of one queue: free ones, and the streams waiting for one, first come first
/// served (a freed slot goes to the first of them, as a fair semaphore does).
#[derive(Debug)]
pub(crate) struct Slots {
    pub(crate) free: usize,
    waiters: VecDeque<StreamKey>,
}

impl Slots {
    fn new(free: usize) -> Self {
        Self {
            free,
            waiters: VecDeque::new(),
        }
    }
}

/// The writer's queues and their counters.
#[derive(Debug)]
pub(crate) struct OutQueues {
    control: VecDeque<Item>,
    data: VecDeque<Item>,
    sustained: VecDeque<Item>,
    pub(crate) data_slots: Slots,
    pub(crate) sustained_slots: Slots,
    /// Free part of the UDP byte budget (see [`UDP_QUEUE_BYTES`]).
    pub(crate) udp_free: usize,
    pub(crate) pending_pongs: usize,
    pub(crate) pending_answers: usize,
    /// Stream CLOSEs in the queues (see [`MAX_PENDING_CLOSES`]).
    pub(crate) pending_closes: usize,
    scheduler: Scheduler,
    /// The writer found nothing to do and waits to be notified.
    writer_idle: bool,
}

impl OutQueues {
    pub(crate) fn new(sustained_rate: u64, now: Instant) -> Self {
        Self {
            control: VecDeque::new(),
            data: VecDeque::new(),
            sustained: VecDeque::new(),
            data_slots: Slots::new(DATA_QUEUE_FRAMES),
            sustained_slots: Slots::new(SUSTAINED_QUEUE_FRAMES),
            udp_free: UDP_QUEUE_BYTES,
            pending_pongs: 0,
            pending_answers: 0,
            pending_closes: 0,
            scheduler: Scheduler::new(sustained_rate, now),
            writer_idle: false,
        }
    }

    fn queue(&mut self, queue: Queue) -> &mut VecDeque<Item> {
        match queue {
            Queue::Control => &mut self.control,
            Queue::Data => &mut self.data,
            Queue::Sustained => &mut self.sustained,
        }
    }

    fn slots(&mut self, queue: Queue) -> &mut Slots {
        match queue {
            Queue::Sustained => &mut self.sustained_slots,
            Queue::Control | Queue::Data => &mut self.data_slots,
        }
    }

    /// Takes a slot of `queue` for `key` unless others wait for one already; otherwise puts
    /// `key` in line and returns `false`.
    pub(crate) fn acquire_slot(&mut self, queue: Queue, key: StreamKey) -> bool {
        let slots = self.slots(queue);
        if slots.free > 0 && slots.waiters.is_empty() {
            slots.free -= 1;
            return true;
        }
        slots.waiters.push_back(key);
        false
    }

    /// Frames waiting in each queue.
    #[cfg(test)]
    pub(crate) fn lens(&self) -> [usize; 3] {
        [self.control.len(), self.data.len(), self.sustained.len()]
    }

    /// The queued items, for invariant checks.
    #[cfg(test)]
    pub(crate) fn items(&self) -> impl Iterator<Item = (Queue, &Item)> {
        let tag = |queue| move |item| (queue, item);
        self.control
            .iter()
            .map(tag(Queue::Control))
            .chain(self.data.iter().map(tag(Queue::Data)))
            .chain(self.sustained.iter().map(tag(Queue::Sustained)))
    }
}

/// Frames taken for the writer's next batch, and the batch's size so far.
#[derive(Debug, Default)]
pub(crate) struct Transmit {
    pub(crate) frames: Vec<Frame>,
    /// Encoded bytes of the batch (frames already encoded included); reset once written.
    pub(crate) len: usize,
}

impl MuxState {
    /// Moves frames into `transmit` in the scheduler's order, until none is ready or the batch
    /// holds [`BATCH_MAX`] bytes (control frames go in even beyond the limit: they are small and
    /// must not wait). Frees what each frame held and wakes the streams waiting for that.
    pub(crate) fn poll_transmit(&mut self, now: Instant, transmit: &mut Transmit) {
        loop {
            let out = &mut self.out;
            let ready = Ready {
                control: !out.control.is_empty(),
                data: !out.data.is_empty(),
                sustained: !out.sustained.is_empty(),
            };
            let Some(queue) = out.scheduler.pick(now, ready) else {
                self.out.writer_idle = true;
                return;
            };
            if queue != Queue::Control && transmit.len >= BATCH_MAX {
                return;
            }
            let Some(item) = out.queue(queue).pop_front() else {
                return; // cannot happen: the scheduler only picks ready queues
            };
            let frame = self.taken(queue, item);
            let len = HEADER_LEN + frame.payload.len();
            transmit.len += len;
            transmit.frames.push(frame);
            self.out.scheduler.sent(queue, len);
        }
    }

    /// Drops every queued frame (the tunnel ended), freeing what they hold.
    pub(crate) fn drop_queued(&mut self) {
        for queue in [Queue::Control, Queue::Data, Queue::Sustained] {
            while let Some(item) = self.out.queue(queue).pop_front() {
                self.taken(queue, item);
            }
        }
        self.out.data_slots.waiters.clear();
        self.out.sustained_slots.waiters.clear();
    }

    /// An item left `queue`: frees what it held; returns its frame.
    fn taken(&mut self, queue: Queue, item: Item) -> Frame {
        let out = &mut self.out;
        match item {
            Item::Frame(frame) => frame,
            Item::Pong(frame) => {
                out.pending_pongs -= 1;
                frame
            }
            Item::Answer(frame) => {
                out.pending_answers -= 1;
                frame
            }
            // The budget and the slots are freed as soon as the frame is in the batch (which
            // is bounded itself).
            Item::Udp(frame, cost) => {
                out.udp_free += cost;
                frame
            }
            Item::Stream { key, frame, slot } => {
                if slot {
                    self.release_slot(queue);
                } else {
                    self.out.pending_closes -= 1;
                }
                self.stream_frame_taken(key);
                frame
            }
        }
    }

    /// Gives a slot of `queue` back: to the first stream still waiting for one (and wakes it),
    /// or to the free ones.
    pub(crate) fn release_slot(&mut self, queue: Queue) {
        let slots = self.out.slots(queue);
        while let Some(key) = slots.waiters.pop_front() {
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            if stream.slot == Slot::Waiting(queue) && stream.end.is_none() {
                stream.slot = Slot::Granted(queue);
                self.effects.wake(stream.write_waker.take());
                return;
            }
        }
        slots.free += 1;
    }

    /// The writer took a frame of stream `key` out of its queue. Wakes a `poll_write` waiting
    /// for the stream's queued frames to drop (below the per-stream cap, or to zero to switch
    /// queues; one waiting for zero may be woken early and waits again) and forgets a dropped
    /// (or stops remembering a draining) stream after its last frame.
    fn stream_frame_taken(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.queued = stream.queued.saturating_sub(1);
        if stream.queued < MAX_QUEUED_FRAMES_PER_STREAM && stream.writer_waiting {
            stream.writer_waiting = false;
            self.effects.wake(stream.write_waker.take());
        }
        if stream.queued != 0 {
            return;
        }
        let id = stream.id;
        if stream.detached {
            self.streams.remove(&key);
        }
        if self.draining.get(&id) == Some(&key) {
            self.draining.remove(&id);
        }
    }

    fn push(&mut self, queue: Queue, item: Item) {
        self.out.queue(queue).push_back(item);
        if self.out.writer_idle {
            self.out.writer_idle = false;
            self.effects.notify_writer = true;
        }
    }

    /// Queues a control-queue item; a full queue closes the tunnel (see the module doc).
    fn queue_control(&mut self, item: Item) -> Result<(), MuxError> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        if self.out.control.len() >= CONTROL_QUEUE_FRAMES {
            self.close(MuxCloseReason::PeerNotReading);
            return Err(MuxError::Closed);
        }
        self.push(Queue::Control, item);
        Ok(())
    }

    /// Queues a control frame (OPEN, CONFIG, PING, PONG, WINDOW_UPDATE).
    pub(crate) fn queue_control_frame(&mut self, frame: Frame) -> Result<(), MuxError> {
        self.queue_control(Item::Frame(frame))
    }

    pub(crate) fn queue_window_update(&mut self, id: u32, credit: u32) {
        let frame = Frame::window_update(id, self.sends_back(), credit);
        if self.queue_control_frame(frame).is_ok() {
            self.stats.window_updates_sent += 1;
            self.stats.credit_granted += u64::from(credit);
        }
    }

    pub(crate) fn queue_pong(&mut self, pong: Frame) {
        if self.out.pending_pongs >= MAX_PENDING_PONGS {
            tracing::debug!("too many PONGs waiting for the writer; PING not answered");
            return;
        }
        if self.queue_control(Item::Pong(pong)).is_ok() {
            self.out.pending_pongs += 1;
        }
    }

    /// Queues a CLOSE generated by the reader, behind all DATA already queued (so it never
    /// overtakes data of a stream we dropped with the same id).
    pub(crate) fn queue_answer_close(&mut self, id: u32) {
        if self.closed {
            return;
        }
        if self.out.pending_answers >= MAX_PENDING_ANSWERS {
            tracing::debug!(stream = id, "too many CLOSE answers waiting; not answering");
            return;
        }
        let close = Frame::close(id, self.sends_back());
        self.out.pending_answers += 1;
        self.push(Queue::Data, Item::Answer(close));
    }

    /// Queues a DATA (`slot`: holding a slot of `queue`) or CLOSE frame of stream `key` in
    /// `queue` (the stream's current class). A CLOSE takes no slot: it is counted against
    /// [`MAX_PENDING_CLOSES`] instead, and one more closes the tunnel.
    pub(crate) fn queue_stream_frame(
        &mut self,
        key: StreamKey,
        queue: Queue,
        frame: Frame,
        slot: bool,
    ) -> Result<(), MuxError> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        if !slot {
            if self.out.pending_closes >= MAX_PENDING_CLOSES {
                self.close(MuxCloseReason::PeerNotReading);
                return Err(MuxError::Closed);
            }
            self.out.pending_closes += 1;
        }
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.queued += 1;
        }
        self.push(queue, Item::Stream { key, frame, slot });
        Ok(())
    }

    /// Queues a UDP frame on the data queue if it fits in the UDP byte budget.
    pub(crate) fn queue_udp(&mut self, frame: Frame) -> Result<(), MuxError> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        let cost = frame.payload.len().max(UDP_FRAME_MIN_COST);
        if cost > self.out.udp_free {
            return Err(MuxError::Full);
        }
        self.out.udp_free -= cost;
        self.push(Queue::Data, Item::Udp(frame, cost));
        Ok(())
    }
}
