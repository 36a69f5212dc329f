//! The edge's half of egress: judge the hub's request by the pushed policy, resolve, dial, answer,
//! then relay. Every request gets exactly one answer line; only `connected` is followed by data.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use remoteingress_ipc_schema::{EgressOutcome, EgressPolicy as IpcPolicy};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::egress::policy::{self, Destination, EgressPolicy};
use crate::egress::wire::{Answer, Request};
use crate::relay::{relay_tcp_and_tunnel, RelayCounters, RelaySide};
use crate::transport::tunnel::TunnelStream;
use crate::wire_name::Wire;

/// The policy the hub pushed last and the egress streams open now.
#[derive(Debug, Default)]
pub(crate) struct EdgeEgress {
    policy: Mutex<Arc<EgressPolicy>>,
    open: AtomicUsize,
}

impl EdgeEgress {
    /// Takes the policy of a push; one that does not validate disables egress (and says why).
    pub(crate) fn set_policy(&self, pushed: Option<&IpcPolicy>) {
        let policy = match pushed.map(|p| EgressPolicy::from_ipc(p, "egress")) {
            None => EgressPolicy::default(),
            Some(Ok(policy)) => policy,
            Some(Err(error)) => {
                tracing::warn!(%error, "egress policy from the hub refused; egress disabled");
                EgressPolicy::default()
            }
        };
        *crate::sync::lock(&self.policy) = Arc::new(policy);
    }

    fn policy(&self) -> Arc<EgressPolicy> {
        crate::sync::lock(&self.policy).clone()
    }
}

/// Counts one open egress stream until dropped.
struct OpenSlot(Arc<EdgeEgress>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one egress request from the hub: `open` is the stream's first line.
pub(crate) async fn serve(
    egress: Arc<EdgeEgress>,
    mut stream: TunnelStream,
    open: Bytes,
    stop: CancellationToken,
) {
    let policy = egress.policy();
    let taken = egress.open.fetch_add(1, Ordering::Relaxed);
    let _slot = OpenSlot(egress.clone());
    let dialled = match Request::parse(&open) {
        Err(error) => Err(Answer::failed(
            EgressOutcome::Failed,
            None,
            error.to_string(),
        )),
        Ok(_) if policy.enabled && taken >= policy.max_concurrent_streams as usize => {
            Err(Answer::denied(format!(
                "maxConcurrentStreams ({}) reached",
                policy.max_concurrent_streams
            )))
        }
        Ok(request) => dial(&policy, &request).await,
    };
    match dialled {
        Ok((tcp, ip)) => {
            if stream
                .write_all(&Answer::connected(ip).encode())
                .await
                .is_err()
            {
                crate::relay::reset(&tcp);
                return;
            }
            let counters = Arc::new(RelayCounters::default());
            if let Err(error) =
                relay_tcp_and_tunnel(tcp, stream, RelaySide::Target, counters, &stop).await
            {
                tracing::debug!(%error, "egress connection aborted");
            }
        }
        Err(answer) => {
            tracing::info!(outcome = %Wire(&answer.outcome), rule = answer.rule.as_deref().unwrap_or("-"), error = answer.error.as_deref().unwrap_or("-"), "egress request not connected");
            let _ = stream.write_all(&answer.encode()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// The policy's checks, the resolver, then the surviving addresses in order until one answers
/// or the request's deadline is over.
async fn dial(policy: &EgressPolicy, request: &Request) -> Result<(TcpStream, IpAddr), Answer> {
    let deadline = Instant::now() + request.connect_timeout();
    let refused = |refusal: policy::Refusal| Answer::denied(refusal.to_string());
    let resolved =
        match policy::check_request(policy, &request.host, request.port).map_err(refused)? {
            Destination::Ip(ip) => vec![ip],
            Destination::Name(name) => {
                match tokio::time::timeout_at(
                    deadline,
                    tokio::net::lookup_host((name.as_str(), request.port)),
                )
                .await
                {
                    Ok(Ok(addresses)) => addresses.map(|address| address.ip()).collect(),
                    Ok(Err(error)) => {
                        return Err(Answer::failed(
                            EgressOutcome::Failed,
                            None,
                            format!("cannot resolve {name}: {error}"),
                        ))
                    }
                    Err(_) => {
                        return Err(Answer::failed(
                            EgressOutcome::Timeout,
                            None,
                            format!("resolving {name} took longer than the connect timeout"),
                        ))
                    }
                }
            }
        };
    let addresses =
        policy::filter_addresses(policy, &request.host, &resolved, request.address_family)
            .map_err(refused)?;
    let mut last = None;
    for ip in addresses {
        match tokio::time::timeout_at(deadline, TcpStream::connect((ip, request.port))).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok((tcp, ip));
            }
            Ok(Err(error)) => last = Some((ip, error.to_string())),
            Err(_) => {
                return Err(Answer::failed(
                    EgressOutcome::Timeout,
                    Some(ip),
                    format!("no connection within {:?}", request.connect_timeout()),
                ))
            }
        }
    }
    let (ip, error) = last.unwrap_or_else(|| (IpAddr::from([0, 0, 0, 0]), "no address".to_owned()));
    Err(Answer::failed(EgressOutcome::Failed, Some(ip), error))
}
