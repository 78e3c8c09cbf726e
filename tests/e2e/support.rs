//! What the end-to-end tests share: listening sockets bound to port 0 and handed to the
//! programs under test as inherited descriptors (so no test ever guesses a free port), those
//! programs as processes that die with the test, a line client with timeouts, a load of
//! short sessions that counts every failure, and reading a host's admin endpoint.
//!
//! Each target includes this file as a module and uses part of it.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};

/// How long any single wait may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The `porthost` binary of this build.
pub const PORTHOST: &str = env!("CARGO_BIN_EXE_porthost");

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

/// Polls `check` until it holds or [`PATIENCE`] runs out; returns whether it held.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A program under test: its stderr goes to a file, its stdout to a pipe the test may read.
/// Killed, with every process below it, if the test ends without stopping it.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `command` with `fds` as its descriptors 3, 4, ... (and nothing else inherited).
    pub fn spawn(name: &str, mut command: Command, fds: Vec<OwnedFd>) -> Proc {
        let (file, log) = tempfile::NamedTempFile::new().unwrap().keep().unwrap();
        let mappings = fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| FdMapping {
                parent_fd: fd,
                child_fd: 3 + i as i32,
            })
            .collect();
        command
            .fd_mappings(mappings)
            .expect("distinct descriptors")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        // The command, and with it the test's copies of the descriptors, is dropped here: the
        // program holds the only ones.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            stdout: Some(stdout),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The next line of its stdout; panics, with its log, if it exits first.
    pub fn stdout_line(&mut self) -> String {
        let mut line = String::new();
        let read = self.stdout.as_mut().unwrap().read_line(&mut line).unwrap();
        if read == 0 {
            let status = self.wait_exit(PATIENCE);
            panic!(
                "{} closed its stdout ({status:?}); its log:\n{}",
                self.name,
                self.log()
            );
        }
        line.trim_end_matches('\n').to_owned()
    }

    /// `porthost run`'s plan: its header and one row per port, printed once every port is
    /// served.
    pub fn plan(&mut self, ports: usize) -> Vec<String> {
        (0..=ports).map(|_| self.stdout_line()).collect()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for it to exit, at most `limit`; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit within [`PATIENCE`]; panics with its log unless it exits 0.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(PATIENCE);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not exit 0 after SIGTERM ({status:?}); its log:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let below = porthost::procfs::descendants(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for process in below {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(process.pid as i32),
                    Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `porthost run --config <config>` on `sockets`, passed the way systemd passes them
/// (`LISTEN_FDS`, and `LISTEN_FDNAMES` when any has a name), logging at `info`; with the
/// descriptors to give it, for [`Proc::spawn`].
pub fn porthost_run(
    config: &Path,
    sockets: Vec<(TcpListener, Option<String>)>,
) -> (Command, Vec<OwnedFd>) {
    let mut command = Command::new(PORTHOST);
    command
        .env("RUST_LOG", "info")
        .args(["run", "--config"])
        .arg(config);
    if !sockets.is_empty() {
        command.env("LISTEN_FDS", sockets.len().to_string());
    }
    if sockets.iter().any(|(_, name)| name.is_some()) {
        let names: Vec<&str> = sockets
            .iter()
            .map(|(_, name)| name.as_deref().unwrap_or(""))
            .collect();
        command.env("LISTEN_FDNAMES", names.join(":"));
    }
    let fds = sockets.into_iter().map(|(s, _)| OwnedFd::from(s)).collect();
    (command, fds)
}

/// The descriptors of `sockets`, in order, for [`Proc::spawn`].
pub fn fds(sockets: impl IntoIterator<Item = TcpListener>) -> Vec<OwnedFd> {
    sockets.into_iter().map(OwnedFd::from).collect()
}

/// A line client with timeouts, so a wrong server fails the test instead of hanging it.
pub struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Client::wrap(stream)
    }

    /// Connects from another loopback address (`127.0.0.11`, say), as another client machine.
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket
            .connect_timeout(&addr.into(), PATIENCE)
            .unwrap_or_else(|e| panic!("connecting to {addr} from {source}: {e}"));
        Client::wrap(socket.into())
    }

    fn wrap(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send_line(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("sending {line:?}: {e}"));
    }

    /// The next line without its `\n`; `None` at the end of the stream.
    pub fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(buf.pop(), Some(b'\n'), "an unterminated line");
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// The next line, which must come.
    pub fn expect_line(&mut self) -> String {
        self.line().expect("a line, not the end of the stream")
    }

    /// Sends one line and returns the one-line answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send_line(line);
        self.line()
            .unwrap_or_else(|| panic!("closed instead of answering {line:?}"))
    }

    /// The next line if one arrives within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = Vec::new();
        let got = match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 && buf.ends_with(b"\n") => {
                buf.pop();
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            _ => None,
        };
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        got
    }

    /// Whether the server has closed: the end of the stream with nothing more before it.
    pub fn is_closed(&mut self) -> bool {
        self.line().is_none()
    }
}

/// One short session: connect, send `abba`, expect `1`, close. `Err` says what went wrong.
pub fn palindrome_session(addr: SocketAddr) -> Result<(), String> {
    let stream =
        TcpStream::connect_timeout(&addr, PATIENCE).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    (&stream)
        .write_all(b"abba\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    match answer.as_str() {
        "1\n" => Ok(()),
        "" => Err("closed without an answer".to_owned()),
        other => Err(format!("answered {other:?}")),
    }
}

/// Threads running [`palindrome_session`] in a loop against some addresses until stopped,
/// counting sessions served and keeping every failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `per_addr` threads for each address.
    pub fn start(addrs: &[SocketAddr], per_addr: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .flat_map(|addr| std::iter::repeat_n(*addr, per_addr))
            .map(|addr| {
                let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match palindrome_session(addr) {
                            Ok(()) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{addr}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            failures,
            threads,
        }
    }

    /// Sessions served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until `more` sessions beyond those served now have been served.
    pub fn wait_for(&self, more: u64) {
        let target = self.served() + more;
        assert!(
            eventually(|| self.served() >= target || !self.failures().is_empty()),
            "the load did not get {more} sessions served in {PATIENCE:?}"
        );
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Stops the threads; returns the sessions served and the failures.
    pub fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.served.load(Ordering::Relaxed), failures)
    }
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
