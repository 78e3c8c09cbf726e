//! A running port: the state its accept loop ([`crate::listener`]), its runner
//! ([`crate::models`]) and its connections share, and the [`Admission`] a connection holds
//! while it is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use porthost_services::Meter;
use porthost_services::meter::{Totals, Traffic};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::PortPlan;
use crate::events::{Events, Kind};
pub use crate::gate::Refusal;
use crate::gate::{Gate, Pass};
use crate::lock::lock;
use crate::logging::LogBudget;
use crate::shutdown::{Cause, Shutdown};
use crate::stats::PortStats;

/// At most this many refusals logged per this interval, per port; the rest are summed up.
const REFUSALS_LOGGED: (u32, std::time::Duration) = (10, std::time::Duration::from_secs(10));

/// One configured port while it runs.
#[derive(Debug)]
pub struct Port {
    pub plan: PortPlan,
    /// How the port ends: it stops accepting and closes its connections when it drains, or
    /// retires after its first client (`once = true`).
    pub shutdown: Shutdown,
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
    /// The connections open on this port, and how many each client address has.
    table: Mutex<Table>,
    /// What the port counts: connections accepted and refused, threads, children, sessions.
    pub stats: PortStats,
    /// The live view's feed, shared by every port.
    pub events: Arc<Events>,
    /// Read once from the service: whether the port retires after its first client.
    single_session: bool,
    /// What the port lets in, and the counts that decides it with. Locked before `table`.
    gate: Mutex<Gate>,
    /// How many refusals the log still tells about in this interval.
    refusal_log: Mutex<LogBudget>,
    /// Makes the next turn of the accept loop panic, so that tests can check that the
    /// supervisor restarts a loop that died.
    #[cfg(test)]
    pub(crate) fail_next_accept: std::sync::atomic::AtomicBool,
}

/// Tells a client why it is cut off (`reply`; nothing on an `exec` port, whose stream is the
/// program's protocol, not the host's lines), without waiting (its socket buffer may be full),
/// and shuts its socket down.
pub(crate) fn tell_and_shut(socket: &socket2::SockRef<'_>, reply: &[u8]) {
    if !reply.is_empty() {
        let _ = socket.send_with_flags(reply, nix::libc::MSG_DONTWAIT);
    }
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

/// What the port knows of its open connections.
#[derive(Debug, Default)]
struct Table {
    open: HashMap<u64, Open>,
    next_id: u64,
    /// Set once the port closes its connections: a connection that registers its socket
    /// after that is closed at once.
    closing: Option<Cause>,
}

/// One connection open on the port.
#[derive(Debug)]
struct Open {
    peer: SocketAddr,
    since: Instant,
    /// What it has served so far; its service counts into it.
    traffic: Arc<Traffic>,
    /// The child process serving it, under process-per-client.
    pid: Option<u32>,
    /// A second handle on the connection's socket, for telling its client why and waking it
    /// when the host closes the port's connections: `shutdown(2)` ends a read or write blocked
    /// on the socket, wherever it is served.
    closer: Option<std::net::TcpStream>,
}

/// A connection open on a port, as the live view lists it.
#[derive(Debug, Clone)]
pub struct OpenConnection {
    /// Its entry in the port's table: the same connection in every listing.
    pub id: u64,
    pub peer: SocketAddr,
    pub since: Instant,
    pub traffic: Totals,
    pub pid: Option<u32>,
}

impl Port {
    pub fn new(plan: PortPlan, listener: Arc<TcpListener>, events: Arc<Events>) -> Arc<Port> {
        let single_session = plan.service.single_session();
        let gate = Mutex::new(Gate::of(&plan.entry));
        Arc::new(Port {
            slots: Arc::new(Semaphore::new(plan.entry.max_connections)),
            plan,
            shutdown: Shutdown::default(),
            tracker: TaskTracker::new(),
            listener: Mutex::new(Some(listener)),
            table: Mutex::default(),
            stats: PortStats::default(),
            events,
            single_session,
            gate,
            refusal_log: Mutex::new(LogBudget::new(REFUSALS_LOGGED.0, REFUSALS_LOGGED.1)),
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

    /// Waits for one of the `max_connections` slots; `None` when the port stops meanwhile.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            () = self.shutdown.done_accepting() => None,
            permit = self.slots.clone().acquire_owned() => {
                Some(permit.expect("the semaphore is never closed"))
            }
        }
    }

    /// A slot for a client accepted while the port hands its socket over (it has been told
    /// to stop accepting).
    pub async fn slot_for_hand_over(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Admits a client from `peer` into the slot it was accepted in, or says why not: its
    /// address must be allowed, not over its rate of new connections, and not over its number
    /// of open ones.
    /// `destination` is the address the client connected to, when its PROXY header named one.
    pub fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        peer: SocketAddr,
        destination: Option<SocketAddr>,
    ) -> Result<Admission, Refusal> {
        let pass = lock(&self.gate).admit(peer.ip(), now())?;
        let mut admission = self.enter(peer, Some(slot), Some(pass));
        admission.destination = destination;
        Ok(admission)
    }

    /// Admits a client that another process accepted and let in by the port's rules (the fork
    /// server of a `process-per-client` port, which holds its place and its slot there).
    pub fn admit_accepted(self: &Arc<Self>, peer: SocketAddr) -> Admission {
        self.enter(peer, None, None)
    }

    /// Enters an admitted connection in the port's table and counts it.
    fn enter(
        self: &Arc<Self>,
        peer: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
        pass: Option<Pass>,
    ) -> Admission {
        let mut table = lock(&self.table);
        let id = table.next_id;
        table.next_id += 1;
        let traffic = Arc::new(Traffic::default());
        let since = Instant::now();
        table.open.insert(
            id,
            Open {
                peer,
                since,
                traffic: traffic.clone(),
                pid: None,
                closer: None,
            },
        );
        self.stats
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.events.push(Some(self.port()), Kind::Connected, || {
            format!("{peer} connected")
        });
        Admission {
            port: self.clone(),
            id,
            since,
            traffic,
            _slot: slot,
            pass,
            destination: None,
        }
    }

    /// Counts a refusal, and logs it unless the log has told about enough of them lately.
    pub fn refused(&self, peer: SocketAddr, refusal: Refusal, why: &str) {
        self.stats.refused(refusal);
        self.events.push(Some(self.port()), Kind::Refused, || {
            format!("{peer} refused: {why}")
        });
        let verdict = lock(&self.refusal_log).event(now());
        if let Some(suppressed) = verdict.summary {
            self.log_suppressed(suppressed);
        }
        if verdict.log {
            info!(port = self.port(), %peer, "refused: {why}");
        }
    }

    /// Keeps what the port remembers about clients bounded in time as well as size, for as
    /// long as it is polled (its accept loop does): the rate table forgets addresses whose
    /// bucket has filled up again, so a table that once held a flood gives its memory back,
    /// and the summary of refusals the log held back is written once the flood is over, not
    /// only when the next refusal comes. Wakes at the earlier of the two, and at least once
    /// per log interval.
    pub async fn tidy_forever(&self) -> ! {
        let every = lock(&self.gate)
            .idle_after()
            .map_or(REFUSALS_LOGGED.1, |idle| idle.min(REFUSALS_LOGGED.1))
            .max(std::time::Duration::from_secs(1));
        loop {
            let now = now();
            lock(&self.gate).forget_idle(now);
            let flushed = lock(&self.refusal_log).flush(now);
            if let Some(suppressed) = flushed {
                self.log_suppressed(suppressed);
            }
            let due = lock(&self.refusal_log).due();
            let wake = due.map_or(now + every, |due| due.min(now + every));
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    fn log_suppressed(&self, suppressed: crate::logging::Suppressed) {
        info!(
            port = self.port(),
            "{} more connections refused in the last {:?}", suppressed.count, suppressed.interval
        );
    }

    /// Closes every connection still open: each client gets a line saying why, then its
    /// socket is shut down (which wakes a read or write blocked on it, in a thread or a child
    /// process as in a task), and the port's [`Shutdown`] closes what that did not end.
    pub fn close_connections(&self, why: Cause) {
        {
            let mut table = lock(&self.table);
            table.closing = Some(why);
            let told = self.told(why);
            let reply = told.map_or(&b""[..], Cause::reply);
            for open in table.open.values() {
                if let Some(closer) = &open.closer {
                    tell_and_shut(&socket2::SockRef::from(closer), reply);
                }
            }
        }
        self.shutdown.close_connections();
    }

    /// The line a client gets when the port closes its connections now (empty before that, and
    /// on an `exec` port).
    pub fn cut_off_reply(&self) -> &'static [u8] {
        lock(&self.table)
            .closing
            .and_then(|why| self.told(why))
            .map_or(b"", Cause::reply)
    }

    /// What a client cut off is told: nothing on an `exec` port.
    fn told(&self, why: Cause) -> Option<Cause> {
        (self.plan.entry.service != crate::config::EXEC_SERVICE).then_some(why)
    }

    /// The connections open now, oldest first, at most `limit` of them, and how many there are.
    pub fn open_connections(&self, limit: usize) -> (Vec<OpenConnection>, usize) {
        let table = lock(&self.table);
        let mut open: Vec<(&u64, &Open)> = table.open.iter().collect();
        // The oldest `limit` in order, without sorting ten thousand entries under the lock.
        if open.len() > limit {
            open.select_nth_unstable_by_key(limit, |(id, _)| **id);
        }
        let total = open.len();
        open.truncate(limit);
        open.sort_by_key(|(id, _)| **id);
        let listed = open
            .iter()
            .map(|(id, o)| OpenConnection {
                id: **id,
                peer: o.peer,
                since: o.since,
                traffic: o.traffic.totals(),
                pid: o.pid,
            })
            .collect();
        (listed, total)
    }

    /// Records the child process serving connection `id`.
    pub fn set_pid(&self, id: u64, pid: u32) {
        if let Some(open) = lock(&self.table).open.get_mut(&id) {
            open.pid = Some(pid);
        }
    }

    /// The process serving connection `id`, if it has one.
    pub fn pid(&self, id: u64) -> Option<u32> {
        lock(&self.table).open.get(&id).and_then(|o| o.pid)
    }

    /// What the port is doing.
    pub fn state(&self) -> PortState {
        if self.shutdown.is_stopped() {
            PortState::Draining
        } else if self.shutdown.is_retired() {
            PortState::Retired
        } else {
            PortState::Accepting
        }
    }

    /// The child processes serving the port's connections now, and a prefork port's workers
    /// (idle ones too).
    pub fn child_pids(&self) -> Vec<u32> {
        let mut pids = self.serving_pids();
        pids.extend(self.stats.workers().into_iter().map(|(pid, _)| pid));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The processes serving the port's connections now.
    pub fn serving_pids(&self) -> Vec<u32> {
        lock(&self.table)
            .open
            .values()
            .filter_map(|o| o.pid)
            .collect()
    }

    pub fn open_count(&self) -> usize {
        lock(&self.table).open.len()
    }

    /// Everything this port has served: its closed connections' traffic and its open ones'.
    pub fn traffic(&self) -> Totals {
        let mut totals = self.stats.closed_traffic();
        for open in lock(&self.table).open.values() {
            totals.add(&open.traffic.totals());
        }
        totals
    }

    /// How many clients wait in the listen backlog, if the port still listens.
    pub fn waiting(&self) -> Option<u64> {
        let listener = self.listener()?;
        crate::sockets::accept_queue(&*listener)
            .ok()
            .map(|(queued, _)| u64::from(queued))
    }
}

/// What a port is doing, as the live page, `porthost status` and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// Taking new clients.
    Accepting,
    /// Stopped (removed or changed by a reload, or the host drains): its connections finish.
    Draining,
    /// A single-session port after its client: it takes no one else.
    Retired,
}

/// The clock of rates and log budgets: tokio's, which is the system's monotonic clock except in
/// tests that pause time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a connection holds while it is served: one of the port's `max_connections` slots and,
/// with `max_connections_per_ip`, one of its address's. Dropping it gives both back and, for a
/// single-session service, retires the port, so no model and no error path can forget to.
#[derive(Debug)]
pub struct Admission {
    port: Arc<Port>,
    /// The connection's entry in the port's table.
    id: u64,
    since: Instant,
    traffic: Arc<Traffic>,
    /// Its slot of `max_connections`, when the host accepted it (the fork server holds its own).
    _slot: Option<OwnedSemaphorePermit>,
    /// Its place at the port's gate, given back on drop.
    pass: Option<Pass>,
    /// The address the client connected to at its proxy, when its PROXY header named one:
    /// the server's address as the client sees it (an `exec` program's `TCPLOCALIP`).
    destination: Option<SocketAddr>,
}

impl Admission {
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// Where the connection's service counts what it serves.
    pub fn meter(&self) -> Meter {
        Meter::new(self.traffic.clone())
    }

    /// The connection's traffic counts, for a child's reports to land in.
    pub fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }

    /// The connection's entry in its port's table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address the client connected to, when its PROXY header named one (otherwise it is
    /// the socket's own).
    pub fn destination(&self) -> Option<SocketAddr> {
        self.destination
    }

    /// Keeps a second handle on the connection's socket, so that closing the port's
    /// connections can reach it; closes it at once if that has already happened.
    pub fn set_closer(&self, closer: std::net::TcpStream) {
        let mut table = lock(&self.port.table);
        if let Some(why) = table.closing {
            let reply = self.port.told(why).map_or(&b""[..], Cause::reply);
            tell_and_shut(&socket2::SockRef::from(&closer), reply);
        }
        if let Some(open) = table.open.get_mut(&self.id) {
            open.closer = Some(closer);
        }
    }
}

impl Admission {
    /// Shuts the connection's socket down for everyone holding it: an `exec` program's end is
    /// the connection's end, whatever a process it left behind still holds.
    pub fn shut_down(&self) {
        if let Some(closer) = lock(&self.port.table)
            .open
            .get(&self.id)
            .and_then(|o| o.closer.as_ref())
        {
            let _ = closer.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut table = lock(&self.port.table);
            let removed = table.open.remove(&self.id);
            // Under the table's lock, so that a scrape never sees the traffic twice or not at all.
            let (lasted, traffic) = (self.since.elapsed(), self.traffic.totals());
            self.port.stats.ended(lasted, &traffic);
            if let Some(open) = &removed {
                self.port
                    .events
                    .push(Some(self.port.port()), Kind::Left, || {
                        format!(
                            "{} left after {:.1} s, {} line{}",
                            open.peer,
                            lasted.as_secs_f64(),
                            traffic.lines,
                            if traffic.lines == 1 { "" } else { "s" }
                        )
                    });
            }
        }
        if let Some(pass) = self.pass.take() {
            lock(&self.port.gate).leave(pass);
        }
        let port = &self.port;
        if port.single_session && port.shutdown.retire() {
            info!(
                port = port.port(),
                "first client has left; the port no longer accepts (once = true)"
            );
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
        Port::new(plan, Arc::new(listener), Arc::default())
    }

    #[tokio::test]
    async fn per_address_counts_are_given_back_on_drop() {
        let port = port("max_connections = 10\nmax_connections_per_ip = 2").await;
        let ip: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let admit = |ip| {
            let port = port.clone();
            async move {
                let slot = port.slot().await.unwrap();
                port.admit(slot, ip, None)
            }
        };
        let a = admit(ip).await.unwrap();
        let b = admit(ip).await.unwrap();
        assert_eq!(admit(ip).await.unwrap_err(), Refusal::TooManyFromAddress);
        let other = admit("127.0.0.2:1000".parse().unwrap()).await.unwrap();
        assert_eq!(port.open_count(), 3);
        drop(a);
        let c = admit(ip).await.unwrap();
        drop((b, c, other));
        assert_eq!(lock(&port.gate).remembered().1, 0);
        assert_eq!(port.open_count(), 0);
        assert_eq!(port.stats.counts().accepted, 4);
        assert_eq!(port.slots.available_permits(), 10);
    }

    #[tokio::test]
    async fn without_a_limit_nothing_is_counted() {
        let port = port("").await;
        let slot = port.slot().await.unwrap();
        let admission = port
            .admit(slot, "[::1]:1000".parse().unwrap(), None)
            .unwrap();
        assert_eq!(lock(&port.gate).remembered().1, 0);
        drop(admission);
    }

    #[tokio::test(start_paused = true)]
    async fn tidying_forgets_refilled_rates_and_logs_a_flood_that_stopped() {
        let port = port("max_connection_rate_per_ip = { per_second = 1, burst = 2 }").await;
        for last in 1..=20u16 {
            let slot = port.slot().await.unwrap();
            let peer = SocketAddr::from(([10, 0, 0, (last % 4) as u8], last));
            if let Err(refusal) = port.admit(slot, peer, None) {
                port.refused(peer, refusal, "test");
            }
        }
        assert_eq!(lock(&port.gate).remembered().0, 4);
        assert!(
            lock(&port.refusal_log).due().is_some(),
            "refusals held back"
        );

        let tidy = tokio::spawn({
            let port = port.clone();
            async move { port.tidy_forever().await }
        });
        tokio::time::sleep(REFUSALS_LOGGED.1 + std::time::Duration::from_secs(1)).await;
        assert_eq!(
            lock(&port.refusal_log).due(),
            None,
            "the summary of the stopped flood was written"
        );
        assert_eq!(
            lock(&port.gate).remembered().0,
            0,
            "buckets that filled up again are forgotten"
        );
        tidy.abort();
    }

    #[tokio::test]
    async fn a_single_session_port_retires_when_its_first_admission_drops() {
        let port = port("options = { once = true }").await;
        let slot = port.slot().await.unwrap();
        let admission = port
            .admit(slot, "[::1]:1000".parse().unwrap(), None)
            .unwrap();
        assert!(!port.shutdown.is_done_accepting());
        drop(admission);
        assert!(port.shutdown.is_retired());
        assert!(port.listener().is_none());
        assert!(port.slot().await.is_none(), "no slot once retired");
    }
}
