//! The fork server's side of a `prefork` port ([`crate::models::prefork`]): it forks the
//! port's workers and keeps the pool full, admits the clients they accept, passes them those
//! the host accepted, and reports every connection and every worker to the host.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid, fork};
use tracing::warn;

use super::wire::{self, Client, FromForker, PoolSpec, WorkerChange};
use super::worker::{self, FromWorker, ToWorker};
use super::{ForkServer, close_all_but, refuse};
use crate::gate::Pass;

/// A worker that fails within this long of its start is replaced only after as long again:
/// a service that crashes at once must not turn the fork server into a fork loop.
const YOUNG: Duration = Duration::from_secs(1);

/// A prefork port's workers, and the connections the host handed over that wait for one.
pub(super) struct Pool {
    spec: PoolSpec,
    workers: HashMap<Pid, Worker>,
    /// Connections the host accepted (a PROXY header read, a single-session port), waiting
    /// for an idle worker.
    queue: VecDeque<Handed>,
    /// After `Unlisten`: the workers that have yet to say they stopped accepting.
    unlistening: Option<HashSet<Pid>>,
    /// No worker is forked before this, after one that failed young.
    paused_until: Option<Instant>,
}

struct Worker {
    /// The fork server's end of the worker's control socket (non-blocking).
    control: OwnedFd,
    /// When it was forked: a worker that fails young pauses the pool.
    started: Instant,
    /// The connections it serves now. Two only when it accepted a client just as the fork
    /// server handed it one (it serves them one after the other); the host hands clients over
    /// only on ports it accepts for, so on a port the workers accept for it is one at most.
    serving: Vec<u64>,
    /// The connections it has served, for its report when it ends.
    served: u64,
    /// Whether it holds the listening socket now (it is idle, and the port accepts).
    accepting: bool,
    /// It said its last connection was its last (recycled, or its service panicked): it is
    /// exiting, and is given nothing more.
    retiring: bool,
    /// Its control socket has reached its end: not polled again until it is reaped.
    closed: bool,
}

struct Handed {
    conn: u64,
    client: Client,
    fd: OwnedFd,
}

/// A connection a worker serves, as the fork server tracks it.
pub(super) struct PoolConn {
    port_id: u64,
    pid: Pid,
    /// For a client the worker accepted: its place at the port's gate, and the socket's second
    /// handle, to tell the client why and shut it down when the host closes the connection.
    accepted: Option<(Pass, OwnedFd)>,
}

impl Pool {
    pub(super) fn new(spec: PoolSpec) -> Pool {
        Pool {
            spec,
            workers: HashMap::new(),
            queue: VecDeque::new(),
            unlistening: None,
            paused_until: None,
        }
    }

    /// The workers' control sockets still open, for `poll`.
    pub(super) fn controls(&self) -> impl Iterator<Item = (Pid, &OwnedFd)> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.closed)
            .map(|(pid, w)| (*pid, &w.control))
    }

    /// When the pool may fork again, if it is paused.
    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    pub(super) fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.workers.keys().copied()
    }

    fn idle(&self) -> Option<Pid> {
        self.workers
            .iter()
            .find(|(_, w)| w.serving.is_empty() && !w.retiring && !w.closed)
            .map(|(pid, _)| *pid)
    }
}

impl ForkServer {
    /// Forks the workers a pool lacks, unless it is paused.
    pub(super) fn fill_pool(&mut self, port_id: u64, now: Instant) {
        loop {
            let Some(pool) = self.ports.get(&port_id).and_then(|p| p.pool.as_ref()) else {
                return;
            };
            if pool.workers.len() >= pool.spec.workers
                || pool.paused_until.is_some_and(|until| now < until)
            {
                return;
            }
            if let Some(pool) = self.pool_mut(port_id) {
                pool.paused_until = None;
            }
            if let Err(e) = self.fork_worker(port_id) {
                let port = &self.ports[&port_id];
                warn!(
                    port = port.spec.port,
                    "cannot fork a prefork worker: {e}; trying again in {YOUNG:?}"
                );
                if let Some(pool) = self.ports.get_mut(&port_id).and_then(|p| p.pool.as_mut()) {
                    pool.paused_until = Some(now + YOUNG);
                }
                return;
            }
        }
    }

    /// Forks every pool's missing workers whose pause is over.
    pub(super) fn fill_pools(&mut self, now: Instant) {
        let short: Vec<u64> = self
            .ports
            .iter()
            .filter(|(_, p)| {
                p.pool
                    .as_ref()
                    .is_some_and(|pool| pool.workers.len() < pool.spec.workers)
            })
            .map(|(id, _)| *id)
            .collect();
        for port_id in short {
            self.fill_pool(port_id, now);
        }
    }

    #[allow(unsafe_code)]
    fn fork_worker(&mut self, port_id: u64) -> nix::Result<()> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Before the fork: a worker must not start unless the fork server can track it.
        nix::fcntl::fcntl(
            &ours,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        let port = &self.ports[&port_id];
        // A worker forked while the port accepts accepts too; one forked after `Unlisten` not.
        let listener = port
            .listening
            .as_ref()
            .filter(|l| !l.closing)
            .map(|l| l.socket.as_fd());
        // SAFETY: the forker never starts a second thread, so the child gets a consistent copy
        // of the only thread's memory and may run any code.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => {
                drop(theirs);
                let accepting = listener.is_some();
                let pool = self.pool_mut(port_id).expect("the port was just read");
                pool.workers.insert(
                    child,
                    Worker {
                        control: ours,
                        started: Instant::now(),
                        serving: Vec::new(),
                        served: 0,
                        accepting,
                        retiring: false,
                        closed: false,
                    },
                );
                self.out.push(FromForker::Worker {
                    port_id,
                    pid: child.as_raw(),
                    change: WorkerChange::Started,
                });
                self.dispatch(port_id);
                Ok(())
            }
            ForkResult::Child => {
                let keep = [
                    Some(theirs.as_raw_fd()),
                    Some(self.chan.as_raw_fd()),
                    listener.map(|l| l.as_raw_fd()),
                ];
                close_all_but(&keep);
                // SAFETY: the worker never returns to the parent's owners of these numbers (it
                // ends in `_exit`), so from here on each has one owner: the worker. It closes the
                // listening socket when told to stop accepting; a copy instead would keep the
                // socket open (and queueing clients) in every worker after a drain.
                let (listener, chan) = unsafe {
                    (
                        listener.map(|l| OwnedFd::from_raw_fd(l.as_raw_fd())),
                        OwnedFd::from_raw_fd(self.chan.as_raw_fd()),
                    )
                };
                let code = worker::run(port, theirs, listener, chan, self.debug_logging);
                // SAFETY: `_exit` ends the process at once; the forker's exit handlers are not
                // the worker's to run.
                unsafe { nix::libc::_exit(code) }
            }
        }
    }

    fn pool_mut(&mut self, port_id: u64) -> Option<&mut Pool> {
        self.ports.get_mut(&port_id).and_then(|p| p.pool.as_mut())
    }

    /// Reads what a worker said.
    pub(super) fn worker_said(&mut self, port_id: u64, pid: Pid) {
        let mut buf = [0u8; 512];
        loop {
            let Some(control) = self
                .ports
                .get(&port_id)
                .and_then(|p| p.pool.as_ref())
                .and_then(|pool| pool.workers.get(&pid))
                .map(|w| &w.control)
            else {
                return;
            };
            let port = self.ports[&port_id].spec.port;
            let (message, mut fds) = match wire::recv::<FromWorker>(control.as_fd(), &mut buf) {
                Ok(Some(received)) => received,
                // Ended: the reaping tells; until then its socket is not polled.
                Ok(None) => {
                    if let Some(worker) =
                        self.pool_mut(port_id).and_then(|p| p.workers.get_mut(&pid))
                    {
                        worker.closed = true;
                    }
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // A worker that ended with messages unread resets its socket; what it sent
                // before (its last `Done`) is still to be read, and then the end.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    warn!(
                        port,
                        "a prefork worker ({pid}) said something unreadable: {e}; ending it"
                    );
                    let _ = kill(pid, Signal::SIGKILL);
                    return;
                }
            };
            match message {
                FromWorker::Admit { peer } => match fds.pop() {
                    Some(fd) => self.admit_for_worker(port_id, pid, peer, fd),
                    None => {
                        self.tell_worker(port_id, pid, &ToWorker::Verdict { conn: None }, None);
                        self.worker_unlistened(port_id, pid);
                        self.relisten(port_id, pid);
                    }
                },
                FromWorker::Done {
                    conn,
                    panicked,
                    last,
                } => self.worker_done(conn, pid, panicked, last),
                FromWorker::Unlistened => self.worker_unlistened(port_id, pid),
            }
        }
    }

    /// Sends a worker a message, and says whether it went; a worker that cannot take it is
    /// ended (and replaced).
    fn tell_worker(
        &self,
        port_id: u64,
        pid: Pid,
        message: &ToWorker,
        fd: Option<BorrowedFd<'_>>,
    ) -> bool {
        let Some((port, worker)) = self.ports.get(&port_id).and_then(|p| {
            let worker = p.pool.as_ref()?.workers.get(&pid)?;
            Some((p.spec.port, worker))
        }) else {
            return false;
        };
        match wire::send(worker.control.as_fd(), message, fd.as_slice()) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    port,
                    "cannot reach a prefork worker ({pid}): {e}; ending it"
                );
                let _ = kill(pid, Signal::SIGKILL);
                false
            }
        }
    }

    /// Decides on a client a worker accepted and answers the worker, which has closed its
    /// handle on the listening socket meanwhile (so a drain need not wait for it).
    fn admit_for_worker(
        &mut self,
        port_id: u64,
        pid: Pid,
        peer: std::net::SocketAddr,
        fd: OwnedFd,
    ) {
        let serves = self.decide_for_worker(port_id, pid, peer, fd);
        self.worker_unlistened(port_id, pid);
        if !serves {
            // Nothing to serve: it takes the next client.
            self.relisten(port_id, pid);
        }
    }

    /// Admits a worker's client with the port's gate, or turns it away with its line; says
    /// whether the worker serves it.
    fn decide_for_worker(
        &mut self,
        port_id: u64,
        pid: Pid,
        peer: std::net::SocketAddr,
        fd: OwnedFd,
    ) -> bool {
        let Some(listening) = self
            .ports
            .get_mut(&port_id)
            .and_then(|p| p.listening.as_mut())
        else {
            // The port is gone, or no longer accepts: nobody can serve the client.
            if let Some(port) = self.ports.get(&port_id) {
                warn!(port = port.spec.port, %peer, "a prefork worker accepted a client after its port stopped; closing it");
            }
            self.tell_worker(port_id, pid, &ToWorker::Verdict { conn: None }, None);
            return false;
        };
        let pass = match listening.gate.admit(peer.ip(), Instant::now()) {
            Ok(pass) => pass,
            Err(refusal) => {
                refuse(&socket2::SockRef::from(&fd), refusal);
                self.out.push(FromForker::Refused {
                    port_id,
                    peer,
                    refusal,
                });
                self.tell_worker(port_id, pid, &ToWorker::Verdict { conn: None }, None);
                return false;
            }
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.pool_conns.insert(
            conn,
            PoolConn {
                port_id,
                pid,
                accepted: Some((pass, fd)),
            },
        );
        if let Some(worker) = self
            .pool_mut(port_id)
            .and_then(|pool| pool.workers.get_mut(&pid))
        {
            worker.serving.push(conn);
        }
        self.out.push(FromForker::Accepted {
            port_id,
            conn,
            pid: pid.as_raw(),
            peer,
        });
        // A worker that cannot hear it is ended, and its connection with it (see the reaping).
        self.tell_worker(port_id, pid, &ToWorker::Verdict { conn: Some(conn) }, None);
        true
    }

    /// A connection the host accepted, for a worker of the port: the first idle one now, or
    /// the next that is done.
    pub(super) fn hand_to_worker(&mut self, port_id: u64, conn: u64, client: Client, fd: OwnedFd) {
        let Some(pool) = self.pool_mut(port_id) else {
            let reason = format!("no prefork port {port_id} in the forker");
            return self.out.push(FromForker::Failed { conn, reason });
        };
        pool.queue.push_back(Handed { conn, client, fd });
        self.dispatch(port_id);
    }

    /// Gives idle workers the connections waiting for one.
    fn dispatch(&mut self, port_id: u64) {
        loop {
            let Some(pool) = self.pool_mut(port_id) else {
                return;
            };
            let Some(pid) = pool.idle() else {
                return;
            };
            let Some(handed) = pool.queue.pop_front() else {
                return;
            };
            if let Some(worker) = pool.workers.get_mut(&pid) {
                worker.serving.push(handed.conn);
            }
            self.pool_conns.insert(
                handed.conn,
                PoolConn {
                    port_id,
                    pid,
                    accepted: None,
                },
            );
            let message = ToWorker::Serve {
                conn: handed.conn,
                client: handed.client,
            };
            if self.tell_worker(port_id, pid, &message, Some(handed.fd.as_fd())) {
                self.out.push(FromForker::Forked {
                    conn: handed.conn,
                    pid: pid.as_raw(),
                });
                continue;
            }
            // The worker is gone (and being ended): the client waits for the next one.
            self.pool_conns.remove(&handed.conn);
            let Some(pool) = self.pool_mut(port_id) else {
                return;
            };
            if let Some(worker) = pool.workers.get_mut(&pid) {
                worker.serving.retain(|c| *c != handed.conn);
                worker.closed = true;
            }
            pool.queue.push_front(handed);
        }
    }

    fn worker_done(&mut self, conn: u64, pid: Pid, panicked: bool, last: bool) {
        let status = if panicked {
            "its service panicked"
        } else {
            "served"
        };
        self.pool_conn_ended(conn, pid, status.to_owned(), !panicked);
        if let Some(port_id) = self.port_of_worker(pid) {
            if let Some(worker) = self.pool_mut(port_id).and_then(|p| p.workers.get_mut(&pid)) {
                worker.served += 1;
                worker.retiring |= last;
            }
            self.relisten(port_id, pid);
            self.dispatch(port_id);
        }
    }

    /// A worker's connection is over: its place at the gate goes back, the host is told.
    fn pool_conn_ended(&mut self, conn: u64, pid: Pid, status: String, clean: bool) {
        let Some(ended) = self.pool_conns.remove(&conn) else {
            return;
        };
        if let Some(worker) = self
            .pool_mut(ended.port_id)
            .and_then(|pool| pool.workers.get_mut(&pid))
        {
            worker.serving.retain(|c| *c != conn);
        }
        if let Some((pass, _socket)) = ended.accepted {
            self.give_back(ended.port_id, pass);
        }
        self.out.push(FromForker::Finished {
            conn,
            pid: pid.as_raw(),
            status,
            clean,
        });
    }

    fn port_of_worker(&self, pid: Pid) -> Option<u64> {
        self.ports
            .iter()
            .find(|(_, p)| {
                p.pool
                    .as_ref()
                    .is_some_and(|pool| pool.workers.contains_key(&pid))
            })
            .map(|(id, _)| *id)
    }

    /// Gives a worker that is done with its client the listening socket again, while the port
    /// accepts.
    fn relisten(&mut self, port_id: u64, pid: Pid) {
        let Some(port) = self.ports.get(&port_id) else {
            return;
        };
        let (Some(pool), Some(listening)) = (&port.pool, &port.listening) else {
            return;
        };
        let busy_or_going =
            |w: &Worker| w.accepting || w.retiring || w.closed || !w.serving.is_empty();
        if listening.closing || pool.workers.get(&pid).is_none_or(busy_or_going) {
            return;
        }
        self.tell_worker(
            port_id,
            pid,
            &ToWorker::Listen,
            Some(listening.socket.as_fd()),
        );
        if let Some(worker) = self.pool_mut(port_id).and_then(|p| p.workers.get_mut(&pid)) {
            worker.accepting = true;
        }
    }

    /// The port accepts now: every worker gets the listening socket.
    pub(super) fn listen_workers(&mut self, port_id: u64) {
        let Some(port) = self.ports.get(&port_id) else {
            return;
        };
        let (Some(pool), Some(listening)) = (&port.pool, &port.listening) else {
            return;
        };
        let pids: Vec<Pid> = pool.pids().collect();
        let socket = listening.socket.as_fd();
        for pid in &pids {
            self.tell_worker(port_id, *pid, &ToWorker::Listen, Some(socket));
        }
        if let Some(pool) = self.pool_mut(port_id) {
            for pid in pids {
                if let Some(worker) = pool.workers.get_mut(&pid) {
                    worker.accepting = true;
                }
            }
        }
    }

    /// The port stops accepting: every worker that holds the listening socket closes it and
    /// says so; then the port's socket is closed here and the host told (which accepts what
    /// the backlog still holds and hands it to the workers).
    pub(super) fn unlisten_workers(&mut self, port_id: u64) {
        let Some(pool) = self.pool_mut(port_id) else {
            return;
        };
        let pending: HashSet<Pid> = pool
            .workers
            .iter()
            .filter(|(_, w)| w.accepting)
            .map(|(pid, _)| *pid)
            .collect();
        pool.unlistening = Some(pending.clone());
        for pid in pending {
            self.tell_worker(port_id, pid, &ToWorker::Unlisten, None);
        }
        self.unlistened_if_done(port_id);
    }

    fn worker_unlistened(&mut self, port_id: u64, pid: Pid) {
        if let Some(pool) = self.pool_mut(port_id) {
            if let Some(worker) = pool.workers.get_mut(&pid) {
                worker.accepting = false;
            }
            if let Some(pending) = &mut pool.unlistening {
                pending.remove(&pid);
            }
        }
        self.unlistened_if_done(port_id);
    }

    /// Once no worker accepts on the port's socket any more, closes it and tells the host.
    fn unlistened_if_done(&mut self, port_id: u64) {
        let Some(port) = self.ports.get_mut(&port_id) else {
            return;
        };
        let done = port
            .pool
            .as_ref()
            .and_then(|p| p.unlistening.as_ref())
            .is_some_and(HashSet::is_empty);
        if done && port.listening.take().is_some() {
            if let Some(pool) = &mut port.pool {
                pool.unlistening = None;
            }
            self.out.push(FromForker::Unlistened { port_id });
        }
    }

    /// A reaped process that was a worker: its connections end, the host is told, and a
    /// fresh worker takes its place. `false` when it was no worker.
    pub(super) fn worker_reaped(
        &mut self,
        pid: Pid,
        how: &(String, String),
        status: &str,
        clean: bool,
    ) -> bool {
        if self.leaving.remove(&pid) {
            return true;
        }
        let Some(port_id) = self.port_of_worker(pid) else {
            return false;
        };
        let pool = self.pool_mut(port_id).expect("the worker's port");
        let worker = pool.workers.remove(&pid).expect("the port's worker");
        if !clean && worker.started.elapsed() < YOUNG {
            pool.paused_until = Some(Instant::now() + YOUNG);
        }
        for conn in worker.serving.clone() {
            self.pool_conn_ended(conn, pid, format!("its worker {status}"), false);
        }
        self.out.push(FromForker::Worker {
            port_id,
            pid: pid.as_raw(),
            change: WorkerChange::Ended {
                how: how.clone(),
                status: status.to_owned(),
                clean,
                served: worker.served,
            },
        });
        self.worker_unlistened(port_id, pid);
        self.fill_pool(port_id, Instant::now());
        true
    }

    /// The port is forgotten: its workers, told by their control sockets closing, end after
    /// their connection and are reaped quietly.
    pub(super) fn forget_pool(&mut self, port_id: u64, pool: Pool) {
        self.leaving.extend(pool.pids());
        // What it still had is answered, so that nothing waits for it at the host.
        for handed in pool.queue {
            let reason = "the port is gone".to_owned();
            self.out.push(FromForker::Failed {
                conn: handed.conn,
                reason,
            });
        }
        let conns: Vec<(u64, Pid)> = self
            .pool_conns
            .iter()
            .filter(|(_, c)| c.port_id == port_id)
            .map(|(conn, c)| (*conn, c.pid))
            .collect();
        for (conn, pid) in conns {
            self.pool_conns.remove(&conn);
            self.out.push(FromForker::Finished {
                conn,
                pid: pid.as_raw(),
                status: "its port is gone".to_owned(),
                clean: false,
            });
        }
    }

    /// Tells a worker's client why it is cut off and shuts its socket down, which ends the
    /// connection where the worker blocks on it; `false` when no worker serves `conn`.
    pub(super) fn close_pool_conn(&self, conn: u64, reply: &[u8]) -> bool {
        let Some(pool_conn) = self.pool_conns.get(&conn) else {
            return false;
        };
        if let Some((_, socket)) = &pool_conn.accepted {
            crate::port::tell_and_shut(&socket2::SockRef::from(socket), reply);
        }
        true
    }

    /// A signal for a connection a worker serves: only SIGKILL goes to the worker (a worker
    /// stuck past the grace period); a drain's SIGTERM is for processes that serve one
    /// connection, and the host has already shut the socket down. `false` when no worker
    /// serves `conn`.
    pub(super) fn signal_pool_conn(&self, conn: u64, signal: Signal) -> bool {
        let Some(pool_conn) = self.pool_conns.get(&conn) else {
            return false;
        };
        if signal == Signal::SIGKILL {
            let _ = kill(pool_conn.pid, Signal::SIGKILL);
        }
        true
    }

    /// Every worker's pid, the forgotten pools' too, for ending them with the fork server.
    pub(super) fn all_workers(&self) -> Vec<Pid> {
        self.ports
            .values()
            .filter_map(|p| p.pool.as_ref())
            .flat_map(Pool::pids)
            .chain(self.leaving.iter().copied())
            .collect()
    }
}
