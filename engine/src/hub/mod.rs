//! The hub role: accepts edge tunnels, pushes their configuration and forwards their streams.
//!
//! `Hub` is a cloneable handle to an actor task that owns the allowed-edge registry; callers talk
//! to it through a bounded command queue and get replies on oneshot channels.

use remoteingress_ipc_schema::{HubRole, HubStatus, UpdateAllowedEdgesResult};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{AllowedEdgeSettings, HubSettings};
use crate::events::EventSink;

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    #[error("cannot listen on tunnel port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

enum Command {
    Status(oneshot::Sender<HubStatus>),
    UpdateAllowedEdges(
        Vec<AllowedEdgeSettings>,
        oneshot::Sender<UpdateAllowedEdgesResult>,
    ),
}

/// Handle to a running hub.
#[derive(Clone, Debug)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    done: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Status(_) => "Status",
            Self::UpdateAllowedEdges(..) => "UpdateAllowedEdges",
        })
    }
}

struct HubActor {
    settings: HubSettings,
    allowed: Vec<AllowedEdgeSettings>,
    #[allow(dead_code)] // used by the tunnel listener
    events: EventSink,
}

impl Hub {
    /// Starts a hub with the given settings.
    pub async fn start(settings: HubSettings, events: EventSink) -> Result<Self, HubStartError> {
        let (commands, rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let done = tokio_util::task::TaskTracker::new();
        let actor = HubActor {
            settings,
            allowed: Vec::new(),
            events,
        };
        done.spawn(actor.run(rx, shutdown.clone()));
        done.close();
        Ok(Self {
            commands,
            shutdown,
            done,
        })
    }

    /// Current status.
    pub async fn status(&self) -> Option<HubStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Replaces the allowed-edge list.
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

    /// Stops the hub and waits for its tasks to end.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.done.wait().await;
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
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::UpdateAllowedEdges(edges, reply) => {
                self.allowed = edges;
                let _ = reply.send(UpdateAllowedEdgesResult {
                    edges: u32::try_from(self.allowed.len()).unwrap_or(u32::MAX),
                    pushed: 0,
                    disconnected: 0,
                });
            }
        }
    }

    fn status(&self) -> HubStatus {
        HubStatus {
            role: HubRole::Hub,
            running: true,
            tunnel_port: self.settings.tunnel_port,
            cert_sha256: String::new(),
            target_host: self.settings.target_host.clone(),
            stream_event_mode: self.settings.stream_event_mode,
            allowed_edges: u32::try_from(self.allowed.len()).unwrap_or(u32::MAX),
            connected_edges: Vec::new(),
        }
    }
}
