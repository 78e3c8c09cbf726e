//! A fork server's child, from `fork()` to `_exit`: it serves its one connection (an `exec`
//! port's program starts without a fork: [`crate::exec::vfork`]) and touches as few pages as
//! it can on the way, since after the fork every page it writes is first copied and every code
//! page it runs is faulted in again:
//! no tracing span unless debug logging is on or something must be logged, and nothing freed.
//! A prefork worker ([`crate::models::prefork`]) serves each of its connections with the same
//! [`serve_connection`].

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use porthost_services::meter::{Totals, Traffic};
use porthost_services::{BlockingConn, Meter};
use tracing::{Span, info_span, warn};

use super::Port;
use super::wire::{self, Client, FromForker};
use crate::config::Model;
use crate::connection::{self, End};
use crate::lock::lock;

/// A forked child's whole life; returns its exit code.
pub(super) fn run(
    port: &Port,
    fd: OwnedFd,
    client: Client,
    conn: u64,
    chan: std::os::fd::BorrowedFd<'_>,
    debug_logging: bool,
) -> i32 {
    set_context(port, client.peer, Model::ProcessPerClient);
    serve_child(port, fd, client.peer, conn, chan, debug_logging)
}

/// What a child's span says about its connection, set in each child after the fork and in a
/// prefork worker for each connection (the fork server itself has none).
static CHILD: Mutex<Option<ChildContext>> = Mutex::new(None);

struct ChildContext {
    port: u16,
    service: String,
    model: Model,
    peer: std::net::SocketAddr,
}

/// Says whom the process serves now, for its span.
pub(crate) fn set_context(port: &Port, peer: std::net::SocketAddr, model: Model) {
    *lock(&CHILD) = Some(ChildContext {
        port: port.spec.port,
        service: port.spec.service.clone(),
        model,
        peer,
    });
}

/// The span of this child's connection: what every line it logs says about it. A child builds
/// it only when it logs: with debug logging off, a connection that ends well logs nothing, and
/// building a span (a slot in the subscriber's registry, its fields formatted into a string)
/// would cost every child the pages that touches.
pub(crate) fn span() -> Span {
    let child = lock(&CHILD);
    let Some(child) = child.as_ref() else {
        return Span::none();
    };
    info_span!(
        "conn",
        port = child.port,
        service = %child.service,
        model = %child.model,
        peer = %child.peer,
        pid = std::process::id()
    )
}

/// Runs `log` in the child's span, built for it if the child has none yet.
fn in_child_span(log: impl FnOnce()) {
    if !Span::current().is_none() {
        return log();
    }
    let span = span();
    span.in_scope(log);
    // Nothing is freed before `_exit`.
    std::mem::forget(span);
}

/// The exit code of a child whose service panicked, the same a Rust program's panic gives.
pub(crate) const PANICKED: i32 = 101;

/// How often a child reports what it has served, at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// A child's reports of what it served, sent to the host over the fork server's channel (a
/// `SOCK_SEQPACKET` socket: each report is one packet, whoever else writes to it).
#[derive(Clone)]
pub(crate) struct Reporter {
    conn: u64,
    chan: Arc<OwnedFd>,
}

impl Reporter {
    /// Reports about connection `conn` over `chan` (shared by a prefork worker's connections).
    pub(crate) fn new(conn: u64, chan: Arc<OwnedFd>) -> Reporter {
        Reporter { conn, chan }
    }

    fn send(&self, totals: &Totals) {
        let message = FromForker::Served {
            conn: self.conn,
            totals: *totals,
        };
        let _ = wire::send(self.chan.as_fd(), &message, &[]);
    }

    /// A meter that reports at most once per [`REPORT_EVERY`], after a reply.
    fn meter(&self) -> Meter {
        let reporter = self.clone();
        let started = Instant::now();
        let next = AtomicU64::new(0);
        Meter::reporting(
            Arc::new(Traffic::default()),
            Arc::new(move |traffic: &Traffic| {
                let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if now >= next.load(Ordering::Relaxed) {
                    next.store(now + REPORT_EVERY.as_millis() as u64, Ordering::Relaxed);
                    reporter.send(&traffic.totals());
                }
            }),
        )
    }
}

/// What a process forked from the fork server does first, a child or a prefork worker: it
/// takes SIGCHLD as any program does (the fork server blocks it for its signalfd), and it
/// dies with the fork server, since nobody else could drain its connections.
pub(crate) fn after_fork() {
    let mut unblock = SigSet::empty();
    unblock.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
}

/// The child's whole life: serve the one connection with blocking I/O (or, for a service with
/// only an async form, on a runtime of its own), report what it served over `chan`, return
/// the exit code.
fn serve_child(
    port: &Port,
    fd: OwnedFd,
    peer: std::net::SocketAddr,
    conn: u64,
    chan: std::os::fd::BorrowedFd<'_>,
    debug_logging: bool,
) -> i32 {
    after_fork();
    let reporter = match chan.try_clone_to_owned() {
        Ok(chan) => Reporter::new(conn, Arc::new(chan)),
        Err(e) => {
            in_child_span(|| warn!("cannot report what the child serves: {e}"));
            return 1;
        }
    };
    let end = serve_connection(port, fd, peer, &reporter, debug_logging, Exiting::Yes);
    let code = match end {
        End::Panicked => PANICKED,
        _ => 0,
    };
    std::mem::forget(end);
    std::mem::forget(reporter);
    code
}

/// Whether the process `_exit`s after the connection: then nothing is freed, since `_exit`
/// gives all of it back at once, without the allocator's work (each free writes to the heap's
/// pages, which a forked child would first have to copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exiting {
    Yes,
    No,
}

/// Serves one connection with blocking I/O in this process and reports what it served over
/// the reporter's channel; logs its start and end with debug logging on, and a panic always.
pub(crate) fn serve_connection(
    port: &Port,
    fd: OwnedFd,
    peer: std::net::SocketAddr,
    reporter: &Reporter,
    debug_logging: bool,
    exiting: Exiting,
) -> End {
    // With debug logging on, every connection's start and end is logged, in its span.
    let span = debug_logging.then(span);
    let entered = span.as_ref().map(Span::enter);
    let meter = reporter.meter();
    let blocking = BlockingConn {
        stream: std::net::TcpStream::from(fd),
        peer,
        limits: port.spec.limits,
        meter: meter.clone(),
    };
    if debug_logging {
        connection::log_start();
    }
    let end = connection::serve_blocking_unlogged(&*port.service, blocking);
    reporter.send(&meter.traffic().totals());
    // Only a panic is logged above debug level.
    if span.is_some() || matches!(end, End::Panicked) {
        in_child_span(|| connection::log_end(&end));
    }
    if exiting == Exiting::Yes {
        std::mem::forget(meter);
        std::mem::forget(entered);
        std::mem::forget(span);
    }
    end
}
