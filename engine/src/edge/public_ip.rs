//! Public IP discovery: ask the STUN servers at start and every `stunIntervalSecs` (pushed by the
//! hub); on a change, update status, emit `publicIpDiscovered` and tell the hub.

use std::sync::Arc;
use std::time::Duration;

use remoteingress_ipc_schema::{Event, PublicIpDiscoveredEvent};

use super::EdgeShared;
use crate::config::DEFAULT_STUN_INTERVAL_SECS;

/// Runs until the edge stops; does nothing when no STUN server is configured.
pub(crate) async fn run(shared: Arc<EdgeShared>) {
    if shared.settings.stun_servers.is_empty() {
        tracing::info!("STUN disabled: no stunServers");
        return;
    }
    loop {
        match crate::stun::discover(&shared.settings.stun_servers).await {
            Ok(mapped) => {
                let ip = mapped.ip().to_string();
                let changed = {
                    let mut public_ip = shared.public_ip();
                    let changed = public_ip.as_deref() != Some(ip.as_str());
                    *public_ip = Some(ip.clone());
                    changed
                };
                if changed {
                    tracing::info!(%ip, "public IP discovered");
                    shared
                        .events
                        .emit(Event::PublicIpDiscovered(PublicIpDiscoveredEvent { ip }));
                    super::session::report_to_hub(&shared);
                }
            }
            Err((server, error)) => tracing::warn!(%server, %error, "public IP discovery failed"),
        }
        let interval = Duration::from_secs(
            shared
                .pushed()
                .stun_interval_secs
                .unwrap_or(DEFAULT_STUN_INTERVAL_SECS)
                .into(),
        );
        tokio::select! {
            () = shared.stop.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
