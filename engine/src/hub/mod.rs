//! The hub role: accepts edge tunnels, pushes their configuration and forwards their streams.
//!
//! `Hub` is a cloneable handle to an actor task (this module) that owns the allowed-edge list and
//! the registry of connected edges; callers and connection tasks talk to it through a bounded
//! command queue. The tunnel path of one edge is: [`listener`] (TLS accept, handshake deadline,
//! [`auth`]) -> actor (authorise, register) -> [`session`] (control loop, heartbeat) ->
//! [`forward`] (one task per stream: PROXY header, dial target, relay).

pub(crate) mod auth;
pub(crate) mod client_source;
mod edge_record;
pub(crate) mod egress;
pub(crate) mod egress_listeners;
pub(crate) mod forward;
pub(crate) mod grant;
pub(crate) mod listener;
mod liveness;
pub(crate) mod pending;
mod push;
pub(crate) mod session;
mod status;
pub(crate) mod stream_cap;
pub(crate) mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use remoteingress_ipc_schema::{
    EdgeConnectedEvent, EdgeDisconnectedEvent, EdgeDuplicateRefusedEvent, EgressListenerConfig,
    EgressListenerInfo, EgressListenerSource, EgressTcpProxyInfo, EgressTcpProxyRequest, ErrorCode,
    Event, HubStatus, TunnelTransport, UpdateAllowedEdgesResult,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::LoginThrottle;
use self::edge_record::EdgeRecords;
use self::egress::{EgressProxies, ProxyContext};
use self::egress_listeners::{EgressListeners, ListenerSpec, Reconciled, TunnelLookup};
use self::grant::PortGrant;
use self::liveness::{Contest, LivenessProbe, ProbeOutcome};
use self::push::{push_for, warn_v1_on_udp};
use self::stream_cap::StreamCap;
use crate::config::{AllowedEdgeSettings, HubSettings};
use crate::events::EventSink;
use crate::metrics::{StreamStats, UdpStats};
use crate::service::ServiceError;
use crate::shutdown::StopTokens;
use crate::status_fields::{count, unix_ms, wide};
use crate::tls::{HubIdentity, TlsError};
use crate::transport::handshake::{
    DuplicateRefusal, EdgeConfigPush, EdgeHello, EdgeReport, FirewallReport, InstanceId,
};
use crate::transport::login::{self, ChannelBinding, LoginProof};
use crate::transport::quic;
use crate::transport::tunnel::Tunnel;
use crate::wire_name::Wire;

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    #[error("cannot listen on the tunnel port, {address} ({protocol}): {source}")]
    Bind {
        address: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("state directory: {0}")]
    State(#[from] crate::state_dir::StateError),
}

/// The actor's answer to a handshake.
#[derive(Debug)]
pub(crate) enum AuthDecision {
    Accept(Box<Admission>),
    Reject {
        reason: String,
    },
    /// The login was right, but another instance of the edge is connected (reported by the
    /// actor already: the listener only answers).
    Duplicate(Box<DuplicateRefusal>),
}

/// How many of the hub's heartbeat timeouts a refused second instance waits before it tries
/// again. A first instance that died without closing its tunnel is gone from the registry within
/// one heartbeat timeout, so the second takes over after at most this many; fewer would only
/// repeat the refusal (and its WARN line) more often while the first is alive. With the default
/// 10 s timeout: 30 s, the edge's longest backoff step.
const DUPLICATE_RETRY_HEARTBEAT_TIMEOUTS: u32 = 3;

/// What an authenticated connection needs to run its session.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) session_id: u64,
    pub(crate) push: EdgeConfigPush,
    /// The hub's half of the mutual login, sent with the configuration.
    pub(crate) hub_proof: LoginProof,
    /// The ports this edge may be forwarded to, kept current by the actor.
    pub(crate) grant: Arc<PortGrant>,
    /// How many streams the hub forwards for this edge at once, kept current by the actor.
    pub(crate) stream_cap: Arc<StreamCap>,
    /// Cancelled when the session must end at once (edge removed, secret changed).
    pub(crate) cancel: CancellationToken,
    /// Cancelled when a newer connection of the same edge replaced this one: the session ends
    /// once no stream has been open on it for a few seconds (a `quicWithFallback` edge moving
    /// from TLS to QUIC keeps its old connections, and streams it opens in the instant of the
    /// move are still forwarded).
    pub(crate) drain: CancellationToken,
    pub(crate) stats: Arc<StreamStats>,
    pub(crate) udp_stats: Arc<UdpStats>,
    /// Held by the login and then by its session: the registry's `Weak` of it tells an entry
    /// whose login was dropped before its session started (handshake deadline, eviction), which
    /// sends no `SessionEnded`.
    pub(crate) claim: Arc<()>,
}

/// The actor's answer to one look at a login: decided, or first ask whether the connected
/// instance of the edge is still there ([`liveness`]), then look again.
#[derive(Debug)]
pub(crate) enum ActorAnswer {
    Decided(AuthDecision),
    Probe(Box<LivenessProbe>),
}

pub(crate) enum Command {
    Status(oneshot::Sender<HubStatus>),
    UpdateAllowedEdges(
        Vec<AllowedEdgeSettings>,
        oneshot::Sender<UpdateAllowedEdgesResult>,
    ),
    Authenticate {
        hello: EdgeHello,
        binding: ChannelBinding,
        remote: SocketAddr,
        /// What a liveness probe found, on the second look at a contested login.
        probed: Option<ProbeOutcome>,
        reply: oneshot::Sender<ActorAnswer>,
    },
    SessionReady {
        edge_id: String,
        session_id: u64,
        transport: TunnelTransport,
        tunnel: Tunnel,
    },
    SessionEnded {
        edge_id: String,
        session_id: u64,
        reason: String,
    },
    /// The tunnel of a connected edge, for egress.
    EdgeTunnel {
        edge_id: String,
        reply: oneshot::Sender<Option<(Tunnel, TunnelTransport)>>,
    },
    /// The edge reported facts about itself (its public IP).
    EdgeReported {
        edge_id: String,
        session_id: u64,
        report: EdgeReport,
    },
}

/// Handle to a running hub.
#[derive(Clone, Debug)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    stop: StopTokens,
    tasks: TaskTracker,
    settings: Arc<HubSettings>,
    egress: Arc<EgressProxies>,
    egress_listeners: Arc<EgressListeners>,
    events: EventSink,
}

/// A connected (or connecting) edge as the registry knows it.
struct ConnectedEdge {
    session_id: u64,
    remote: SocketAddr,
    /// The edge process holding this tunnel; `None` from an edge older than instance ids.
    instance: Option<InstanceId>,
    cancel: CancellationToken,
    drain: CancellationToken,
    stats: Arc<StreamStats>,
    udp_stats: Arc<UdpStats>,
    grant: Arc<PortGrant>,
    stream_cap: Arc<StreamCap>,
    public_ip: Option<String>,
    /// Set once the session runs; `None` between authentication and the first frame.
    tunnel: Option<(Tunnel, TunnelTransport)>,
    connected_at_ms: u64,
    /// The configuration the edge has now (handshake or last CONFIG).
    pushed: EdgeConfigPush,
    /// The edge's last firewall report.
    firewall: Option<FirewallReport>,
    /// Assigned ports the edge reported it could not bind.
    port_bind_failures: Vec<remoteingress_ipc_schema::PortBindFailure>,
    /// Gone once the login and its session are (see [`Admission::claim`]).
    claim: std::sync::Weak<()>,
}

struct HubActor {
    settings: Arc<HubSettings>,
    tunnel_port: u16,
    fingerprint: String,
    allowed: HashMap<String, AllowedEdgeSettings>,
    /// What outlives each allowed edge's tunnels (counters, grant, last error).
    records: EdgeRecords,
    connected: HashMap<String, ConnectedEdge>,
    next_session_id: u64,
    events: EventSink,
    /// HMAC key checked for unknown edge ids, so that they cost the same as a wrong secret.
    decoy_key: [u8; 32],
    /// Shared with the listener; read for status.
    throttle: Arc<Mutex<LoginThrottle>>,
    /// Egress proxies, for the open egress streams in status.
    egress: Arc<EgressProxies>,
    /// Persistent egress listeners, for status.
    egress_listeners: Arc<EgressListeners>,
    /// Rate of the WARN lines about refused second instances.
    duplicate_warnings: crate::log_limit::SharedLogLimiter,
    /// This hub process (in status and in every push).
    instance: InstanceId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Status(_) => "Status",
            Self::UpdateAllowedEdges(..) => "UpdateAllowedEdges",
            Self::Authenticate { .. } => "Authenticate",
            Self::SessionReady { .. } => "SessionReady",
            Self::SessionEnded { .. } => "SessionEnded",
            Self::EdgeReported { .. } => "EdgeReported",
            Self::EdgeTunnel { .. } => "EdgeTunnel",
        })
    }
}

impl Hub {
    /// Binds the tunnel port and starts the hub.
    pub async fn start(settings: HubSettings, events: EventSink) -> Result<Self, HubStartError> {
        let identity = match (&settings.tls, &settings.state_dir) {
            (Some(tls), _) => HubIdentity::from_pem(&tls.cert_pem, tls.key_pem.expose())?,
            (None, Some(dir)) => crate::state_dir::load_or_create(dir)?,
            (None, None) => {
                tracing::warn!(
                    "no stateDir: this hub's certificate lasts until it stops, and edges that \
                     pin it are locked out after a restart"
                );
                HubIdentity::self_signed()?
            }
        };
        let server_config = identity.server_config()?;
        let settings = Arc::new(settings);
        let tcp = listener::bind(settings.tunnel_bind, settings.tunnel_port).await?;
        let tunnel_port = tcp
            .local_addr()
            .map(|addr| addr.port())
            .unwrap_or(settings.tunnel_port);

        let throttle = Arc::new(Mutex::new(LoginThrottle::new(settings.max_pending_logins)));
        let (commands, rx) = mpsc::channel(256);
        let stop = StopTokens::new();
        let tasks = TaskTracker::new();
        let egress = Arc::new(EgressProxies::default());
        let egress_listeners = Arc::new(EgressListeners::default());
        let hub = Self {
            commands,
            stop: stop.clone(),
            tasks: tasks.clone(),
            settings: settings.clone(),
            egress: egress.clone(),
            egress_listeners: egress_listeners.clone(),
            events: events.clone(),
        };
        let actor = HubActor {
            settings: settings.clone(),
            tunnel_port,
            fingerprint: identity.fingerprint.clone(),
            allowed: HashMap::new(),
            records: EdgeRecords::default(),
            connected: HashMap::new(),
            next_session_id: 1,
            events: events.clone(),
            decoy_key: rand::random(),
            throttle: throttle.clone(),
            egress,
            egress_listeners,
            duplicate_warnings: crate::log_limit::SharedLogLimiter::default(),
            instance: InstanceId::random(),
        };
        tasks.spawn(actor.run(rx, stop.shutdown.clone()));
        let context = Arc::new(listener::ListenerContext {
            tls: tokio_rustls::TlsAcceptor::from(server_config.clone()),
            hub: hub.clone(),
            settings: settings.clone(),
            events,
            stop,
            tasks: tasks.clone(),
            throttle,
            refusal_warnings: Default::default(),
            failure_warnings: Default::default(),
        });
        tasks.spawn(listener::run_tcp(context.clone(), tcp));
        // QUIC shares the port number; without it the hub still serves TLS (and says so).
        let reset_key = identity.quic_reset_key();
        match quic::server_endpoint(
            settings.tunnel_bind,
            tunnel_port,
            server_config,
            &settings.performance,
            &reset_key,
        ) {
            Ok(endpoint) => {
                tasks.spawn(listener::run_quic(context, endpoint));
            }
            Err(error) => {
                let address = listener::tunnel_address(settings.tunnel_bind, tunnel_port);
                tracing::warn!(%error, %address, "QUIC unavailable on the tunnel port; serving TLS only");
            }
        }
        tracing::info!(tunnel_port, fingerprint = %identity.fingerprint, "hub listening");
        Ok(hub)
    }

    /// Current status.
    pub async fn status(&self) -> Option<HubStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Replaces the allowed-edge list: new edges may connect, removed ones and ones whose
    /// secret changed are disconnected, connected ones with changed ports/firewall get a CONFIG.
    pub async fn update_allowed_edges(
        &self,
        edges: Vec<AllowedEdgeSettings>,
    ) -> Option<UpdateAllowedEdgesResult> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::UpdateAllowedEdges(edges, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Stops accepting edges and streams, lets open streams finish within the grace period (or
    /// until `hurry`), resets the rest, closes every tunnel and waits for all tasks (bounded).
    pub async fn stop(&self, hurry: &CancellationToken) {
        let settings = &self.settings;
        crate::shutdown::stop(
            "hub",
            &self.stop,
            &self.tasks,
            settings.shutdown_grace,
            hurry,
            || wide(settings.forwarded_streams()),
        )
        .await;
    }

    /// `startEgressTcpProxy`: a one-shot local proxy through `request.edgeId`, which must be
    /// connected over QUIC (over TLS egress fails closed: the hub never dials in its place).
    pub async fn start_egress_proxy(
        &self,
        request: EgressTcpProxyRequest,
    ) -> Result<EgressTcpProxyInfo, ServiceError> {
        let tunnel = self.egress_tunnel(request.edge_id.clone()).await?;
        egress::start(self.egress_context(), tunnel, request).await
    }

    /// `stopEgressTcpProxy`.
    pub fn stop_egress_proxy(&self, proxy_id: &str) -> Result<(), ServiceError> {
        self.egress.stop(proxy_id)
    }

    /// `startEgressTcpListener`: a persistent listener (the edge need not be connected yet:
    /// each connection is refused at once while it is not).
    pub async fn start_egress_listener(
        &self,
        config: EgressListenerConfig,
    ) -> Result<EgressListenerInfo, ServiceError> {
        let spec = ListenerSpec::from_ipc(config, "params", true)
            .map_err(|e| ServiceError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        let (context, lookup) = (self.egress_context(), self.tunnel_lookup());
        self.egress_listeners
            .start(
                &self.listener_start(&context, &lookup),
                spec,
                EgressListenerSource::Ipc,
            )
            .await
    }

    /// `stopEgressTcpListener`: closes the listener; its open connections finish.
    pub async fn stop_egress_listener(&self, listener_id: &str) -> Result<(), ServiceError> {
        self.egress_listeners.stop(listener_id).await
    }

    /// The `[[egress]]` entries of the config file, at start and at each SIGHUP: opens what is
    /// new or changed, closes what is gone or changed.
    pub(crate) async fn reconcile_egress_listeners(&self, specs: Vec<ListenerSpec>) -> Reconciled {
        let (context, lookup) = (self.egress_context(), self.tunnel_lookup());
        self.egress_listeners
            .reconcile(&self.listener_start(&context, &lookup), specs)
            .await
    }

    fn listener_start<'a>(
        &'a self,
        context: &'a ProxyContext,
        lookup: &'a TunnelLookup,
    ) -> egress_listeners::Start<'a> {
        egress_listeners::Start {
            context,
            lookup,
            draining: &self.stop.draining,
        }
    }

    fn egress_context(&self) -> ProxyContext {
        ProxyContext {
            proxies: self.egress.clone(),
            events: self.events.clone(),
            tasks: self.tasks.clone(),
            shutdown: self.stop.shutdown.clone(),
        }
    }

    fn tunnel_lookup(&self) -> TunnelLookup {
        let hub = self.clone();
        Arc::new(move |edge_id| {
            let hub = hub.clone();
            Box::pin(async move { hub.egress_tunnel(edge_id).await })
        })
    }

    /// The QUIC tunnel of a connected edge, for egress; over TLS egress fails closed.
    async fn egress_tunnel(&self, edge_id: String) -> Result<Tunnel, ServiceError> {
        let (reply, rx) = oneshot::channel();
        let asked = self
            .send(Command::EdgeTunnel {
                edge_id: edge_id.clone(),
                reply,
            })
            .await;
        let tunnel = if asked { rx.await.ok().flatten() } else { None };
        match tunnel {
            None => Err(ServiceError::new(
                ErrorCode::EdgeNotConnected,
                format!("edge {edge_id:?} is not connected"),
            )),
            Some((_, TunnelTransport::TcpTls)) => Err(ServiceError::new(
                ErrorCode::EgressNeedsQuic,
                format!("edge {edge_id:?} is connected over TLS; egress needs its QUIC tunnel"),
            )),
            Some((tunnel, TunnelTransport::Quic)) => Ok(tunnel),
        }
    }

    pub(crate) async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Asks the actor to authenticate a hello sent over the channel with `binding`.
    /// `proven` runs when the proof was right but the answer waits for a liveness probe of the
    /// edge's connected instance (the login then never makes way for a pending one).
    pub(crate) async fn authenticate(
        &self,
        hello: EdgeHello,
        binding: ChannelBinding,
        remote: SocketAddr,
        proven: impl FnOnce(),
    ) -> AuthDecision {
        let mut proven = Some(proven);
        let stopping = || AuthDecision::Reject {
            reason: "hub is stopping".to_owned(),
        };
        let mut probed = None;
        loop {
            let (reply, rx) = oneshot::channel();
            let command = Command::Authenticate {
                hello: hello.clone(),
                binding,
                remote,
                probed,
                reply,
            };
            if !self.send(command).await {
                return stopping();
            }
            match rx.await {
                Ok(ActorAnswer::Decided(decision)) => return decision,
                // At most once: the second look decides.
                Ok(ActorAnswer::Probe(probe)) if probed.is_none() => {
                    if let Some(proven) = proven.take() {
                        proven();
                    }
                    probed = Some(probe.run().await);
                }
                Ok(ActorAnswer::Probe(_)) | Err(_) => return stopping(),
            }
        }
    }
}

impl HubActor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
            }
        }
        for (edge_id, edge) in self.connected.drain() {
            edge.cancel.cancel();
            if edge.tunnel.is_some() {
                self.events
                    .emit(Event::EdgeDisconnected(EdgeDisconnectedEvent {
                        edge_id,
                        reason: "hub stopped".to_owned(),
                    }));
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::UpdateAllowedEdges(edges, reply) => {
                let _ = reply.send(self.update_allowed(edges));
            }
            Command::Authenticate {
                hello,
                binding,
                remote,
                probed,
                reply,
            } => {
                let _ = reply.send(self.authenticate(hello, &binding, remote, probed));
            }
            Command::SessionReady {
                edge_id,
                session_id,
                transport,
                tunnel,
            } => self.session_ready(edge_id, session_id, transport, tunnel),
            Command::SessionEnded {
                edge_id,
                session_id,
                reason,
            } => self.session_ended(&edge_id, session_id, reason),
            Command::EdgeTunnel { edge_id, reply } => {
                let tunnel = self
                    .connected
                    .get(&edge_id)
                    .and_then(|edge| edge.tunnel.clone());
                let _ = reply.send(tunnel);
            }
            Command::EdgeReported {
                edge_id,
                session_id,
                report,
            } => {
                if let Some(edge) = self.connected.get_mut(&edge_id) {
                    if edge.session_id == session_id {
                        if report.public_ip.is_some() {
                            edge.public_ip = report.public_ip;
                        }
                        if report.firewall.is_some() {
                            edge.firewall = report.firewall;
                        }
                        if let Some(failures) = report.port_bind_failures {
                            edge.port_bind_failures = failures;
                        }
                    }
                }
            }
        }
    }

    fn authenticate(
        &mut self,
        hello: EdgeHello,
        binding: &ChannelBinding,
        remote: SocketAddr,
        probed: Option<ProbeOutcome>,
    ) -> ActorAnswer {
        let allowed = self.allowed.get(&hello.edge_id);
        // Unknown ids are checked against a decoy key: the same work as a wrong secret.
        let key = allowed.map_or(&self.decoy_key[..], |a| a.secret.expose().as_bytes());
        let valid = login::verify_edge_proof(key, binding, &hello.edge_id, &hello.proof);
        let allowed = match allowed {
            None => {
                return ActorAnswer::Decided(AuthDecision::Reject {
                    reason: "unknown edge id".to_owned(),
                })
            }
            Some(_) if !valid => {
                let reason = "wrong secret (login proof does not match)";
                if let Some(record) = self.records.get_mut(&hello.edge_id) {
                    record.failed(format!("login refused: {reason}"));
                }
                return ActorAnswer::Decided(AuthDecision::Reject {
                    reason: reason.to_owned(),
                });
            }
            Some(allowed) => allowed,
        };
        let Some(record) = self.records.get(&hello.edge_id) else {
            // Records follow the allowed list in the same actor step: not reached.
            return ActorAnswer::Decided(AuthDecision::Reject {
                reason: "edge not registered".to_owned(),
            });
        };
        let hub_proof = login::hub_proof(&allowed.secret, binding, &hello.edge_id);
        if let Some(connected) = self.connected.get(&hello.edge_id) {
            let heartbeat_timeout = self.settings.performance.heartbeat_timeout;
            let contested = duplicate(
                connected.instance.as_ref(),
                hello.instance.as_ref(),
                heartbeat_timeout,
            );
            let verdict = contested.map(|_| {
                liveness::contest(
                    connected.session_id,
                    connected.claim.strong_count() == 0,
                    connected.tunnel.is_some(),
                    probed,
                )
            });
            if let (Some(Contest::Probe), Some((tunnel, _))) = (verdict, &connected.tunnel) {
                // Another instance: is the connected one still there? Asked outside the actor.
                return ActorAnswer::Probe(Box::new(LivenessProbe {
                    session_id: connected.session_id,
                    tunnel: tunnel.clone(),
                    deadline: liveness::PROBE_DEADLINE.min(heartbeat_timeout),
                }));
            }
            if verdict == Some(Contest::Replace) {
                tracing::warn!(
                    edge_id = %hello.edge_id,
                    connected = %connected.remote,
                    new = %remote,
                    "the connected process of this edge is gone (no answer to a PING, or its login \
                     never finished); the new one replaces it"
                );
            }
            if let (Some(refusal), Some(Contest::Refuse)) = (contested, verdict) {
                let connected_addr = connected.remote;
                // Once a second at most: whoever has the secret may log in as often as the
                // login limits let them (the event and the counter record every refusal).
                crate::limited_warn!(
                    self.duplicate_warnings,
                    edge_id = %hello.edge_id,
                    connected = %connected_addr,
                    refused = %remote,
                    "edge login refused: another process with this edge id is connected; two \
                     machines share one edge id (give each its own)"
                );
                // In the edge's status (and `remoteingress-bin status`) too, beside its tunnel.
                if let Some(record) = self.records.get_mut(&hello.edge_id) {
                    record.failed(format!(
                        "login refused: a second process with this edge id connected from \
                         {remote} while the one from {connected_addr} holds the tunnel"
                    ));
                }
                self.events
                    .emit(Event::EdgeDuplicateRefused(EdgeDuplicateRefusedEvent {
                        edge_id: hello.edge_id.clone(),
                        connected_addr: connected_addr.to_string(),
                        refused_addr: remote.to_string(),
                        retry_after_secs: refusal,
                    }));
                return ActorAnswer::Decided(AuthDecision::Duplicate(Box::new(
                    DuplicateRefusal::new(&hub_proof, connected_addr.to_string(), refusal),
                )));
            }
        }
        let push = push_for(allowed, &self.settings, &self.instance);
        let previous = self.connected.remove(&hello.edge_id);
        // The edge's tunnels share its grant, stream cap and counters (its record), so a later
        // port change applies to all at once and a reconnect keeps the counts. A replaced
        // connection still forwards until the edge has moved to the new one (see
        // `session::DRAIN_QUIET`) and shares the cancel token too: a removal or secret change
        // ends both.
        let (grant, stream_cap, stats, udp_stats) = (
            record.grant.clone(),
            record.stream_cap.clone(),
            record.stats.clone(),
            record.udp_stats.clone(),
        );
        grant
            .sources()
            .set_local_clients(local_clients(allowed, remote));
        let cancel = previous
            .as_ref()
            .map_or_else(CancellationToken::new, |previous| previous.cancel.clone());
        if let Some(previous) = previous {
            previous.drain.cancel();
            if previous.tunnel.is_some() {
                self.events
                    .emit(Event::EdgeDisconnected(EdgeDisconnectedEvent {
                        edge_id: hello.edge_id.clone(),
                        reason: format!("replaced by a new connection from {remote}"),
                    }));
            }
        }
        let session_id = self.next_session_id;
        self.next_session_id += 1;
        let drain = CancellationToken::new();
        let claim = Arc::new(());
        self.connected.insert(
            hello.edge_id,
            ConnectedEdge {
                session_id,
                remote,
                instance: hello.instance,
                cancel: cancel.clone(),
                drain: drain.clone(),
                stats: stats.clone(),
                udp_stats: udp_stats.clone(),
                grant: grant.clone(),
                stream_cap: stream_cap.clone(),
                public_ip: None,
                tunnel: None,
                connected_at_ms: unix_ms(),
                pushed: push.clone(),
                firewall: None,
                port_bind_failures: Vec::new(),
                claim: Arc::downgrade(&claim),
            },
        );
        ActorAnswer::Decided(AuthDecision::Accept(Box::new(Admission {
            session_id,
            push,
            hub_proof,
            grant,
            stream_cap,
            cancel,
            drain,
            stats,
            udp_stats,
            claim,
        })))
    }

    fn session_ready(
        &mut self,
        edge_id: String,
        session_id: u64,
        transport: TunnelTransport,
        tunnel: Tunnel,
    ) {
        let Some(edge) = self.connected.get_mut(&edge_id) else {
            tunnel.close();
            return;
        };
        if edge.session_id != session_id {
            tunnel.close();
            return;
        }
        // The allowed list may have changed between the handshake and now.
        if let Some(allowed) = self.allowed.get(&edge_id) {
            let current = push_for(allowed, &self.settings, &self.instance);
            if current != edge.pushed {
                if let Err(error) = tunnel.push_config(&current) {
                    tracing::warn!(%edge_id, %error, "cannot push config");
                }
                edge.pushed = current;
            }
        }
        let remote = edge.remote;
        edge.tunnel = Some((tunnel, transport));
        if let Some(record) = self.records.get_mut(&edge_id) {
            record.tunnel_up();
        }
        tracing::info!(%edge_id, %remote, transport = %Wire(&transport), "edge connected");
        self.events.emit(Event::EdgeConnected(EdgeConnectedEvent {
            edge_id,
            transport,
            remote_addr: remote.to_string(),
        }));
    }

    fn session_ended(&mut self, edge_id: &str, session_id: u64, reason: String) {
        let Some(edge) = self.connected.get(edge_id) else {
            return;
        };
        if edge.session_id != session_id {
            return;
        }
        let was_ready = edge.tunnel.is_some();
        self.connected.remove(edge_id);
        tracing::info!(%edge_id, %reason, "edge disconnected");
        if let Some(record) = self.records.get_mut(edge_id) {
            record.failed(format!("tunnel ended: {reason}"));
        }
        if was_ready {
            self.events
                .emit(Event::EdgeDisconnected(EdgeDisconnectedEvent {
                    edge_id: edge_id.to_owned(),
                    reason,
                }));
        }
    }

    fn update_allowed(&mut self, edges: Vec<AllowedEdgeSettings>) -> UpdateAllowedEdgesResult {
        let new: HashMap<String, AllowedEdgeSettings> = edges
            .into_iter()
            .map(|edge| (edge.id.clone(), edge))
            .collect();
        let mut pushed = 0u32;
        let mut disconnected = 0u32;
        let mut to_disconnect = Vec::new();
        // Before any push: a removed port is refused from now on.
        self.records.sync(&new);
        let counters = self.events.counters();
        for edge_id in self.allowed.keys().filter(|id| !new.contains_key(*id)) {
            counters.edge_removed(edge_id);
        }
        for edge_id in new.keys().filter(|id| !self.allowed.contains_key(*id)) {
            counters.edge_allowed(edge_id);
        }
        for (edge_id, edge) in &mut self.connected {
            let old_secret = self.allowed.get(edge_id).map(|a| a.secret.clone());
            match new.get(edge_id) {
                None => to_disconnect.push((edge_id.clone(), "edge removed from the allowed list")),
                Some(allowed) if Some(&allowed.secret) != old_secret.as_ref() => {
                    to_disconnect.push((edge_id.clone(), "edge secret changed"));
                }
                Some(allowed) => {
                    edge.grant
                        .sources()
                        .set_local_clients(local_clients(allowed, edge.remote));
                    let push = push_for(allowed, &self.settings, &self.instance);
                    if push != edge.pushed {
                        if let Some((tunnel, _)) = &edge.tunnel {
                            match tunnel.push_config(&push) {
                                Ok(()) => pushed += 1,
                                Err(error) => {
                                    tracing::warn!(%edge_id, %error, "cannot push config")
                                }
                            }
                            edge.pushed = push;
                        }
                        // Not yet ready: session_ready compares and pushes.
                    }
                }
            }
        }
        for (edge_id, reason) in to_disconnect {
            if let Some(edge) = self.connected.remove(&edge_id) {
                edge.cancel.cancel();
                disconnected += 1;
                if edge.tunnel.is_some() {
                    self.events
                        .emit(Event::EdgeDisconnected(EdgeDisconnectedEvent {
                            edge_id,
                            reason: reason.to_owned(),
                        }));
                }
            }
        }
        warn_v1_on_udp(new.values(), self.settings.proxy_protocol);
        self.allowed = new;
        UpdateAllowedEdgesResult {
            edges: count(self.allowed.len()),
            pushed,
            disconnected,
        }
    }
}

/// `Some(retry_after_secs)` when a login from instance `new` must be refused because instance
/// `connected` holds the edge's tunnel: another process, so keep the connected tunnel. The same
/// instance logging in again is a reconnect (its old tunnel may be dead without the hub knowing
/// yet) and replaces its tunnel; an edge without an instance id (older than them) cannot be told
/// apart and replaces as before.
fn duplicate(
    connected: Option<&InstanceId>,
    new: Option<&InstanceId>,
    heartbeat_timeout: std::time::Duration,
) -> Option<u32> {
    let (Some(current), Some(new)) = (connected, new) else {
        return None;
    };
    if current == new {
        return None;
    }
    let timeout = u32::try_from(heartbeat_timeout.as_secs()).unwrap_or(u32::MAX);
    Some(
        timeout
            .saturating_mul(DUPLICATE_RETRY_HEARTBEAT_TIMEOUTS)
            .max(1),
    )
}

/// Whether an edge's loopback and own-address clients are believed: `privateClients`, or its
/// tunnel comes from loopback (see [`client_source`]).
fn local_clients(allowed: &AllowedEdgeSettings, remote: SocketAddr) -> bool {
    allowed.private_clients || remote.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_another_instance_is_a_duplicate() {
        let (a, b) = (InstanceId::random(), InstanceId::random());
        let timeout = Duration::from_secs(10);
        assert_eq!(duplicate(Some(&a), Some(&b), timeout), Some(30));
        // A reconnect of the same process replaces its tunnel.
        assert_eq!(duplicate(Some(&a), Some(&a.clone()), timeout), None);
        // An edge older than instance ids, on either side: replaced as before.
        assert_eq!(duplicate(None, Some(&b), timeout), None);
        assert_eq!(duplicate(Some(&a), None, timeout), None);
        assert_eq!(duplicate(None, None, timeout), None);
        // The pause follows the heartbeat timeout, never 0.
        assert_eq!(
            duplicate(Some(&a), Some(&b), Duration::from_secs(3)),
            Some(9)
        );
        assert_eq!(duplicate(Some(&a), Some(&b), Duration::ZERO), Some(1));
    }
}
