//! The host's side of the fork server: [`ForkerCommand`] (how it is started),
//! [`ForkerHandle`] (starts it, registers ports, hands it listening sockets or connections)
//! and what routes each child's reports and end back to the task waiting for its connection.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use porthost_services::meter::{Totals, Traffic};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use super::FIRST_OWN_CONN;
use super::wire::{self, ChildSpec, Client, FromForker, ToForker, WorkerChange};
use crate::config::Model;
use crate::events::Kind;
use crate::gate::Rules;
use crate::lock::lock;
use crate::port::{Admission, Port};

/// How long a child may take to end after SIGTERM before it gets SIGKILL.
const KILL_AFTER: Duration = Duration::from_millis(500);

/// How long the host still reads an `exec` program's stderr after the program has ended.
const STDERR_AFTER: Duration = Duration::from_millis(200);

/// How long the host waits before starting a fork server again after one went away while it
/// accepted a port's clients.
const RESTART_AFTER: Duration = Duration::from_millis(100);

/// Reports of children the fork server accepted, kept while the report of the fork itself is
/// still on its way (the child may write first): at most this many.
const EARLY_MAX: usize = 4096;

/// How the host starts its fork server: a program that runs [`fork_server::main`] with the
/// host's end of the channel as its stdin. Normally this very binary (`porthost forker`), which
/// has the same services registered; tests name their own binary, which registers services of
/// its own.
#[derive(Debug, Clone)]
pub struct ForkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Where the fork server and its children log; the host's stderr when `None`.
    pub stderr: Option<PathBuf>,
}

impl ForkerCommand {
    /// `<this binary> forker`.
    pub fn this_binary() -> std::io::Result<ForkerCommand> {
        Ok(ForkerCommand {
            program: std::env::current_exe()?,
            args: vec!["forker".into()],
            env: Vec::new(),
            stderr: None,
        })
    }
}

/// The host's side of the fork server: starts it on first use (and again if it ever dies), and
/// routes each child's end back to the task waiting for that connection.
#[derive(Debug)]
pub struct ForkerHandle {
    command: ForkerCommand,
    state: tokio::sync::Mutex<State>,
    next_id: AtomicU64,
    /// The pid of the fork server started last (0: none yet), for figures read without the
    /// lock: a fork server that has ended since leaves a pid `/proc` no longer knows.
    last_pid: AtomicU32,
    /// The ports whose clients the fork server accepts.
    listeners: Listeners,
    /// The prefork ports, whose workers the fork server reports.
    pools: Pools,
    /// Whether a task keeps a fork server running for the listening ports.
    kept: AtomicBool,
    /// Cancelled when the host ends the fork server for good.
    shut: CancellationToken,
}

/// A port whose clients the fork server accepts: what routes its reports, and what is handed
/// again to a fork server that had to be started anew.
#[derive(Debug)]
struct Listener {
    port: Arc<Port>,
    /// The host's copy of the port's listening socket.
    socket: OwnedFd,
    rules: Rules,
    /// Set once the host has said `Unlisten`: a new fork server is told so too.
    closing: bool,
    /// Told when the fork server no longer accepts on the socket.
    unlistened: Option<oneshot::Sender<()>>,
}

type Listeners = Arc<Mutex<HashMap<u64, Listener>>>;

type Pools = Arc<Mutex<HashMap<u64, Arc<Port>>>>;

#[derive(Debug, Default)]
struct State {
    running: Option<Arc<ForkerProcess>>,
    /// Every registered port, replayed to a fork server that had to be restarted.
    ports: HashMap<u64, ChildSpec>,
}

/// One running fork server process.
#[derive(Debug)]
struct ForkerProcess {
    /// A `SOCK_SEQPACKET` socket (see [`wire`]).
    chan: UnixStream,
    /// Who waits for which connection's child.
    waiting: Mutex<HashMap<u64, Watch>>,
    /// Cancelled when the forker has gone away (end of stream from it).
    gone: CancellationToken,
    /// Set when the host ends the forker, so that its going away is not reported as a crash.
    ending: AtomicBool,
    process: Mutex<Option<tokio::process::Child>>,
    listeners: Listeners,
    pools: Pools,
    /// What children the fork server accepted reported before their fork's report came.
    early: Mutex<HashMap<u64, Totals>>,
}

/// How a connection's child ended.
#[derive(Debug)]
struct Exit {
    pid: Option<i32>,
    /// `("code", "0")`, `("signal", "SIGKILL")`; `None` when no child was started.
    how: Option<(String, String)>,
    status: String,
    clean: bool,
}

/// What the host keeps of a connection the fork server serves: where the child's reports and
/// its end go.
#[derive(Debug)]
struct Watch {
    exit: oneshot::Sender<Exit>,
    traffic: Arc<Traffic>,
    port: Arc<Port>,
    /// The connection's entry in the port's table.
    id: u64,
    /// Whether a child was forked (and so counts among the port's children until it ends), or
    /// a prefork worker took the connection (and so counts as busy).
    forked: AtomicBool,
    /// Whether a prefork worker serves it, not a child of its own.
    worker: bool,
}

impl Watch {
    fn new(exit: oneshot::Sender<Exit>, port: &Arc<Port>, admission: &Admission) -> Watch {
        Watch {
            exit,
            traffic: admission.traffic().clone(),
            port: port.clone(),
            id: admission.id(),
            forked: AtomicBool::new(false),
            worker: port.plan.entry.model == Model::Prefork,
        }
    }

    fn forked(&self, pid: i32) {
        let stats = &self.port.stats;
        if self.worker {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            stats.worker_serves(pid as u32);
            self.forked.store(true, Ordering::Relaxed);
            self.port.set_pid(self.id, pid as u32);
            return;
        }
        stats.forks.fetch_add(1, Ordering::Relaxed);
        stats.children.fetch_add(1, Ordering::Relaxed);
        self.forked.store(true, Ordering::Relaxed);
        self.port.set_pid(self.id, pid as u32);
        self.port
            .events
            .push(Some(self.port.port()), Kind::Child, || {
                format!("child {pid} forked")
            });
    }

    fn exited(&self, exit: &Exit) {
        if let Some((how, value)) = &exit.how {
            let how = if how == "signal" { "signal" } else { "code" };
            self.port.stats.exited(how, value.clone());
        }
        if let Some(pid) = exit.pid.filter(|_| !self.worker) {
            self.port
                .events
                .push(Some(self.port.port()), Kind::Child, || {
                    format!("child {pid} reaped: {}", exit.status)
                });
        }
        self.lost();
    }

    /// The child is gone (or never was), however it ended.
    fn lost(&self) {
        if self.forked.swap(false, Ordering::Relaxed) {
            let count = if self.worker {
                &self.port.stats.busy
            } else {
                &self.port.stats.children
            };
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection being served by a child.
#[derive(Debug)]
pub(crate) struct ConnChild {
    conn: u64,
    forker: Arc<ForkerProcess>,
    exit: oneshot::Receiver<Exit>,
}

impl ForkerHandle {
    pub fn new(command: ForkerCommand) -> Arc<ForkerHandle> {
        Arc::new(ForkerHandle {
            command,
            state: tokio::sync::Mutex::default(),
            next_id: AtomicU64::new(1),
            last_pid: AtomicU32::new(0),
            listeners: Listeners::default(),
            pools: Pools::default(),
            kept: AtomicBool::new(false),
            shut: CancellationToken::new(),
        })
    }

    /// Hands the fork server a port's listening socket: from now on it accepts the port's
    /// clients, admits them by `rules`, forks and reports. The receiver is told when it no
    /// longer accepts there: after [`Self::unlisten`], or at once if it cannot.
    pub(crate) async fn listen(
        self: &Arc<Self>,
        port_id: u64,
        port: Arc<Port>,
        socket: OwnedFd,
        rules: Rules,
    ) -> std::io::Result<oneshot::Receiver<()>> {
        let forker = self.running().await?;
        // Under the state's lock, so that a fork server started anew meanwhile is either
        // told by `running` or here, never by both.
        let _state = self.state.lock().await;
        let (tx, rx) = oneshot::channel();
        let message = ToForker::Listen {
            port_id,
            rules: rules.clone(),
        };
        let sent = forker.send(&message, &[socket.as_fd()]).await;
        if let Err(e) = sent
            && !forker.gone.is_cancelled()
        {
            return Err(e);
        }
        let listener = Listener {
            port,
            socket,
            rules,
            closing: false,
            unlistened: Some(tx),
        };
        lock(&self.listeners).insert(port_id, listener);
        if !self.kept.swap(true, Ordering::Relaxed) {
            tokio::spawn(self.clone().keep_running());
        }
        Ok(rx)
    }

    /// Tells the fork server to stop accepting a port's clients, once it has served those
    /// already queued; the receiver [`Self::listen`] gave is told when it has.
    pub(crate) async fn unlisten(&self, port_id: u64) {
        let state = self.state.lock().await;
        if let Some(listener) = lock(&self.listeners).get_mut(&port_id) {
            listener.closing = true;
        }
        if let Some(running) = &state.running {
            let _ = running.send(&ToForker::Unlisten { port_id }, &[]).await;
        }
    }

    /// Starts the fork server again whenever it goes away while it accepts some port's clients.
    async fn keep_running(self: Arc<Self>) {
        loop {
            let running = tokio::select! {
                running = self.running() => running,
                () = self.shut.cancelled() => return,
            };
            match running {
                Ok(forker) => tokio::select! {
                    () = forker.gone.cancelled() => {}
                    () = self.shut.cancelled() => return,
                },
                Err(e) => warn!("cannot start the process-per-client fork server: {e}"),
            }
            if lock(&self.listeners).is_empty() {
                self.kept.store(false, Ordering::Relaxed);
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(RESTART_AFTER) => {}
                () = self.shut.cancelled() => return,
            }
        }
    }

    /// Registers a port; its id goes with each of its connections. A prefork port's workers
    /// are forked now, and reported to `port`.
    pub async fn register(&self, spec: ChildSpec, port: &Arc<Port>) -> std::io::Result<u64> {
        let port_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if spec.pool.is_some() {
            lock(&self.pools).insert(port_id, port.clone());
        }
        let mut state = self.state.lock().await;
        state.ports.insert(port_id, spec.clone());
        if let Some(running) = state.running.as_ref().filter(|f| !f.gone.is_cancelled()) {
            running.send(&ToForker::Port { port_id, spec }, &[]).await?;
        }
        Ok(port_id)
    }

    /// Forgets a port whose connections are all gone.
    pub async fn forget(&self, port_id: u64) {
        let mut state = self.state.lock().await;
        state.ports.remove(&port_id);
        lock(&self.listeners).remove(&port_id);
        // Its workers end unreported, told by the fork server's closing their control sockets.
        if let Some(port) = lock(&self.pools).remove(&port_id) {
            port.stats.workers_gone();
        }
        if let Some(running) = &state.running {
            let _ = running.send(&ToForker::Forget { port_id }, &[]).await;
        }
    }

    pub(crate) async fn start(
        &self,
        port_id: u64,
        fd: OwnedFd,
        stderr: Option<OwnedFd>,
        peer: std::net::SocketAddr,
        admission: &Admission,
    ) -> std::io::Result<ConnChild> {
        let forker = self.running().await?;
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, exit) = oneshot::channel();
        let watch = Watch::new(tx, admission.port(), admission);
        lock(&forker.waiting).insert(conn, watch);
        let sent = forker
            .send(
                &ToForker::Serve {
                    conn,
                    port_id,
                    client: Client {
                        peer,
                        local: admission.destination(),
                    },
                },
                &std::iter::once(fd.as_fd())
                    .chain(stderr.as_ref().map(AsFd::as_fd))
                    .collect::<Vec<_>>(),
            )
            .await;
        if let Err(e) = sent {
            lock(&forker.waiting).remove(&conn);
            return Err(e);
        }
        Ok(ConnChild { conn, forker, exit })
    }

    /// The running fork server, started (and told every port) if there is none.
    async fn running(&self) -> std::io::Result<Arc<ForkerProcess>> {
        let mut state = self.state.lock().await;
        if let Some(running) = state.running.as_ref().filter(|f| !f.gone.is_cancelled()) {
            return Ok(running.clone());
        }
        let forker =
            ForkerProcess::spawn(&self.command, self.listeners.clone(), self.pools.clone())?;
        let pid = lock(&forker.process).as_ref().and_then(|p| p.id());
        self.last_pid.store(pid.unwrap_or(0), Ordering::Relaxed);
        for (port_id, spec) in &state.ports {
            let message = ToForker::Port {
                port_id: *port_id,
                spec: spec.clone(),
            };
            forker.send(&message, &[]).await?;
        }
        let listening: Vec<(u64, Rules, OwnedFd, bool)> = lock(&self.listeners)
            .iter()
            .filter_map(|(id, l)| {
                let socket = l.socket.try_clone().ok()?;
                Some((*id, l.rules.clone(), socket, l.closing))
            })
            .collect();
        for (port_id, rules, socket, closing) in listening {
            forker
                .send(&ToForker::Listen { port_id, rules }, &[socket.as_fd()])
                .await?;
            if closing {
                forker.send(&ToForker::Unlisten { port_id }, &[]).await?;
            }
        }
        tokio::spawn(forker.clone().read_replies());
        state.running = Some(forker.clone());
        Ok(forker)
    }

    /// The fork server's pid, if it is running.
    pub async fn pid(&self) -> Option<u32> {
        let state = self.state.lock().await;
        let running = state.running.as_ref().filter(|f| !f.gone.is_cancelled())?;
        lock(&running.process).as_ref().and_then(|p| p.id())
    }

    /// The pid of the fork server started last, without waiting for the lock [`Self::pid`]
    /// takes; it may have ended since.
    pub fn last_pid(&self) -> Option<u32> {
        Some(self.last_pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    /// Ends the fork server: it SIGTERMs (then SIGKILLs) any child left and reaps them all.
    pub async fn shutdown(&self) {
        self.shut.cancel();
        let Some(forker) = self.state.lock().await.running.take() else {
            return;
        };
        forker.ending.store(true, Ordering::Relaxed);
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&forker.chan),
            nix::sys::socket::Shutdown::Both,
        );
        let process = lock(&forker.process).take();
        if let Some(mut process) = process {
            let ended = tokio::time::timeout(KILL_AFTER * 4, process.wait()).await;
            if ended.is_err() {
                warn!("the forker did not end in time; killing it");
                let _ = process.kill().await;
            }
        }
    }
}

impl ForkerProcess {
    fn spawn(
        command: &ForkerCommand,
        listeners: Listeners,
        pools: Pools,
    ) -> std::io::Result<Arc<ForkerProcess>> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        // Only our end is non-blocking; the forker's end waits in `poll`.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )?;
        let stderr = match &command.stderr {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::inherit(),
        };
        let process = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            // Sockets passed by systemd are the host's, not the fork server's.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            // Telling systemd is the host's to do.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // Resolve every library symbol once, in the fork server, instead of lazily in every
            // child: each lazy lookup costs a child page faults on shared tables.
            .env("LD_BIND_NOW", "1")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: a Ctrl-C at the terminal reaches the host, which drains,
            // instead of killing every child at once.
            .process_group(0)
            .spawn()?;
        info!(
            pid = process.id(),
            "started the process-per-client fork server"
        );
        Ok(Arc::new(ForkerProcess {
            // tokio's UnixStream only registers the descriptor with the reactor here; every
            // read and write goes through `try_io` with our own sendmsg/recvmsg.
            chan: UnixStream::from_std(std::os::unix::net::UnixStream::from(ours))?,
            waiting: Mutex::default(),
            gone: CancellationToken::new(),
            ending: AtomicBool::new(false),
            process: Mutex::new(Some(process)),
            listeners,
            pools,
            early: Mutex::default(),
        }))
    }

    async fn send(
        &self,
        message: &ToForker,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> std::io::Result<()> {
        loop {
            self.chan.writable().await?;
            match self.chan.try_io(Interest::WRITABLE, || {
                wire::send(self.chan.as_fd(), message, fds)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// Routes the forker's reports until it goes away; then every waiting connection learns
    /// that its child's fate is unknown.
    async fn read_replies(self: Arc<Self>) {
        let mut buf = vec![0u8; wire::MAX_MESSAGE];
        loop {
            let received = match self.chan.readable().await {
                Ok(()) => match self.chan.try_io(Interest::READABLE, || {
                    wire::recv::<FromForker>(self.chan.as_fd(), &mut buf)
                }) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    result => result,
                },
                Err(e) => Err(e),
            };
            match received {
                Ok(Some((report, mut fds))) => self.route(report, fds.pop()),
                Ok(None) => break,
                Err(e) => {
                    warn!("reading from the forker: {e}");
                    break;
                }
            }
        }
        lock(&self.early).clear();
        // Its workers died with it; the next fork server forks the pools again. Before that one
        // can start (below), so that its workers' reports come after.
        for port in lock(&self.pools).values() {
            port.stats.workers_gone();
        }
        // First, so that the next connection starts a new forker instead of writing to this one.
        self.gone.cancel();
        for (_, watch) in lock(&self.waiting).drain() {
            watch.lost();
        }
        if !self.ending.load(Ordering::Relaxed) {
            warn!("the process-per-client fork server went away; a new one takes over");
            // Reap it now rather than when it is replaced: no zombie in between.
            let process = lock(&self.process).take();
            if let Some(mut process) = process {
                let _ = tokio::time::timeout(KILL_AFTER * 4, process.wait()).await;
            }
        }
    }

    /// Routes one report of the fork server (or of one of its children) to its connection.
    /// `stderr`: the descriptor that came with it (an `exec` program's stderr pipe).
    fn route(self: &Arc<Self>, report: FromForker, stderr: Option<OwnedFd>) {
        let (conn, exit) = match report {
            FromForker::Batch(reports) => {
                for report in reports {
                    self.route(report, None);
                }
                return;
            }
            FromForker::Forked { conn, pid } => {
                if let Some(watch) = lock(&self.waiting).get(&conn) {
                    watch.forked(pid);
                }
                return;
            }
            FromForker::Served { conn, totals } => {
                match lock(&self.waiting).get(&conn) {
                    Some(watch) => watch.traffic.store(&totals),
                    None if conn >= FIRST_OWN_CONN => {
                        let mut early = lock(&self.early);
                        if early.len() < EARLY_MAX || early.contains_key(&conn) {
                            early.insert(conn, totals);
                        }
                    }
                    None => {}
                }
                return;
            }
            FromForker::Accepted {
                port_id,
                conn,
                pid,
                peer,
            } => return self.accepted(port_id, conn, pid, peer, stderr),
            FromForker::Refused {
                port_id,
                peer,
                refusal,
            } => {
                let port = lock(&self.listeners).get(&port_id).map(|l| l.port.clone());
                if let Some(port) = port {
                    port.refused(peer, refusal, &refusal.name().replace('_', " "));
                }
                return;
            }
            FromForker::Unlistened { port_id } => {
                let listener = lock(&self.listeners).remove(&port_id);
                if let Some(tx) = listener.and_then(|l| l.unlistened) {
                    let _ = tx.send(());
                }
                return;
            }
            FromForker::Exited {
                conn,
                pid,
                how,
                status,
                clean,
            } => (
                conn,
                Exit {
                    pid: Some(pid),
                    how: Some(how),
                    status,
                    clean,
                },
            ),
            FromForker::Worker {
                port_id,
                pid,
                change,
            } => return self.worker(port_id, pid, change),
            FromForker::Finished {
                conn,
                pid,
                status,
                clean,
            } => (
                conn,
                Exit {
                    pid: Some(pid),
                    how: None,
                    status,
                    clean,
                },
            ),
            FromForker::Failed { conn, reason } => (
                conn,
                Exit {
                    pid: None,
                    how: None,
                    status: reason,
                    clean: false,
                },
            ),
        };
        if let Some(watch) = lock(&self.waiting).remove(&conn) {
            watch.exited(&exit);
            let _ = watch.exit.send(exit);
        }
    }

    /// A client the fork server accepted and forked `pid` for: the port admits it into its
    /// table (the live page, the metrics) and a task waits for the child as for any other.
    fn accepted(
        self: &Arc<Self>,
        port_id: u64,
        conn: u64,
        pid: i32,
        peer: std::net::SocketAddr,
        stderr: Option<OwnedFd>,
    ) {
        let Some(port) = lock(&self.listeners).get(&port_id).map(|l| l.port.clone()) else {
            return;
        };
        let admission = port.admit_accepted(peer);
        if let Some(totals) = lock(&self.early).remove(&conn) {
            admission.traffic().store(&totals);
        }
        let (tx, exit) = oneshot::channel();
        let watch = Watch::new(tx, &port, &admission);
        watch.forked(pid);
        lock(&self.waiting).insert(conn, watch);
        let child = ConnChild {
            conn,
            forker: self.clone(),
            exit,
        };
        let span = crate::connection::span(&port, peer);
        let kind = if crate::exec::of(&*port.plan.service).is_some() {
            Child::Program
        } else {
            Child::Accepted
        };
        child.watch(admission, kind, stderr, span);
    }

    /// A prefork worker started or ended: the port counts it, and the live page shows it.
    fn worker(&self, port_id: u64, pid: i32, change: WorkerChange) {
        let Some(port) = lock(&self.pools).get(&port_id).cloned() else {
            return;
        };
        let stats = &port.stats;
        match change {
            WorkerChange::Started => {
                stats.forks.fetch_add(1, Ordering::Relaxed);
                stats.worker_started(pid as u32);
                port.events.push(Some(port.port()), Kind::Child, || {
                    format!("worker {pid} started")
                });
            }
            WorkerChange::Ended {
                how: (how, value),
                status,
                clean,
                served,
            } => {
                stats.worker_ended(pid as u32);
                stats.exited(if how == "signal" { "signal" } else { "code" }, value);
                let s = if served == 1 { "" } else { "s" };
                port.events.push(Some(port.port()), Kind::Child, || {
                    format!("worker {pid} {status} after {served} client{s}; a new one replaces it")
                });
                if clean {
                    info!(
                        port = port.port(),
                        pid,
                        "prefork worker {status} after {served} connection{s} \
                         (max_connections_per_worker); a new one replaces it"
                    );
                } else {
                    warn!(
                        port = port.port(),
                        pid,
                        "prefork worker {status} after {served} connection{s}; a new one replaces it"
                    );
                }
            }
        }
    }

    /// Has the fork server tell a client it accepted why it is cut off, then SIGTERM its child
    /// (a prefork worker gets no SIGTERM: its client's socket shut down ends the connection).
    async fn close(&self, conn: u64, reply: &[u8]) {
        let reply = reply.to_vec();
        let _ = self.send(&ToForker::Close { conn, reply }, &[]).await;
    }

    async fn signal(&self, conn: u64, signal: Signal) {
        let _ = self
            .send(
                &ToForker::Signal {
                    conn,
                    signal: signal as i32,
                },
                &[],
            )
            .await;
    }
}

/// What a connection's child is, for how the host ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Child {
    /// It serves a connection the host accepted and handed over (the host holds a handle on
    /// the socket, to tell the client why it is cut off).
    Handed,
    /// It is an `exec` port's program.
    Program,
    /// It serves a connection the fork server accepted, which holds the socket's other handle.
    Accepted,
}

impl ConnChild {
    /// Tracks the child, in a task of its port, until it has been reaped and the connection
    /// has ended; an `exec` program's `stderr` is logged meanwhile.
    pub(crate) fn watch(
        self,
        admission: Admission,
        kind: Child,
        stderr: Option<OwnedFd>,
        span: Span,
    ) {
        let port = admission.port().clone();
        port.tracker.clone().spawn(
            async move {
                let log = async {
                    // The read end of a pipe, made blocking for the program's sake: the
                    // host's end becomes non-blocking here (its only flag), which is all
                    // tokio's unchecked constructor asks, without its checks' system calls.
                    let pipe = stderr.and_then(|fd| {
                        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                            .map_err(std::io::Error::from)
                            .and_then(|_| {
                                tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)
                            })
                            .map_err(|e| warn!("cannot read the program's stderr: {e}"))
                            .ok()
                    });
                    if let Some(pipe) = pipe {
                        let (port, id) = (admission.port(), admission.id());
                        crate::exec::stderr::log(pipe, || port.pid(id)).await;
                    }
                };
                let wait = async {
                    self.wait(&port, kind).await;
                    if kind == Child::Program {
                        // A grandchild still holding the socket cannot keep the client.
                        admission.shut_down();
                    }
                };
                // The stderr of a program that has ended is read a moment longer, not for as
                // long as something it left behind holds the pipe.
                let (mut log, mut wait) = (std::pin::pin!(log), std::pin::pin!(wait));
                tokio::select! {
                    () = &mut log => wait.await,
                    () = &mut wait => {
                        let _ = tokio::time::timeout(STDERR_AFTER, log).await;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Waits for the child to end. When the port closes its connections first, it sends
    /// SIGTERM, then SIGKILL after [`KILL_AFTER`] (a client the fork server accepted is first
    /// told why there, as the host tells those it holds); an `exec` port's program gets
    /// SIGTERM (to its process group) as soon as the port starts draining, and SIGKILL when it
    /// closes.
    async fn wait(mut self, port: &Port, child: Child) {
        let mut signalled = false;
        if child == Child::Program {
            tokio::select! {
                exit = &mut self.exit => return report(exit, false),
                () = port.shutdown.stopped() => {
                    info!("the port drains: SIGTERM to the program's process group");
                    self.forker.signal(self.conn, Signal::SIGTERM).await;
                }
            }
            let exit = tokio::select! {
                exit = &mut self.exit => exit,
                () = port.shutdown.closed() => {
                    info!("the grace period is over: SIGKILL to the program's process group");
                    self.forker.signal(self.conn, Signal::SIGKILL).await;
                    self.exit.await
                }
            };
            return report(exit, true);
        }
        let exit = tokio::select! {
            exit = &mut self.exit => exit,
            () = port.shutdown.closed() => {
                signalled = true;
                if child == Child::Accepted {
                    self.forker.close(self.conn, port.cut_off_reply()).await;
                } else {
                    self.forker.signal(self.conn, Signal::SIGTERM).await;
                }
                match tokio::time::timeout(KILL_AFTER, &mut self.exit).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        self.forker.signal(self.conn, Signal::SIGKILL).await;
                        self.exit.await
                    }
                }
            }
        };
        report(exit, signalled);
    }
}

/// Logs how a connection's child ended; `signalled` when the host asked it to.
fn report(exit: Result<Exit, oneshot::error::RecvError>, signalled: bool) {
    {
        match exit {
            Ok(Exit {
                pid,
                status,
                clean: true,
                ..
            }) => debug!(pid, "child {status}"),
            Ok(Exit {
                pid: Some(pid),
                status,
                ..
            }) if signalled => info!(pid, "child {status}"),
            Ok(Exit {
                pid: Some(pid),
                status,
                ..
            }) => warn!(pid, "child {status}"),
            Ok(Exit {
                pid: None, status, ..
            }) => warn!("no child for the connection: {status}"),
            Err(_) => warn!("the fork server went away; the connection's child was lost"),
        }
    }
}
