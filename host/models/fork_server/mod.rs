//! The fork server: a single-threaded helper process (`porthost forker`, started by the host)
//! that forks one child per connection.
//!
//! The host is multi-threaded, and `fork()` in a multi-threaded process copies only the calling
//! thread, leaving locks held by the others locked forever in the child. The forker never starts
//! a thread, so forking it is safe, and cheap: no `exec`, and the service is built once per port
//! and inherited. It is the children's parent, so it reaps them and reports every child's end.
//!
//! A port's clients reach it one of two ways:
//! - **It accepts them** ([`ToForker::Listen`]), the textbook's `ForkingTCPServer`: the host
//!   hands it the listening socket once, and this loop accepts, admits the client by the port's
//!   [`Rules`] (with [`Gate`], the code the host's own accept loop decides with), forks, and
//!   tells the host in one batch per turn. The host is not on a connection's path at all.
//!   An `exec` port's program is started without a fork ([`crate::exec::vfork`]) and gets a
//!   stderr pipe made here, whose read end goes to the host with the report.
//! - **The host hands each one over** (`SCM_RIGHTS` with [`ToForker::Serve`]) for what must
//!   happen before a fork: a PROXY header read, a single-session port's one client.
//!
//! A `prefork` port's clients are served by workers this process forks once and keeps
//! ([`pool`], [`worker`]): they accept, this loop admits.
//!
//! Both forking models build on this module, and it on neither:
//! - here: the fork server's loop;
//! - [`handle`]: the host's side of it ([`ForkerHandle`]): starts it, sends it ports, sockets
//!   and connections, and routes each child's (or worker's) reports to its connection;
//! - [`child`]: a child's life, from the fork to `_exit`; [`wire`]: what the host and the
//!   fork server say to each other;
//! - [`pool`] and [`worker`]: a prefork port's workers, on the fork server's side and on
//!   their own.

pub(crate) mod child;
pub(crate) mod handle;
mod pool;
pub mod wire;
pub(crate) mod worker;

pub use handle::{ForkerCommand, ForkerHandle};

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use porthost_services::{Options, Service};
use tracing::{info_span, warn};

use crate::config::Model;
use crate::connection::{self, End};
use crate::gate::{Gate, Pass, Refusal, Rules};
use crate::sockets::is_per_connection;
use pool::{Pool, PoolConn};
use wire::{ChildSpec, Client, FromForker, ToForker};

/// How long the forker waits for children to end after SIGTERM when the host goes away.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// How often the fork server looks for ended children without being told. SIGCHLD wakes it at
/// once when the signal reaches it; in a fork server that runs beside other threads (a test
/// binary's harness), the signal can go to a thread that ignores it instead.
const REAP_TICK: u16 = 100;

/// How many clients one turn of the loop accepts on one port at most: a flood on one port
/// leaves the other ports, the host's messages and the reaping their turn.
const ACCEPT_BATCH: usize = 64;

/// How long a port pauses accepting after an error that freed descriptors may cure (EMFILE).
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often the rate buckets of listening ports are tidied, when nothing else wakes the loop.
const TIDY_EVERY: Duration = Duration::from_secs(1);

/// The ids of connections the fork server accepts itself start here, above any id the host
/// gives out, so both kinds can share one table of children.
pub(super) const FIRST_OWN_CONN: u64 = 1 << 62;

/// The most reports held for one batch; a turn that makes more sends several.
const BATCH_MAX: usize = 512;

/// A port the fork server serves: what its children (or workers) inherit.
pub(crate) struct Port {
    pub(crate) spec: ChildSpec,
    pub(crate) service: Arc<dyn Service>,
    /// Its listening socket and gate, when the fork server (or the port's workers) accepts
    /// its clients.
    listening: Option<Listening>,
    /// A prefork port's workers.
    pool: Option<Pool>,
}

/// A port whose clients the fork server (or a prefork port's workers) accepts.
struct Listening {
    /// Non-blocking: the loop's `poll` says when to accept.
    socket: socket2::Socket,
    gate: Gate,
    /// Set by `Unlisten`: accept what is queued, then close the socket.
    closing: bool,
    /// After an accept error, no accepting before this.
    paused_until: Option<Instant>,
}

/// A child the fork server is the parent of.
struct Child {
    conn: u64,
    port_id: u64,
    /// For a client the fork server accepted: its place at the port's gate, and its socket,
    /// kept to tell the client why and shut it down when the host closes the connection.
    accepted: Option<(Pass, OwnedFd)>,
}

/// The fork server's state: its channel to the host, the ports it can serve, its children.
struct ForkServer {
    /// The host's end of the conversation, handed over as our stdin.
    chan: OwnedFd,
    /// SIGCHLD as a readable descriptor, so one `poll` waits for the host and for children.
    sigchld: SignalFd,
    ports: HashMap<u64, Port>,
    children: HashMap<Pid, Child>,
    /// The children that are `exec` programs, each the leader of a process group of its own:
    /// signals go to the group, and what is left of it dies with the program.
    groups: HashSet<Pid>,
    /// Whether connections' starts and ends are logged (debug level), read once here: a
    /// child that asked the subscriber would run its filters, page by page, in every child.
    debug_logging: bool,
    /// Reports for the host, sent together at the end of each turn of the loop.
    out: Vec<FromForker>,
    next_conn: u64,
    next_tidy: Instant,
    /// When to look for ended children next without a SIGCHLD.
    next_reap: Instant,
    /// The connections prefork workers serve.
    pool_conns: HashMap<u64, PoolConn>,
    /// Workers of forgotten prefork ports, still to be reaped.
    leaving: HashSet<Pid>,
}

/// Runs the fork server until the host closes its end, then ends the remaining children.
#[allow(unsafe_code)]
pub fn main() -> anyhow::Result<()> {
    crate::logging::set_panic_span(child::span);
    // Without a heap's fast bins, a child's first large allocation has no free chunks to sweep
    // together (`malloc_consolidate`), each on a page the child would first have to copy.
    // SAFETY: `mallopt` only changes how this process's allocator manages its free chunks.
    unsafe { nix::libc::mallopt(nix::libc::M_MXFAST, 0) };
    let chan = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("the forker expects the host's socket as stdin")?;
    // Children must not inherit the host's socket as their stdin.
    nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let sigchld = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    // What an `exec` program forks and leaves behind is reparented here, not to init, and
    // reaped with the children: no zombie, wherever init does not reap.
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut forker = ForkServer {
        chan,
        sigchld,
        ports: HashMap::new(),
        children: HashMap::new(),
        groups: HashSet::new(),
        debug_logging: tracing::enabled!(target: "porthost::connection", tracing::Level::DEBUG),
        out: Vec::new(),
        next_conn: FIRST_OWN_CONN,
        next_tidy: Instant::now() + TIDY_EVERY,
        next_reap: Instant::now(),
        pool_conns: HashMap::new(),
        leaving: HashSet::new(),
    };
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    loop {
        let now = Instant::now();
        let polled = forker.polled_ports(now);
        let mut workers: Vec<(u64, Pid)> = Vec::new();
        let (host_ready, child_ended, ready, said) = {
            let mut fds = vec![
                PollFd::new(forker.chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(forker.sigchld.as_fd(), PollFlags::POLLIN),
            ];
            for port_id in &polled {
                if let Some(listening) =
                    forker.ports.get(port_id).and_then(|p| p.listening.as_ref())
                {
                    fds.push(PollFd::new(listening.socket.as_fd(), PollFlags::POLLIN));
                }
            }
            // Each prefork worker's control socket, in the order of `workers`.
            for (port_id, port) in &forker.ports {
                for (pid, control) in port.pool.iter().flat_map(Pool::controls) {
                    workers.push((*port_id, pid));
                    fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, forker.timeout(now)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<u64> = polled
                .iter()
                .zip(&fds[2..])
                .filter(|(_, fd)| fd.any() == Some(true))
                .map(|(port_id, _)| *port_id)
                .collect();
            let said: Vec<(u64, Pid)> = workers
                .iter()
                .zip(&fds[2 + polled.len()..])
                .filter(|(_, fd)| fd.any() == Some(true))
                .map(|(worker, _)| *worker)
                .collect();
            (
                fds[0].any() == Some(true),
                fds[1].any() == Some(true),
                ready,
                said,
            )
        };
        for (port_id, pid) in said {
            forker.worker_said(port_id, pid);
        }
        if child_ended {
            while forker.sigchld.read_signal()?.is_some() {}
        }
        // An orphan reparented here (the fork server is a subreaper) ends with a SIGCHLD too.
        // Without one, a look every REAP_TICK, not every turn: a busy turn is a few system
        // calls, and a `wait4` that finds nothing would be one more.
        let now = Instant::now();
        if child_ended || (forker.has_children() && now >= forker.next_reap) {
            forker.next_reap = now + Duration::from_millis(REAP_TICK.into());
            forker.reap();
        }
        if host_ready {
            match wire::recv::<ToForker>(forker.chan.as_fd(), &mut buf) {
                Ok(Some((message, fds))) => forker.handle(message, fds),
                Ok(None) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading from the host"),
            }
        }
        for port_id in forker.to_accept(ready) {
            forker.accept(port_id);
        }
        forker.fill_pools(Instant::now());
        forker.tidy(Instant::now());
        forker.flush();
    }
    forker.end_children();
    Ok(())
}

impl ForkServer {
    /// Whether any process may end here: a child, a prefork worker, a forgotten pool's worker.
    fn has_children(&self) -> bool {
        !self.children.is_empty()
            || !self.leaving.is_empty()
            || self.ports.values().any(|p| {
                p.pool
                    .as_ref()
                    .is_some_and(|pool| pool.pids().next().is_some())
            })
    }

    fn handle(&mut self, message: ToForker, mut fds: Vec<OwnedFd>) {
        match message {
            ToForker::Port { port_id, spec } => {
                let built = porthost_services::find(&spec.service)
                    .ok_or_else(|| format!("unknown service {:?}", spec.service))
                    .and_then(|r| {
                        (r.build)(&Options::new(spec.options.clone(), spec.base_dir.clone()))
                    });
                match built {
                    Ok(service) => {
                        warm_up(&spec);
                        let port = Port {
                            pool: spec.pool.map(Pool::new),
                            spec,
                            service,
                            listening: None,
                        };
                        self.ports.insert(port_id, port);
                        self.fill_pool(port_id, Instant::now());
                    }
                    Err(e) => warn!(port = spec.port, "cannot build {}: {e}", spec.service),
                }
            }
            ToForker::Serve {
                conn,
                port_id,
                client,
            } => {
                if self.ports.get(&port_id).is_some_and(|p| p.pool.is_some()) {
                    match fds.pop() {
                        Some(fd) => self.hand_to_worker(port_id, conn, client, fd),
                        None => self.out.push(FromForker::Failed {
                            conn,
                            reason: "no connection came with the request".to_owned(),
                        }),
                    }
                    return;
                }
                // The socket first, then an `exec` program's stderr pipe.
                let stderr = (fds.len() > 1).then(|| fds.pop()).flatten();
                // The parent's copies of the descriptors are closed when this returns.
                let started = match (self.ports.get(&port_id), fds.pop()) {
                    (Some(port), Some(fd)) => self
                        .fork_child(
                            conn,
                            client,
                            port,
                            fd.as_fd(),
                            stderr.as_ref().map(AsFd::as_fd),
                        )
                        .map(|pid| (pid, crate::exec::of(&*port.service).is_some()))
                        .map_err(|e| e.to_string()),
                    (None, _) => Err(format!("no port {port_id} in the forker")),
                    (_, None) => Err("no connection came with the request".to_owned()),
                };
                match started {
                    Ok((pid, program)) => {
                        let child = Child {
                            conn,
                            port_id,
                            accepted: None,
                        };
                        self.children.insert(pid, child);
                        if program {
                            self.groups.insert(pid);
                        }
                        self.out.push(FromForker::Forked {
                            conn,
                            pid: pid.as_raw(),
                        });
                    }
                    Err(reason) => self.out.push(FromForker::Failed { conn, reason }),
                }
            }
            ToForker::Signal { conn, signal } => {
                let signal = Signal::try_from(signal).unwrap_or(Signal::SIGKILL);
                self.signal(conn, signal);
            }
            ToForker::Forget { port_id } => {
                if let Some(port) = self.ports.remove(&port_id) {
                    if port.listening.is_some() {
                        self.out.push(FromForker::Unlistened { port_id });
                    }
                    if let Some(pool) = port.pool {
                        self.forget_pool(port_id, pool);
                    }
                }
            }
            ToForker::Listen { port_id, rules } => self.listen(port_id, rules, fds.pop()),
            ToForker::Unlisten { port_id } => {
                match self
                    .ports
                    .get_mut(&port_id)
                    .and_then(|p| p.listening.as_mut())
                {
                    Some(listening) => listening.closing = true,
                    None => self.out.push(FromForker::Unlistened { port_id }),
                }
                self.unlisten_workers(port_id);
            }
            ToForker::Close { conn, reply } => {
                if self.close_pool_conn(conn, &reply) {
                    return;
                }
                if let Some((_, socket)) = self
                    .children
                    .values()
                    .find(|c| c.conn == conn)
                    .and_then(|c| c.accepted.as_ref())
                {
                    crate::port::tell_and_shut(&socket2::SockRef::from(socket), &reply);
                }
                self.signal(conn, Signal::SIGTERM);
            }
        }
    }

    /// Signals a connection's child (an `exec` program's whole process group).
    fn signal(&self, conn: u64, signal: Signal) {
        if self.signal_pool_conn(conn, signal) {
            return;
        }
        for (pid, _) in self.children.iter().filter(|(_, c)| c.conn == conn) {
            let _ = if self.groups.contains(pid) {
                killpg(*pid, signal)
            } else {
                kill(*pid, signal)
            };
        }
    }

    /// Starts accepting a port's clients on `socket`; says `Unlistened` at once when it cannot,
    /// so that the host accepts them itself.
    fn listen(&mut self, port_id: u64, rules: Rules, socket: Option<OwnedFd>) {
        let listening = match (self.ports.get_mut(&port_id), socket) {
            (Some(port), Some(socket)) => {
                let socket = socket2::Socket::from(socket);
                match socket.set_nonblocking(true) {
                    Ok(()) => Some((port, socket)),
                    Err(e) => {
                        warn!(
                            port = port.spec.port,
                            "cannot accept on the port's socket: {e}"
                        );
                        None
                    }
                }
            }
            (None, _) => {
                warn!("no port {port_id} in the forker to accept for");
                None
            }
            (Some(port), None) => {
                warn!(
                    port = port.spec.port,
                    "no listening socket came to accept on"
                );
                None
            }
        };
        match listening {
            Some((port, socket)) => {
                port.listening = Some(Listening {
                    socket,
                    gate: Gate::new(rules),
                    closing: false,
                    paused_until: None,
                });
                self.listen_workers(port_id);
            }
            None => self.out.push(FromForker::Unlistened { port_id }),
        }
    }

    /// The listening ports that can take a client now: not full, not paused, and not
    /// prefork ports (whose workers accept).
    fn polled_ports(&self, now: Instant) -> Vec<u64> {
        self.ports
            .iter()
            .filter(|(_, p)| p.pool.is_none())
            .filter(|(_, p)| {
                p.listening.as_ref().is_some_and(|l| {
                    !l.gate.is_full() && l.paused_until.is_none_or(|until| now >= until)
                })
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// How long `poll` may wait: for ever when nothing is due; a while when children may end
    /// unannounced, a port's accepting is paused, or rate buckets are to be tidied.
    fn timeout(&self, now: Instant) -> PollTimeout {
        let mut wait: Option<Duration> = None;
        let mut at_most = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        if self.has_children() {
            at_most(Duration::from_millis(REAP_TICK.into()));
        }
        // Only pauses still to come: one that is over would make every later turn a busy one.
        let ahead = |until: &Instant| *until > now;
        for until in self
            .ports
            .values()
            .filter_map(|p| p.pool.as_ref()?.paused_until())
            .filter(ahead)
        {
            at_most(until.saturating_duration_since(now));
        }
        for listening in self.ports.values().filter_map(|p| p.listening.as_ref()) {
            if let Some(until) = listening.paused_until.filter(ahead) {
                at_most(until.saturating_duration_since(now));
            }
            if listening.gate.idle_after().is_some() {
                at_most(self.next_tidy.saturating_duration_since(now));
            }
        }
        match wait {
            None => PollTimeout::NONE,
            // Rounded up, so that a pause is over when `poll` returns.
            Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u32)
                .unwrap_or(PollTimeout::MAX),
        }
    }

    /// The ports to accept on in this turn: those `poll` found ready, and those told to stop
    /// (`Unlisten`) that can take a client, so that an empty queue is noticed and the socket
    /// closed without waiting for a client.
    fn to_accept(&self, mut ready: Vec<u64>) -> Vec<u64> {
        let now = Instant::now();
        for (id, port) in self.ports.iter().filter(|(_, p)| p.pool.is_none()) {
            if let Some(l) = &port.listening
                && l.closing
                && !l.gate.is_full()
                && l.paused_until.is_none_or(|until| now >= until)
                && !ready.contains(id)
            {
                ready.push(*id);
            }
        }
        ready
    }

    /// Accepts up to [`ACCEPT_BATCH`] clients of a listening port: each one admitted forks a
    /// child, each one refused gets its line. A port told to stop closes its socket once its
    /// queue is empty.
    fn accept(&mut self, port_id: u64) {
        for _ in 0..ACCEPT_BATCH {
            let Some(port) = self.ports.get_mut(&port_id) else {
                return;
            };
            let Some(listening) = port.listening.as_mut() else {
                return;
            };
            if listening.gate.is_full() {
                return;
            }
            let (socket, peer) = match listening.socket.accept() {
                Ok((socket, addr)) => match addr.as_socket() {
                    Some(peer) => (socket, peer),
                    None => continue,
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if listening.closing {
                        port.listening = None;
                        self.out.push(FromForker::Unlistened { port_id });
                    }
                    return;
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    warn!(
                        port = port.spec.port,
                        "accept failed: {e}; retrying in {ACCEPT_PAUSE:?}"
                    );
                    listening.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            };
            let pass = match listening.gate.admit(peer.ip(), Instant::now()) {
                Ok(pass) => pass,
                Err(refusal) => {
                    refuse(&socket, refusal);
                    self.out.push(FromForker::Refused {
                        port_id,
                        peer,
                        refusal,
                    });
                    continue;
                }
            };
            let socket = OwnedFd::from(socket);
            let conn = self.next_conn;
            self.next_conn += 1;
            let port = &self.ports[&port_id];
            let program = crate::exec::of(&*port.service).is_some();
            // Replies are single small writes: sent now rather than after an ACK. A program's
            // stream is its own business.
            if !program {
                let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
            }
            // A program's stderr goes into a pipe whose other end the host reads and logs
            // (blocking, as a program expects its stderr; the host makes its end non-blocking).
            let pipe = if program {
                match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
                    Ok(pipe) => Some(pipe),
                    Err(e) => {
                        warn!(port = port.spec.port, %peer, "cannot make a pipe for the program's stderr: {e}");
                        self.give_back(port_id, pass);
                        continue;
                    }
                }
            } else {
                None
            };
            let stderr = pipe.as_ref().map(|(_, write)| write.as_fd());
            let client = Client { peer, local: None };
            match self.fork_child(conn, client, port, socket.as_fd(), stderr) {
                Ok(pid) => {
                    let child = Child {
                        conn,
                        port_id,
                        accepted: Some((pass, socket)),
                    };
                    self.children.insert(pid, child);
                    let accepted = FromForker::Accepted {
                        port_id,
                        conn,
                        pid: pid.as_raw(),
                        peer,
                    };
                    match pipe {
                        // Each program is the leader of a process group of its own. Its report
                        // goes at once, alone with the pipe's read end (after what came before).
                        Some((read, _write)) => {
                            self.groups.insert(pid);
                            self.flush();
                            let _ = wire::send(self.chan.as_fd(), &accepted, &[read.as_fd()]);
                        }
                        None => self.out.push(accepted),
                    }
                }
                Err(e) => {
                    warn!(port = port.spec.port, %peer, "cannot fork a process for the connection: {e}");
                    self.give_back(port_id, pass);
                }
            }
        }
    }

    /// Gives an accepted connection's place at its port's gate back, if the port still listens.
    fn give_back(&mut self, port_id: u64, pass: Pass) {
        if let Some(listening) = self
            .ports
            .get_mut(&port_id)
            .and_then(|p| p.listening.as_mut())
        {
            listening.gate.leave(pass);
        }
    }

    /// Lets the listening ports' rate buckets forget the addresses that have filled up again.
    fn tidy(&mut self, now: Instant) {
        if now < self.next_tidy {
            return;
        }
        self.next_tidy = now + TIDY_EVERY;
        for listening in self.ports.values_mut().filter_map(|p| p.listening.as_mut()) {
            listening.gate.forget_idle(now);
        }
    }

    /// Sends the turn's reports to the host, [`BATCH_MAX`] to a packet. Best effort: if the
    /// host is gone there is nobody to tell.
    fn flush(&mut self) {
        while !self.out.is_empty() {
            let rest = self.out.split_off(self.out.len().min(BATCH_MAX));
            let batch = std::mem::replace(&mut self.out, rest);
            let message = match <[FromForker; 1]>::try_from(batch) {
                Ok([one]) => one,
                Err(batch) => FromForker::Batch(batch),
            };
            let _ = wire::send(self.chan.as_fd(), &message, &[]);
        }
    }

    /// Forks a child to serve `fd` (for an `exec` port, starts its program on `fd` with
    /// `stderr`); the parent's descriptors stay the caller's.
    #[allow(unsafe_code)]
    fn fork_child(
        &self,
        conn: u64,
        client: Client,
        port: &Port,
        fd: BorrowedFd<'_>,
        stderr: Option<BorrowedFd<'_>>,
    ) -> nix::Result<Pid> {
        if let Some(exec) = crate::exec::of(&*port.service) {
            return start_program(exec, port, client, fd, stderr);
        }
        // SAFETY: the forker never starts a second thread (no runtime, no pool), so the child
        // gets a consistent copy of the only thread's memory and may run any code.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The channel stays open: the child reports what it served over it.
                let keep = [Some(fd.as_raw_fd()), Some(self.chan.as_raw_fd())];
                close_all_but(&keep);
                // SAFETY: the child never returns to the parent's owner of this number (it
                // ends in `_exit`), so it has one owner from here on.
                let fd = unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) };
                let code = child::run(
                    port,
                    fd,
                    client,
                    conn,
                    self.chan.as_fd(),
                    self.debug_logging,
                );
                // `_exit`, not `exit`: the forker's exit handlers (library destructors, stdio
                // flushing) are not the child's to run, and skipping them spares every child
                // the page faults of running them.
                // SAFETY: `_exit` ends the process at once; nothing runs after it.
                unsafe { nix::libc::_exit(code) }
            }
        }
    }

    /// Reaps every child that has ended and tells the host.
    fn reap(&mut self) {
        loop {
            let (pid, how, status, clean) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (
                    pid,
                    ("code".to_owned(), code.to_string()),
                    format!("exited with code {code}"),
                    code == 0,
                ),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (
                    pid,
                    ("signal".to_owned(), signal.as_str().to_owned()),
                    format!("killed by {signal}"),
                    false,
                ),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if self.worker_reaped(pid, &how, &status, clean) {
                continue;
            }
            let program = self.groups.remove(&pid);
            if program {
                // Whatever the program left in its group goes with it.
                let _ = killpg(pid, Signal::SIGKILL);
            }
            if let Some(child) = self.children.remove(&pid) {
                let conn = child.conn;
                if let Some((pass, socket)) = child.accepted {
                    if program {
                        // A grandchild still holding the socket cannot keep the client.
                        let _ = socket2::SockRef::from(&socket).shutdown(std::net::Shutdown::Both);
                    }
                    self.give_back(child.port_id, pass);
                }
                self.out.push(FromForker::Exited {
                    conn,
                    pid: pid.as_raw(),
                    how,
                    status,
                    clean,
                });
            }
        }
    }

    /// SIGTERM to every child, SIGKILL to those still there after [`TERM_GRACE`], and reap all.
    fn end_children(&mut self) {
        let workers = self.all_workers();
        for pid in &workers {
            let _ = kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, None);
        }
        for pid in self.children.keys() {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        for pid in &self.groups {
            let _ = killpg(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while !self.children.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.reap();
        }
        for pid in self.children.keys() {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        for pid in self.groups.drain() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        for (pid, _) in self.children.drain() {
            let _ = waitpid(pid, None);
        }
    }
}

/// Starts an `exec` port's program on the connection `fd` (its descriptors 0 and 1) and
/// `stderr` without forking ([`crate::exec::vfork`]). A program that could not be started
/// (removed since `check`, say) is logged here; its process has exited with code 127 and is
/// reaped and reported like any other.
fn start_program(
    exec: &crate::exec::Exec,
    port: &Port,
    client: Client,
    fd: BorrowedFd<'_>,
    stderr: Option<BorrowedFd<'_>>,
) -> nix::Result<Pid> {
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32));
    // Behind a proxy, the program's "local" is where its client connected: the proxy's.
    let local = match client.local {
        Some(local) => local,
        None => match socket2::SockRef::from(&fd)
            .local_addr()
            .map_err(errno)?
            .as_socket()
        {
            Some(local) => local,
            None => return Err(Errno::EAFNOSUPPORT),
        },
    };
    let started =
        crate::exec::vfork::spawn(&exec.prepared, fd, stderr, client.peer, local).map_err(errno)?;
    if let Some(why) = started.failed {
        warn!(
            port = port.spec.port,
            service = %port.spec.service,
            peer = %client.peer,
            pid = started.pid.as_raw(),
            "cannot start {}: {why}",
            exec.program.path.display()
        );
    }
    Ok(started.pid)
}

/// Closes, in a child just forked, every descriptor above stderr but those in `keep`: the
/// other ports' listening sockets and the other clients' sockets are not the child's to hold
/// (a client would not see its connection end while a sibling held it; a port would keep
/// queueing clients while a child held its socket), as `ForkingTCPServer`'s child closes the
/// server's socket first.
#[allow(unsafe_code)]
fn close_all_but(keep: &[Option<RawFd>]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .flatten()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep {
        if fd > from {
            // SAFETY: closes descriptors only; nothing in the child uses those it closes.
            unsafe { nix::libc::close_range(from, fd - 1, 0) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { nix::libc::close_range(from, u32::MAX, 0) };
}

/// Turns a client away with its line, without waiting: the fork server's loop serves every
/// port. Its socket closes when the caller drops it.
fn refuse(socket: &socket2::Socket, refusal: Refusal) {
    if !refusal.reply().is_empty() {
        let _ = socket.send_with_flags(refusal.reply(), nix::libc::MSG_DONTWAIT);
    }
    let _ = socket.shutdown(std::net::Shutdown::Write);
}

/// Runs, once in the fork server, the logging every child does, so that what `tracing` sets
/// up on first use (its callsite registry, thread-locals) is set up before the fork and shared
/// by every child, instead of being written again, page by page, in each.
fn warm_up(spec: &ChildSpec) {
    let span = info_span!(
        "conn",
        port = spec.port,
        service = %spec.service,
        model = %Model::ProcessPerClient,
        peer = %std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        pid = std::process::id()
    );
    let _entered = span.enter();
    // The events' callsites are registered with every subscriber, but the events themselves
    // go nowhere: they are not about any connection.
    let quiet = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::dispatcher::with_default(&quiet, || {
        connection::log_start();
        connection::log_end(&End::Done);
        connection::log_end(&End::Failed(std::io::ErrorKind::ConnectionReset.into()));
    });
}
