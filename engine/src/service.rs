//! `Service`: the one role (hub or edge) this process runs, with its start/stop lifecycle.
//!
//! Both front ends use it: the IPC dispatcher and the CLI. It turns a role's failures into
//! [`ServiceError`]s that carry a stable IPC error code.

use remoteingress_ipc_schema::{
    AllowedEdge, ErrorCode, IdleStatus, StartParams, StatusResult, UpdateAllowedEdgesResult,
};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{validate_allowed_edges, EdgeSettings, HubSettings};
use crate::edge::Edge;
use crate::events::EventSink;
use crate::hub::Hub;

/// A failure with the code the IPC layer reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Validated settings of the role about to start.
enum Start {
    Hub(HubSettings),
    Edge(EdgeSettings),
}

use crate::sync::lock;

/// The running role.
#[derive(Debug, Clone)]
enum Role {
    Hub(Hub),
    Edge(Edge),
}

/// Holds at most one running role.
#[derive(Debug)]
pub struct Service {
    role: Mutex<Option<Role>>,
    events: EventSink,
    /// Cancelled to cut a graceful stop short (a second termination signal).
    hurry: CancellationToken,
    /// Held while a stop runs, so that a second `stop` returns only once the role is down.
    stopping: Mutex<()>,
    /// Stops the `/metrics` endpoints of the running role.
    metrics: std::sync::Mutex<Option<CancellationToken>>,
}

impl Service {
    pub fn new(events: EventSink) -> Self {
        Self {
            role: Mutex::new(None),
            events,
            hurry: CancellationToken::new(),
            stopping: Mutex::new(()),
            metrics: std::sync::Mutex::new(None),
        }
    }

    /// Validates the configuration and starts the role; returns its first status.
    pub async fn start(&self, params: StartParams) -> Result<StatusResult, ServiceError> {
        // Held for the whole start so that concurrent starts are ordered: the second one sees
        // the first role and fails with `already_started`.
        let mut slot = self.role.lock().await;
        if let Some(running) = slot.as_ref() {
            let which = match running {
                Role::Hub(_) => "hub",
                Role::Edge(_) => "edge",
            };
            return Err(ServiceError::new(
                ErrorCode::AlreadyStarted,
                format!("the {which} role is already running; call stop first"),
            ));
        }
        let invalid = |e: crate::config::ConfigError| {
            ServiceError::new(ErrorCode::InvalidConfig, e.to_string())
        };
        let (settings_metrics, start) = match params {
            StartParams::Hub(config) => {
                let settings = HubSettings::from_ipc(config, "config").map_err(invalid)?;
                (settings.metrics_addr, Start::Hub(settings))
            }
            StartParams::Edge(config) => {
                let settings = EdgeSettings::from_ipc(config, "config").map_err(invalid)?;
                (settings.metrics_addr, Start::Edge(settings))
            }
        };
        // Bound before the role starts, so a taken address fails the start cleanly.
        let metrics_listener = match settings_metrics {
            Some(addr) => Some(crate::telemetry::server::bind(addr).await.map_err(|e| {
                ServiceError::new(
                    ErrorCode::StartFailed,
                    format!("cannot serve metrics on {addr}: {e}"),
                )
            })?),
            None => None,
        };
        let failed = |e: String| ServiceError::new(ErrorCode::StartFailed, e);
        let role = match start {
            Start::Hub(settings) => Role::Hub(
                Hub::start(settings, self.events.clone())
                    .await
                    .map_err(|e| failed(e.to_string()))?,
            ),
            Start::Edge(settings) => Role::Edge(
                Edge::start(settings, self.events.clone())
                    .await
                    .map_err(|e| failed(e.to_string()))?,
            ),
        };
        if let Some(listener) = metrics_listener {
            let stop = CancellationToken::new();
            let metrics_role = role.clone();
            let source: crate::telemetry::server::StatusSource = Arc::new(move || {
                let role = metrics_role.clone();
                Box::pin(async move { role_status(&role).await })
            });
            tokio::spawn(crate::telemetry::server::serve(
                listener,
                source,
                self.events.clone(),
                stop.clone(),
            ));
            *lock(&self.metrics) = Some(stop);
        }
        let status = role_status(&role).await;
        *slot = Some(role);
        Ok(status)
    }

    /// Stops the running role, if any (idempotent): open streams get the role's grace period
    /// (`shutdownGraceSecs`) unless [`Service::hurry`] is called meanwhile.
    pub async fn stop(&self) {
        let _stopping = self.stopping.lock().await;
        let role = self.role.lock().await.take();
        let metrics = lock(&self.metrics).take();
        match role {
            Some(Role::Hub(hub)) => hub.stop(&self.hurry).await,
            Some(Role::Edge(edge)) => edge.stop(&self.hurry).await,
            None => {}
        }
        // Last: /readyz says "not ready" while the role drains.
        if let Some(metrics) = metrics {
            metrics.cancel();
        }
    }

    /// Ends the grace period of a stop in progress (and of later ones): what is still open is
    /// reset now.
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Status of the running role, or `{"running": false}`.
    pub async fn status(&self) -> StatusResult {
        match self.current().await {
            Some(role) => role_status(&role).await,
            None => idle(),
        }
    }

    /// Replaces the hub's allowed-edge list.
    pub async fn update_allowed_edges(
        &self,
        edges: Vec<AllowedEdge>,
    ) -> Result<UpdateAllowedEdgesResult, ServiceError> {
        let hub = self.hub().await?;
        let edges = validate_allowed_edges(edges, "edges")
            .map_err(|e| ServiceError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        hub.update_allowed_edges(edges).await.ok_or_else(stopped)
    }

    /// The running hub, or the error a hub-only method reports.
    pub async fn hub(&self) -> Result<Hub, ServiceError> {
        match self.current().await {
            Some(Role::Hub(hub)) => Ok(hub),
            Some(Role::Edge(_)) => Err(ServiceError::new(
                ErrorCode::WrongRole,
                "this method is for the hub role; this process runs an edge",
            )),
            None => Err(not_running("hub")),
        }
    }

    async fn current(&self) -> Option<Role> {
        self.role.lock().await.clone()
    }
}

async fn role_status(role: &Role) -> StatusResult {
    match role {
        Role::Hub(hub) => hub.status().await.map(StatusResult::Hub),
        Role::Edge(edge) => edge.status().await.map(StatusResult::Edge),
    }
    .unwrap_or_else(idle)
}

fn idle() -> StatusResult {
    StatusResult::Idle(IdleStatus { running: false })
}

fn not_running(role: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::NotRunning,
        format!("no role is running; start the {role} role first"),
    )
}

fn stopped() -> ServiceError {
    ServiceError::new(
        ErrorCode::NotRunning,
        "the role stopped while handling the request",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use remoteingress_ipc_schema::{AllowedEdge, EdgeConfig, HubConfig};
    use serde_json::json;

    use super::*;

    /// Starts a hub and an edge connected over `transport`, stops both, and returns how many
    /// tasks are still alive then.
    async fn tasks_left_after_stop(transport: &str) -> usize {
        let hub_config: HubConfig = serde_json::from_value(json!({
            "tunnelPort": 0, "tunnelBindAddress": "127.0.0.1", "shutdownGraceSecs": 0,
        }))
        .unwrap();
        let hub = Hub::start(
            HubSettings::from_ipc(hub_config, "config").unwrap(),
            EventSink::discard(),
        )
        .await
        .unwrap();
        let edge_entry: AllowedEdge =
            serde_json::from_value(json!({"id": "e1", "secret": "secret-0123456789"})).unwrap();
        hub.update_allowed_edges(validate_allowed_edges(vec![edge_entry], "edges").unwrap())
            .await
            .unwrap();
        let hub_status = hub.status().await.unwrap();
        let edge_config: EdgeConfig = serde_json::from_value(json!({
            "hubHost": "127.0.0.1", "hubPort": hub_status.tunnel_port, "edgeId": "e1",
            "secret": "secret-0123456789", "hubCertSha256": hub_status.cert_sha256,
            "transportMode": transport, "stunServers": [], "shutdownGraceSecs": 0,
        }))
        .unwrap();
        let edge = Edge::start(
            EdgeSettings::from_ipc(edge_config, "config").unwrap(),
            EventSink::discard(),
        )
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !edge.status().await.is_some_and(|status| status.connected) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the edge never connected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hurry = CancellationToken::new();
        edge.stop(&hurry).await;
        hub.stop(&hurry).await;
        // Ready tasks may run (quinn's drivers notice that their last handle went), but no
        // timer fires: a task that waits for anything but this is still counted.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    /// A stop waits for every task of the role, the tunnels' own tasks included (the TLS mux's
    /// reader and writer, QUIC's control, datagram and stream tasks, UDP reply readers): once
    /// `stop` returns, nothing of the role runs any more. One thread, so no task can end in
    /// parallel after `stop` returned.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stop_waits_for_the_tunnels_tasks() {
        for transport in ["tcpTls", "quic"] {
            assert_eq!(tasks_left_after_stop(transport).await, 0, "{transport}");
        }
    }
}
