//! `process-per-client`: a new OS process per connection, running the same service code, like
//! the lecture's `ForkingTCPServer`.
//!
//! The host never forks itself (it is multi-threaded; see [`forker`]). It starts one helper,
//! `porthost forker`, and hands it each accepted socket; the helper forks a child that serves
//! the connection on a runtime of its own and exits. With N clients connected there are N
//! children under the forker. A child that crashes or is killed ends only its own connection:
//! the forker reaps it and reports how it ended, and the host logs that.

pub mod forker;
pub mod wire;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use porthost_services::Conn;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use crate::listener::{Admission, PortCtx};
use wire::{ChildSpec, FromForker, ToForker};

/// How long a child may take to end after SIGTERM before it gets SIGKILL.
const KILL_AFTER: Duration = Duration::from_millis(500);

/// Hands the connection to a child process and tracks it until the child has been reaped.
pub(crate) async fn spawn(ctx: &Arc<PortCtx>, conn: Conn, admission: Admission, span: Span) {
    let (forker, port_id) = ctx
        .forker
        .clone()
        .expect("process-per-client ports are started with a forker");
    let fd = match conn.stream.into_std() {
        Ok(stream) => OwnedFd::from(stream),
        Err(e) => {
            warn!(parent: &span, "cannot hand the connection over: {e}");
            return;
        }
    };
    let child = match forker.start(port_id, fd).instrument(span.clone()).await {
        Ok(child) => child,
        Err(e) => {
            warn!(parent: &span, "cannot start a process for the connection: {e}");
            return;
        }
    };
    let ctx = ctx.clone();
    ctx.tracker.clone().spawn(
        async move {
            child.wait(&ctx.close).await;
            ctx.ended(admission);
        }
        .instrument(span),
    );
}

/// The host's side of the forker: starts it on first use (and again if it ever dies), and
/// routes each child's end back to the task waiting for that connection.
#[derive(Debug)]
pub struct Forker {
    state: tokio::sync::Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    live: Option<Arc<Live>>,
    /// Every registered port, replayed to a forker that had to be restarted.
    ports: HashMap<u64, ChildSpec>,
}

/// One running forker process.
#[derive(Debug)]
struct Live {
    /// A `SOCK_SEQPACKET` socket (see [`wire`]).
    chan: UnixStream,
    /// Who waits for which connection's child.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Exit>>>,
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
    status: String,
    clean: bool,
}

/// A connection being served by a child.
#[derive(Debug)]
struct Child {
    conn: u64,
    live: Arc<Live>,
    exit: oneshot::Receiver<Exit>,
}

impl Forker {
    pub fn new() -> Arc<Forker> {
        Arc::new(Forker {
            state: tokio::sync::Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Registers a port; its id goes with each of its connections.
    pub async fn register(&self, spec: ChildSpec) -> std::io::Result<u64> {
        let port_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        state.ports.insert(port_id, spec.clone());
        if let Some(live) = state.live.as_ref().filter(|l| !l.gone.is_cancelled()) {
            live.send(&ToForker::Port { port_id, spec }, None).await?;
        }
        Ok(port_id)
    }

    /// Forgets a port whose connections are all gone.
    pub async fn forget(&self, port_id: u64) {
        let mut state = self.state.lock().await;
        state.ports.remove(&port_id);
        if let Some(live) = &state.live {
            let _ = live.send(&ToForker::Forget { port_id }, None).await;
        }
    }

    async fn start(&self, port_id: u64, fd: OwnedFd) -> std::io::Result<Child> {
        let live = self.live().await?;
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, exit) = oneshot::channel();
        live.waiting.lock().expect("poisoned").insert(conn, tx);
        let sent = live
            .send(&ToForker::Serve { conn, port_id }, Some(fd.as_fd()))
            .await;
        if let Err(e) = sent {
            live.waiting.lock().expect("poisoned").remove(&conn);
            return Err(e);
        }
        Ok(Child { conn, live, exit })
    }

    /// The running forker, started (and told every port) if there is none.
    async fn live(&self) -> std::io::Result<Arc<Live>> {
        let mut state = self.state.lock().await;
        if let Some(live) = state.live.as_ref().filter(|l| !l.gone.is_cancelled()) {
            return Ok(live.clone());
        }
        let live = Live::spawn()?;
        for (port_id, spec) in &state.ports {
            let message = ToForker::Port {
                port_id: *port_id,
                spec: spec.clone(),
            };
            live.send(&message, None).await?;
        }
        tokio::spawn(live.clone().read_replies());
        state.live = Some(live.clone());
        Ok(live)
    }

    /// Ends the forker: it SIGTERMs (then SIGKILLs) any child left and reaps them all.
    pub async fn shutdown(&self) {
        let Some(live) = self.state.lock().await.live.take() else {
            return;
        };
        live.ending.store(true, Ordering::Relaxed);
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&live.chan),
            nix::sys::socket::Shutdown::Both,
        );
        let process = live.process.lock().expect("poisoned").take();
        if let Some(mut process) = process {
            let ended = tokio::time::timeout(KILL_AFTER * 4, process.wait()).await;
            if ended.is_err() {
                warn!("the forker did not end in time; killing it");
                let _ = process.kill().await;
            }
        }
    }
}

impl Live {
    fn spawn() -> std::io::Result<Arc<Live>> {
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
        let process = tokio::process::Command::new(std::env::current_exe()?)
            .arg("forker")
            // Resolve every library symbol once, in the forker, instead of lazily in every
            // child: each lazy lookup costs a child page faults on shared tables.
            .env("LD_BIND_NOW", "1")
            .stdin(Stdio::from(theirs))
            // Its own process group: a Ctrl-C at the terminal reaches the host, which drains,
            // instead of killing every child at once.
            .process_group(0)
            .spawn()?;
        info!(pid = process.id(), "started the process-per-client forker");
        Ok(Arc::new(Live {
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
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        loop {
            self.chan.writable().await?;
            match self.chan.try_io(Interest::WRITABLE, || {
                wire::send(self.chan.as_fd(), message, fd)
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
                Ok(Some((
                    FromForker::Exited {
                        conn,
                        pid,
                        status,
                        clean,
                    },
                    _,
                ))) => (
                    conn,
                    Exit {
                        pid: Some(pid),
                        status,
                        clean,
                    },
                ),
                Ok(Some((FromForker::Failed { conn, reason }, _))) => (
                    conn,
                    Exit {
                        pid: None,
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
            if let Some(tx) = self.waiting.lock().expect("poisoned").remove(&conn) {
                let _ = tx.send(exit);
            }
        }
        // First, so that the next connection starts a new forker instead of writing to this one.
        self.gone.cancel();
        self.waiting.lock().expect("poisoned").clear();
        if !self.ending.load(Ordering::Relaxed) {
            warn!("the process-per-client forker went away; the next connection starts a new one");
            // Reap it now rather than when it is replaced: no zombie in between.
            let process = self.process.lock().expect("poisoned").take();
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
                None,
            )
            .await;
    }
}

impl Child {
    /// Waits for the child to end; when `close` fires first, sends SIGTERM, then SIGKILL.
    async fn wait(mut self, close: &CancellationToken) {
        let exit = tokio::select! {
            exit = &mut self.exit => exit,
            () = close.cancelled() => {
                self.live.signal(self.conn, Signal::SIGTERM).await;
                match tokio::time::timeout(KILL_AFTER, &mut self.exit).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        self.live.signal(self.conn, Signal::SIGKILL).await;
                        self.exit.await
                    }
                }
            }
        };
        match exit {
            Ok(Exit {
                pid,
                status,
                clean: true,
            }) => debug!(pid, "child {status}"),
            Ok(Exit {
                pid: Some(pid),
                status,
                ..
            }) => info!(pid, "child {status}"),
            Ok(Exit {
                pid: None, status, ..
            }) => warn!("no child for the connection: {status}"),
            Err(_) => warn!("the forker went away; the connection's child was lost"),
        }
    }
}
