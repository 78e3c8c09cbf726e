//! Listening sockets: bound here, or passed in already bound, by systemd's socket activation
//! (`LISTEN_FDS`) or by a test that bound port 0. A port takes a passed socket named after its
//! number (`FileDescriptorName=7001`) or bound to its address, and binds its own otherwise.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::config::PortPlan;

/// Pending connections the kernel queues per port; above `max_connections` clients wait here.
pub const BACKLOG: u32 = 4096;

/// Whether an `accept(2)` error concerns one connection that died in the backlog, not the
/// listening socket: the accepting goes on at once. Every accept loop (the host's, the fork
/// server's, a prefork worker's) asks this.
pub fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// A listening socket, bound or passed in, before it is served.
#[derive(Debug)]
pub struct Listening {
    pub listener: std::net::TcpListener,
    /// Where it came from, for the plan and for error messages.
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Bound by the host itself.
    Bound,
    /// Passed by systemd (or a test) as descriptor `fd`, named `name` if it had a name, bound
    /// to `local` (which may differ from the config's address when it was claimed by name).
    Passed {
        fd: i32,
        name: Option<String>,
        local: Option<SocketAddr>,
    },
}

impl Origin {
    /// How the plan shows it.
    pub fn describe(&self) -> String {
        match self {
            Origin::Bound => "bound".to_owned(),
            Origin::Passed { fd, name, local } => {
                let name = name.as_ref().map_or(String::new(), |n| format!(", {n}"));
                let local = local.map_or(String::new(), |l| format!(" on {l}"));
                format!("passed (fd {fd}{name}){local}")
            }
        }
    }
}

/// Sockets passed in and not yet claimed by a port.
#[derive(Debug, Default)]
pub struct Sockets {
    passed: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    listener: std::net::TcpListener,
    fd: i32,
    name: Option<String>,
    /// Sockets from systemd stay here when claimed (a port gets a duplicate descriptor), so
    /// that a reload can hand them to a port again: systemd keeps them open for the host's
    /// whole life. Sockets from tests are handed over for good.
    keep: bool,
    claimed: bool,
}

impl Sockets {
    /// The sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), if any. Call
    /// it before starting any thread: it reads and clears the environment.
    pub fn from_systemd() -> std::io::Result<Sockets> {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|names| names.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Sockets::default();
        for i in 0..fds.len() {
            let fd = 3 + i as i32;
            let listener = fds
                .take_tcp_listener(i)
                .map_err(|e| {
                    std::io::Error::other(format!("socket passed as fd {fd} is not usable: {e}"))
                })?
                .ok_or_else(|| std::io::Error::other(format!("fd {fd} was passed twice")))?;
            // systemd names sockets without FileDescriptorName= after their unit.
            let name = names
                .get(i)
                .filter(|n| !n.is_empty() && !n.ends_with(".socket"))
                .cloned();
            sockets.passed.push(Entry {
                listener,
                fd,
                name,
                keep: true,
                claimed: false,
            });
        }
        Ok(sockets)
    }

    /// Hands over a socket a port will claim by its address (a test's port-0 listener).
    pub fn provide(&mut self, listener: std::net::TcpListener) {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        self.passed.push(Entry {
            listener,
            fd,
            name: None,
            keep: false,
            claimed: false,
        });
    }

    /// The passed socket for `port` at `addr`: named after the port, or bound to its address.
    fn claim(&mut self, port: u16, addr: SocketAddr) -> std::io::Result<Option<Listening>> {
        let wanted = port.to_string();
        let Some(i) = self.passed.iter().position(|e| {
            !e.claimed
                && (e.name.as_deref() == Some(wanted.as_str())
                    || e.listener.local_addr().ok() == Some(addr))
        }) else {
            return Ok(None);
        };
        let entry = &mut self.passed[i];
        let origin = Origin::Passed {
            fd: entry.fd,
            name: entry.name.clone(),
            local: entry.listener.local_addr().ok(),
        };
        let listener = if entry.keep {
            entry.claimed = true;
            entry.listener.try_clone()?
        } else {
            self.passed.remove(i).listener
        };
        Ok(Some(Listening { listener, origin }))
    }

    /// Makes a kept socket claimable again once its port has gone (a reload removed it).
    pub fn release(&mut self, port: u16, addr: SocketAddr) {
        let wanted = port.to_string();
        if let Some(entry) = self.passed.iter_mut().find(|e| {
            e.claimed
                && (e.name.as_deref() == Some(wanted.as_str())
                    || e.listener.local_addr().ok() == Some(addr))
        }) {
            entry.claimed = false;
        }
    }

    /// Passed sockets no port claimed, described for an error message.
    pub fn unclaimed(&self) -> Vec<String> {
        self.passed
            .iter()
            .filter(|e| !e.claimed)
            .map(|e| {
                let addr = e
                    .listener
                    .local_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                match &e.name {
                    Some(name) => format!("fd {} ({name:?}, {addr})", e.fd),
                    None => format!("fd {} ({addr})", e.fd),
                }
            })
            .collect()
    }

    /// The socket for a port: a passed one if there is one for it, else bound now.
    pub fn listen(&mut self, plan: &PortPlan) -> Result<Listening, BindError> {
        let addr = plan.entry.addr;
        match self.claim(plan.entry.port(), addr) {
            Ok(Some(listening)) => Ok(listening),
            Ok(None) => bind_with(addr, plan.entry.edge.reuse_port)
                .map(|listener| Listening {
                    listener,
                    origin: Origin::Bound,
                })
                .map_err(|e| BindError::new(plan, e)),
            Err(e) => Err(BindError::new(plan, e)),
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so a restarted host can bind while old
/// connections sit in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_with(addr, false)
}

/// [`bind`], with `SO_REUSEPORT` when `reuse_port`: then another host may bind the same port
/// (each with `reuse_port = true`) and the kernel shares new connections between them, which
/// is how a new host takes over from an old one without refusing anyone.
pub fn bind_with(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

/// How many connections wait in a listening socket's accept queue (completed by the kernel,
/// not yet accepted), and how many it may hold: `tcpi_unacked` and `tcpi_sacked` of
/// `TCP_INFO`, which for a listening socket mean exactly that.
#[allow(unsafe_code)]
pub fn accept_queue(listener: &impl std::os::fd::AsRawFd) -> std::io::Result<(u32, u32)> {
    use nix::libc;
    // `struct tcp_info` starts with eight one-byte fields, then `u32`s: rto, ato, snd_mss,
    // rcv_mss, unacked, sacked. Only that far is read.
    let mut info = [0u8; 32];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `getsockopt` writes at most `len` bytes into `info`, which is that long, and
    // sets `len` to what it wrote; the descriptor is borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (len as usize) < info.len() {
        return Err(std::io::Error::other("TCP_INFO too short"));
    }
    let field = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    Ok((field(24), field(28)))
}

/// A std listener made ready for the runtime.
pub fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Why a port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr} for [ports.{port}] ({service}, line {line}): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub port: u16,
    pub service: String,
    pub line: usize,
    pub source: std::io::Error,
}

impl BindError {
    pub fn new(plan: &PortPlan, source: std::io::Error) -> Self {
        BindError {
            addr: plan.entry.addr,
            port: plan.entry.port(),
            service: plan.entry.service.clone(),
            line: plan.line,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_queue_counts_connections_not_yet_accepted() {
        let listener = bind(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queue(&listener).unwrap(), (0, BACKLOG));
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(accept_queue(&listener).unwrap().0, 3);
        let _served = listener.accept().unwrap();
        assert_eq!(accept_queue(&listener).unwrap().0, 2);
        drop(clients);
    }
}
