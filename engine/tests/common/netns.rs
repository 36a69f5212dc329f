//! Running a scenario in a network namespace of its own: a thread `unshare(CLONE_NEWNET)`s
//! (only that thread moves; children it spawns inherit the namespace), brings `lo` up, runs the
//! test's `ip` commands and then the scenario on a current-thread runtime, so every socket and
//! every binary the scenario starts lives in the namespace, which disappears with the thread.

use std::future::Future;
use std::process::Command;

/// Runs `scenario` in a new network namespace after `ip` with each line of `setup` (arguments
/// separated by spaces); `None` (and nothing run) when not root.
pub fn run<F: Future<Output = ()> + Send + 'static>(setup: &[String], scenario: F) -> Option<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace");
        return None;
    }
    let setup = setup.to_vec();
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only affects the calling thread (and what it spawns from now on).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        for line in &setup {
            ip(&line.split(' ').collect::<Vec<_>>());
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario);
    });
    thread.join().expect("test thread panicked");
    Some(())
}

/// Runs `ip args` in the calling thread's namespace.
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}: {status}");
}
