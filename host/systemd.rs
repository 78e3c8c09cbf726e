//! Telling systemd how the host is doing (`sd_notify(3)`): `READY=1` once every port is served,
//! `RELOADING=1` and `READY=1` around a reload (for `Type=notify-reload`), `STOPPING=1` on
//! drain, a one-line `STATUS=`, and the watchdog when `WATCHDOG_USEC` asks for it. Without
//! `NOTIFY_SOCKET` every call here does nothing. Errors are ignored: a service manager that
//! stopped listening is no reason to stop serving.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::observed::Observed;

/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Every port is served.
pub fn ready(observed: &Observed) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status(observed))]);
}

/// A reload starts; `MONOTONIC_USEC` lets systemd match it with the `SIGHUP` it sent.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
}

/// The host drains and will exit.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// The status line: what `systemctl status` shows.
fn status(observed: &Observed) -> String {
    let ports = observed.ports();
    let open: usize = ports.iter().map(|p| p.open_count()).sum();
    format!(
        "serving {} port{}, {open} connection{} open",
        ports.len(),
        if ports.len() == 1 { "" } else { "s" },
        if open == 1 { "" } else { "s" }
    )
}

/// Refreshes the status line, and pets the watchdog at half its interval when systemd set one,
/// until `stop`. It runs on the host's runtime, so a runtime that hangs stops petting.
pub async fn keep_informed(observed: Arc<Observed>, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let line = status(&observed);
        let mut states = vec![NotifyState::Status(&line)];
        if watchdog.is_some() {
            states.push(NotifyState::Watchdog);
        }
        let _ = sd_notify::notify(&states);
    }
}
