//! The mux's ordering and flow-control invariants, tested by stepping two [`MuxState`]s (an
//! edge and a hub) without a runtime: the test plays the applications, the writer tasks (
//! [`MuxState::poll_transmit`]), the wire (one FIFO of frames per direction) and the reader
//! tasks ([`MuxState::on_frame`]), and checks after every step that
//!
//! - every frame of a stream leaves in order: OPEN first, DATA bytes in the order written,
//!   nothing but CLOSEs after a CLOSE, and a reader that sees the end of a stream has read
//!   every byte the peer wrote before its CLOSE;
//! - no stream ever sends more than the credit it was given, and the hub holds no more than
//!   its budget (plus one frame);
//! - the state's counts agree with its queues (queued frames, slots, byte budgets, held bytes),
//!   and all of a stream's queued frames are in one queue, the stream's;
//! - once both applications dropped their streams and the writers drained, nothing is left.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::ReadBuf;

use super::super::scheduler::Queue;
use super::super::transmit::{Item, Transmit};
use super::super::*;
use super::{Delivery, MuxState, Slot, StreamKey};
use crate::transport::frame::{window_update_value, MAX_DATA_PAYLOAD};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Windows that grow beyond the initial one on the edge (so that WINDOW_UPDATEs flow from the
/// first reads) and a small budget on the hub (so that it resets streams that hold too much);
/// streams become sustained fast and return to normal when idle.
fn config(side: Side) -> MuxConfig {
    let budget = match side {
        Side::Edge => 3 * MIB as u64 / 2,
        Side::Hub => 512 * KIB as u64,
    };
    MuxConfig {
        side,
        window: WindowSettings {
            min: 16 * KIB as u32,
            max: 4 * MIB as u32,
            budget,
        },
        qos: QosSettings {
            sustained_after: Duration::from_millis(10),
            sustained_threshold_bytes_per_sec: 4_000_000,
            sustained_drain_bytes_per_sec: 1 << 20,
        },
    }
}

fn new_state(side: Side, now: Instant) -> MuxState {
    let c = config(side);
    MuxState::new(c.side, c.window, c.qos, Arc::default(), now)
}

/// Byte `offset` of what the application writes on stream `id` from `side`.
fn pattern(side: Side, id: u32, offset: u64) -> u8 {
    let salt = u64::from(id) * 7 + u64::from(side == Side::Hub);
    u8::try_from((offset * 31 + salt) % 251).unwrap()
}

fn payload(side: Side, id: u32, offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| pattern(side, id, offset + i))
        .collect::<Vec<u8>>()
        .into()
}

/// One application stream of the test.
#[derive(Debug)]
struct App {
    key: StreamKey,
    id: u32,
    /// Bytes read so far.
    read: u64,
}

/// One end: its state and its application's streams.
struct End {
    side: Side,
    state: MuxState,
    apps: Vec<App>,
}

impl End {
    fn new(side: Side, now: Instant) -> Self {
        Self {
            side,
            state: new_state(side, now),
            apps: Vec::new(),
        }
    }

    /// What the state wants done outside its lock: nothing to do without a runtime, but the
    /// effects must not pile up.
    fn settle(&mut self) {
        let _ = self.state.take_effects();
    }

    fn app(&self, pick: usize) -> Option<usize> {
        (!self.apps.is_empty()).then(|| pick % self.apps.len())
    }
}

/// What the wire saw of one stream in one direction.
#[derive(Debug, Default)]
struct WireStream {
    opened: bool,
    /// DATA bytes sent.
    sent: u64,
    /// Credit the sender was given: the initial window plus the WINDOW_UPDATEs it received.
    credit: u64,
    closed: bool,
}

/// The whole system: both ends and the wire between them.
struct World {
    now: Instant,
    edge: End,
    hub: End,
    /// Frames in flight, edge to hub and hub to edge.
    to_hub: VecDeque<Frame>,
    to_edge: VecDeque<Frame>,
    /// Per direction (the sender's side) and stream id.
    wire: HashMap<(Side, u32), WireStream>,
    /// Bytes each application wrote, per sender side and stream id (kept after the drop).
    written: HashMap<(Side, u32), u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Open,
    /// Writes up to this many DATA frames of up to `len` bytes each on a stream of a side.
    Write {
        hub: bool,
        pick: usize,
        frames: u8,
        len: usize,
    },
    Read {
        hub: bool,
        pick: usize,
        len: usize,
    },
    Shutdown {
        hub: bool,
        pick: usize,
    },
    Drop {
        hub: bool,
        pick: usize,
    },
    Abort {
        hub: bool,
        pick: usize,
    },
    Datagram {
        hub: bool,
        len: usize,
    },
    Ping,
    /// One writer batch of a side onto the wire.
    Transmit {
        hub: bool,
    },
    /// Up to `frames` frames off the wire into a side's reader; the hub refuses new streams
    /// if `refuse`.
    Deliver {
        hub: bool,
        frames: u8,
        refuse: bool,
    },
    Tick {
        ms: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        1 => Just(Op::Open),
        6 => (any::<bool>(), pick, 1u8..24, 1usize..=MAX_DATA_PAYLOAD)
            .prop_map(|(hub, pick, frames, len)| Op::Write { hub, pick, frames, len }),
        4 => (any::<bool>(), pick, 1usize..=MIB)
            .prop_map(|(hub, pick, len)| Op::Read { hub, pick, len }),
        1 => (any::<bool>(), pick).prop_map(|(hub, pick)| Op::Shutdown { hub, pick }),
        1 => (any::<bool>(), pick).prop_map(|(hub, pick)| Op::Drop { hub, pick }),
        1 => (any::<bool>(), pick).prop_map(|(hub, pick)| Op::Abort { hub, pick }),
        1 => (any::<bool>(), 0usize..2048).prop_map(|(hub, len)| Op::Datagram { hub, len }),
        1 => Just(Op::Ping),
        5 => any::<bool>().prop_map(|hub| Op::Transmit { hub }),
        5 => (any::<bool>(), 1u8..32, proptest::bool::weighted(0.1))
            .prop_map(|(hub, frames, refuse)| Op::Deliver { hub, frames, refuse }),
        2 => (0u8..50).prop_map(|ms| Op::Tick { ms }),
    ]
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            edge: End::new(Side::Edge, now),
            hub: End::new(Side::Hub, now),
            to_hub: VecDeque::new(),
            to_edge: VecDeque::new(),
            wire: HashMap::new(),
            written: HashMap::new(),
        }
    }

    fn end(&mut self, hub: bool) -> &mut End {
        if hub {
            &mut self.hub
        } else {
            &mut self.edge
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        let waker = Waker::noop();
        match op {
            Op::Open => {
                if let Ok((key, id)) = self.edge.state.open_stream(Bytes::from_static(b"P"), now) {
                    self.edge.apps.push(App { key, id, read: 0 });
                }
            }
            Op::Write {
                hub,
                pick,
                frames,
                len,
            } => {
                let end = self.end(hub);
                let side = end.side;
                let Some(index) = end.app(pick) else {
                    return;
                };
                let (key, id) = (end.apps[index].key, end.apps[index].id);
                for _ in 0..frames {
                    let state = if hub {
                        &mut self.hub.state
                    } else {
                        &mut self.edge.state
                    };
                    let grant = match state.poll_write(key, len, waker, now) {
                        Poll::Ready(Ok(Some(grant))) => grant,
                        Poll::Ready(Ok(None)) => unreachable!("len > 0"),
                        Poll::Ready(Err(_)) | Poll::Pending => break,
                    };
                    assert!(grant.len > 0 && grant.len <= len.min(MAX_DATA_PAYLOAD));
                    let written = self.written.entry((side, id)).or_default();
                    let bytes = payload(side, id, *written, grant.len);
                    *written += grant.len as u64;
                    state.push_data(key, grant, bytes).unwrap();
                }
            }
            Op::Read { hub, pick, len } => self.read(hub, pick, len),
            Op::Shutdown { hub, pick } => {
                let end = self.end(hub);
                if let Some(index) = end.app(pick) {
                    let _ = end.state.shutdown_stream(end.apps[index].key);
                }
            }
            Op::Drop { hub, pick } => {
                let end = self.end(hub);
                if let Some(index) = end.app(pick) {
                    let app = end.apps.swap_remove(index);
                    end.state.drop_stream(app.key);
                }
            }
            Op::Abort { hub, pick } => {
                let end = self.end(hub);
                if let Some(index) = end.app(pick) {
                    let app = end.apps.swap_remove(index);
                    end.state.abort_stream(app.key);
                    end.state.drop_stream(app.key);
                }
            }
            Op::Datagram { hub, len } => {
                let frame = if hub {
                    Frame::udp_data(1, true, vec![0u8; len])
                } else {
                    Frame::udp_data(1, false, vec![0u8; len])
                };
                let result = self.end(hub).state.queue_udp(frame);
                assert!(matches!(result, Ok(()) | Err(MuxError::Full)), "{result:?}");
            }
            Op::Ping => {
                self.hub.state.queue_control_frame(Frame::ping(1)).unwrap();
            }
            Op::Transmit { hub } => self.transmit(hub),
            Op::Deliver {
                hub,
                frames,
                refuse,
            } => {
                for _ in 0..frames {
                    if !self.deliver(hub, refuse) {
                        break;
                    }
                }
            }
            Op::Tick { ms } => self.now += Duration::from_millis(u64::from(ms)),
        }
        self.edge.settle();
        self.hub.settle();
        self.check();
    }

    fn read(&mut self, hub: bool, pick: usize, len: usize) {
        let now = self.now;
        let end = if hub { &mut self.hub } else { &mut self.edge };
        let Some(index) = end.app(pick) else {
            return;
        };
        let peer = end.side.peer();
        let app = &mut end.apps[index];
        let id = app.id;
        let mut buf = vec![0u8; len];
        let mut read_buf = ReadBuf::new(&mut buf);
        let polled = end
            .state
            .poll_read(app.key, &mut read_buf, Waker::noop(), now);
        let filled = read_buf.filled();
        match polled {
            Poll::Ready(Ok(())) if filled.is_empty() => {
                // The end of the stream: every byte the peer wrote came before its CLOSE.
                let written = self.written.get(&(peer, id)).copied().unwrap_or(0);
                assert_eq!(app.read, written, "stream {id}: end before all data");
            }
            Poll::Ready(Ok(())) => {
                for (i, &byte) in filled.iter().enumerate() {
                    let offset = app.read + i as u64;
                    assert_eq!(byte, pattern(peer, id, offset), "stream {id} byte {offset}");
                }
                app.read += filled.len() as u64;
            }
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
    }

    /// One writer batch of a side onto the wire, checked frame by frame.
    fn transmit(&mut self, hub: bool) {
        let now = self.now;
        let mut transmit = Transmit::default();
        self.end(hub).state.poll_transmit(now, &mut transmit);
        let side = if hub { Side::Hub } else { Side::Edge };
        for frame in transmit.frames {
            self.on_wire(side, &frame);
            if hub {
                self.to_edge.push_back(frame);
            } else {
                self.to_hub.push_back(frame);
            }
        }
    }

    /// Checks one frame `side` sends, in wire order.
    fn on_wire(&mut self, side: Side, frame: &Frame) {
        let id = frame.stream_id;
        match frame.frame_type {
            FrameType::Open => {
                let wire = self.wire.entry((side, id)).or_default();
                assert!(!wire.opened, "stream {id} opened twice");
                wire.opened = true;
                wire.credit += u64::from(INITIAL_STREAM_WINDOW);
                let back = self.wire.entry((side.peer(), id)).or_default();
                back.opened = true;
                back.credit += u64::from(INITIAL_STREAM_WINDOW);
            }
            FrameType::Data | FrameType::DataBack => {
                let wire = self.wire.entry((side, id)).or_default();
                assert!(wire.opened, "{side} stream {id}: DATA before OPEN");
                assert!(!wire.closed, "{side} stream {id}: DATA after CLOSE");
                for (i, &byte) in frame.payload.iter().enumerate() {
                    let offset = wire.sent + i as u64;
                    assert_eq!(
                        byte,
                        pattern(side, id, offset),
                        "{side} stream {id} byte {offset}"
                    );
                }
                wire.sent += frame.payload.len() as u64;
                assert!(
                    wire.sent <= wire.credit,
                    "{side} stream {id}: sent {} with credit {}",
                    wire.sent,
                    wire.credit
                );
            }
            FrameType::Close | FrameType::CloseBack => {
                self.wire.entry((side, id)).or_default().closed = true;
            }
            _ => {}
        }
    }

    /// Delivers the next frame of the wire into `hub` (or the edge); `false` if none.
    fn deliver(&mut self, hub: bool, refuse: bool) -> bool {
        let now = self.now;
        let frame = if hub {
            self.to_hub.pop_front()
        } else {
            self.to_edge.pop_front()
        };
        let Some(frame) = frame else {
            return false;
        };
        // A WINDOW_UPDATE gives the receiver (the other side's sender) credit once it has it.
        if matches!(
            frame.frame_type,
            FrameType::WindowUpdate | FrameType::WindowUpdateBack
        ) {
            let receiver = if hub { Side::Hub } else { Side::Edge };
            let credit = window_update_value(&frame).unwrap();
            self.wire
                .entry((receiver, frame.stream_id))
                .or_default()
                .credit += u64::from(credit);
        }
        let end = self.end(hub);
        match end.state.on_frame(frame, now) {
            Ok(Delivery::Stream { key, id, .. }) => {
                if refuse {
                    end.state.refuse(key);
                    end.state.drop_stream(key);
                } else {
                    end.apps.push(App { key, id, read: 0 });
                }
            }
            Ok(_) => {}
            Err(error) => panic!("{} protocol error: {error}", end.side),
        }
        true
    }

    /// Every writer drained and every frame delivered.
    fn quiesce(&mut self) {
        for round in 0.. {
            assert!(round < 10_000, "never quiet");
            self.transmit(false);
            self.transmit(true);
            let mut moved = false;
            while self.deliver(true, false) {
                moved = true;
            }
            while self.deliver(false, false) {
                moved = true;
            }
            self.edge.settle();
            self.hub.settle();
            self.check();
            if !moved {
                return;
            }
        }
    }

    fn check(&self) {
        check_state(&self.edge.state);
        check_state(&self.hub.state);
        let budget = config(Side::Hub).window.budget;
        assert!(
            self.hub.state.held <= budget + MAX_DATA_PAYLOAD as u64,
            "hub holds {}",
            self.hub.state.held
        );
    }
}

/// The state's counts agree with its queues and streams.
fn check_state(state: &MuxState) {
    let mut per_stream: HashMap<StreamKey, (u32, u32, Vec<Queue>)> = HashMap::new();
    let (mut data_slots, mut sustained_slots, mut udp, mut closes, mut answers, mut pongs) =
        (0, 0, 0, 0, 0, 0);
    for (queue, item) in state.out.items() {
        match item {
            Item::Frame(_) => {}
            Item::Pong(_) => pongs += 1,
            Item::Answer(_) => answers += 1,
            Item::Udp(_, cost) => udp += cost,
            Item::Stream { key, slot, .. } => {
                let entry = per_stream.entry(*key).or_default();
                entry.0 += 1;
                if *slot {
                    entry.1 += 1;
                    match queue {
                        Queue::Sustained => sustained_slots += 1,
                        _ => data_slots += 1,
                    }
                } else {
                    closes += 1;
                }
                if !entry.2.contains(&queue) {
                    entry.2.push(queue);
                }
            }
        }
    }
    for stream in state.streams.values() {
        match stream.slot {
            Slot::Granted(Queue::Sustained) => sustained_slots += 1,
            Slot::Granted(_) => data_slots += 1,
            _ => {}
        }
    }
    assert_eq!(state.out.data_slots.free + data_slots, DATA_QUEUE_FRAMES);
    assert_eq!(
        state.out.sustained_slots.free + sustained_slots,
        SUSTAINED_QUEUE_FRAMES
    );
    assert_eq!(state.out.udp_free + udp, UDP_QUEUE_BYTES);
    assert_eq!(state.out.pending_closes, closes);
    assert_eq!(state.out.pending_answers, answers);
    assert_eq!(state.out.pending_pongs, pongs);
    let mut held = 0;
    for (key, stream) in &state.streams {
        let (queued, data, queues) = per_stream.remove(key).unwrap_or_default();
        assert_eq!(stream.queued, queued, "stream {}", stream.id);
        assert!(data <= MAX_QUEUED_FRAMES_PER_STREAM, "stream {}", stream.id);
        // The ordering rule: all of a stream's frames wait in one queue, its own.
        assert!(
            queues.is_empty() || queues == [stream.queue],
            "stream {} in {queues:?}, class {:?}",
            stream.id,
            stream.queue
        );
        assert_eq!(stream.recv_bytes(), stream.window.buffered());
        held += stream.recv_bytes();
        if stream.detached {
            assert!(stream.queued > 0, "a drained stream is forgotten");
            assert_ne!(state.ids.get(&stream.id), Some(key));
        }
    }
    assert!(per_stream.is_empty(), "frames of unknown streams queued");
    assert_eq!(state.held, held);
    for key in state.ids.values().chain(state.draining.values()) {
        assert!(state.streams.contains_key(key));
    }
    for (id, key) in &state.draining {
        let stream = &state.streams[key];
        assert!(stream.queued > 0 && stream.queue == Queue::Sustained);
        assert_ne!(state.ids.get(id), Some(key));
    }
}

/// Nothing left but what bounds memory on purpose (the answered ids).
fn assert_empty(state: &MuxState) {
    assert!(state.streams.is_empty(), "{:?}", state.streams);
    assert!(state.ids.is_empty());
    assert!(state.draining.is_empty());
    assert_eq!(state.out.lens(), [0, 0, 0]);
    assert_eq!(state.out.data_slots.free, DATA_QUEUE_FRAMES);
    assert_eq!(state.out.sustained_slots.free, SUSTAINED_QUEUE_FRAMES);
    assert_eq!(state.out.udp_free, UDP_QUEUE_BYTES);
    assert_eq!(state.held, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random interleavings of open, data, close, drop, abort, window updates, datagrams,
    /// pings and time never reorder a stream's frames, never exceed a window and leave no
    /// state behind.
    #[test]
    fn random_interleavings_keep_the_invariants(ops in proptest::collection::vec(op(), 1..400)) {
        let mut world = World::new();
        for op in ops {
            world.step(op);
        }
        world.quiesce();
        for hub in [false, true] {
            let end = world.end(hub);
            for app in std::mem::take(&mut end.apps) {
                end.state.drop_stream(app.key);
            }
        }
        world.quiesce();
        assert_empty(&world.edge.state);
        assert_empty(&world.hub.state);
        prop_assert!(!world.edge.state.closed && !world.hub.state.closed);
    }
}

// ----- single steps -----

/// An edge state and the time it was created.
fn new_edge() -> (Instant, MuxState) {
    let start = Instant::now();
    (start, new_state(Side::Edge, start))
}

/// Writes up to `frames` full DATA frames on `key`; returns how many were queued before
/// `poll_write` was pending.
fn write_frames(state: &mut MuxState, key: StreamKey, frames: usize, now: Instant) -> usize {
    for written in 0..frames {
        match state.poll_write(key, MAX_DATA_PAYLOAD, Waker::noop(), now) {
            Poll::Ready(Ok(Some(grant))) => {
                let bytes = Bytes::from(vec![0u8; grant.len]);
                state.push_data(key, grant, bytes).unwrap();
            }
            Poll::Pending => return written,
            other => panic!("{other:?}"),
        }
    }
    frames
}

/// Everything the writer would send, batch after batch.
fn transmit_all(state: &mut MuxState, now: Instant) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let mut transmit = Transmit::default();
        state.poll_transmit(now, &mut transmit);
        if transmit.frames.is_empty() {
            let _ = state.take_effects();
            return frames;
        }
        frames.append(&mut transmit.frames);
    }
}

/// The type of each frame of stream `id`, in order.
fn types_of(frames: &[Frame], id: u32) -> Vec<FrameType> {
    frames
        .iter()
        .filter(|f| f.stream_id == id)
        .map(|f| f.frame_type)
        .collect()
}

#[test]
fn a_stream_changes_queue_only_once_none_of_its_frames_wait() {
    let (start, mut edge) = new_edge();
    let (key, id) = edge.open_stream(Bytes::new(), start).unwrap();
    let cap = MAX_QUEUED_FRAMES_PER_STREAM as usize;
    assert_eq!(write_frames(&mut edge, key, cap + 1, start), cap);
    // 256 KiB in 20 ms is far above the threshold: the next frame wants the sustained queue,
    // but the stream's frames still wait in the data queue.
    let later = start + Duration::from_millis(20);
    assert_eq!(write_frames(&mut edge, key, 1, later), 0);
    assert_eq!(edge.streams[&key].queue, Queue::Data);
    assert!(edge.streams[&key].writer_waiting);
    let mut transmit = Transmit::default();
    edge.poll_transmit(later, &mut transmit);
    assert_eq!(transmit.frames.len(), 1 + cap, "OPEN and the stream's DATA");
    assert!(!edge.streams[&key].writer_waiting);
    assert!(
        !edge.take_effects().wakers.is_empty(),
        "the writer woke the stream"
    );
    // Now it switches, at this frame boundary.
    assert_eq!(write_frames(&mut edge, key, 2, later), 2);
    assert_eq!(edge.streams[&key].queue, Queue::Sustained);
    assert_eq!(edge.stats().streams_sustained, 1);
    edge.shutdown_stream(key).unwrap();
    check_state(&edge);
    let frames = transmit_all(&mut edge, later);
    assert_eq!(
        types_of(&frames, id),
        [FrameType::Data, FrameType::Data, FrameType::Close]
    );
    edge.drop_stream(key);
    assert_empty(&edge);
}

#[test]
fn answers_for_a_dropped_sustained_stream_wait_behind_its_frames() {
    let (start, mut edge) = new_edge();
    let (key, id) = edge.open_stream(Bytes::new(), start).unwrap();
    let (other, other_id) = edge.open_stream(Bytes::new(), start).unwrap();
    write_frames(&mut edge, key, 4, start);
    transmit_all(&mut edge, start);
    let later = start + Duration::from_millis(20);
    assert_eq!(write_frames(&mut edge, key, 2, later), 2);
    assert_eq!(edge.streams[&key].queue, Queue::Sustained);
    // Another stream's data waits in the data queue.
    write_frames(&mut edge, other, 1, later);
    edge.drop_stream(key);
    assert_eq!(edge.draining.get(&id), Some(&key));
    assert!(edge.streams[&key].detached);
    // The hub still sends: the answer queues behind the dropped stream's frames, once.
    for _ in 0..2 {
        let late = Frame::data(id, true, &b"late"[..]);
        assert!(matches!(edge.on_frame(late, later), Ok(Delivery::Nothing)));
    }
    check_state(&edge);
    let frames = transmit_all(&mut edge, later);
    assert_eq!(types_of(&frames, other_id), [FrameType::Data]);
    assert_eq!(
        types_of(&frames, id),
        [
            FrameType::Data,
            FrameType::Data,
            FrameType::Close,
            FrameType::Close
        ]
    );
    assert!(edge.draining.is_empty());
    assert!(!edge.streams.contains_key(&key));
    edge.drop_stream(other);
    transmit_all(&mut edge, later);
    assert_empty(&edge);
}

#[test]
fn freed_slots_go_to_the_streams_waiting_first_come_first_served() {
    let (start, mut edge) = new_edge();
    let cap = MAX_QUEUED_FRAMES_PER_STREAM as usize;
    let keys: Vec<StreamKey> = (0..DATA_QUEUE_FRAMES / cap + 3)
        .map(|_| edge.open_stream(Bytes::new(), start).unwrap().0)
        .collect();
    let (full, waiting) = keys.split_at(DATA_QUEUE_FRAMES / cap);
    for &key in full {
        assert_eq!(write_frames(&mut edge, key, cap, start), cap);
    }
    assert_eq!(edge.out.data_slots.free, 0);
    for &key in waiting {
        assert_eq!(write_frames(&mut edge, key, 1, start), 0);
        assert_eq!(edge.streams[&key].slot, Slot::Waiting(Queue::Data));
    }
    // One batch frees four slots: the first two waiting streams get theirs ...
    let mut transmit = Transmit::default();
    edge.poll_transmit(start, &mut transmit);
    edge.poll_transmit(start, &mut transmit);
    let _ = edge.take_effects();
    assert_eq!(edge.streams[&waiting[0]].slot, Slot::Granted(Queue::Data));
    assert_eq!(edge.streams[&waiting[1]].slot, Slot::Granted(Queue::Data));
    check_state(&edge);
    // ... the third is dropped before its turn: its place goes to nobody.
    edge.drop_stream(waiting[2]);
    let (late, _) = edge.open_stream(Bytes::new(), start).unwrap();
    assert!(edge.out.data_slots.free > 0);
    assert_eq!(write_frames(&mut edge, late, 1, start), 1);
    assert_eq!(write_frames(&mut edge, waiting[0], 1, start), 1);
    assert_eq!(edge.streams[&waiting[0]].slot, Slot::None);
    check_state(&edge);
    for key in keys.iter().chain([&late]) {
        edge.drop_stream(*key);
    }
    transmit_all(&mut edge, start);
    assert_empty(&edge);
}

#[test]
fn data_granted_before_a_reset_is_not_queued_after_the_abort() {
    let (start, mut edge) = new_edge();
    let (key, id) = edge.open_stream(Bytes::new(), start).unwrap();
    let Poll::Ready(Ok(Some(grant))) = edge.poll_write(key, 10, Waker::noop(), start) else {
        panic!("no grant");
    };
    // The peer aborts while the bytes are being copied outside the lock.
    assert!(edge.on_frame(Frame::abort(id, true), start).is_ok());
    let error = edge
        .push_data(key, grant, Bytes::from_static(b"0123456789"))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(
        edge.out.data_slots.free, DATA_QUEUE_FRAMES,
        "the slot is back"
    );
    assert_eq!(
        types_of(&transmit_all(&mut edge, start), id),
        [FrameType::Open]
    );
    edge.drop_stream(key);
    assert_empty(&edge);
}

#[test]
fn closing_the_tunnel_fails_every_stream_and_keeps_only_their_handles() {
    let (start, mut edge) = new_edge();
    let (kept, _) = edge.open_stream(Bytes::new(), start).unwrap();
    let (dropped, _) = edge.open_stream(Bytes::new(), start).unwrap();
    write_frames(&mut edge, kept, 2, start);
    write_frames(&mut edge, dropped, 2, start);
    edge.drop_stream(dropped);
    edge.on_frame(Frame::ping(1), start).unwrap();
    edge.queue_udp(Frame::udp_data(1, false, vec![0u8; 100]))
        .unwrap();
    let mut buf = [0u8; 8];
    let mut read_buf = ReadBuf::new(&mut buf);
    assert!(edge
        .poll_read(kept, &mut read_buf, Waker::noop(), start)
        .is_pending());
    let _ = edge.take_effects();
    assert!(edge.close(MuxCloseReason::Closed));
    assert!(
        !edge.close(MuxCloseReason::PeerClosed),
        "the first reason wins"
    );
    let effects = edge.take_effects();
    assert_eq!(effects.closed, Some(MuxCloseReason::Closed));
    assert_eq!(effects.wakers.len(), 1, "the blocked reader");
    assert_eq!(edge.out.lens(), [0, 0, 0]);
    assert_eq!(
        edge.streams.len(),
        1,
        "only the stream the application holds"
    );
    check_state(&edge);
    let error = write_frames_error(&mut edge, kept, start);
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(edge.open_stream(Bytes::new(), start), Err(MuxError::Closed));
    edge.drop_stream(kept);
    assert_empty(&edge);
}

fn write_frames_error(state: &mut MuxState, key: StreamKey, now: Instant) -> io::Error {
    match state.poll_write(key, 1, Waker::noop(), now) {
        Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    }
}
