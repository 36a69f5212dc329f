//! End-to-end tests: an edge mux and a hub mux over `tokio::io::duplex` (one over loopback
//! TCP), or one mux against hand-written frames on the raw end of a duplex.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::scheduler::Queue;
use super::*;
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::{
    decode, encode, encode_header, window_update_value, HEADER_LEN, MAX_DATA_PAYLOAD,
};

const MIB: usize = 1 << 20;
const INITIAL: usize = INITIAL_STREAM_WINDOW as usize;
const PROXY_LINE: &[u8] = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n";

/// Bound of every wait in these tests.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out")
}

fn config(side: Side) -> MuxConfig {
    MuxConfig {
        side,
        window: WindowSettings::default(),
        qos: QosSettings::default(),
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// FNV-1a, to compare checksums as well as bytes.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Pair {
    edge: MuxHandle,
    edge_in: MuxIncoming,
    hub: MuxHandle,
    hub_in: MuxIncoming,
}

fn pair() -> Pair {
    let (a, b) = tokio::io::duplex(64 * 1024);
    pair_over(a, b)
}

/// A pair with one stream open: the edge's end and the hub's end of it.
async fn pair_with_stream() -> (Pair, MuxStream, MuxStream) {
    let mut pair = pair();
    let edge_end = pair
        .edge
        .open_stream(Bytes::from_static(PROXY_LINE))
        .unwrap();
    let (hub_end, _) = within(pair.hub_in.streams.recv()).await.unwrap();
    (pair, edge_end, hub_end)
}

fn pair_over<A, B>(edge_io: A, hub_io: B) -> Pair
where
    A: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let (edge, edge_in) = Mux::start(
        edge_io,
        BytesMut::new(),
        config(Side::Edge),
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    let (hub, hub_in) = Mux::start(
        hub_io,
        BytesMut::new(),
        config(Side::Hub),
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    Pair {
        edge,
        edge_in,
        hub,
        hub_in,
    }
}

/// A mux on one end of a duplex, the raw other end for hand-written frames.
fn raw_peer(side: Side) -> (MuxHandle, MuxIncoming, DuplexStream) {
    let (a, raw) = tokio::io::duplex(64 * 1024);
    let (handle, incoming) = Mux::start(
        a,
        BytesMut::new(),
        config(side),
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    (handle, incoming, raw)
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        encode(frame, &mut out).unwrap();
    }
    out.to_vec()
}

async fn read_frame(raw: &mut DuplexStream, buf: &mut BytesMut) -> Frame {
    loop {
        if let Some(frame) = decode(buf).unwrap() {
            return frame;
        }
        let n = within(raw.read_buf(buf)).await.unwrap();
        assert!(n > 0, "unexpected EOF on the raw end");
    }
}

/// Hub side: echoes every accepted stream back, then shuts it down.
fn spawn_echo_hub(mut incoming: MuxIncoming) {
    tokio::spawn(async move {
        while let Some((stream, _open)) = incoming.streams.recv().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
}

/// Sends `data` through a fresh edge stream and returns what came back (until EOF).
async fn echo_through(edge: &MuxHandle, data: Vec<u8>) -> Vec<u8> {
    let stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    drop(writer.await.unwrap());
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_payload_arrives_and_one_mib_echoes_both_ways() {
    let Pair {
        edge, mut hub_in, ..
    } = pair();
    let stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    assert_eq!(stream.id(), 1);
    let (hub_stream, open) = within(hub_in.streams.recv()).await.unwrap();
    assert_eq!(&open[..], PROXY_LINE);
    assert_eq!(hub_stream.id(), 1);
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(hub_stream);
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });

    let data = random(MIB);
    let expected = checksum(&data);
    let (mut r, mut w) = tokio::io::split(stream);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    within(r.read_to_end(&mut back)).await.unwrap();
    within(writer).await.unwrap();
    assert_eq!(checksum(&back), expected);
    assert_eq!(back, data);
    assert!(!edge.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_streams_echo() {
    let Pair {
        edge, hub_in, hub, ..
    } = pair();
    spawn_echo_hub(hub_in);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move {
            let data = random(256 * 1024);
            let back = echo_through(&edge, data.clone()).await;
            assert_eq!(checksum(&back), checksum(&data));
            assert!(back == data, "echoed bytes differ");
        }));
    }
    for task in tasks {
        within(task).await.unwrap();
    }
    within(async {
        while edge.active_streams() + hub.active_streams() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!edge.is_closed() && !hub.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_loopback_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let Pair { edge, hub_in, .. } = pair_over(client.unwrap(), server.unwrap().0);
    spawn_echo_hub(hub_in);
    let data = random(MIB);
    let back = within(echo_through(&edge, data.clone())).await;
    assert_eq!(checksum(&back), checksum(&data));
    assert_eq!(back, data);
    // A few concurrent streams over the same connection.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move {
            let data = random(512 * 1024);
            assert!(echo_through(&edge, data.clone()).await == data);
        }));
    }
    for task in tasks {
        within(task).await.unwrap();
    }
}

#[tokio::test]
async fn half_close_still_delivers_the_whole_response() {
    let Pair {
        edge, mut hub_in, ..
    } = pair();
    let mut client = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let request = random(10_000);
    client.write_all(&request).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(
        client.write(b"late").await.unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );

    let (mut upstream, _) = within(hub_in.streams.recv()).await.unwrap();
    let response = random(MIB);
    let sent = response.clone();
    let hub_task = tokio::spawn(async move {
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        upstream.write_all(&sent).await.unwrap();
        upstream.shutdown().await.unwrap();
        got
    });
    let mut got = Vec::new();
    within(client.read_to_end(&mut got)).await.unwrap();
    assert_eq!(within(hub_task).await.unwrap(), request);
    assert_eq!(got.len(), response.len());
    assert!(got == response);
    // EOF is sticky.
    assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0);
}

/// Writes `data` in a task, publishing the progress.
fn spawn_writer(
    mut stream: MuxStream,
    data: Vec<u8>,
) -> (watch::Receiver<usize>, tokio::task::JoinHandle<MuxStream>) {
    let (progress_tx, progress) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut offset = 0;
        while offset < data.len() {
            offset += stream.write(&data[offset..]).await.unwrap();
            progress_tx.send_replace(offset);
        }
        stream.shutdown().await.unwrap();
        stream
    });
    (progress, task)
}

/// With paused time the clock only advances when every task is idle, so this returns once
/// nothing can make progress any more (deterministic, no real sleeping).
async fn assert_no_progress_beyond(progress: &mut watch::Receiver<usize>, limit: usize) {
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        progress.wait_for(|&written| written > limit),
    )
    .await;
    assert!(waited.is_err(), "the writer went past {limit} bytes");
}

#[tokio::test(start_paused = true)]
async fn backpressure_stops_the_writer_at_the_initial_window() {
    let (Pair { edge, hub, .. }, stream, mut upstream) = pair_with_stream().await;
    let data = random(3 * MIB);
    let (mut progress, writer) = spawn_writer(stream, data.clone());

    within(progress.wait_for(|&written| written >= INITIAL))
        .await
        .unwrap();
    assert_no_progress_beyond(&mut progress, INITIAL + MAX_DATA_PAYLOAD).await;
    assert_eq!(*progress.borrow(), INITIAL, "exactly the initial credit");
    assert_eq!(hub.stats().window_updates_sent, 0);

    // The hub reads: everything flows.
    let mut got = Vec::new();
    within(upstream.read_to_end(&mut got)).await.unwrap();
    within(writer).await.unwrap();
    assert!(got == data);
    assert!(!hub.is_closed() && !edge.is_closed());
}

#[tokio::test(start_paused = true)]
async fn window_grows_beyond_the_initial_credit() {
    let (
        Pair {
            edge: _edge, hub, ..
        },
        stream,
        mut upstream,
    ) = pair_with_stream().await;
    let data = random(6 * MIB);
    let (mut progress, writer) = spawn_writer(stream, data.clone());

    // The hub reads only 64 KiB: with one stream its target starts at 4 MiB (no path RTT
    // here, so no auto-tuning beyond it), so the edge may now have target + consumed bytes in
    // flight, far beyond the initial 1 MiB.
    let consumed = 64 * 1024;
    let mut head = vec![0u8; consumed];
    within(upstream.read_exact(&mut head)).await.unwrap();
    let target = WindowSettings::default().start_target(1) as usize;
    within(progress.wait_for(|&written| written >= target))
        .await
        .unwrap();
    assert_no_progress_beyond(&mut progress, target + consumed).await;
    let stats = hub.stats();
    assert!(
        stats.credit_granted >= (target - INITIAL) as u64,
        "{stats:?}"
    );
    assert!(
        stats.window_updates_sent <= 2,
        "one big grant, not one per read: {stats:?}"
    );

    let mut rest = Vec::new();
    within(upstream.read_to_end(&mut rest)).await.unwrap();
    head.extend_from_slice(&rest);
    within(writer).await.unwrap();
    assert!(head == data);
    assert!(!hub.is_closed());
}

async fn write_until_error(stream: &mut MuxStream) -> io::Error {
    within(async {
        loop {
            match stream.write(&[7u8; 1024]).await {
                Ok(_) => tokio::task::yield_now().await,
                Err(error) => break error,
            }
        }
    })
    .await
}

async fn wait_until_no_streams(handle: &MuxHandle) {
    within(async {
        while handle.active_streams() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_a_stream_on_the_hub_ends_the_edge_stream() {
    let Pair {
        edge,
        hub,
        mut hub_in,
        ..
    } = pair();
    let mut client = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    client.write_all(b"hello").await.unwrap();
    let (upstream, _) = within(hub_in.streams.recv()).await.unwrap();
    assert_eq!(hub.active_streams(), 1);
    drop(upstream);
    assert_eq!(hub.active_streams(), 0);

    let read = within(client.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let error = write_until_error(&mut client).await;
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(client.read(&mut [0u8; 16]).await.is_err());
    wait_until_no_streams(&edge).await;
    drop(client);
    assert_eq!(edge.active_streams(), 0);
    assert_eq!(hub.active_streams(), 0);
    assert!(!edge.is_closed() && !hub.is_closed());
}

#[tokio::test]
async fn dropping_a_stream_on_the_edge_ends_the_hub_stream() {
    let (Pair { edge, hub, .. }, client, mut upstream) = pair_with_stream().await;
    drop(client);
    assert_eq!(edge.active_streams(), 0);

    let read = within(upstream.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let error = write_until_error(&mut upstream).await;
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    let read = upstream.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(read.kind(), io::ErrorKind::ConnectionReset);
    wait_until_no_streams(&hub).await;
    drop(upstream);
    assert_eq!(hub.active_streams(), 0);
    assert!(!edge.is_closed() && !hub.is_closed());
}

async fn protocol_error_from(frames: Vec<u8>) -> MuxCloseReason {
    let (hub, _incoming, mut raw) = raw_peer(Side::Hub);
    // The hub may close (and drop its end) before we finish writing.
    let _ = raw.write_all(&frames).await;
    let reason = within(hub.closed()).await;
    assert!(hub.is_closed());
    assert_eq!(hub.active_streams(), 0);
    reason
}

#[tokio::test]
async fn protocol_errors_close_the_tunnel() {
    let open = Frame::open(1, Bytes::from_static(PROXY_LINE));

    // Unknown frame type.
    let mut bytes = encoded(std::slice::from_ref(&open));
    bytes.extend_from_slice(&[0, 0, 0, 1, 0x0F, 0, 0, 0, 0]);
    let reason = protocol_error_from(bytes).await;
    assert_eq!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::Frame(FrameError::UnknownType(0x0F)))
    );

    // Oversized DATA, refused from the header alone.
    let mut bytes = encoded(std::slice::from_ref(&open));
    bytes.extend_from_slice(&encode_header(1, FrameType::Data, 65_537));
    let reason = protocol_error_from(bytes).await;
    assert!(
        matches!(
            reason,
            MuxCloseReason::Protocol(ProtocolError::Frame(FrameError::PayloadTooLong { .. }))
        ),
        "{reason}"
    );

    // DATA beyond the credit the hub granted (it never reads, so never grants more).
    let mut frames = vec![open.clone()];
    for _ in 0..INITIAL / MAX_DATA_PAYLOAD {
        frames.push(Frame::data(1, false, vec![1u8; MAX_DATA_PAYLOAD]));
    }
    frames.push(Frame::data(1, false, vec![2u8; 1]));
    let reason = protocol_error_from(encoded(&frames)).await;
    assert_eq!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::CreditExceeded {
            stream_id: 1,
            len: 1,
            credit: 0
        })
    );

    // A frame of the hub's own direction.
    let reason =
        protocol_error_from(encoded(&[open.clone(), Frame::data(1, true, &b"x"[..])])).await;
    assert_eq!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::WrongDirection {
            frame_type: FrameType::DataBack,
            receiver: Side::Hub
        })
    );
    assert!(reason
        .to_string()
        .starts_with("protocol error: the hub received DATA_BACK"));

    // DATA after the peer's own CLOSE; duplicate OPEN; bad stream id for a control frame.
    let reason = protocol_error_from(encoded(&[
        open.clone(),
        Frame::close(1, false),
        Frame::data(1, false, &b"x"[..]),
    ]))
    .await;
    assert_eq!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::DataAfterClose { stream_id: 1 })
    );
    let reason = protocol_error_from(encoded(&[open.clone(), open.clone()])).await;
    assert_eq!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::DuplicateOpen { stream_id: 1 })
    );
    let reason = protocol_error_from(vec![0, 0, 0, 3, 0x08, 0, 0, 0, 0]).await;
    assert!(matches!(
        reason,
        MuxCloseReason::Protocol(ProtocolError::Frame(FrameError::NotOnControlStream { .. }))
    ));

    // The edge refuses OPEN (it is the edge's own frame type).
    let (edge, _incoming, mut raw) = raw_peer(Side::Edge);
    raw.write_all(&encoded(&[open])).await.unwrap();
    assert!(matches!(
        within(edge.closed()).await,
        MuxCloseReason::Protocol(ProtocolError::WrongDirection { .. })
    ));
}

#[tokio::test]
async fn garbage_and_truncation_never_panic() {
    for seed in 0..32u8 {
        let (hub, _incoming, mut raw) = raw_peer(Side::Hub);
        let mut bytes = encoded(&[Frame::open(1, Bytes::from_static(PROXY_LINE))]);
        let mut noise = random(usize::from(seed) * 37 + 5);
        // Mostly plausible headers: small lengths, known types.
        if noise.len() >= HEADER_LEN {
            noise[4] = seed % 16;
            noise[5..9].copy_from_slice(&u32::from(seed).to_be_bytes());
        }
        bytes.extend_from_slice(&noise);
        let _ = raw.write_all(&bytes).await;
        drop(raw);
        let reason = within(hub.closed()).await;
        assert!(
            matches!(
                reason,
                MuxCloseReason::Protocol(_) | MuxCloseReason::PeerClosed
            ),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn config_arrives_and_ping_is_answered() {
    let Pair {
        edge,
        mut edge_in,
        hub,
        mut hub_in,
    } = pair();
    hub.send_control(Frame::config(&b"{\"listenPorts\":[443]}"[..]))
        .unwrap();
    let config = within(edge_in.control.recv()).await.unwrap();
    assert_eq!(config.frame_type, FrameType::Config);
    assert_eq!(&config.payload[..], b"{\"listenPorts\":[443]}");

    hub.send_control(Frame::ping(0xDEAD_BEEF)).unwrap();
    let pong = within(hub_in.control.recv()).await.unwrap();
    let expected = Frame::pong_for(&Frame::ping(0xDEAD_BEEF));
    assert_eq!(
        (pong.frame_type, pong.payload),
        (expected.frame_type, expected.payload)
    );
    // The edge also sees the PING (liveness).
    let ping = within(edge_in.control.recv()).await.unwrap();
    let expected = Frame::ping(0xDEAD_BEEF);
    assert_eq!(
        (ping.frame_type, ping.payload),
        (expected.frame_type, expected.payload)
    );

    // Misuse is refused without touching the tunnel.
    assert!(matches!(
        hub.send_control(Frame::close(1, true)),
        Err(MuxError::Unsendable { .. })
    ));
    assert!(matches!(
        hub.open_stream(Bytes::new()),
        Err(MuxError::NotEdge)
    ));
    assert!(matches!(
        edge.open_stream(Bytes::from(vec![b'x'; 200])),
        Err(MuxError::Frame(_))
    ));
    assert!(!edge.is_closed() && !hub.is_closed());
}

#[tokio::test]
async fn datagrams_flow_both_ways() {
    let Pair {
        edge,
        mut edge_in,
        hub,
        mut hub_in,
    } = pair();
    edge.try_send_datagram(Frame::udp_open(9, &b"hdr"[..]))
        .unwrap();
    edge.try_send_datagram(Frame::udp_data(9, false, &b"ping"[..]))
        .unwrap();
    assert_eq!(
        within(hub_in.datagrams.recv()).await.unwrap(),
        UdpMessage::Open {
            session: 9,
            header: Bytes::from_static(b"hdr")
        }
    );
    assert_eq!(
        within(hub_in.datagrams.recv()).await.unwrap(),
        UdpMessage::Data {
            session: 9,
            payload: Bytes::from_static(b"ping")
        }
    );
    hub.try_send_datagram(Frame::udp_data(9, true, &b"pong"[..]))
        .unwrap();
    hub.try_send_datagram(Frame::udp_close(9)).unwrap();
    assert_eq!(
        within(edge_in.datagrams.recv()).await.unwrap(),
        UdpMessage::Data {
            session: 9,
            payload: Bytes::from_static(b"pong")
        }
    );
    assert_eq!(
        within(edge_in.datagrams.recv()).await.unwrap(),
        UdpMessage::Close { session: 9 }
    );
    assert!(matches!(
        hub.try_send_datagram(Frame::udp_data(9, false, &b"x"[..])),
        Err(MuxError::Unsendable { .. })
    ));
    assert!(matches!(
        edge.try_send_datagram(Frame::data(9, false, &b"x"[..])),
        Err(MuxError::Unsendable { .. })
    ));
    assert_eq!(edge.udp_dropped() + hub.udp_dropped(), 0);
}

#[tokio::test]
async fn closing_the_tunnel_wakes_blocked_readers_and_writers() {
    let (Pair { edge, hub, .. }, stream, _upstream) = pair_with_stream().await;
    let (mut r, mut w) = tokio::io::split(stream);
    let reader = tokio::spawn(async move { r.read(&mut [0u8; 64]).await });
    let (progress_tx, mut progress) = watch::channel(0usize);
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match w.write(&chunk).await {
                Ok(n) => {
                    progress_tx.send_modify(|total| *total += n);
                }
                Err(error) => break error,
            }
        }
    });
    // The writer blocks once the initial credit is used up (the hub never reads).
    within(progress.wait_for(|&total| total >= INITIAL))
        .await
        .unwrap();
    tokio::task::yield_now().await;

    edge.close();
    let read_error = within(reader).await.unwrap().unwrap_err();
    assert_eq!(read_error.kind(), io::ErrorKind::ConnectionAborted);
    let write_error = within(writer).await.unwrap();
    assert_eq!(write_error.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(within(edge.closed()).await, MuxCloseReason::Closed);
    assert!(matches!(
        edge.open_stream(Bytes::new()),
        Err(MuxError::Closed)
    ));
    assert!(matches!(
        edge.send_control(Frame::pong_for(&Frame::ping(1))),
        Err(MuxError::Closed)
    ));
    // The hub notices the end of the connection as well.
    let reason = within(hub.closed()).await;
    assert!(
        matches!(
            reason,
            MuxCloseReason::PeerClosed | MuxCloseReason::Io { .. }
        ),
        "{reason}"
    );
    assert_eq!(hub.active_streams(), 0);
}

#[tokio::test]
async fn cancel_token_ends_the_tunnel() {
    let (a, b) = tokio::io::duplex(4096);
    let cancel = CancellationToken::new();
    let (edge, _incoming) = Mux::start(
        a,
        BytesMut::new(),
        config(Side::Edge),
        cancel.clone(),
        &TaskTracker::new(),
    );
    let (_hub, _hub_in) = Mux::start(
        b,
        BytesMut::new(),
        config(Side::Hub),
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    let mut stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    cancel.cancel();
    assert_eq!(within(edge.closed()).await, MuxCloseReason::Cancelled);
    let error = stream.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(edge.active_streams(), 0);
}

#[tokio::test]
async fn control_frames_overtake_queued_data() {
    let (edge, _incoming, mut raw) = raw_peer(Side::Edge);
    // One stream may only queue a few frames: enough streams to fill the data queue.
    let per_stream = MAX_QUEUED_FRAMES_PER_STREAM as usize;
    let count = DATA_QUEUE_FRAMES / per_stream + 8;
    let mut streams: Vec<MuxStream> = (0..count)
        .map(|_| edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap())
        .collect();
    // Small writes (one DATA frame each), round robin, until the data queue is full; nobody
    // reads `raw`, so the writer task is stuck too.
    let chunk = [0xABu8; 100];
    let mut written = 0usize;
    'fill: loop {
        let mut progress = false;
        for stream in &mut streams {
            let polled = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut *stream).poll_write(cx, &chunk))
            })
            .await;
            if let Poll::Ready(result) = polled {
                assert_eq!(result.unwrap(), chunk.len());
                written += 1;
                progress = true;
            }
            if data_slots_free(&edge) == 0 {
                break 'fill;
            }
        }
        if !progress {
            tokio::task::yield_now().await;
        }
        assert!(written < 5000, "the data queue never filled up");
    }
    for stream in &streams {
        let queued = stream_state(&edge, stream.id(), |s| s.queued);
        assert!(
            queued <= MAX_QUEUED_FRAMES_PER_STREAM,
            "{queued} frames of one stream"
        );
    }
    // Exactly DATA_QUEUE_FRAMES frames wait in the queue now (current-thread runtime: the
    // writer cannot run before the PING is queued).
    edge.send_control(Frame::ping(7)).unwrap();

    let mut buf = BytesMut::new();
    let mut before = 0;
    let mut after = None;
    let mut data_frames = 0;
    while data_frames < written || after.is_none() {
        let frame = read_frame(&mut raw, &mut buf).await;
        match frame.frame_type {
            // OPENs are control frames too: before the PING or in the stuck batch.
            FrameType::Open => assert!(after.is_none(), "OPEN after the PING"),
            FrameType::Data => {
                assert_eq!(&frame.payload[..], &chunk[..]);
                data_frames += 1;
                match after.as_mut() {
                    Some(after) => *after += 1,
                    None => before += 1,
                }
            }
            FrameType::Ping => {
                assert_eq!(frame, Frame::ping(7));
                after = Some(0);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        after,
        Some(DATA_QUEUE_FRAMES),
        "{before} data frames before PING"
    );
    assert_eq!(before + DATA_QUEUE_FRAMES, written);
}

#[tokio::test]
async fn refused_and_unknown_streams_are_answered_with_close() {
    let (hub, mut incoming, mut raw) = raw_peer(Side::Hub);
    let refused = u32::try_from(INCOMING_STREAMS).unwrap() + 1;
    let mut frames: Vec<Frame> = (1..=refused)
        .map(|id| Frame::open(id, Bytes::from_static(PROXY_LINE)))
        .collect();
    // DATA for the refused stream (twice: answered once), then for a never-opened one.
    frames.push(Frame::data(refused, false, &b"a"[..]));
    frames.push(Frame::data(refused, false, &b"b"[..]));
    frames.push(Frame::data(99_999, false, &b"c"[..]));
    // CLOSE and WINDOW_UPDATE for unknown streams are ignored.
    frames.push(Frame::close(77, false));
    frames.push(Frame::window_update(78, false, 5));
    raw.write_all(&encoded(&frames)).await.unwrap();

    let mut buf = BytesMut::new();
    for expected in [refused, refused, 99_999] {
        let frame = read_frame(&mut raw, &mut buf).await;
        assert_eq!(frame, Frame::close(expected, true));
    }
    assert_eq!(hub.stats().streams_refused, 1);
    assert_eq!(hub.active_streams(), INCOMING_STREAMS);
    // Accepted streams are unaffected.
    let (mut first, open) = incoming.streams.recv().await.unwrap();
    assert_eq!(first.id(), 1);
    assert_eq!(&open[..], PROXY_LINE);
    raw.write_all(&encoded(&[Frame::data(1, false, &b"still fine"[..])]))
        .await
        .unwrap();
    let mut got = [0u8; 10];
    within(first.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"still fine");
    assert!(!hub.is_closed());
}

#[tokio::test]
async fn leftover_bytes_are_decoded_first() {
    let (a, mut raw) = tokio::io::duplex(4096);
    let leftover = BytesMut::from(
        &encoded(&[
            Frame::open(5, Bytes::from_static(PROXY_LINE)),
            Frame::data(5, false, &b"early "[..]),
        ])[..],
    );
    let (hub, mut incoming) = Mux::start(
        a,
        leftover,
        config(Side::Hub),
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    let (mut stream, open) = within(incoming.streams.recv()).await.unwrap();
    assert_eq!((stream.id(), &open[..]), (5, PROXY_LINE));
    raw.write_all(&encoded(&[
        Frame::data(5, false, &b"late"[..]),
        Frame::close(5, false),
    ]))
    .await
    .unwrap();
    let mut got = Vec::new();
    within(stream.read_to_end(&mut got)).await.unwrap();
    assert_eq!(&got[..], b"early late");
    stream.write_all(b"reply").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut buf = BytesMut::new();
    // Reading "early " let the window grow toward 4 MiB (one stream): a grant comes first.
    let grant = read_frame(&mut raw, &mut buf).await;
    assert_eq!(grant.frame_type, FrameType::WindowUpdateBack);
    assert_eq!(
        window_update_value(&grant).unwrap(),
        WindowSettings::default().start_target(1) - INITIAL_STREAM_WINDOW + 6
    );
    assert_eq!(
        read_frame(&mut raw, &mut buf).await,
        Frame::data(5, true, &b"reply"[..])
    );
    assert_eq!(read_frame(&mut raw, &mut buf).await, Frame::close(5, true));
    drop(stream);
    assert_eq!(hub.active_streams(), 0);
}

#[tokio::test]
async fn peer_eof_fails_streams() {
    let (edge, _incoming, raw) = raw_peer(Side::Edge);
    let mut stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    drop(raw);
    let error = within(stream.read(&mut [0u8; 8])).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    let reason = within(edge.closed()).await;
    assert!(
        matches!(
            reason,
            MuxCloseReason::PeerClosed | MuxCloseReason::Io { .. }
        ),
        "{reason}"
    );
    assert_eq!(
        stream.write(b"x").await.unwrap_err().kind(),
        io::ErrorKind::ConnectionAborted
    );
}

#[tokio::test]
async fn stream_ids_skip_zero_and_ids_in_use() {
    let (edge, _incoming, _raw) = raw_peer(Side::Edge);
    edge.shared.with(|state| state.next_id = u32::MAX - 1);
    let a = edge.open_stream(Bytes::new()).unwrap();
    let b = edge.open_stream(Bytes::new()).unwrap();
    let c = edge.open_stream(Bytes::new()).unwrap();
    assert_eq!((a.id(), b.id(), c.id()), (u32::MAX - 1, u32::MAX, 1));
    edge.shared.with(|state| state.next_id = u32::MAX - 1);
    drop(b);
    let d = edge.open_stream(Bytes::new()).unwrap();
    let e = edge.open_stream(Bytes::new()).unwrap();
    assert_eq!((d.id(), e.id()), (u32::MAX, 2));
    assert_eq!(edge.active_streams(), 4);
}

/// A transport without vectored writes (the writer then copies everything into one buffer).
struct Plain(DuplexStream);

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_a_non_vectored_transport() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    assert!(!Plain(tokio::io::duplex(1).0).is_write_vectored());
    let Pair { edge, hub_in, .. } = pair_over(Plain(a), Plain(b));
    spawn_echo_hub(hub_in);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move {
            let data = random(MIB);
            assert!(echo_through(&edge, data.clone()).await == data);
        }));
    }
    for task in tasks {
        within(task).await.unwrap();
    }
}

#[test]
fn public_types_are_send_and_unpin() {
    fn check<T: Send + Sync + Unpin + 'static>() {}
    fn check_stream<T: Send + Unpin + 'static + AsyncRead + AsyncWrite>() {}
    check::<MuxHandle>();
    check_stream::<MuxStream>();
    fn check_send<T: Send + 'static>() {}
    check_send::<MuxIncoming>();
    check_send::<MuxError>();
    check::<MuxCloseReason>();
}

/// QoS settings for the sustained-stream tests: sustained after 1 s above 256 KiB/s.
fn quick_qos() -> QosSettings {
    QosSettings {
        sustained_after: Duration::from_secs(1),
        sustained_threshold_bytes_per_sec: 256 * 1024,
        ..QosSettings::default()
    }
}

/// An edge mux with [`quick_qos`] against the raw other end.
fn raw_edge_with_quick_qos() -> (MuxHandle, MuxIncoming, DuplexStream) {
    let (a, raw) = tokio::io::duplex(64 * 1024);
    let config = MuxConfig {
        qos: quick_qos(),
        ..MuxConfig::new(Side::Edge)
    };
    let (handle, incoming) = Mux::start(
        a,
        BytesMut::new(),
        config,
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    (handle, incoming, raw)
}

/// Opens a stream that writes `data` as fast as credit allows (errors end it quietly), reads
/// its OPEN and the first `INITIAL` bytes of DATA off `raw`, then lets 2 s of (paused) time
/// pass: with [`quick_qos`] its average (1 MiB / 2 s) makes it sustained at its next write.
/// Returns its id and the writer task (yielding the stream).
async fn start_elephant(
    edge: &MuxHandle,
    raw: &mut DuplexStream,
    buf: &mut BytesMut,
    data: Vec<u8>,
) -> (u32, tokio::task::JoinHandle<MuxStream>) {
    let mut stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let id = stream.id();
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&data).await;
        let _ = stream.shutdown().await;
        stream
    });
    assert_eq!(read_frame(raw, buf).await, Frame::open(id, PROXY_LINE));
    let mut got = 0;
    while got < INITIAL {
        let frame = read_frame(raw, buf).await;
        assert_eq!((frame.frame_type, frame.stream_id), (FrameType::Data, id));
        got += frame.payload.len();
    }
    assert_eq!(got, INITIAL);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(edge.stats().streams_sustained, 0, "no write since");
    (id, writer)
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    within(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn sustained_stream_does_not_delay_a_mouse() {
    let (edge, _incoming, mut raw) = raw_edge_with_quick_qos();
    let mut buf = BytesMut::new();
    let (elephant, _writer) = start_elephant(&edge, &mut raw, &mut buf, vec![0xEE; 64 * MIB]).await;

    // Plenty of credit: the elephant's DATA now goes to the sustained queue. Nobody reads
    // `raw`, so the writer gets stuck and the elephant queues as many frames as it may.
    let grant = Frame::window_update(elephant, true, 32 << 20);
    raw.write_all(&encoded(&[grant])).await.unwrap();
    wait_for(|| queued_to_the_cap(&edge, elephant)).await;
    assert_eq!(edge.stats().streams_sustained, 1);
    assert_eq!(stream_state(&edge, elephant, |s| s.queue), Queue::Sustained);
    assert_eq!(data_slots_free(&edge), DATA_QUEUE_FRAMES);

    // A mouse: a small request, queued behind the elephant's frames.
    let mut mouse = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    within(mouse.write_all(request)).await.unwrap();

    // On the wire, the mouse's OPEN and request come before the elephant's queued data: only
    // what was already in the stuck write (one batch) and at most the sustained queue's small
    // burst of credit come first.
    let mut before = 0;
    let mut opened = false;
    loop {
        let frame = read_frame(&mut raw, &mut buf).await;
        match (frame.frame_type, frame.stream_id) {
            (FrameType::Data, id) if id == elephant => before += 1,
            (FrameType::Open, id) if id == mouse.id() => opened = true,
            (FrameType::Data, id) if id == mouse.id() => {
                assert!(opened, "OPEN first");
                assert_eq!(&frame.payload[..], request);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let in_flight = writer::BATCH_MAX / MAX_DATA_PAYLOAD + 2;
    assert!(before <= in_flight + 2, "{before} elephant frames first");
    // Everything the elephant had queued comes after.
    let mut after = 0;
    while after < MAX_QUEUED_FRAMES_PER_STREAM as usize - 2 {
        let frame = read_frame(&mut raw, &mut buf).await;
        assert_eq!(
            (frame.frame_type, frame.stream_id),
            (FrameType::Data, elephant)
        );
        after += 1;
    }

    // The response comes straight back.
    let response = b"HTTP/1.1 204 No Content\r\n\r\n";
    raw.write_all(&encoded(&[Frame::data(mouse.id(), true, &response[..])]))
        .await
        .unwrap();
    let mut got = [0u8; 27];
    within(mouse.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, response);
    assert!(!edge.is_closed());
}

/// Reads frames of stream `id` until its CLOSE; returns the DATA bytes. Frames of other
/// streams are not expected.
async fn read_stream_until_close(raw: &mut DuplexStream, buf: &mut BytesMut, id: u32) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        let frame = read_frame(raw, buf).await;
        assert_eq!(frame.stream_id, id);
        match frame.frame_type {
            FrameType::Data => got.extend_from_slice(&frame.payload),
            FrameType::Close => return got,
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn switching_to_sustained_keeps_the_stream_in_order() {
    let (edge, _incoming, mut raw) = raw_edge_with_quick_qos();
    let mut buf = BytesMut::new();
    let data = random(3 * MIB);
    let mut stream = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let id = stream.id();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    // Nobody reads `raw`: the initial credit's DATA piles up in the data queue.
    wait_for(|| queued_to_the_cap(&edge, id)).await;
    // 2 s later the stream is sustained at its next write, which must wait for its DATA in
    // the data queue to go out first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    raw.write_all(&encoded(&[Frame::window_update(id, true, 4 << 20)]))
        .await
        .unwrap();
    wait_for(|| stream_state(&edge, id, |s| s.writer_waiting)).await;
    assert_eq!(stream_state(&edge, id, |s| s.queue), Queue::Data);
    assert_eq!(edge.stats().streams_sustained, 0);

    // Reading lets everything out, in order, CLOSE last.
    assert_eq!(
        read_frame(&mut raw, &mut buf).await,
        Frame::open(id, PROXY_LINE)
    );
    let got = read_stream_until_close(&mut raw, &mut buf, id).await;
    assert_eq!(checksum(&got), checksum(&data));
    assert!(got == data);
    let _stream = within(writer).await.unwrap();
    assert_eq!(edge.stats().streams_sustained, 1);
    assert_eq!(stream_state(&edge, id, |s| s.queue), Queue::Sustained);
    assert_eq!(stream_state(&edge, id, |s| s.queued), 0);
    assert!(!edge.is_closed());
}

#[tokio::test(start_paused = true)]
async fn answers_for_a_dropped_sustained_stream_queue_behind_its_data() {
    let (edge, _incoming, mut raw) = raw_edge_with_quick_qos();
    let mut buf = BytesMut::new();
    let data = random(2 * MIB);
    let (id, writer) = start_elephant(&edge, &mut raw, &mut buf, data.clone()).await;
    // More DATA goes to the sustained queue (nobody reads `raw`) until the stream may queue
    // no more; then the stream is dropped (its task aborted), which queues its CLOSE.
    raw.write_all(&encoded(&[Frame::window_update(id, true, 1 << 20)]))
        .await
        .unwrap();
    wait_for(|| queued_to_the_cap(&edge, id)).await;
    assert_eq!(edge.stats().streams_sustained, 1);
    writer.abort();
    assert!(within(writer).await.unwrap_err().is_cancelled());
    assert_eq!(edge.active_streams(), 0);
    assert_eq!(
        edge.shared.with(|state| state.draining.len()),
        1,
        "frames still queued"
    );

    // The hub still sends: the edge answers with a CLOSE (abort), which must not overtake the
    // DATA and the first CLOSE still in the sustained queue.
    raw.write_all(&encoded(&[Frame::data(id, true, &b"late"[..])]))
        .await
        .unwrap();
    let got = read_stream_until_close(&mut raw, &mut buf, id).await;
    assert!(!got.is_empty() && got.len() <= MIB);
    assert!(got == data[INITIAL..INITIAL + got.len()]);
    assert_eq!(
        read_frame(&mut raw, &mut buf).await,
        Frame::close(id, false)
    );
    wait_for(|| edge.shared.with(|state| state.draining.is_empty())).await;
    assert!(!edge.is_closed());
}

/// A hub stream reset for the budget while its DATA_BACK still waits in the sustained queue:
/// the CLOSE_BACK answering the edge's further DATA must queue behind that data, as for a
/// dropped stream. It used to go to the data queue and overtake it, and the edge closed the
/// tunnel on DATA after CLOSE.
#[tokio::test(start_paused = true)]
async fn answers_for_a_reset_sustained_stream_queue_behind_its_data() {
    const BUDGET: usize = 256 * 1024;
    let (a, mut raw) = tokio::io::duplex(64 * 1024);
    let config = MuxConfig {
        window: WindowSettings {
            budget: BUDGET as u64,
            ..WindowSettings::default()
        },
        qos: quick_qos(),
        ..MuxConfig::new(Side::Hub)
    };
    let (hub, mut hub_in) = Mux::start(
        a,
        BytesMut::new(),
        config,
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    let id = 1;
    raw.write_all(&encoded(&[Frame::open(id, PROXY_LINE)]))
        .await
        .unwrap();
    let (mut stream, _) = within(hub_in.streams.recv()).await.unwrap();
    // The hub's application sends as fast as credit allows; its first megabyte goes out ...
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&vec![0xEE; 8 * MIB]).await;
        stream
    });
    let mut buf = BytesMut::new();
    let mut got = 0;
    while got < INITIAL {
        let frame = read_frame(&mut raw, &mut buf).await;
        assert_eq!(
            (frame.frame_type, frame.stream_id),
            (FrameType::DataBack, id)
        );
        got += frame.payload.len();
    }
    // ... and 2 s later (1 MiB / 2 s) the stream is sustained: with more credit its DATA_BACK
    // waits in the sustained queue (nobody reads `raw`).
    tokio::time::sleep(Duration::from_secs(2)).await;
    raw.write_all(&encoded(&[Frame::window_update(id, false, 4 << 20)]))
        .await
        .unwrap();
    wait_for(|| queued_to_the_cap(&hub, id)).await;
    assert_eq!(hub.stats().streams_sustained, 1);
    // The edge sends more than the budget, which the application does not read: the hub
    // resets the stream (an abort behind its data) but the application still holds it.
    for _ in 0..BUDGET / MAX_DATA_PAYLOAD + 1 {
        let data = Frame::data(id, false, vec![1u8; MAX_DATA_PAYLOAD]);
        raw.write_all(&encoded(&[data])).await.unwrap();
    }
    wait_for(|| hub.stats().budget_resets == 1).await;
    // Data already in flight from the edge is answered with a CLOSE_BACK.
    raw.write_all(&encoded(&[Frame::data(id, false, &b"late"[..])]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // On the wire: the stream's DATA_BACK, its abort, then the answer.
    let mut data_frames = 0;
    loop {
        let frame = read_frame(&mut raw, &mut buf).await;
        assert_eq!(frame.stream_id, id);
        match frame.frame_type {
            FrameType::DataBack => data_frames += 1,
            FrameType::CloseBack => {
                assert!(
                    frame.is_abort(),
                    "a CLOSE_BACK overtook the stream's DATA_BACK"
                );
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(data_frames >= MAX_QUEUED_FRAMES_PER_STREAM as usize);
    assert_eq!(read_frame(&mut raw, &mut buf).await, Frame::close(id, true));
    assert!(!hub.is_closed());
    drop(within(writer).await.unwrap());
}

/// Stream `id` of `handle` has as many frames queued as it may and waits for the writer.
fn queued_to_the_cap(handle: &MuxHandle, id: u32) -> bool {
    stream_state(handle, id, |s| {
        s.queued == MAX_QUEUED_FRAMES_PER_STREAM && s.writer_waiting
    })
}

/// Runs `f` on the state of the open stream `id` of `handle`.
fn stream_state<R>(handle: &MuxHandle, id: u32, f: impl FnOnce(&state::StreamState) -> R) -> R {
    handle
        .shared
        .with(|state| f(&state.streams[&state.ids[&id]]))
}

/// Free slots of the data queue.
fn data_slots_free(handle: &MuxHandle) -> usize {
    handle.shared.with(|state| state.out.data_slots.free)
}

#[tokio::test]
async fn young_elephant_does_not_delay_a_mouse() {
    // Default QoS: the elephant is far from sustained, its DATA shares the data queue.
    let (edge, _incoming, mut raw) = raw_peer(Side::Edge);
    let mut buf = BytesMut::new();
    let mut elephant = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let elephant_id = elephant.id();
    let _writer = tokio::spawn(async move {
        let _ = elephant.write_all(&vec![0xEE; 8 * MIB]).await;
        elephant
    });
    // Nobody reads `raw`: the writer is stuck and the elephant queues what it may.
    wait_for(|| queued_to_the_cap(&edge, elephant_id)).await;
    assert!(data_slots_free(&edge) >= DATA_QUEUE_FRAMES - 4);

    let mut mouse = edge.open_stream(Bytes::from_static(PROXY_LINE)).unwrap();
    let request = b"GET / HTTP/1.1\r\n\r\n";
    within(mouse.write_all(request)).await.unwrap();
    // The mouse's request is behind the stuck batch and the elephant's few queued frames
    // only, not behind the megabyte of credit the elephant has.
    let mut before = 0;
    loop {
        let frame = read_frame(&mut raw, &mut buf).await;
        match (frame.frame_type, frame.stream_id) {
            (FrameType::Open, _) => {}
            (FrameType::Data, id) if id == elephant_id => before += 1,
            (FrameType::Data, id) if id == mouse.id() => {
                assert_eq!(&frame.payload[..], request);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let stuck_batch = writer::BATCH_MAX / MAX_DATA_PAYLOAD + 1;
    let limit = stuck_batch + MAX_QUEUED_FRAMES_PER_STREAM as usize;
    assert!(
        before <= limit,
        "{before} elephant frames first (limit {limit})"
    );
    assert!(!edge.is_closed());
}

/// A peer that does not read: the control queue fills up to its bound and the next control
/// frame closes the tunnel, with the reason, instead of being queued or lost.
#[tokio::test]
async fn a_peer_that_does_not_read_is_dropped_when_the_control_queue_is_full() {
    let (hub, _incoming, _raw) = raw_peer(Side::Hub);
    let mut queued = 0;
    for ping in 0..2 * CONTROL_QUEUE_FRAMES {
        match hub.send_control(Frame::ping(u64::try_from(ping).unwrap())) {
            Ok(()) => queued += 1,
            Err(error) => {
                assert_eq!(error, MuxError::Closed);
                break;
            }
        }
        // Let the writer fill the duplex (64 KiB) and block on it, as on a full socket.
        if ping % 4096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        (CONTROL_QUEUE_FRAMES..CONTROL_QUEUE_FRAMES + 8192).contains(&queued),
        "{queued}"
    );
    assert_eq!(within(hub.closed()).await, MuxCloseReason::PeerNotReading);
}

/// A hostile edge sends each of its streams' whole initial window to a hub application that
/// does not read: the hub holds no more than its budget (plus one frame), resets the streams
/// over their share with an abort, and keeps the tunnel and the stream within its share.
#[tokio::test]
async fn the_hub_holds_no_more_than_its_budget_whatever_the_stream_count() {
    const BUDGET: usize = 4 * MIB;
    let (a, mut raw) = tokio::io::duplex(64 * 1024);
    let config = MuxConfig {
        window: WindowSettings {
            budget: BUDGET as u64,
            ..WindowSettings::default()
        },
        ..MuxConfig::new(Side::Hub)
    };
    let (hub, mut hub_in) = Mux::start(
        a,
        BytesMut::new(),
        config,
        CancellationToken::new(),
        &TaskTracker::new(),
    );
    // Stream 1 sends a little (within any share); streams 2..=16 their whole initial window.
    let chunk = Bytes::from(vec![7u8; MAX_DATA_PAYLOAD]);
    let mut frames = vec![Frame::open(1, Bytes::from_static(PROXY_LINE))];
    frames.push(Frame::data(1, false, Bytes::from_static(b"small")));
    for id in 2..=16 {
        frames.push(Frame::open(id, Bytes::from_static(PROXY_LINE)));
    }
    let mut accepted = Vec::new();
    let writer = tokio::spawn(async move {
        raw.write_all(&encoded(&frames)).await.unwrap();
        for _ in 0..INITIAL / MAX_DATA_PAYLOAD {
            for id in 2..=16 {
                let data = Frame::data(id, false, chunk.clone());
                raw.write_all(&encoded(&[data])).await.unwrap();
            }
        }
        raw
    });
    for _ in 0..16 {
        accepted.push(within(hub_in.streams.recv()).await.unwrap().0);
    }
    let mut raw = within(writer).await.unwrap();
    // Everything sent was dispatched once the reader is idle again; the stats settle.
    let stats = within(async {
        loop {
            let stats = hub.stats();
            if stats.budget_resets > 0 && stats.held_bytes <= BUDGET as u64 {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(stats.held_bytes <= BUDGET as u64, "{stats:?}");
    assert!(
        stats.budget_resets >= (15 * INITIAL - BUDGET) as u64 / INITIAL as u64,
        "{stats:?}"
    );
    assert!(!hub.is_closed());
    // The peer hears an abort for each reset stream.
    let mut buf = BytesMut::new();
    let mut aborts = 0;
    while aborts < stats.budget_resets {
        let frame = read_frame(&mut raw, &mut buf).await;
        if frame.frame_type == FrameType::CloseBack && frame.is_abort() {
            aborts += 1;
        }
    }
    // The stream within its share still reads its data; reset ones fail.
    let mut small = [0u8; 5];
    within(accepted[0].read_exact(&mut small)).await.unwrap();
    assert_eq!(&small, b"small");
    let mut failed = 0;
    for stream in &mut accepted[1..] {
        let mut byte = [0u8; 1];
        if within(stream.read(&mut byte)).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, stats.budget_resets);
    // Dropping the streams throws away what they still hold: the count goes back to zero.
    drop(accepted);
    assert_eq!(hub.stats().held_bytes, 0);
}
