//! Readiness for systemd's `Type=notify` units (sd_notify(3), through the `sd-notify` crate): the
//! unit counts as started once the role serves, not when the process exists, so `systemctl start`
//! reports a refused configuration or a taken port, and ordering (`After=`) means something.
//! Without `$NOTIFY_SOCKET` (not run by systemd) these do nothing.

use sd_notify::NotifyState;

/// The role is serving: the hub's tunnel port is bound and its edges are loaded; the edge runs.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (SIGHUP); [`ready`] ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A graceful stop begins.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
