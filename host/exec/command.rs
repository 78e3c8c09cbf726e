//! The command line of one connection's program as the host spawns it ([`spawn`], under
//! `sequential`, `thread-per-client` and `async`). The process-per-client fork server starts
//! the same command line its own way ([`super::vfork`]), step for step as [`command`] does, so
//! a program sees the same descriptors, environment, user, limits and signals under every
//! model (tests/exec.rs compares them).
//!
//! This module opts in to `unsafe` for one call, `CommandExt::pre_exec`: resource limits, the
//! parent-death signal and closing inherited descriptors must happen in the new process after
//! `fork` and before `execve`, which the standard library offers no other way to do.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{setgid, setgroups, setuid};

use super::{Credentials, Program};

/// The program's command for a client at `peer`, connected to `local`: a clean environment of
/// `PATH`, `env` and the UCSPI-TCP variables, its working directory, a process group of its
/// own (so a drain signals everything it started), and, in the new process just before
/// `execve`, its resource limits, its user with exactly that user's groups, SIGKILL should
/// its parent die, and every descriptor above 2 closed.
pub fn command(program: &Program, peer: SocketAddr, local: SocketAddr) -> Command {
    let mut command = Command::new(&program.path);
    command
        .arg0(&program.args[0])
        .args(&program.args[1..])
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .env("PROTO", "TCP")
        .env("TCPREMOTEIP", peer.ip().to_canonical().to_string())
        .env("TCPREMOTEPORT", peer.port().to_string())
        .env("TCPLOCALIP", local.ip().to_canonical().to_string())
        .env("TCPLOCALPORT", local.port().to_string())
        .current_dir(&program.cwd)
        .process_group(0);
    let limits = program.limits.clone();
    let credentials = program.credentials.clone();
    // SAFETY: the closure runs in the child between `fork` and `execve`, where only
    // async-signal-safe calls are allowed: it makes plain system calls (`setrlimit`,
    // `setgroups`, `setgid`, `setuid`, `prctl`, `close_range`) on what was prepared before
    // the fork, and neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(move || before_exec(&limits, credentials.as_ref()));
    }
    command
}

/// What the program's process does to itself before `execve`, after the standard library has
/// set its descriptors and working directory: its limits while it is still root (which may
/// raise a hard limit), then its user's groups, group and user, in that order (each needs
/// root), then the parent-death signal, which a change of user clears. The standard library's
/// own `uid`/`gid` would drop every supplementary group, the user's as well as root's; only
/// `setgroups` gives the program the user's.
fn before_exec(
    limits: &[(Resource, u64)],
    credentials: Option<&Credentials>,
) -> std::io::Result<()> {
    for &(resource, value) in limits {
        setrlimit(resource, value, value)?;
    }
    if let Some(credentials) = credentials {
        setgroups(&credentials.groups)?;
        setgid(credentials.gid)?;
        setuid(credentials.uid)?;
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Every descriptor the host or the fork server did not mark close-on-exec (a socket
    // systemd passed, say) stays out of the program: only 0, 1 and 2 cross. Best effort: a
    // kernel without `close_range` (before 5.11) leaves them as they are.
    // SAFETY: a system call with plain integer arguments; it only changes descriptor flags.
    let _ = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Ok(())
}

/// The connection's socket as the program's descriptors 0 and 1, blocking (as a program
/// expects its stdin and stdout to be), and where its stderr goes.
fn wire(command: &mut Command, socket: OwnedFd, stderr: Stdio) -> std::io::Result<()> {
    let stream = std::net::TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    let socket = OwnedFd::from(stream);
    command
        .stdin(Stdio::from(socket.try_clone()?))
        .stdout(Stdio::from(socket))
        .stderr(stderr);
    Ok(())
}

/// Starts the program for one connection from the host; its stderr is a pipe for the host to
/// read ([`super::stderr`]).
pub fn spawn(
    program: &Program,
    socket: OwnedFd,
    peer: SocketAddr,
    local: SocketAddr,
) -> std::io::Result<tokio::process::Child> {
    let mut command = command(program, peer, local);
    wire(&mut command, socket, Stdio::piped())?;
    let mut command = tokio::process::Command::from(command);
    // A connection dropped before its program ended (a panic, the runtime going away) must
    // not leave the program behind.
    command.kill_on_drop(true);
    command.spawn()
}
