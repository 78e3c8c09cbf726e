//! `twin-prefork`, the twin of prefork: the preforked server as Stevens writes it (UNP vol. 1,
//! 30.6): the parent binds and listens, then forks `--workers N` single-threaded children, each
//! blocking in `accept(2)` on the listening socket they all inherited (the kernel wakes one per
//! client) and serving that client with blocking I/O, then accepting the next. No fork per
//! connection: the forks are paid once, at start. The parent only waits for signals: SIGTERM or
//! SIGINT ends every worker and reaps it before the parent exits, so none is left behind, and a
//! worker that ends by itself is reaped and reported. `porthost bench` starts it; it prints its
//! address and serves until killed.

// `fork()` is `unsafe`: this program never starts a thread, which makes the fork sound.
#![allow(unsafe_code)]

#[path = "common.rs"]
mod common;

use std::net::TcpListener;

use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

fn main() -> std::io::Result<()> {
    let workers = match std::env::args().collect::<Vec<_>>().as_slice() {
        [_, flag, n] if flag == "--workers" => {
            n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                std::io::Error::other(format!("--workers {n}: not a process count"))
            })?
        }
        _ => return Err(std::io::Error::other("usage: twin-prefork --workers N")),
    };
    let listener = common::listen()?;
    // Blocked before the first fork, so that a signal arriving while the workers start waits
    // for `sigwait` instead of being lost or killing the parent with its workers left behind.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals.thread_block()?;
    let parent = getpid();
    let mut live: Vec<Pid> = Vec::with_capacity(workers);
    for _ in 0..workers {
        // SAFETY: this process has a single thread (see the comment at the top).
        match unsafe { fork() }? {
            ForkResult::Child => {
                let code = worker(&listener, &signals, parent);
                // SAFETY: `_exit` ends the process at once, without exit handlers or freeing.
                unsafe { nix::libc::_exit(code) }
            }
            ForkResult::Parent { child } => live.push(child),
        }
    }
    while !live.is_empty() {
        if signals.wait()? != Signal::SIGCHLD {
            for &pid in &live {
                let _ = kill(pid, Signal::SIGTERM);
            }
            for pid in live {
                let _ = waitpid(pid, None);
            }
            return Ok(());
        }
        // One SIGCHLD may stand for several workers that ended.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let Some(pid) = status.pid() else { break };
            live.retain(|&p| p != pid);
            if !matches!(status, WaitStatus::Exited(_, 0)) {
                eprintln!("worker {pid} ended: {status:?}");
            }
        }
    }
    Err(std::io::Error::other("every worker has ended"))
}

/// A worker: accept, serve with blocking I/O, accept the next. Returns only if it cannot run.
fn worker(listener: &TcpListener, signals: &SigSet, parent: Pid) -> i32 {
    // Ends with the parent even when the parent is killed with SIGKILL and cannot end it;
    // `getppid` catches a parent that died before this line.
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
        return 1;
    }
    if signals.thread_unblock().is_err() {
        return 1;
    }
    loop {
        match listener.accept() {
            // A client that breaks its connection ends only its own session.
            Ok((stream, _)) => {
                let _ = common::serve(stream);
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}
