//! The fork server: a single-threaded helper process (`porthost forker`, started by the host)
//! that forks one child per connection.
//!
//! The host is multi-threaded, and `fork()` in a multi-threaded process copies only the calling
//! thread, leaving locks held by the others locked forever in the child. The forker never starts
//! a thread, so forking it is safe, and cheap: no `exec`, and the service is built once per port
//! and inherited. It receives each connection's socket from the host (`SCM_RIGHTS`), forks, and
//! reports every child's end; it is the children's parent, so it reaps them.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use porthost_services::{Options, Service};
use tracing::{info_span, warn};

use super::child;
use super::wire::{self, ChildSpec, FromForker, ToForker};
use crate::config::Model;
use crate::connection::{self, End};

/// How long the forker waits for children to end after SIGTERM when the host goes away.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// How often the fork server looks for ended children without being told. SIGCHLD wakes it at
/// once when the signal reaches it; in a fork server that runs beside other threads (a test
/// binary's harness), the signal can go to a thread that ignores it instead.
const REAP_TICK: u16 = 100;

/// A port the fork server serves: what its children inherit.
pub(super) struct Port {
    pub(super) spec: ChildSpec,
    pub(super) service: Arc<dyn Service>,
}

/// The fork server's state: its channel to the host, the ports it can serve, its children.
struct ForkServer {
    /// The host's end of the conversation, handed over as our stdin.
    chan: OwnedFd,
    /// SIGCHLD as a readable descriptor, so one `poll` waits for the host and for children.
    sigchld: SignalFd,
    ports: HashMap<u64, Port>,
    children: HashMap<Pid, u64>,
    /// The children that are `exec` programs, each the leader of a process group of its own:
    /// signals go to the group, and what is left of it dies with the program.
    groups: HashSet<Pid>,
    /// Whether connections' starts and ends are logged (debug level), read once here: a
    /// child that asked the subscriber would run its filters, page by page, in every child.
    debug_logging: bool,
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
    };
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    loop {
        let (host_ready, child_ended) = {
            let mut fds = [
                PollFd::new(forker.chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(forker.sigchld.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = if forker.children.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(REAP_TICK)
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            (fds[0].any() == Some(true), fds[1].any() == Some(true))
        };
        if child_ended {
            while forker.sigchld.read_signal()?.is_some() {}
        }
        // An orphan reparented here (the fork server is a subreaper) ends with a SIGCHLD too.
        if child_ended || !forker.children.is_empty() {
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
    }
    forker.end_children();
    Ok(())
}

impl ForkServer {
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
                        self.ports.insert(port_id, Port { spec, service });
                    }
                    Err(e) => warn!(port = spec.port, "cannot build {}: {e}", spec.service),
                }
            }
            ToForker::Serve {
                conn,
                port_id,
                peer,
            } => {
                // The socket first, then an `exec` program's stderr pipe.
                let stderr = (fds.len() > 1).then(|| fds.pop()).flatten();
                let started = match (self.ports.get(&port_id), fds.pop()) {
                    (Some(port), Some(fd)) => self
                        .fork_child(conn, peer, port, fd, stderr)
                        .map(|pid| (pid, crate::exec::of(&*port.service).is_some()))
                        .map_err(|e| e.to_string()),
                    (None, _) => Err(format!("no port {port_id} in the forker")),
                    (_, None) => Err("no connection came with the request".to_owned()),
                };
                match started {
                    Ok((pid, program)) => {
                        self.children.insert(pid, conn);
                        if program {
                            self.groups.insert(pid);
                        }
                        self.tell(&FromForker::Forked {
                            conn,
                            pid: pid.as_raw(),
                        });
                    }
                    Err(reason) => self.tell(&FromForker::Failed { conn, reason }),
                }
            }
            ToForker::Signal { conn, signal } => {
                let signal = Signal::try_from(signal).unwrap_or(Signal::SIGKILL);
                for (pid, _) in self.children.iter().filter(|(_, c)| **c == conn) {
                    let _ = if self.groups.contains(pid) {
                        killpg(*pid, signal)
                    } else {
                        kill(*pid, signal)
                    };
                }
            }
            ToForker::Forget { port_id } => {
                self.ports.remove(&port_id);
            }
        }
    }

    /// Forks a child to serve `fd`; the parent's copy of `fd` is closed when this returns.
    #[allow(unsafe_code)]
    fn fork_child(
        &self,
        conn: u64,
        peer: std::net::SocketAddr,
        port: &Port,
        fd: OwnedFd,
        stderr: Option<OwnedFd>,
    ) -> nix::Result<Pid> {
        // SAFETY: the forker never starts a second thread (no runtime, no pool), so the child
        // gets a consistent copy of the only thread's memory and may run any code.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                // The child never returns to drop it, so closing the raw number is safe. The
                // channel stays open: the child reports what it served over it.
                let _ = nix::unistd::close(self.sigchld.as_raw_fd());
                let code = child::run(
                    port,
                    fd,
                    stderr,
                    peer,
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
            if self.groups.remove(&pid) {
                // Whatever the program left in its group goes with it.
                let _ = killpg(pid, Signal::SIGKILL);
            }
            if let Some(conn) = self.children.remove(&pid) {
                self.tell(&FromForker::Exited {
                    conn,
                    pid: pid.as_raw(),
                    how,
                    status,
                    clean,
                });
            }
        }
    }

    /// Best effort: if the host is gone there is nobody to tell.
    fn tell(&self, message: &FromForker) {
        let _ = wire::send(self.chan.as_fd(), message, &[]);
    }

    /// SIGTERM to every child, SIGKILL to those still there after [`TERM_GRACE`], and reap all.
    fn end_children(&mut self) {
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
