//! The minimum round-trip time of a TLS tunnel's TCP path, read from the kernel (TCP_INFO's
//! `tcpi_min_rtt`: propagation, not the queueing the tunnel itself adds) and handed to the mux,
//! whose receive windows auto-tune to it (`tls_mux/window.rs`). Neither socket2 nor nix exposes
//! TCP_INFO, hence the one `getsockopt` call written here.

use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::tls_mux::MuxHandle;

/// How often the mux's RTT is refreshed from the kernel.
const REFRESH: Duration = Duration::from_millis(250);

/// A second descriptor of a tunnel's TCP socket, kept to read its TCP_INFO.
#[derive(Debug)]
pub struct PathRttProbe(socket2::Socket);

impl PathRttProbe {
    /// `None` where the descriptor cannot be duplicated (then windows do not auto-tune).
    pub fn new(socket: &tokio::net::TcpStream) -> Option<Self> {
        socket2::SockRef::from(socket).try_clone().ok().map(Self)
    }

    /// The path's minimum RTT as the kernel measured it so far (`None` before the first
    /// measurement or where TCP_INFO is unavailable).
    pub fn min_rtt(&self) -> Option<Duration> {
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).ok()?;
        // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call; the kernel
        // writes at most `len` bytes and reports how many in `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: zero-initialised and partly filled by the kernel: every bit pattern is a valid
        // `tcp_info` (plain integers).
        let info = unsafe { info.assume_init() };
        match info.tcpi_min_rtt {
            0 | u32::MAX => None,
            micros => Some(Duration::from_micros(u64::from(micros))),
        }
    }

    /// Keeps `mux`'s path RTT current until the tunnel closes (then the descriptor is closed).
    pub fn track(self, mux: MuxHandle, tasks: &TaskTracker) {
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tokio::select! {
                    _ = mux.closed() => return,
                    _ = tick.tick() => {}
                }
                if let Some(rtt) = self.min_rtt() {
                    mux.set_path_rtt(rtt);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_kernels_rtt_of_a_connected_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _server = listener.accept().await.unwrap();
        let probe = PathRttProbe::new(&client).unwrap();
        // The handshake gave the kernel one sample: loopback, well under a second.
        let rtt = probe.min_rtt().unwrap();
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    }
}
