//! The edge role: connects to the hub, listens on the public ports the hub assigns and tunnels
//! every client connection.
//!
//! `Edge` is a cloneable handle to an actor task that owns the edge's state.

use remoteingress_ipc_schema::{EdgeRole, EdgeStatus};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::EdgeSettings;
use crate::events::EventSink;

enum Command {
    Status(oneshot::Sender<EdgeStatus>),
}

/// Handle to a running edge.
#[derive(Clone, Debug)]
pub struct Edge {
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    done: tokio_util::task::TaskTracker,
}

struct EdgeActor {
    settings: EdgeSettings,
    #[allow(dead_code)] // used by the tunnel connector
    events: EventSink,
}

impl Edge {
    /// Starts an edge with the given settings.
    pub async fn start(settings: EdgeSettings, events: EventSink) -> Self {
        let (commands, rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let done = tokio_util::task::TaskTracker::new();
        done.spawn(EdgeActor { settings, events }.run(rx, shutdown.clone()));
        done.close();
        Self {
            commands,
            shutdown,
            done,
        }
    }

    /// Current status.
    pub async fn status(&self) -> Option<EdgeStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the edge and waits for its tasks to end.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.done.wait().await;
    }
}

impl EdgeActor {
    async fn run(self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                    None => break,
                },
            }
        }
    }

    fn status(&self) -> EdgeStatus {
        EdgeStatus {
            role: EdgeRole::Edge,
            running: true,
            edge_id: self.settings.edge_id.clone(),
            hub: format!("{}:{}", self.settings.hub_host, self.settings.hub_port),
            transport_mode: self.settings.transport_mode,
            connected: false,
            transport: None,
            hub_verified: false,
            public_ip: None,
            active_streams: 0,
            listen_ports: Vec::new(),
            listen_ports_udp: Vec::new(),
            port_bind_failures: Vec::new(),
            reconnect_attempts: 0,
            last_error: None,
        }
    }
}
