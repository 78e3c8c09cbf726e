//! The host's side of one connection's program under `sequential`, `thread-per-client` and
//! `async`: the host starts the program with the socket as its stdin and stdout and waits for
//! it (on a task, or on the connection's thread through a small runtime of its own, see
//! [`crate::connection::serve_program_blocking`]). Meanwhile it logs the program's stderr,
//! sends SIGTERM to its process group when the port starts draining and SIGKILL when the grace
//! period is over. When the program ends, whatever it left in its group is killed and the
//! connection is shut down, so a grandchild still holding the socket cannot keep the client.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use super::{Program, command, stderr};
use crate::events::Kind;
use crate::port::Admission;
use crate::shutdown::Shutdown;

/// How long the host still reads a program's stderr after it ended: a grandchild that outlived
/// it (in a session of its own) may hold the pipe for ever.
const STDERR_AFTER: Duration = Duration::from_millis(200);

/// How a program ended, as the metrics and the log say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// `("code", "0")` or `("signal", "SIGKILL")`, the labels of the child-exits metric.
    pub how: (&'static str, String),
    /// `exited with code 0`, `killed by SIGKILL`.
    pub status: String,
}

impl Ended {
    pub fn of(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended {
                how: ("code", code.to_string()),
                status: format!("exited with code {code}"),
            },
            (None, Some(signal)) => {
                let name = Signal::try_from(signal)
                    .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
                Ended {
                    status: format!("killed by {name}"),
                    how: ("signal", name),
                }
            }
            (None, None) => Ended {
                how: ("code", "unknown".to_owned()),
                status: format!("ended: {status}"),
            },
        }
    }
}

/// Runs `program` on one connection to its end. With the connection's `admission`, the port
/// learns the program's pid and how it ended, and its drain reaches the program.
pub async fn run(
    program: &Program,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    admission: Option<&Admission>,
) -> std::io::Result<()> {
    // Behind a proxy, the program's "local" is where its client connected: the proxy's.
    let local = match admission.and_then(Admission::destination) {
        Some(destination) => destination,
        None => stream.local_addr()?,
    };
    let mut child = match command::spawn(program, OwnedFd::from(stream), peer, local) {
        Ok(child) => child,
        Err(e) => {
            warn!("cannot start {}: {e}", program.path.display());
            return Err(e);
        }
    };
    let Some(pid) = child.id() else {
        return Err(std::io::Error::other("the program ended before it started"));
    };
    let group = Pid::from_raw(pid as i32);
    let _counted = admission.map(|admission| Counted::new(admission, pid, program));
    debug!(pid, "program started: {}", program.display());
    let pipe = child.stderr.take();
    let mut stderr = std::pin::pin!(async move {
        if let Some(pipe) = pipe {
            stderr::log(pipe, || Some(pid)).await;
        }
    });
    // Without an admission (the service called as a plain `Service`) no drain reaches it.
    let shutdown = admission.map_or_else(Shutdown::default, |a| a.port().shutdown.clone());
    let (mut termed, mut killed, mut read_all) = (false, false, false);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = &mut stderr, if !read_all => read_all = true,
            () = shutdown.stopped(), if !termed => {
                termed = true;
                info!(pid, "the port drains: SIGTERM to the program's process group");
                let _ = killpg(group, Signal::SIGTERM);
            }
            () = shutdown.closed(), if !killed => {
                killed = true;
                info!(pid, "the grace period is over: SIGKILL to the program's process group");
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
    };
    // What the program started in its group and left behind goes with it (systemd's
    // `KillMode=control-group`, by process group): nothing of the connection outlives it.
    let _ = killpg(group, Signal::SIGKILL);
    if let Some(admission) = admission {
        // A grandchild in a session of its own may still hold the socket: the client's
        // connection ends now all the same.
        admission.shut_down();
    }
    if !read_all {
        let _ = tokio::time::timeout(STDERR_AFTER, &mut stderr).await;
    }
    let status = status?;
    let ended = Ended::of(status);
    if status.success() {
        debug!(pid, "program {}", ended.status);
    } else if termed || killed {
        info!(pid, "program {}", ended.status);
    } else {
        warn!(pid, "program {}", ended.status);
    }
    if let Some(admission) = admission {
        finished(admission, pid, &ended);
    }
    Ok(())
}

/// Counts a program among its port's children while it runs (and lists its pid on the
/// connection); given back in `Drop`, so a run cut short cannot leave it counted.
struct Counted<'a> {
    admission: &'a Admission,
}

impl<'a> Counted<'a> {
    fn new(admission: &'a Admission, pid: u32, program: &Program) -> Counted<'a> {
        let port = admission.port();
        port.stats.forks.fetch_add(1, Ordering::Relaxed);
        port.stats.children.fetch_add(1, Ordering::Relaxed);
        port.set_pid(admission.id(), pid);
        port.events.push(Some(port.port()), Kind::Child, || {
            format!("program {pid} started: {}", program.display())
        });
        Counted { admission }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let port = self.admission.port();
        port.stats.children.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The port counts how the program ended.
fn finished(admission: &Admission, pid: u32, ended: &Ended) {
    let port = admission.port();
    port.stats.exited(ended.how.0, ended.how.1.clone());
    port.events.push(Some(port.port()), Kind::Child, || {
        format!("program {pid} {}", ended.status)
    });
}
