//! How the process-per-client fork server starts a connection's program: `clone` with
//! `CLONE_VM | CLONE_VFORK`, the way `posix_spawn` does, instead of `fork` and `execve`.
//!
//! A `fork` of the fork server copies its page tables, and then costs a page fault for each
//! page either side writes before the child's `execve` throws its copy away again (unmapping
//! all of it): some 200 µs of the forker's and the program's CPU per connection. A `vfork`-style
//! child borrows the forker's memory instead, while the forker waits, and becomes the program
//! at once. It gets the same descriptors, environment, directory, process group, limits, user
//! and signal state as [`super::command::command`] gives a program the host spawns.
//!
//! Why this is sound. The child runs on the forker's memory until its `execve`, so it must not
//! change anything the forker relies on: `child` neither allocates nor takes a lock nor
//! unwinds. It reads what [`spawn`] prepared before the `clone` (C strings, pointer arrays,
//! the signals to reset) and makes system calls on it, each through a thin libc wrapper or
//! `syscall`, and ends in `execve` or `_exit`. `CLONE_VFORK` suspends the calling thread until
//! then, so the child's stack (an array in [`spawn`]'s frame) and everything it reads stay put,
//! and what it writes (the step that failed, and `errno`, in `Failure`) is read after. All
//! signals are blocked across the `clone`, so no handler of the forker runs on the shared
//! memory; the child resets the ones with handlers to their default before it unblocks them.
//! Credentials change by raw system call: glibc's `setuid` family would also change those of
//! every other thread it knows of, which, from the shared memory, are the forker's. Rust links
//! with `-z now`, and the forker runs with `LD_BIND_NOW=1`, so no symbol is resolved lazily
//! (a write to the dynamic linker's state) in the child.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::Pid;

use super::Program;

/// The exit code of a child whose program could not be started, as a shell says it.
pub const CANNOT_EXEC: i32 = 127;

/// The child's stack. It makes a few system calls through libc's thin wrappers, well within a
/// kilobyte; musl's `posix_spawn` gives its child 1 KiB and `PATH_MAX`.
const STACK: usize = 16 * 1024;

/// A port's command line as `execve` takes it, made once when the port is built.
#[derive(Debug)]
pub struct Prepared {
    path: CString,
    argv: Vec<CString>,
    /// `PATH`, `env` and `PROTO=TCP`; the other UCSPI-TCP variables differ per connection.
    env: Vec<CString>,
    cwd: CString,
    /// `(resource, value)` for `prlimit64`, soft and hard.
    limits: Vec<(c_int, u64)>,
    credentials: Option<Credentials>,
}

#[derive(Debug)]
struct Credentials {
    groups: Vec<libc::gid_t>,
    gid: libc::gid_t,
    uid: libc::uid_t,
}

impl Prepared {
    /// The checked options as C strings: `Program::from_options` refused NUL in every word.
    pub fn new(program: &Program) -> Result<Prepared, String> {
        let c = |bytes: &[u8]| CString::new(bytes).map_err(|e| format!("{e}"));
        let mut env = program
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        env.push(c(b"PROTO=TCP")?);
        Ok(Prepared {
            path: c(program.path.as_os_str().as_bytes())?,
            argv: program
                .args
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env,
            cwd: c(program.cwd.as_os_str().as_bytes())?,
            limits: program
                .limits
                .iter()
                .map(|&(resource, value)| (resource as c_int, value))
                .collect(),
            credentials: program.credentials.as_ref().map(|c| Credentials {
                groups: c.groups.iter().map(|g| g.as_raw()).collect(),
                gid: c.gid.as_raw(),
                uid: c.uid.as_raw(),
            }),
        })
    }
}

/// A program started: its pid, and, if it never became the program, why (its process has
/// then exited with [`CANNOT_EXEC`], to be reaped like any other).
#[derive(Debug)]
pub struct Started {
    pub pid: Pid,
    pub failed: Option<String>,
}

/// Starts the program for a client at `peer`, connected to `local`: `socket` as its
/// descriptors 0 and 1 (made blocking, as a program expects), `stderr` as 2 (the forker's own
/// when `None`). Returns once the program runs or its process has failed to become it.
pub fn spawn(
    prepared: &Prepared,
    socket: BorrowedFd<'_>,
    stderr: Option<BorrowedFd<'_>>,
    peer: SocketAddr,
    local: SocketAddr,
) -> std::io::Result<Started> {
    let (socket, stderr) = (socket.as_raw_fd(), stderr.map(|e| e.as_raw_fd()));
    // The `dup2`s onto 0, 1 and 2 would close a source that is one of them first.
    if socket <= 2 || stderr.is_some_and(|e| e <= 2) {
        return Err(std::io::Error::other(
            "the connection's descriptors must be above 2",
        ));
    }
    // SAFETY: the descriptor is open for the duration of this call (the caller borrows it).
    socket2::SockRef::from(&unsafe { BorrowedFd::borrow_raw(socket) }).set_nonblocking(false)?;
    let connection = [
        format!("TCPREMOTEIP={}", peer.ip().to_canonical()),
        format!("TCPREMOTEPORT={}", peer.port()),
        format!("TCPLOCALIP={}", local.ip().to_canonical()),
        format!("TCPLOCALPORT={}", local.port()),
    ]
    .map(|var| CString::new(var).expect("addresses hold no NUL"));
    let argv = null_terminated(prepared.argv.iter());
    let envp = null_terminated(prepared.env.iter().chain(&connection));
    let (groups, gid, uid) = match &prepared.credentials {
        Some(c) => (Some(c.groups.as_slice()), c.gid, c.uid),
        None => (None, 0, 0),
    };
    let child = Child {
        path: prepared.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: prepared.cwd.as_ptr(),
        socket,
        stderr: stderr.unwrap_or(-1),
        limits: &prepared.limits,
        groups,
        gid,
        uid,
        reset: handled_signals(),
        failure: Failure {
            step: AtomicUsize::new(0),
            errno: AtomicI32::new(0),
        },
    };
    let mut stack = std::mem::MaybeUninit::<Stack>::uninit();
    let mut mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut mask),
    )?;
    // SAFETY: see the module's docs: `child` only reads `child` (alive until this returns) and
    // makes system calls; `CLONE_VFORK` keeps this frame, and so the stack, until it has
    // become the program or exited. The top of the stack is 16-byte aligned (`Stack`).
    let pid = unsafe {
        libc::clone(
            self::child,
            stack.as_mut_ptr().cast::<u8>().add(STACK).cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&child).cast_mut().cast::<c_void>(),
        )
    };
    let cloned = if pid < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(Pid::from_raw(pid))
    };
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
    let pid = cloned?;
    let failed = match child.failure.errno.load(Ordering::Relaxed) {
        0 => None,
        errno => Some(format!(
            "{}: {}",
            STEPS[child.failure.step.load(Ordering::Relaxed)],
            std::io::Error::from_raw_os_error(errno)
        )),
    };
    Ok(Started { pid, failed })
}

/// The pointers to `strings`, then a null pointer, as `execve` takes `argv` and `envp`.
fn null_terminated<'a>(strings: impl Iterator<Item = &'a CString>) -> Vec<*const c_char> {
    strings
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[repr(C, align(16))]
struct Stack([u8; STACK]);

/// What the child reads, prepared by [`spawn`] before the `clone`.
struct Child<'a> {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    socket: RawFd,
    /// -1: the forker's stderr stays the program's.
    stderr: RawFd,
    limits: &'a [(c_int, u64)],
    /// `None`: the program runs as the forker's user.
    groups: Option<&'a [libc::gid_t]>,
    gid: libc::gid_t,
    uid: libc::uid_t,
    /// The signals to give their default disposition (SIGPIPE, and those with a handler).
    reset: &'a [c_int],
    failure: Failure,
}

/// Where the child says which step failed, and why, before it exits.
struct Failure {
    step: AtomicUsize,
    errno: AtomicI32,
}

/// The child's steps, as its failure names them.
const STEPS: [&str; 10] = [
    "dup2",
    "setpgid",
    "chdir",
    "setrlimit",
    "setgroups",
    "setgid",
    "setuid",
    "prctl(PR_SET_PDEATHSIG)",
    "sigaction",
    "execve",
];

/// The new process, from `clone` to `execve`: in the order of [`super::command`]'s (the
/// descriptors, its own process group, the directory; then, in its `pre_exec`, the limits
/// while still root, the user's groups, group and user, and the parent-death signal, which
/// a change of user clears), then an empty signal mask with SIGPIPE and handled signals at
/// their default, every other descriptor close-on-exec, and the program.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Child` that `spawn` keeps alive until this process has exec'd or
    // exited.
    let child = unsafe { &*arg.cast_const().cast::<Child<'_>>() };
    let fail = |step: usize| -> ! {
        child
            .failure
            .errno
            .store(nix::errno::Errno::last_raw().max(1), Ordering::Relaxed);
        child.failure.step.store(step, Ordering::Relaxed);
        // SAFETY: `_exit` ends this process at once, without the forker's exit handlers.
        unsafe { libc::_exit(CANNOT_EXEC) }
    };
    let check = |step: usize, result: libc::c_long| {
        if result < 0 {
            fail(step);
        }
    };
    // SAFETY: system calls on descriptors, C strings and arrays that `spawn` made and keeps
    // alive; none of them touches memory of the forker's but `child.failure`.
    unsafe {
        check(0, libc::dup2(child.socket, 0).into());
        check(0, libc::dup2(child.socket, 1).into());
        if child.stderr >= 0 {
            check(0, libc::dup2(child.stderr, 2).into());
        }
        check(1, libc::setpgid(0, 0).into());
        check(2, libc::chdir(child.cwd).into());
        for &(resource, value) in child.limits {
            let limit = libc::rlimit64 {
                rlim_cur: value,
                rlim_max: value,
            };
            let none = std::ptr::null_mut::<libc::rlimit64>();
            check(
                3,
                libc::syscall(libc::SYS_prlimit64, 0, resource, &raw const limit, none),
            );
        }
        if let Some(groups) = child.groups {
            check(
                4,
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
            );
            check(5, libc::syscall(libc::SYS_setgid, child.gid));
            check(6, libc::syscall(libc::SYS_setuid, child.uid));
        }
        check(
            7,
            libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL),
        );
        for &signal in child.reset {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            check(
                8,
                libc::sigaction(signal, &raw const default, std::ptr::null_mut()).into(),
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
        // Every descriptor the forker did not mark close-on-exec stays out of the program:
        // only 0, 1 and 2 cross. Best effort: a kernel before 5.11 leaves them as they are.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        libc::execve(child.path, child.argv, child.envp);
    }
    fail(9)
}

/// SIGPIPE, which Rust's runtime ignores and a program expects at its default (as the standard
/// library's `Command` resets it), and every signal this process has a handler for, which
/// must not run in the child. Read once: the fork server installs no handler after it starts.
fn handled_signals() -> &'static [c_int] {
    static SIGNALS: OnceLock<Vec<c_int>> = OnceLock::new();
    SIGNALS.get_or_init(|| {
        (1..=libc::SIGRTMAX())
            .filter(|&signal| {
                // SAFETY: reads the disposition only.
                let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
                let read = unsafe { libc::sigaction(signal, std::ptr::null(), &raw mut action) };
                read == 0
                    && (signal == libc::SIGPIPE
                        || !matches!(action.sa_sigaction, libc::SIG_DFL | libc::SIG_IGN))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::path::PathBuf;

    use nix::sys::wait::{WaitStatus, waitpid};

    use super::*;

    fn program(path: &str, args: &[&str]) -> Program {
        Program {
            path: PathBuf::from(path),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("PATH".to_owned(), super::super::DEFAULT_PATH.to_owned())],
            cwd: PathBuf::from("/"),
            credentials: None,
            limits: Vec::new(),
        }
    }

    /// A connected pair: the server's end for the program, the client's for the test.
    fn connection() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    #[test]
    fn the_program_runs_on_the_socket_with_the_connections_variables() {
        let sh = program(
            "/bin/sh",
            &[
                "sh",
                "-c",
                "echo $PROTO $TCPREMOTEIP:$TCPREMOTEPORT $TCPLOCALPORT $(pwd)",
            ],
        );
        let (server, mut client) = connection();
        let (peer, local) = (server.peer_addr().unwrap(), server.local_addr().unwrap());
        let prepared = Prepared::new(&sh).unwrap();
        let started = spawn(&prepared, server.as_fd(), None, peer, local).unwrap();
        assert!(started.failed.is_none(), "{:?}", started.failed);
        drop(server);
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        let want = format!("TCP 127.0.0.1:{} {} /\n", peer.port(), local.port());
        assert_eq!(out, want);
        assert_eq!(
            waitpid(started.pid, None),
            Ok(WaitStatus::Exited(started.pid, 0))
        );
    }

    #[test]
    fn a_program_that_cannot_start_says_why_and_exits_127() {
        let missing = program("/nonexistent/program", &["program"]);
        let (server, _client) = connection();
        let (peer, local) = (server.peer_addr().unwrap(), server.local_addr().unwrap());
        let prepared = Prepared::new(&missing).unwrap();
        let started = spawn(&prepared, server.as_fd(), None, peer, local).unwrap();
        let failed = started.failed.unwrap();
        assert!(failed.starts_with("execve: No such file"), "{failed}");
        assert_eq!(
            waitpid(started.pid, None),
            Ok(WaitStatus::Exited(started.pid, CANNOT_EXEC))
        );
        let mut cwd = program("/bin/true", &["true"]);
        cwd.cwd = PathBuf::from("/nonexistent");
        let started = spawn(
            &Prepared::new(&cwd).unwrap(),
            server.as_fd(),
            None,
            peer,
            local,
        );
        let started = started.unwrap();
        let failed = started.failed.unwrap();
        assert!(failed.starts_with("chdir: No such file"), "{failed}");
        assert_eq!(
            waitpid(started.pid, None),
            Ok(WaitStatus::Exited(started.pid, CANNOT_EXEC))
        );
    }
}
