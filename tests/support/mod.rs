//! What every test target shares: hosts served in this process ([`TestHost`], for behaviour),
//! the real `porthost` binary and other programs as processes that die with the test
//! ([`HostProcess`], [`Proc`], where the process itself is measured: threads, children,
//! descriptors, signals, the CLI, real components), a line client with timeouts ([`Client`]),
//! a load of short sessions that counts every failure ([`Load`]), listening sockets bound to
//! port 0 and handed on as inherited descriptors (so no test ever guesses a free port), what
//! `/proc` says about a process, and reading a host's admin endpoint.
//!
//! `tests/tests.rs` and each end-to-end target in `tests/e2e/` include this module (the latter
//! with `#[path]`), and each uses part of it.
#![allow(dead_code)]

mod client;
mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use porthost::procfs;
use socket2::{Domain, Socket, Type};

// Everything here is `support::Name`, wherever it lives.
pub use client::*;
pub use porthost::testing::*;
pub use process::*;

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` until it holds or [`PATIENCE`] runs out; returns whether it held.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config written to a temporary directory.
pub struct ConfigFile {
    /// Removed with the file when dropped.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn config_file(text: &str) -> ConfigFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(&path, text).unwrap();
    ConfigFile { _dir: dir, path }
}

pub const MODELS: [&str; 7] = [
    "sequential",
    "thread-per-client",
    "process-per-client",
    "async",
    "thread-pool",
    "event-loop",
    "prefork",
];

/// The models an `exec` port runs under: every one but `prefork`, whose workers serve
/// connection after connection in one process, where a program runs once per connection.
pub const EXEC_MODELS: [&str; 6] = [
    "sequential",
    "thread-per-client",
    "process-per-client",
    "async",
    "thread-pool",
    "event-loop",
];

pub const PALINDROMES: [&str; 3] = ["palindrome-v1", "palindrome-v2", "palindrome-v3"];

/// Every palindrome version under every model, as `(service, model)`.
pub fn combos() -> Vec<(&'static str, &'static str)> {
    PALINDROMES
        .into_iter()
        .flat_map(|service| MODELS.map(|model| (service, model)))
        .collect()
}

/// `127.0.0.x`: all of 127.0.0.0/8 is loopback on Linux, so one machine has many addresses.
pub fn loopback(x: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, x))
}

/// A listening socket on port 0 of `ip`: the kernel picks a free port and nobody else can take
/// it while the socket is open.
pub fn listener(ip: IpAddr) -> TcpListener {
    porthost::sockets::bind(SocketAddr::new(ip, 0)).expect("bind port 0")
}

/// The port a listener got.
pub fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// The descriptors of `sockets`, in order, for [`Proc::spawn`].
pub fn fds(sockets: impl IntoIterator<Item = TcpListener>) -> Vec<OwnedFd> {
    sockets.into_iter().map(OwnedFd::from).collect()
}

/// An address nothing listens on, and the socket that keeps it so: bound, never listening, so
/// a connection there is refused and no one else can take the port meanwhile.
pub fn refused_addr() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// Threads of a process, from `/proc`.
pub fn threads(pid: u32) -> usize {
    procfs::threads(pid)
}

/// Live (non-zombie) children of a process.
pub fn children_of(pid: u32) -> Vec<u32> {
    procfs::processes()
        .into_iter()
        .filter(|p| p.parent == pid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Zombie children of a process: children that ended and were never reaped.
pub fn zombies_of(pid: u32) -> usize {
    procfs::processes()
        .into_iter()
        .filter(|p| p.parent == pid && p.state == 'Z')
        .count()
}

/// Every process below `pid`.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    procfs::descendants(pid)
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    procfs::processes()
        .iter()
        .any(|p| p.pid == pid && p.state != 'Z')
}

/// Open descriptors of a process, from `/proc`.
pub fn open_fds(pid: u32) -> usize {
    procfs::open_fds(pid)
}

/// Connected sockets on `port` that some process still holds open (the server's side of its
/// connections): rows of `/proc/net/tcp{,6}` with that local port, not listening, and with an
/// inode, which a socket loses when its last descriptor is closed (a FIN_WAIT or TIME_WAIT
/// left behind holds none).
pub fn held_connections(port: u16) -> usize {
    let mut held = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local.rsplit(':').next().map(|p| u16::from_str_radix(p, 16));
            if local_port == Some(Ok(port)) && *state != "0A" && *inode != "0" {
                held += 1;
            }
        }
    }
    held
}

/// How many clients wait in the accept queue of the sockets listening on `port`, whichever
/// process holds them: for a listening socket, the `rx_queue` of `/proc/net/tcp{,6}` is the
/// accept queue's length. `None` when nothing listens there.
pub fn accept_queue(port: u16) -> Option<u32> {
    let mut found = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(queues)) =
                (fields.get(1), fields.get(3), fields.get(4))
            else {
                continue;
            };
            let local_port = local.rsplit(':').next().map(|p| u16::from_str_radix(p, 16));
            if local_port != Some(Ok(port)) {
                continue;
            }
            let queued = queues
                .split(':')
                .nth(1)
                .and_then(|q| u32::from_str_radix(q, 16).ok())
                .unwrap_or(0);
            *found.get_or_insert(0) += queued;
        }
    }
    found
}

/// Where a host's admin endpoint listens, from the plan's line under its table
/// (`live page: http://ADDR/   metrics: ...`).
pub fn admin_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("live page: http://")?;
    rest.split('/').next()?.parse().ok()
}

/// A host's `/metrics`, read with its token.
pub fn metrics(admin: SocketAddr, token: Option<&str>) -> String {
    let (status, body) = porthost_cli::status::http_get(admin, "/metrics", token).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// `porthost_connections_accepted` of one port (its config's number), from `/metrics`.
pub fn accepted(metrics: &str, port: u16) -> u64 {
    let prefix = format!("porthost_connections_accepted_total{{port=\"{port}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
