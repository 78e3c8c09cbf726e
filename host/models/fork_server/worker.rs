//! A prefork worker's life, from its fork to its `_exit`: accept (or be handed) a client, have
//! the fork server admit it, serve it with blocking I/O, and go on, until the fork server says
//! otherwise, the port's `max_connections_per_worker` is reached, or a service panics. The
//! model is described in [`crate::models::prefork`]; here are also the messages a worker and
//! the fork server exchange over the worker's control socket.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::child::{self, Exiting, Reporter};
use super::wire::{self, Client};
use super::{ACCEPT_PAUSE, Port};
use crate::config::Model;
use crate::connection::End;
use crate::sockets::is_per_connection;

/// What the fork server tells a worker, over its control socket (a `SOCK_SEQPACKET` pair).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Accept on the listening socket that comes with this message.
    Listen,
    /// Stop accepting: close the listening socket and say [`FromWorker::Unlistened`] (the host
    /// accepts what is queued and hands it over).
    Unlisten,
    /// Serve the connection that comes with this message (the host accepted it).
    Serve { conn: u64, client: Client },
    /// The answer to [`FromWorker::Admit`]: serve the client as `conn`, or (`None`) drop it: it
    /// was refused, and told why.
    Verdict { conn: Option<u64> },
}

/// What a worker tells the fork server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// May the client whose socket comes with this message be served?
    Admit { peer: std::net::SocketAddr },
    /// The connection is over; `panicked` when its service panicked. `last` when the worker
    /// exits now (after a panic, or at `max_connections_per_worker`): it takes no other client.
    Done {
        conn: u64,
        panicked: bool,
        last: bool,
    },
    /// No longer accepting; the worker serves only what it is handed from now on.
    Unlistened,
}

/// The `epoll` keys of a worker's two descriptors.
const CONTROL: u64 = 0;
const LISTENER: u64 = 1;

/// Whether the worker goes on after a step.
enum Flow {
    Next,
    Exit(i32),
}

/// One worker: the port it serves, its control socket, the listening socket while it accepts.
struct Worker<'a> {
    port: &'a Port,
    control: OwnedFd,
    listener: Option<socket2::Socket>,
    epoll: Epoll,
    /// The host's channel, for the reports of what each connection served.
    chan: Arc<OwnedFd>,
    debug_logging: bool,
    recycle_after: Option<u64>,
    served: u64,
    /// What the fork server said while the worker waited for a verdict, to do next.
    later: VecDeque<(ToWorker, Option<OwnedFd>)>,
    buf: Vec<u8>,
}

/// Runs a worker of `port` until it should end; returns its exit code. `listener`: the port's
/// socket, when the fork server accepts on it already.
pub(crate) fn run(
    port: &Port,
    control: OwnedFd,
    listener: Option<OwnedFd>,
    chan: OwnedFd,
    debug_logging: bool,
) -> i32 {
    child::after_fork();
    let started = (|| -> std::io::Result<Worker<'_>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&control, EpollEvent::new(EpollFlags::EPOLLIN, CONTROL))?;
        Ok(Worker {
            port,
            control,
            listener: None,
            epoll,
            chan: Arc::new(chan),
            debug_logging,
            recycle_after: port.spec.pool.and_then(|p| p.recycle_after),
            served: 0,
            later: VecDeque::new(),
            buf: vec![0; 4096],
        })
    })();
    let mut worker = match started {
        Ok(worker) => worker,
        Err(e) => {
            warn!(port = port.spec.port, "a prefork worker cannot start: {e}");
            return 1;
        }
    };
    if let Some(listener) = listener
        && let Err(e) = worker.listen(listener)
    {
        warn!(port = port.spec.port, "a prefork worker cannot accept: {e}");
        return 1;
    }
    worker.run()
}

impl Worker<'_> {
    fn run(&mut self) -> i32 {
        let mut events = [EpollEvent::empty(); 2];
        loop {
            while let Some((message, fd)) = self.later.pop_front() {
                if let Flow::Exit(code) = self.told(message, fd) {
                    return code;
                }
            }
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(port = self.port.spec.port, "a prefork worker's epoll: {e}");
                    return 1;
                }
            };
            for event in &events[..n] {
                let flow = match event.data() {
                    // What woke the worker may have been read already, waiting for a verdict.
                    CONTROL if !self.control_readable() => Flow::Next,
                    CONTROL => match self.receive() {
                        Some((message, fd)) => self.told(message, fd),
                        // The fork server is gone, or has forgotten the port.
                        None => Flow::Exit(0),
                    },
                    _ => self.accept(),
                };
                if let Flow::Exit(code) = flow {
                    return code;
                }
            }
        }
    }

    /// Whether a message (or the end) waits on the control socket now.
    fn control_readable(&self) -> bool {
        let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
    }

    /// The fork server's next message; `None` when it has closed the control socket.
    fn receive(&mut self) -> Option<(ToWorker, Option<OwnedFd>)> {
        loop {
            match wire::recv::<ToWorker>(self.control.as_fd(), &mut self.buf) {
                Ok(Some((message, mut fds))) => return Some((message, fds.pop())),
                Ok(None) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(
                        port = self.port.spec.port,
                        "a prefork worker's control socket: {e}"
                    );
                    return None;
                }
            }
        }
    }

    fn send(&self, message: &FromWorker, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        wire::send(self.control.as_fd(), message, fds)
    }

    fn told(&mut self, message: ToWorker, fd: Option<OwnedFd>) -> Flow {
        match (message, fd) {
            // Given back after each connection, while the port accepts.
            (ToWorker::Listen, Some(fd)) if self.listener.is_none() => {
                if let Err(e) = self.listen(fd) {
                    warn!(
                        port = self.port.spec.port,
                        "a prefork worker cannot accept: {e}"
                    );
                    return Flow::Exit(1);
                }
                Flow::Next
            }
            // It holds one already.
            (ToWorker::Listen, Some(_)) => Flow::Next,
            // None came: the fork server learns that this worker does not accept.
            (ToWorker::Listen, None) | (ToWorker::Unlisten, _) => self.unlisten(),
            (ToWorker::Serve { conn, client }, Some(fd)) => self.serve(conn, fd, client.peer),
            (ToWorker::Serve { conn, .. }, None) => self.done(conn, false),
            // A verdict comes only to a worker that asked and waits for it (see `admit`).
            (ToWorker::Verdict { .. }, _) => Flow::Next,
        }
    }

    fn listen(&mut self, fd: OwnedFd) -> std::io::Result<()> {
        // One worker woken per client, not the whole pool (the thundering herd).
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        self.epoll.add(&fd, EpollEvent::new(flags, LISTENER))?;
        self.listener = Some(socket2::Socket::from(fd));
        Ok(())
    }

    /// Closes this worker's handle on the listening socket.
    fn give_up_listener(&mut self) {
        if let Some(listener) = self.listener.take() {
            let _ = self.epoll.delete(&listener);
        }
    }

    /// Stops accepting, and says so. What the backlog still holds the host accepts and hands
    /// to the workers, as it does when it drains a port of any model.
    fn unlisten(&mut self) -> Flow {
        self.give_up_listener();
        match self.send(&FromWorker::Unlistened, &[]) {
            Ok(()) => Flow::Next,
            Err(_) => Flow::Exit(0),
        }
    }

    /// Accepts the client `epoll` woke this worker for (if another worker has not taken it),
    /// and serves it if the fork server admits it.
    ///
    /// A worker holds the listening socket only while it is idle: it closes its handle when
    /// it takes a client, and the fork server gives it another when the client has gone. A
    /// worker busy in a blocking read cannot hear that the port drains; holding no handle,
    /// it keeps no drained port's socket open (and queueing clients nobody would accept).
    fn accept(&mut self) -> Flow {
        let Some(listener) = self.listener.as_ref() else {
            return Flow::Next;
        };
        let (socket, peer) = match listener.accept() {
            Ok((socket, addr)) => match addr.as_socket() {
                Some(peer) => (socket, peer),
                None => return Flow::Next,
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || is_per_connection(&e) => {
                return Flow::Next;
            }
            Err(e) => {
                warn!(
                    port = self.port.spec.port,
                    "a prefork worker's accept failed: {e}; retrying in {ACCEPT_PAUSE:?}"
                );
                std::thread::sleep(ACCEPT_PAUSE);
                return Flow::Next;
            }
        };
        self.give_up_listener();
        // Replies are single small writes: sent now rather than after an ACK.
        let _ = socket.set_tcp_nodelay(true);
        let fd = OwnedFd::from(socket);
        match self.admit(&fd, peer) {
            Ok(Some(conn)) => self.serve(conn, fd, peer),
            Ok(None) => Flow::Next,
            Err(e) => {
                warn!(
                    port = self.port.spec.port,
                    %peer,
                    "a prefork worker lost the fork server, and with it the client: {e}"
                );
                Flow::Exit(0)
            }
        }
    }

    /// Asks the fork server whether the client may be served, and waits for the answer: the
    /// connection's id, or `None` (refused, and told why by the fork server).
    fn admit(&mut self, fd: &OwnedFd, peer: std::net::SocketAddr) -> std::io::Result<Option<u64>> {
        self.send(&FromWorker::Admit { peer }, &[fd.as_fd()])?;
        loop {
            match self.receive() {
                Some((ToWorker::Verdict { conn }, _)) => return Ok(conn),
                Some(other) => self.later.push_back(other),
                None => return Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        }
    }

    /// Serves one connection, tells the fork server it is over, and says whether to go on.
    fn serve(&mut self, conn: u64, fd: OwnedFd, peer: std::net::SocketAddr) -> Flow {
        child::set_context(self.port, peer, Model::Prefork);
        let reporter = Reporter::new(conn, self.chan.clone());
        let end = child::serve_connection(
            self.port,
            fd,
            peer,
            &reporter,
            self.debug_logging,
            Exiting::No,
        );
        self.served += 1;
        self.done(conn, matches!(end, End::Panicked))
    }

    /// Tells the fork server a connection is over, and whether this worker ends after it (so
    /// that it is given no other client): after a panic, or at `max_connections_per_worker`.
    fn done(&mut self, conn: u64, panicked: bool) -> Flow {
        let recycled = self.recycle_after.is_some_and(|n| self.served >= n);
        let last = panicked || recycled;
        let said = self.send(
            &FromWorker::Done {
                conn,
                panicked,
                last,
            },
            &[],
        );
        match (said, panicked, last) {
            (Err(_), _, _) => Flow::Exit(0),
            // What the panic left half-done stays in this process: a fresh one takes over.
            (Ok(()), true, _) => Flow::Exit(child::PANICKED),
            (Ok(()), false, true) => Flow::Exit(0),
            (Ok(()), false, false) => Flow::Next,
        }
    }
}
