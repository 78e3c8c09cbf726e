//! How a port ends: mini-redis's `Shutdown`, with the phases a port goes through.

use tokio_util::sync::CancellationToken;

/// How a running port ends, shared by its accept loop, its runner and its connections. Each
/// phase is a token that is only ever cancelled, so every phase happens at most once and a
/// clone sees what the original sees.
///
/// A port that a reload replaces or removes, or whose host shuts down, **drains** in two
/// phases:
///
/// 1. **Stop accepting** ([`Shutdown::stop_accepting`]). The accept loop serves the clients
///    already queued and closes the socket (its hand-over); the connections already open go
///    on; an `exec` port's programs get SIGTERM.
/// 2. **Close the connections** ([`Shutdown::close_connections`]), once the grace period is
///    over: the port tells each client why ([`Cause`]) and shuts its socket down; children
///    get SIGTERM, then SIGKILL.
///
/// A single-session port (`once = true`) **retires** instead ([`Shutdown::retire`]) when its
/// first client has left: it stops accepting on its own and closes its socket at once, with
/// no one to hand over to. It stays so until a reload replaces or removes its entry.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    close: CancellationToken,
    retire: CancellationToken,
}

impl Shutdown {
    /// Phase 1: no more clients; those already connected go on.
    pub fn stop_accepting(&self) {
        self.stop.cancel();
    }

    /// Whether the port has been told to stop accepting (not whether it retired).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once the port has been told to stop accepting.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Phase 2: the connections still open end now. The port calls this after cutting them
    /// off ([`crate::port::Port::close_connections`]), for what that did not end.
    pub fn close_connections(&self) {
        self.close.cancel();
    }

    /// Resolves once the port closes its connections.
    pub async fn closed(&self) {
        self.close.cancelled().await;
    }

    /// A token cancelled when the port closes its connections, of one connection's own: the
    /// port's token would be polled on every wakeup of every connection, all of them taking
    /// one lock.
    pub fn closed_token(&self) -> CancellationToken {
        self.close.child_token()
    }

    /// A single-session port's first client has left: it takes no one else. Returns whether
    /// this call retired it (the first one does).
    pub fn retire(&self) -> bool {
        let first = !self.retire.is_cancelled();
        self.retire.cancel();
        first
    }

    pub fn is_retired(&self) -> bool {
        self.retire.is_cancelled()
    }

    /// Whether the port accepts no one any more: it was told to stop, or it retired.
    pub fn is_done_accepting(&self) -> bool {
        self.is_stopped() || self.is_retired()
    }

    /// Resolves once the port accepts no one any more: told to stop, or retired.
    pub async fn done_accepting(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.retire.cancelled() => {}
        }
    }
}

/// Why the host closes a port's connections before their clients are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A reload replaced or removed the port's entry, and the grace period is over.
    Reload,
    /// The host is shutting down, and the grace period is over.
    HostShutdown,
}

impl Cause {
    /// The line a client cut off gets, like an idle one gets its own.
    pub fn reply(self) -> &'static [u8] {
        match self {
            Cause::Reload => b"ERR server is restarting, closing\n",
            Cause::HostShutdown => b"ERR server is shutting down\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_phase_is_seen_by_clones_and_happens_once() {
        let shutdown = Shutdown::default();
        let seen = shutdown.clone();
        assert!(!seen.is_done_accepting());
        assert!(shutdown.retire(), "the first call retires");
        assert!(!shutdown.retire(), "a later one does not");
        assert!(seen.is_done_accepting() && !seen.is_stopped());
        seen.done_accepting().await;

        let shutdown = Shutdown::default();
        let token = shutdown.closed_token();
        shutdown.stop_accepting();
        shutdown.clone().stopped().await;
        assert!(shutdown.is_done_accepting() && !shutdown.is_retired());
        assert!(
            !token.is_cancelled(),
            "stopping leaves the connections open"
        );
        shutdown.close_connections();
        shutdown.closed().await;
        assert!(token.is_cancelled());
    }
}
