//! The edge's firewall task: applies each snapshot the hub pushes, reports the outcome (event,
//! status, and a report to the hub), and deletes the table when the edge stops.
//!
//! Snapshots arrive through a `watch` channel, so a burst of pushes collapses into the latest
//! one. Kernel transactions are blocking netlink calls and run on the blocking pool.
//!
//! While the tunnel is down the last rules stay in force: the edge keeps its public listeners
//! then too, and an attacker should not get a window by cutting the edge's uplink. The table is
//! deleted only when the edge stops (`stop`, SIGTERM/SIGINT, stdin EOF), which is also the
//! only way it loses its tunnel for good (it reconnects otherwise).

use std::sync::Arc;
use std::time::Instant;

use remoteingress_ipc_schema::{
    EdgeFirewallStatus, Event, FirewallConfig, FirewallConfigUpdatedEvent, FirewallState,
    FirewallUnavailableEvent,
};
use tokio::sync::watch;

use super::EdgeShared;
use crate::firewall::netlink::{Applier, FirewallError};
use crate::firewall::{digest, ruleset, snapshot};
use crate::hub::{count, unix_ms};
use crate::transport::handshake::FirewallReport;

/// What the hub asked for last: `None` until the first configuration arrives.
pub(crate) type Desired = Option<Option<FirewallConfig>>;

/// Edge-side firewall state shown in status and reported to the hub.
#[derive(Debug, Clone)]
pub(crate) struct FirewallView {
    pub(crate) status: EdgeFirewallStatus,
    /// Digest of the last snapshot handled (applied, refused, or found unavailable).
    pub(crate) digest: Option<String>,
}

impl Default for FirewallView {
    fn default() -> Self {
        Self {
            status: EdgeFirewallStatus {
                state: FirewallState::None,
                error: None,
                rule_count: 0,
                set_count: 0,
                blocked_ranges: 0,
                duration_ms: None,
                applied_at_ms: None,
            },
            digest: None,
        }
    }
}

impl FirewallView {
    /// The report for the hub, once there is something to report.
    pub(crate) fn report(&self) -> Option<FirewallReport> {
        Some(FirewallReport {
            digest: self.digest.clone()?,
            state: self.status.state,
            error: self.status.error.clone(),
        })
    }
}

/// Runs until the edge stops; then removes the table if this task created it.
pub(crate) async fn run(shared: Arc<EdgeShared>, mut desired: watch::Receiver<Desired>) {
    let mut applier: Option<Applier> = None;
    let mut applied_digest: Option<String> = None;
    loop {
        tokio::select! {
            () = shared.stop.shutdown.cancelled() => break,
            changed = desired.changed() => if changed.is_err() { break },
        }
        let Some(config) = desired.borrow_and_update().clone() else {
            continue;
        };
        let wanted = digest(config.as_ref());
        if applied_digest.as_deref() == Some(wanted.as_str()) {
            // Same snapshot again (a reconnect or a QUIC upgrade): nothing to do but report.
            super::session::report_to_hub(&shared);
            continue;
        }
        applier = handle(&shared, applier, config, &wanted).await;
        let state = shared.state().firewall.status.state;
        // A refused or unavailable snapshot is tried again when the hub pushes it again.
        applied_digest =
            matches!(state, FirewallState::Applied | FirewallState::None).then_some(wanted);
        super::session::report_to_hub(&shared);
    }
    if let Some(mut applier) = applier {
        let outcome = tokio::task::spawn_blocking(move || applier.remove()).await;
        match outcome {
            Ok(Ok(())) => tracing::info!("firewall table removed"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot remove the firewall table"),
            Err(error) => tracing::warn!(%error, "firewall removal task failed"),
        }
    }
}

/// Validates and applies one snapshot; returns the applier to keep (if the kernel took ours).
async fn handle(
    shared: &Arc<EdgeShared>,
    applier: Option<Applier>,
    config: Option<FirewallConfig>,
    wanted: &str,
) -> Option<Applier> {
    let Some(config) = config else {
        // No snapshot configured: no table.
        let kept = match applier {
            Some(mut applier) => {
                match tokio::task::spawn_blocking(move || applier.remove().map(|()| applier)).await
                {
                    Ok(Ok(applier)) => Some(applier),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot remove the firewall table");
                        None
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        set_view(shared, wanted, FirewallView::default().status);
        return kept;
    };
    let validated = match snapshot::validate(&config, "firewallConfig") {
        Ok(validated) => validated,
        Err(error) => {
            tracing::warn!(%error, "firewall snapshot from the hub refused; previous rules stay");
            failed(shared, wanted, FirewallState::Failed, error.to_string());
            return applier;
        }
    };
    let rules = ruleset::translate(&validated);
    let counts = (
        count(rules.rule_count()),
        count(rules.set_count()),
        rules.blocked_ranges() as u64,
    );
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut applier = match applier {
            Some(applier) => applier,
            None => match Applier::open() {
                Ok(applier) => applier,
                Err(error) => return (None, Err(error)),
            },
        };
        let result = applier.apply(&rules);
        (Some(applier), result)
    })
    .await;
    let (applier, result) = match outcome {
        Ok(pair) => pair,
        Err(error) => (
            None,
            Err(FirewallError::Rejected(format!(
                "apply task failed: {error}"
            ))),
        ),
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => {
            tracing::info!(
                rules = counts.0,
                sets = counts.1,
                blocked_ranges = counts.2,
                duration_ms,
                "firewall snapshot applied"
            );
            set_view(
                shared,
                wanted,
                EdgeFirewallStatus {
                    state: FirewallState::Applied,
                    error: None,
                    rule_count: counts.0,
                    set_count: counts.1,
                    blocked_ranges: counts.2,
                    duration_ms: Some(duration_ms),
                    applied_at_ms: Some(unix_ms()),
                },
            );
            shared
                .events
                .emit(Event::FirewallConfigUpdated(FirewallConfigUpdatedEvent {
                    rules: config,
                    rule_count: counts.0,
                    set_count: counts.1,
                    blocked_ranges: counts.2,
                    duration_ms,
                }));
            applier
        }
        Err(FirewallError::Unavailable(error)) => {
            tracing::warn!(%error, "firewall unavailable; tunnelling continues without it");
            failed(shared, wanted, FirewallState::Unavailable, error.clone());
            shared
                .events
                .emit(Event::FirewallUnavailable(FirewallUnavailableEvent {
                    error,
                }));
            // Keep no socket: the next snapshot tries afresh (capabilities may have changed).
            None
        }
        Err(FirewallError::Rejected(error)) => {
            tracing::warn!(%error, "kernel refused the firewall snapshot; previous rules stay");
            failed(shared, wanted, FirewallState::Failed, error);
            applier
        }
    }
}

/// Records a refusal: the counts of the rules still in force stay as they were.
fn failed(shared: &EdgeShared, wanted: &str, state: FirewallState, error: String) {
    let mut guard = shared.state();
    guard.firewall.digest = Some(wanted.to_owned());
    guard.firewall.status.state = state;
    guard.firewall.status.error = Some(error);
}

fn set_view(shared: &EdgeShared, wanted: &str, status: EdgeFirewallStatus) {
    let mut guard = shared.state();
    guard.firewall = FirewallView {
        status,
        digest: Some(wanted.to_owned()),
    };
}
