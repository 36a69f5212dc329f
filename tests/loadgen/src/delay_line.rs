//! `delay-line`: a userspace WAN link between two network namespaces, for the benchmark's WAN
//! rows. These machines' kernels have no `netem` (and no `fq`), so delay and loss cannot come from
//! a qdisc; a TCP-level relay would hide loss and RTT from the tunnel's own TCP. This works on IP
//! packets instead: one TUN device in each namespace (point-to-point, addresses given), and every
//! packet read from one is written to the other after
//!
//! - its serialisation time at `rate` behind the packets already queued (the link's bandwidth),
//! - a one-way delay of `rtt / 2` (propagation), and
//! - dropped with probability `loss`, or when more than `queue` bytes wait for the link
//!   (a drop-tail router buffer).
//!
//! The TUN devices come from the `tun` crate; the link model (a dozen lines) is written here, as
//! no crate offers one. Delivery is as precise as tokio's timer (1 ms): packets due within the
//! same millisecond leave together. On SIGTERM or SIGINT it prints one JSON line with the counts.

use std::collections::VecDeque;
use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest IP packet a TUN device hands us (its MTU is 1,500, as a NIC's would be).
const MAX_PACKET: usize = 65_536;
const MTU: u16 = 1500;

/// The emulated link, the same both ways.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub(crate) one_way: Duration,
    /// Bytes per second; `None`: no cap.
    pub(crate) rate: Option<f64>,
    pub(crate) loss: f64,
    pub(crate) queue_bytes: u64,
}

/// Packets forwarded and dropped, per direction summed.
#[derive(Default)]
struct Counts {
    forwarded: AtomicU64,
    lost: AtomicU64,
    queue_full: AtomicU64,
}

/// One side: a namespace (by its `ip netns` name) and the address its TUN device gets.
pub(crate) struct Side {
    pub(crate) netns: String,
    pub(crate) address: Ipv4Addr,
}

pub(crate) async fn delay_line(a: Side, b: Side, link: Link, seed: u64) -> Result<()> {
    let tun_a = tun_in(&a, b.address)?;
    let tun_b = tun_in(&b, a.address)?;
    let counts = Arc::new(Counts::default());
    let (read_a, write_a) = tokio::io::split(tun_a);
    let (read_b, write_b) = tokio::io::split(tun_b);
    let a_to_b = tokio::spawn(direction(read_a, write_b, link, seed, counts.clone()));
    let b_to_a = tokio::spawn(direction(
        read_b,
        write_a,
        link,
        seed ^ 0x5eed,
        counts.clone(),
    ));
    println!("{}", json!({"ready": true}));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        done = a_to_b => done??,
        done = b_to_a => done??,
    }
    println!(
        "{}",
        json!({
            "kind": "delay-line",
            "forwarded": counts.forwarded.load(Ordering::Relaxed),
            "lost": counts.lost.load(Ordering::Relaxed),
            "queue_full": counts.queue_full.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

/// A TUN device created inside `side.netns`: this thread enters the namespace first (a device
/// belongs to the namespace it is created in; the descriptor then works from anywhere).
fn tun_in(side: &Side, peer: Ipv4Addr) -> Result<tun::AsyncDevice> {
    let path = format!("/run/netns/{}", side.netns);
    let namespace = File::open(&path).with_context(|| format!("open {path}"))?;
    nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("enter network namespace {}", side.netns))?;
    let mut config = tun::Configuration::default();
    config
        .tun_name("wan0")
        .address(side.address)
        .destination(peer)
        .netmask((255, 255, 255, 255))
        .mtu(MTU)
        .up();
    tun::create_as_async(&config).with_context(|| format!("TUN device in {}", side.netns))
}

/// One direction of the link: reads packets, decides their fate and departure time, and a
/// second task writes them out when they are due (in order: departures never decrease).
async fn direction<R, W>(
    mut from: R,
    mut to: W,
    link: Link,
    seed: u64,
    counts: Arc<Counts>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let written = counts.clone();
    let writer = tokio::spawn(async move {
        while let Some((due, packet)) = due_rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            // A write the kernel refuses (no route yet, a full queue) is a lost packet, as on a
            // real link: the transports above recover.
            if to.write(&packet).await.is_ok() {
                written.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut random = fastrand::Rng::with_seed(seed);
    let mut queue = LinkQueue::new(link);
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if link.loss > 0.0 && random.f64() < link.loss {
            counts.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match queue.admit(Instant::now(), n) {
            Some(due) => {
                if due_tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            None => {
                counts.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    drop(due_tx);
    writer.await?;
    Ok(())
}

/// The link's transmitter: when each admitted packet finishes serialising, and the bytes still
/// waiting for it (the router buffer), from which a full buffer drops the packet.
struct LinkQueue {
    link: Link,
    /// When the packets admitted so far will have left the transmitter.
    free_at: Option<Instant>,
    /// (finish time, size) of the packets still in the buffer, oldest first.
    waiting: VecDeque<(Instant, u64)>,
    waiting_bytes: u64,
}

impl LinkQueue {
    fn new(link: Link) -> Self {
        Self {
            link,
            free_at: None,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
        }
    }

    /// When a packet of `size` bytes arriving at `now` reaches the far side, or `None` when the
    /// buffer is full (dropped).
    fn admit(&mut self, now: Instant, size: usize) -> Option<Instant> {
        let Some(rate) = self.link.rate else {
            return Some(now + self.link.one_way);
        };
        while let Some(&(finish, bytes)) = self.waiting.front() {
            if finish > now {
                break;
            }
            self.waiting.pop_front();
            self.waiting_bytes -= bytes;
        }
        let size = size as u64;
        if self.waiting_bytes + size > self.link.queue_bytes {
            return None;
        }
        let start = self.free_at.filter(|t| *t > now).unwrap_or(now);
        let finish = start + Duration::from_secs_f64(size as f64 / rate);
        self.free_at = Some(finish);
        self.waiting.push_back((finish, size));
        self.waiting_bytes += size;
        Some(finish + self.link.one_way)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(rate: Option<f64>, queue_bytes: u64) -> Link {
        Link {
            one_way: Duration::from_millis(40),
            rate,
            loss: 0.0,
            queue_bytes,
        }
    }

    #[test]
    fn packets_leave_at_the_rate_after_the_delay() {
        let mut queue = LinkQueue::new(link(Some(1_000_000.0), 1 << 20));
        let now = Instant::now();
        let first = queue.admit(now, 1000).unwrap();
        let second = queue.admit(now, 1000).unwrap();
        assert_eq!(first, now + Duration::from_millis(41));
        assert_eq!(second, now + Duration::from_millis(42));
        // An idle link sends at once.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            queue.admit(later, 1000).unwrap(),
            later + Duration::from_millis(41)
        );
    }

    #[test]
    fn a_full_buffer_drops_until_it_drains() {
        let mut queue = LinkQueue::new(link(Some(1_000_000.0), 2500));
        let now = Instant::now();
        assert!(queue.admit(now, 1000).is_some());
        assert!(queue.admit(now, 1000).is_some());
        assert!(queue.admit(now, 1000).is_none());
        // 1 ms later the first packet has left the buffer.
        assert!(queue.admit(now + Duration::from_millis(1), 1000).is_some());
    }

    #[test]
    fn without_a_cap_only_the_delay_applies() {
        let mut queue = LinkQueue::new(link(None, 0));
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                queue.admit(now, 1500),
                Some(now + Duration::from_millis(40))
            );
        }
    }
}
