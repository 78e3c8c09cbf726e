//! A running port: the state its accept loop ([`crate::listener`]), its runner
//! ([`crate::models`]) and its connections share, and the [`Admission`] a connection holds
//! while it is served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::PortPlan;

/// One configured port while it runs.
#[derive(Debug)]
pub struct Port {
    pub plan: PortPlan,
    /// Cancelled to stop accepting (shutdown, reload); connections already open go on.
    pub stop: CancellationToken,
    /// Cancelled to close the connections still open, once the grace period is over.
    pub close: CancellationToken,
    /// Cancelled when a single-session service's first client has left (`once = true`).
    retired: CancellationToken,
    /// The accept loop and every task, thread and child of this port's connections, so that
    /// draining can wait for all of them.
    pub tracker: TaskTracker,
    /// The listening socket, held here rather than by the accept loop so that a reload can
    /// hand it to the port's next entry (no rebind, no refused clients) and a retiring port
    /// can close it while a session is still running.
    listener: Mutex<Option<Arc<TcpListener>>>,
    /// `max_connections` permits. The accept loop takes one before it accepts, so clients
    /// above the limit wait in the listen backlog.
    slots: Arc<Semaphore>,
    /// Open connections per client address, for `max_connections_per_ip`.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Read once from the service: whether the port retires after its first client.
    single_session: bool,
    /// Makes the next turn of the accept loop panic, so that tests can check that the
    /// supervisor restarts a loop that died.
    #[cfg(test)]
    pub(crate) fail_next_accept: std::sync::atomic::AtomicBool,
}

/// Why a client is turned away before any service code runs: the line it gets, then a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `max_connections_per_ip` connections open.
    TooManyFromAddress,
}

impl Refusal {
    pub fn reply(self) -> &'static [u8] {
        match self {
            Refusal::TooManyFromAddress => b"ERR too many connections from your address\n",
        }
    }
}

impl Port {
    pub fn new(plan: PortPlan, listener: Arc<TcpListener>) -> Arc<Port> {
        let single_session = plan.service.single_session();
        Arc::new(Port {
            slots: Arc::new(Semaphore::new(plan.entry.max_connections)),
            plan,
            stop: CancellationToken::new(),
            close: CancellationToken::new(),
            retired: CancellationToken::new(),
            tracker: TaskTracker::new(),
            listener: Mutex::new(Some(listener)),
            per_ip: Mutex::default(),
            single_session,
            #[cfg(test)]
            fail_next_accept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn port(&self) -> u16 {
        self.plan.entry.port()
    }

    /// Takes the listening socket away: the accept loop stops using it at its next turn.
    pub fn take_listener(&self) -> Option<Arc<TcpListener>> {
        lock(&self.listener).take()
    }

    pub fn listener(&self) -> Option<Arc<TcpListener>> {
        lock(&self.listener).clone()
    }

    /// Whether the port has been told to stop accepting, or retired itself.
    pub fn is_ending(&self) -> bool {
        self.stop.is_cancelled() || self.retired.is_cancelled()
    }

    /// Resolves once the port stops accepting for good: stopped, or retired.
    pub async fn ending(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.retired.cancelled() => {}
        }
    }

    /// Waits for one of the `max_connections` slots; `None` when the port stops meanwhile.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            () = self.ending() => None,
            permit = self.slots.clone().acquire_owned() => {
                Some(permit.expect("the semaphore is never closed"))
            }
        }
    }

    /// Admits a client from `ip` into the slot it was accepted in, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        ip: IpAddr,
    ) -> Result<Admission, Refusal> {
        let counted = match self.plan.entry.max_connections_per_ip {
            None => None,
            Some(limit) => {
                let mut open = lock(&self.per_ip);
                let count = open.entry(ip).or_default();
                if *count >= limit {
                    return Err(Refusal::TooManyFromAddress);
                }
                *count += 1;
                Some(ip)
            }
        };
        Ok(Admission {
            port: self.clone(),
            _slot: slot,
            counted,
        })
    }
}

/// A poisoned lock here only means a panic elsewhere; the map or the socket is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection holds while it is served: one of the port's `max_connections` slots and,
/// with `max_connections_per_ip`, one of its address's. Dropping it gives both back and, for a
/// single-session service, retires the port, so no model and no error path can forget to.
#[derive(Debug)]
pub struct Admission {
    port: Arc<Port>,
    _slot: OwnedSemaphorePermit,
    /// The address counted against `max_connections_per_ip`, if there is a limit.
    counted: Option<IpAddr>,
}

impl Admission {
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(ip) = self.counted {
            let mut open = lock(&self.port.per_ip);
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
        let port = &self.port;
        if port.single_session && !port.retired.is_cancelled() {
            info!(
                port = port.port(),
                "first client has left; the port no longer accepts (once = true)"
            );
            port.retired.cancel();
            port.take_listener();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    async fn port(extra: &str) -> Arc<Port> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let text = format!(
            "[ports.{}]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n{extra}\n",
            listener.local_addr().unwrap().port()
        );
        let plan = Config::parse(&text, Path::new("t.toml"))
            .unwrap()
            .ports
            .remove(0);
        Port::new(plan, Arc::new(listener))
    }

    #[tokio::test]
    async fn per_address_counts_are_given_back_on_drop() {
        let port = port("max_connections = 10\nmax_connections_per_ip = 2").await;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let admit = |ip| {
            let port = port.clone();
            async move {
                let slot = port.slot().await.unwrap();
                port.admit(slot, ip)
            }
        };
        let a = admit(ip).await.unwrap();
        let b = admit(ip).await.unwrap();
        assert_eq!(admit(ip).await.unwrap_err(), Refusal::TooManyFromAddress);
        let other = admit("127.0.0.2".parse().unwrap()).await.unwrap();
        drop(a);
        let c = admit(ip).await.unwrap();
        drop((b, c, other));
        assert!(lock(&port.per_ip).is_empty());
        assert_eq!(port.slots.available_permits(), 10);
    }

    #[tokio::test]
    async fn without_a_limit_nothing_is_counted() {
        let port = port("").await;
        let slot = port.slot().await.unwrap();
        let admission = port.admit(slot, "::1".parse().unwrap()).unwrap();
        assert!(lock(&port.per_ip).is_empty());
        drop(admission);
    }

    #[tokio::test]
    async fn a_single_session_port_retires_when_its_first_admission_drops() {
        let port = port("options = { once = true }").await;
        let slot = port.slot().await.unwrap();
        let admission = port.admit(slot, "::1".parse().unwrap()).unwrap();
        assert!(!port.is_ending());
        drop(admission);
        assert!(port.is_ending());
        assert!(port.listener().is_none());
        assert!(port.slot().await.is_none(), "no slot once retired");
    }
}
