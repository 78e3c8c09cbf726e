//! The accept loop of one port: limits before accept, per-address limits, accept-error backoff,
//! and the hand-off of each connection to the port's concurrency model.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use porthost_services::{Conn, close_gracefully};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::PortPlan;
use crate::models::process_per_client::Forker;
use crate::models::{self, Model};

/// What the connections of one running port share.
#[derive(Debug)]
pub struct PortCtx {
    pub plan: PortPlan,
    /// Cancelled to stop accepting (shutdown, reload); connections already open go on.
    pub stop: CancellationToken,
    /// Cancelled to close the connections still open, once the grace period is over.
    pub close: CancellationToken,
    /// Cancelled by the port itself when a single-session service's first client has left.
    retired: CancellationToken,
    /// Every connection task or thread of this port, so draining can wait for them.
    pub tracker: TaskTracker,
    /// The listening socket, held here rather than by the accept loop so that a reload can
    /// hand it to the port's next entry (no rebind, no refused clients) and a retiring port
    /// can close it while a sequential session is still running.
    listener: Mutex<Option<Arc<TcpListener>>>,
    /// Runs this port's connections in child processes, with the port's id there; only
    /// process-per-client ports have one.
    pub forker: Option<(Arc<Forker>, u64)>,
    per_ip: PerIp,
}

impl PortCtx {
    pub fn new(
        plan: PortPlan,
        listener: Arc<TcpListener>,
        forker: Option<(Arc<Forker>, u64)>,
    ) -> Self {
        let per_ip = PerIp::new(plan.entry.max_connections_per_ip);
        PortCtx {
            plan,
            stop: CancellationToken::new(),
            close: CancellationToken::new(),
            retired: CancellationToken::new(),
            tracker: TaskTracker::new(),
            listener: Mutex::new(Some(listener)),
            forker,
            per_ip,
        }
    }

    /// Takes the listening socket away: the accept loop stops using it at its next turn.
    pub fn take_listener(&self) -> Option<Arc<TcpListener>> {
        self.listener.lock().expect("poisoned").take()
    }

    fn listener(&self) -> Option<Arc<TcpListener>> {
        self.listener.lock().expect("poisoned").clone()
    }

    pub fn port(&self) -> u16 {
        self.plan.entry.port()
    }

    /// Called by every model when a connection has ended, with what admitted it.
    pub(crate) fn ended(&self, admission: Admission) {
        drop(admission);
        if self.plan.service.single_session() && !self.retired.is_cancelled() {
            info!(
                port = self.port(),
                "first client has left; the port no longer accepts (once = true)"
            );
            self.retired.cancel();
            self.take_listener();
        }
    }
}

/// The permits a connection holds while it is served: one of `max_connections`, and one of
/// its address's `max_connections_per_ip`. Dropping it lets the next client in.
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    _per_ip: Option<IpGuard>,
}

/// The reply to a client over its address's limit.
const TOO_MANY_FROM_ADDRESS: &[u8] = b"ERR too many connections from your address\n";

/// The longest pause between accept attempts after errors such as running out of descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until the port is stopped, retired or loses its listener, handing each
/// to the port's model.
pub async fn accept_loop(ctx: Arc<PortCtx>) {
    let entry = &ctx.plan.entry;
    let limit = Arc::new(Semaphore::new(entry.max_connections));
    let mut backoff = Duration::ZERO;
    // The next thread-per-client connection's runtime, built before accepting it.
    let mut runtime = None;
    loop {
        // Limit before accept: above `max_connections` clients wait in the backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = ctx.stop.cancelled() => return,
            () = ctx.retired.cancelled() => return,
        };
        if entry.model == Model::ThreadPerClient && runtime.is_none() {
            match models::thread_per_client::ConnRuntime::build() {
                Ok(built) => runtime = Some(built),
                Err(e) => {
                    if !back_off(&ctx, &mut backoff, "building a connection's runtime", &e).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(listener) = ctx.listener() else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    if !back_off(&ctx, &mut backoff, "accept", &e).await {
                        return;
                    }
                    continue;
                }
            },
            () = ctx.stop.cancelled() => return,
            () = ctx.retired.cancelled() => return,
        };
        drop(listener);
        let Some(per_ip) = ctx.per_ip.admit(peer.ip()) else {
            ctx.tracker.spawn(refuse(stream, TOO_MANY_FROM_ADDRESS));
            continue;
        };
        let admission = Admission {
            _permit: permit,
            _per_ip: per_ip,
        };
        // Replies are single small writes: send them now rather than waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let span = info_span!(
            "conn",
            port = ctx.port(),
            service = %entry.service,
            model = %entry.model,
            %peer
        );
        let conn = Conn {
            stream,
            peer,
            limits: entry.limits,
        };
        match entry.model {
            Model::Sequential => models::sequential::run(&ctx, conn, admission, span).await,
            Model::ThreadPerClient => {
                let runtime = runtime.take().expect("built before accepting");
                models::thread_per_client::spawn(&ctx, conn, admission, span, runtime);
            }
            Model::ProcessPerClient => {
                models::process_per_client::spawn(&ctx, conn, admission, span).await;
            }
            Model::Async => models::async_tasks::spawn(&ctx, conn, admission, span),
        }
    }
}

/// Pauses after a failure that freed descriptors may cure (EMFILE, ENFILE), doubling the pause
/// up to [`MAX_BACKOFF`] so that the loop neither spins nor gives up; `false` if the port was
/// stopped meanwhile.
async fn back_off(ctx: &PortCtx, backoff: &mut Duration, what: &str, e: &std::io::Error) -> bool {
    *backoff = (*backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
    warn!(
        port = ctx.port(),
        "{what} failed: {e}; retrying in {backoff:?}"
    );
    tokio::select! {
        () = tokio::time::sleep(*backoff) => true,
        () = ctx.stop.cancelled() => false,
    }
}

/// Errors that concern one connection that died in the backlog, not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Tells a client why it is not served, then closes without destroying that line.
async fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply)).await;
    close_gracefully(&mut stream)
        .instrument(info_span!("refused"))
        .await;
}

/// Counts open connections per client address, for `max_connections_per_ip`.
#[derive(Debug)]
struct PerIp {
    limit: Option<usize>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; uncounts itself when dropped.
#[derive(Debug)]
pub(crate) struct IpGuard {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn new(limit: Option<usize>) -> Self {
        PerIp {
            limit,
            open: Arc::default(),
        }
    }

    /// `Some(guard)` when the address may open one more connection (`Some(None)` when there
    /// is no limit to count against), `None` when it is at its limit.
    fn admit(&self, ip: IpAddr) -> Option<Option<IpGuard>> {
        let Some(limit) = self.limit else {
            return Some(None);
        };
        let mut open = self.open.lock().expect("per-ip table poisoned");
        let count = open.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Some(IpGuard {
            ip,
            open: self.open.clone(),
        }))
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("per-ip table poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_and_releases() {
        let per_ip = PerIp::new(Some(2));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = per_ip.admit(ip).unwrap();
        let b = per_ip.admit(ip).unwrap();
        assert!(per_ip.admit(ip).is_none());
        assert!(per_ip.admit("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(per_ip.admit(ip).is_some());
        drop(b);
        assert!(per_ip.open.lock().unwrap().is_empty());
    }

    #[test]
    fn no_limit_counts_nothing() {
        let per_ip = PerIp::new(None);
        assert!(matches!(per_ip.admit("::1".parse().unwrap()), Some(None)));
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
