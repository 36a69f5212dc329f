//! The edge's firewall task: applies each snapshot the hub pushes behind the edge's exemption
//! (`firewall::exemption`: the hub's endpoints and the flows the edge opened, so no push can
//! cut the edge off from its hub), reports the outcome (event, status, and a report to the
//! hub), and deletes the table when the edge stops.
//!
//! Snapshots and the hub's endpoints arrive through `watch` channels, so a burst of pushes
//! collapses into the latest one; a new hub endpoint re-applies the snapshot in force. Kernel
//! transactions are blocking netlink calls and run on the blocking pool.
//!
//! While the tunnel is down the last rules stay in force: the edge keeps its public listeners
//! then too, and an attacker should not get a window by cutting the edge's uplink. The table is
//! deleted only when the edge stops (`stop`, SIGTERM/SIGINT, stdin EOF), which is also the
//! only way it loses its tunnel for good (it reconnects otherwise).
//!
//! A table left by an edge that was killed (SIGKILL, a crash) is found when the edge starts: it
//! stays in force (no window while the hub is unreachable), with this edge's exemption put at
//! the head of its chains so that its rules cannot keep the edge from its hub; the hub's first
//! configuration replaces it (a snapshot) or deletes it (none), and stopping deletes it too.

use std::sync::Arc;
use std::time::Instant;

use remoteingress_ipc_schema::{
    EdgeFirewallStatus, Event, FirewallConfig, FirewallConfigUpdatedEvent, FirewallState,
    FirewallUnavailableEvent,
};
use tokio::sync::watch;

use super::EdgeShared;
use crate::firewall::exemption::{self, Exemption};
use crate::firewall::netlink::{Applier, FirewallError};
use crate::firewall::snapshot::{self, Snapshot};
use crate::firewall::{digest, ruleset};
use crate::status_fields::{count, unix_ms};
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

/// What the task knows of the kernel's table.
#[derive(Default)]
struct Table {
    /// Our socket, once the task has touched a table (ours, or a stale one it found).
    applier: Option<Applier>,
    /// The snapshot this task applied and that is in force (re-applied when the exemption
    /// changes).
    in_force: Option<Snapshot>,
    /// While a table left by a killed edge is in force: the exemption put into it.
    stale: Option<Exemption>,
}

/// Runs until the edge stops; then removes the table if this task touched one.
pub(crate) async fn run(
    shared: Arc<EdgeShared>,
    mut desired: watch::Receiver<Desired>,
    mut hubs: watch::Receiver<Exemption>,
) {
    let exemption = hubs.borrow_and_update().clone();
    let mut table = find_stale(exemption).await;
    let mut applied_digest: Option<String> = None;
    loop {
        tokio::select! {
            () = shared.stop.shutdown.cancelled() => break,
            changed = hubs.changed() => {
                if changed.is_err() { break }
                let exemption = hubs.borrow_and_update().clone();
                table = exempt(&shared, table, exemption).await;
                continue;
            }
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
        let exemption = hubs.borrow().clone();
        table = handle(&shared, table, config, &wanted, &exemption).await;
        let state = shared.firewall_view().status.state;
        // A refused or unavailable snapshot is tried again when the hub pushes it again.
        applied_digest =
            matches!(state, FirewallState::Applied | FirewallState::None).then_some(wanted);
        super::session::report_to_hub(&shared);
    }
    if let Some(applier) = table.applier {
        let (_, outcome) = with_applier(Some(applier), Applier::remove).await;
        match outcome {
            Ok(()) => tracing::info!("firewall table removed"),
            Err(error) => tracing::warn!(%error, "cannot remove the firewall table"),
        }
    }
}

/// Runs `work` with the applier (opened first if there is none) on the blocking pool, and
/// gives the applier back (none if it could not be opened or the task failed).
async fn with_applier<T: Send + 'static>(
    applier: Option<Applier>,
    work: impl FnOnce(&mut Applier) -> Result<T, FirewallError> + Send + 'static,
) -> (Option<Applier>, Result<T, FirewallError>) {
    let outcome = tokio::task::spawn_blocking(move || {
        let mut applier = match applier {
            Some(applier) => applier,
            None => match Applier::open() {
                Ok(applier) => applier,
                Err(error) => return (None, Err(error)),
            },
        };
        let result = work(&mut applier);
        (Some(applier), result)
    })
    .await;
    outcome.unwrap_or_else(|error| {
        (
            None,
            Err(FirewallError::Rejected(format!(
                "firewall task failed: {error}"
            ))),
        )
    })
}

/// At start: a table left by a killed edge gets `exemption` at the head of its chains and is
/// kept (see the module docs). No table, or no firewall on this host: nothing is kept.
async fn find_stale(exemption: Exemption) -> Table {
    let rules = exemption.rules();
    let (applier, found) = with_applier(None, move |applier| applier.exempt_stale(&rules)).await;
    match found {
        Ok(true) => {
            tracing::warn!(
                "a firewall table left by an edge that did not stop is in force: it stays until \
                 the hub's first configuration replaces it, with this edge's hub and own flows \
                 exempted at its head"
            );
            Table {
                applier,
                in_force: None,
                stale: Some(exemption),
            }
        }
        Ok(false) => Table::default(),
        Err(error) => {
            // No firewall on this host (e.g. no CAP_NET_ADMIN): said when a snapshot comes.
            tracing::debug!(%error, "cannot look for a stale firewall table");
            Table::default()
        }
    }
}

/// The hub's endpoints changed: the table in force gets the new exemption (a snapshot of ours
/// is re-applied in place; a stale table gets the new endpoints' rules at its head).
async fn exempt(shared: &EdgeShared, table: Table, exemption: Exemption) -> Table {
    if let Some(snapshot) = table.in_force {
        let rules = ruleset::translate(&snapshot, &exemption);
        let (rule_count, set_count) = (count(rules.rule_count()), count(rules.set_count()));
        let (applier, result) = with_applier(table.applier, move |a| a.apply(&rules)).await;
        match result {
            Ok(()) => {
                tracing::info!(hubs = ?exemption.hubs(), "firewall exemption updated for the hub's endpoints");
                let mut view = shared.firewall_view();
                view.status.rule_count = rule_count;
                view.status.set_count = set_count;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot update the firewall exemption for the hub's endpoints");
            }
        }
        return Table {
            applier,
            in_force: Some(snapshot),
            stale: None,
        };
    }
    let Some(before) = table.stale else {
        // No table: the next snapshot is applied with the new exemption.
        return table;
    };
    let rules: Vec<_> = exemption
        .hubs()
        .iter()
        .filter(|hub| !before.hubs().contains(hub))
        .flat_map(|hub| exemption::hub_rules(*hub))
        .collect();
    if rules.is_empty() {
        // Only endpoints forgotten (beyond MAX_HUBS): their rules may stay until the table goes.
        return Table {
            stale: Some(exemption),
            ..table
        };
    }
    let (applier, result) = with_applier(table.applier, move |a| a.exempt_stale(&rules)).await;
    match result {
        Ok(true) => {
            tracing::info!(hubs = ?exemption.hubs(), "stale firewall table: the hub's endpoints exempted");
            Table {
                applier,
                in_force: None,
                stale: Some(exemption),
            }
        }
        Ok(false) => {
            // Someone deleted it: there is no table until the next snapshot.
            tracing::info!("the stale firewall table is gone");
            Table {
                applier,
                ..Table::default()
            }
        }
        Err(error) => {
            // The next change of endpoints tries these again.
            tracing::warn!(%error, "cannot exempt the hub's endpoints in the stale firewall table");
            Table {
                applier,
                in_force: None,
                stale: Some(before),
            }
        }
    }
}

/// Validates and applies one snapshot behind `exemption`; returns what the task knows of the
/// table afterwards.
async fn handle(
    shared: &Arc<EdgeShared>,
    table: Table,
    config: Option<FirewallConfig>,
    wanted: &str,
    exemption: &Exemption,
) -> Table {
    let Some(config) = config else {
        // No snapshot configured: no table (neither ours nor a stale one).
        let Some(applier) = table.applier else {
            set_view(shared, wanted, FirewallView::default().status);
            return Table::default();
        };
        let (applier, result) = with_applier(Some(applier), Applier::remove).await;
        match result {
            Ok(()) => set_view(shared, wanted, FirewallView::default().status),
            Err(error) => {
                tracing::warn!(%error, "cannot remove the firewall table");
                failed(shared, wanted, FirewallState::Failed, error.to_string());
                return Table { applier, ..table };
            }
        }
        return Table {
            applier,
            ..Table::default()
        };
    };
    let validated = match snapshot::validate(&config, "firewallConfig") {
        Ok(validated) => validated,
        Err(error) => {
            tracing::warn!(%error, "firewall snapshot from the hub refused; previous rules stay");
            failed(shared, wanted, FirewallState::Failed, error.to_string());
            return table;
        }
    };
    let rules = ruleset::translate(&validated, exemption);
    let counts = (
        count(rules.rule_count()),
        count(rules.set_count()),
        rules.blocked_ranges() as u64,
    );
    let started = Instant::now();
    let (applier, result) = with_applier(table.applier, move |a| a.apply(&rules)).await;
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
            Table {
                applier,
                in_force: Some(validated),
                stale: None,
            }
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
            Table::default()
        }
        Err(FirewallError::Rejected(error)) => {
            tracing::warn!(%error, "kernel refused the firewall snapshot; previous rules stay");
            failed(shared, wanted, FirewallState::Failed, error);
            Table { applier, ..table }
        }
    }
}

/// Records a refusal: the counts of the rules still in force stay as they were.
fn failed(shared: &EdgeShared, wanted: &str, state: FirewallState, error: String) {
    let mut view = shared.firewall_view();
    view.digest = Some(wanted.to_owned());
    view.status.state = state;
    view.status.error = Some(error);
}

fn set_view(shared: &EdgeShared, wanted: &str, status: EdgeFirewallStatus) {
    *shared.firewall_view() = FirewallView {
        status,
        digest: Some(wanted.to_owned()),
    };
}
