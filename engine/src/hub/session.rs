//! One connected edge: accepts its streams, sends heartbeats, reports stream summaries, and ends
//! when the tunnel dies, the edge is replaced or removed, or the hub stops.

use std::sync::Arc;
use std::time::Duration;

use remoteingress_ipc_schema::{Event, StreamEventMode, StreamSummaryEvent};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::{self, ForwardContext};
use super::grant::PortGrant;
use super::stream_cap::{Admission, StreamCap};
use super::{Command, Hub};
use crate::config::HubSettings;
use crate::events::EventSink;
use crate::hub::udp::HubUdp;
use crate::log_limit::SharedLogLimiter;
use crate::metrics::{StreamStats, UdpStats};
use crate::shutdown::StopTokens;
use crate::transport::control::ControlMessage;
use crate::transport::frame::FrameType;
use crate::transport::handshake::EdgeReport;
use crate::transport::tunnel::{Tunnel, TunnelIncoming};

/// Longest time a replaced session keeps its open streams.
const MAX_DRAIN: Duration = Duration::from_secs(600);
/// How long a replaced session with no open stream waits before it ends. Until the edge has
/// seen the login that replaced this connection (a round trip later), it may still open streams
/// here; they are forwarded, not refused. The edge closes the connection itself once its own
/// streams on it are done, so this only bounds a replaced connection the edge no longer uses.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

pub(crate) struct HubSession {
    pub(crate) edge_id: String,
    pub(crate) tunnel: Tunnel,
    pub(crate) incoming: TunnelIncoming,
    pub(crate) settings: Arc<HubSettings>,
    pub(crate) stats: Arc<StreamStats>,
    pub(crate) udp_stats: Arc<UdpStats>,
    /// The ports this edge may be forwarded to now.
    pub(crate) grant: Arc<PortGrant>,
    /// How many streams may be forwarded for this edge at once.
    pub(crate) stream_cap: Arc<StreamCap>,
    pub(crate) events: EventSink,
    /// Cancelled by the actor: edge removed, or secret changed.
    pub(crate) cancel: CancellationToken,
    /// Cancelled by the actor when a newer connection replaced this one.
    pub(crate) drain: CancellationToken,
    /// Held for the session's life (`Admission::claim`).
    pub(crate) claim: Arc<()>,
    /// The hub stopping: draining (no new streams), then shut down (abort the rest).
    pub(crate) stop: StopTokens,
    pub(crate) tasks: TaskTracker,
    pub(crate) hub: Hub,
    pub(crate) session_id: u64,
}

/// Runs the session; returns why it ended.
pub(crate) async fn run(session: HubSession) -> String {
    let HubSession {
        edge_id,
        tunnel,
        mut incoming,
        settings,
        stats,
        udp_stats,
        grant,
        stream_cap,
        events,
        cancel,
        drain,
        claim: _claim,
        stop,
        tasks,
        hub,
        session_id,
    } = session;
    // One limiter for every warning this edge can provoke (bad frames, bad OPENs, dead
    // targets), so an authenticated edge cannot flood the log.
    let warnings = Arc::new(SharedLogLimiter::default());
    let context = Arc::new(ForwardContext {
        edge_id: edge_id.clone(),
        settings: settings.clone(),
        stats: stats.clone(),
        events: events.clone(),
        grant,
        warnings: warnings.clone(),
        tasks: tasks.clone(),
    });
    // This session's holdings of the hub-wide budgets, shared fairly with the other edges.
    let holding = settings.holders.register();
    let mut udp = HubUdp::new(
        context.clone(),
        settings.performance.udp_session_idle,
        tunnel.clone(),
        udp_stats,
        holding.clone(),
    );
    let performance = &settings.performance;
    tunnel.cap_streams(stream_cap.max());
    let mut heartbeat = tokio::time::interval(performance.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut summary = tokio::time::interval(Duration::from_secs(1));
    summary.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let summaries = settings.stream_event_mode == StreamEventMode::Summary;
    let mut last_pong = Instant::now();
    let mut ping_seq: u64 = 0;
    // When the PING numbered `ping_seq` went out: its PONG gives the round-trip time.
    let mut ping_sent_at = Instant::now();
    // Streams of this session end with it (their own child token).
    let streams_cancel = cancel.child_token();

    let mut draining_since: Option<Instant> = None;
    // While draining: since when the connection has had no open stream.
    let mut quiet_since: Option<Instant> = None;
    let mut hub_draining = false;
    let reason = loop {
        tokio::select! {
            () = stop.shutdown.cancelled() => break "hub stopped".to_owned(),
            () = stop.draining.cancelled(), if !hub_draining => {
                // The hub is stopping: open streams may finish, datagrams have no end to wait for.
                hub_draining = true;
                udp.close_all();
            }
            () = cancel.cancelled() => break "disconnected by the hub".to_owned(),
            () = drain.cancelled(), if draining_since.is_none() => {
                tracing::info!(%edge_id, active = stats.snapshot().active, "replaced by a newer connection; draining");
                draining_since = Some(Instant::now());
                udp.close_all();
            }
            reason = tunnel.closed() => break reason,
            () = holding.shed_requested() => udp.give_back(holding.take_udp_to_shed()),
            accepted = incoming.streams.next() => match accepted {
                Some((stream, _)) if hub_draining => stream.abort(),
                // Also while this session drains: the edge may not have seen its new connection yet.
                Some((stream, open)) => {
                    // Ends with the session, or alone to give its share to another edge.
                    let stop = streams_cancel.child_token();
                    let context = context.clone();
                    let admission = stream_cap.try_admit(&settings.forwarding_budget, &holding, &stop);
                    if let Admission::Refused = admission {
                        crate::limited_warn!(warnings, %edge_id, max = stream_cap.max(), "stream refused: the edge is at its stream cap");
                        stream.abort();
                        continue;
                    }
                    let (stream_cap, holding, warnings) =
                        (stream_cap.clone(), holding.clone(), warnings.clone());
                    tasks.spawn(async move {
                        let permit = match admission {
                            Admission::Now(permit) => Some(permit),
                            // The budget is full: wait for a share from an edge over its own.
                            _ => {
                                let settings = &context.settings;
                                stream_cap
                                    .admit(&settings.forwarding_budget, &settings.holders, &holding, stop.clone())
                                    .await
                            }
                        };
                        let Some(_permit) = permit else {
                            crate::limited_warn!(warnings, edge_id = %context.edge_id, "stream refused: the hub is at its budget and the edge at its fair share");
                            stream.abort();
                            return;
                        };
                        forward::forward(stream, open, context.clone(), stop).await;
                    });
                }
                None => break tunnel.closed().await,
            },
            message = incoming.control.recv() => match message {
                Some(message) if message.frame_type == FrameType::Pong => {
                    last_pong = Instant::now();
                    if message.payload[..] == ping_seq.to_be_bytes() {
                        events.counters().heartbeat_rtt(&edge_id, ping_sent_at.elapsed());
                    }
                }
                Some(message) if message.frame_type == FrameType::Config => {
                    // The edge's word: checked and bounded before the hub keeps or shows it.
                    let report = serde_json::from_slice::<EdgeReport>(&message.payload)
                        .map_err(|e| e.to_string())
                        .and_then(|report| report.checked().map_err(|e| e.to_string()));
                    match report {
                        Ok(report) => {
                            hub.send(Command::EdgeReported {
                                edge_id: edge_id.clone(),
                                session_id,
                                report,
                            })
                            .await;
                        }
                        Err(error) => crate::limited_warn!(warnings, %edge_id, %error, "bad report from edge; ignored"),
                    }
                }
                Some(message) => {
                    crate::limited_warn!(warnings, %edge_id, frame = ?message.frame_type, "unexpected control message from edge; ignored");
                }
                None => break tunnel.closed().await,
            },
            message = incoming.datagrams.recv() => match message {
                Some(_) if hub_draining => {}
                Some(message) => udp.handle_from_edge(message).await,
                None => break tunnel.closed().await,
            },
            _ = heartbeat.tick() => {
                if last_pong.elapsed() > performance.heartbeat_timeout {
                    break format!(
                        "heartbeat timeout: no PONG for {:?}",
                        performance.heartbeat_timeout
                    );
                }
                // The edge's maxStreams may have changed meanwhile.
                tunnel.cap_streams(stream_cap.max());
                ping_seq += 1;
                ping_sent_at = Instant::now();
                if tunnel.send_control(ControlMessage::ping(ping_seq)).is_err() {
                    // Closed, by the peer or because it does not read: the tunnel says why.
                    break tunnel.closed().await;
                }
            }
            _ = summary.tick() => {
                udp.expire();
                if let Some(since) = draining_since {
                    if tunnel.active_streams() > 0 {
                        quiet_since = None;
                    } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= DRAIN_QUIET {
                        break "replaced by a newer connection (drained)".to_owned();
                    }
                    if since.elapsed() > MAX_DRAIN {
                        break "replaced by a newer connection (drain time over)".to_owned();
                    }
                    continue;
                }
                for suppressed in [warnings.take_suppressed(), context.grant.take_suppressed_warnings()].into_iter().flatten() {
                    tracing::warn!(%edge_id, suppressed, "similar warnings about this edge suppressed (rate limit)");
                }
                if !summaries {
                    continue;
                }
                let snapshot = stats.snapshot();
                events.emit(Event::StreamSummary(StreamSummaryEvent {
                    edge_id: edge_id.clone(),
                    active_streams: snapshot.active,
                    streams_opened_total: snapshot.opened_total,
                    streams_closed_total: snapshot.closed_total,
                }));
            }
        }
    };
    streams_cancel.cancel();
    udp.close_all();
    tunnel.close();
    reason
}
