//! The host's side of the fork server: [`ForkerCommand`] (how it is started),
//! [`ForkerHandle`] (starts it, registers ports, sends it connections) and what routes each
//! child's reports and end back to the task waiting for its connection.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use porthost_services::meter::Traffic;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::wire::{self, ChildSpec, FromForker, ToForker};
use crate::events::Kind;
use crate::lock::lock;
use crate::port::{Admission, Port};

/// How long a child may take to end after SIGTERM before it gets SIGKILL.
const KILL_AFTER: Duration = Duration::from_millis(500);

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
}

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
    /// Whether a child was forked (and so counts among the port's children until it ends).
    forked: AtomicBool,
}

impl Watch {
    fn forked(&self, pid: i32) {
        let stats = &self.port.stats;
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
        if let Some(pid) = exit.pid {
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
            self.port.stats.children.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection being served by a child.
#[derive(Debug)]
pub(super) struct ConnChild {
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
        })
    }

    /// Registers a port; its id goes with each of its connections.
    pub async fn register(&self, spec: ChildSpec) -> std::io::Result<u64> {
        let port_id = self.next_id.fetch_add(1, Ordering::Relaxed);
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
        if let Some(running) = &state.running {
            let _ = running.send(&ToForker::Forget { port_id }, &[]).await;
        }
    }

    pub(super) async fn start(
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
        let watch = Watch {
            exit: tx,
            traffic: admission.traffic().clone(),
            port: admission.port().clone(),
            id: admission.id(),
            forked: AtomicBool::new(false),
        };
        lock(&forker.waiting).insert(conn, watch);
        let sent = forker
            .send(
                &ToForker::Serve {
                    conn,
                    port_id,
                    peer,
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
        let forker = ForkerProcess::spawn(&self.command)?;
        let pid = lock(&forker.process).as_ref().and_then(|p| p.id());
        self.last_pid.store(pid.unwrap_or(0), Ordering::Relaxed);
        for (port_id, spec) in &state.ports {
            let message = ToForker::Port {
                port_id: *port_id,
                spec: spec.clone(),
            };
            forker.send(&message, &[]).await?;
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
    fn spawn(command: &ForkerCommand) -> std::io::Result<Arc<ForkerProcess>> {
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
            let (conn, exit) = match received {
                Ok(Some((FromForker::Forked { conn, pid }, _))) => {
                    if let Some(watch) = lock(&self.waiting).get(&conn) {
                        watch.forked(pid);
                    }
                    continue;
                }
                Ok(Some((FromForker::Served { conn, totals }, _))) => {
                    if let Some(watch) = lock(&self.waiting).get(&conn) {
                        watch.traffic.store(&totals);
                    }
                    continue;
                }
                Ok(Some((
                    FromForker::Exited {
                        conn,
                        pid,
                        how,
                        status,
                        clean,
                    },
                    _,
                ))) => (
                    conn,
                    Exit {
                        pid: Some(pid),
                        how: Some(how),
                        status,
                        clean,
                    },
                ),
                Ok(Some((FromForker::Failed { conn, reason }, _))) => (
                    conn,
                    Exit {
                        pid: None,
                        how: None,
                        status: reason,
                        clean: false,
                    },
                ),
                Ok(None) => break,
                Err(e) => {
                    warn!("reading from the forker: {e}");
                    break;
                }
            };
            if let Some(watch) = lock(&self.waiting).remove(&conn) {
                watch.exited(&exit);
                let _ = watch.exit.send(exit);
            }
        }
        // First, so that the next connection starts a new forker instead of writing to this one.
        self.gone.cancel();
        for (_, watch) in lock(&self.waiting).drain() {
            watch.lost();
        }
        if !self.ending.load(Ordering::Relaxed) {
            warn!(
                "the process-per-client fork server went away; the next connection starts a new one"
            );
            // Reap it now rather than when it is replaced: no zombie in between.
            let process = lock(&self.process).take();
            if let Some(mut process) = process {
                let _ = tokio::time::timeout(KILL_AFTER * 4, process.wait()).await;
            }
        }
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

impl ConnChild {
    /// Waits for the child to end. When the port closes its connections first, it sends
    /// SIGTERM, then SIGKILL after [`KILL_AFTER`]; an `exec` port's `program` gets SIGTERM (to
    /// its process group) as soon as the port starts draining, and SIGKILL when it closes.
    pub(super) async fn wait(mut self, port: &Port, program: bool) {
        let mut signalled = false;
        if program {
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
                self.forker.signal(self.conn, Signal::SIGTERM).await;
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
