//! `twin-fork`, the twin of process-per-client: the forking server as Stevens writes it (UNP
//! vol. 1, ch. 5): accept, `fork()`, the child serves the connection with blocking I/O and
//! `_exit`s, the parent closes its copy; a SIGCHLD handler reaps every child that has ended, so
//! none is left a zombie while the server waits in `accept`. A program of its own, as small as
//! the work allows: the cost of a fork grows with the program that forks.
//! `porthost bench` starts it; it prints its address and serves until killed.

// `fork()` and `sigaction` are `unsafe`: this program never starts a thread, which makes the
// fork sound, and its handler calls only `waitpid`, which is async-signal-safe.
#![allow(unsafe_code)]

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Reaps every child that has ended, without waiting for the others.
extern "C" fn reap(_: nix::libc::c_int) {
    let saved = Errno::last_raw();
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    Errno::set_raw(saved);
}

fn main() -> std::io::Result<()> {
    let listener = common::listen()?;
    // SA_RESTART: `accept` goes on after the handler instead of failing with EINTR.
    let action = SigAction::new(
        SigHandler::Handler(reap),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only reaps (see the comment at the top).
    unsafe { sigaction(Signal::SIGCHLD, &action) }?;
    for stream in listener.incoming() {
        let stream = stream?;
        // SAFETY: this process has a single thread (see the comment at the top).
        match unsafe { fork() }? {
            ForkResult::Child => {
                // The child never returns to the loop, so closing the listener's number here
                // cannot close it twice.
                let _ = nix::unistd::close(listener.as_raw_fd());
                let code = i32::from(common::serve(stream).is_err());
                // SAFETY: `_exit` ends the process at once, without exit handlers or freeing.
                unsafe { nix::libc::_exit(code) }
            }
            ForkResult::Parent { .. } => drop(stream),
        }
    }
    Ok(())
}
