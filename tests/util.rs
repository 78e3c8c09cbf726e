//! What the tests share: hosts served in this process ([`TestHost`], for behaviour), the real
//! `porthost` binary started on sockets the test bound ([`HostProcess`], where the process
//! itself is measured: threads, children, descriptors, signals, the CLI), a line client with
//! timeouts, and what `/proc` says about a process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use porthost::procfs;
use socket2::{Domain, SockRef, Socket, Type};

pub use porthost::testing::{Entry, TestHost, entry, port_entry};

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn porthost() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_porthost"));
    command.env("RUST_LOG", "info");
    command
}

/// Runs `porthost` with arguments to completion.
pub fn run(args: &[&str]) -> Output {
    porthost().args(args).output().expect("porthost runs")
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

pub const MODELS: [&str; 6] = [
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

/// The real `porthost run`, on listening sockets this test bound to port 0 and passed to it
/// the way systemd does (`LISTEN_FDS`). Killed, with every process below it, if the test ends
/// without stopping it.
pub struct HostProcess {
    child: Option<Child>,
    pub ports: Vec<u16>,
    /// The host's config, kept until it stops.
    _config: ConfigFile,
    /// Where the host logs, unless the test gave it a stderr of its own.
    stderr: Option<PathBuf>,
    /// The host's stdout, read up to the end of its plan.
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl HostProcess {
    /// Starts a host serving `entries`, with `host_table` as its `[host]` lines. Returns once
    /// it has printed its plan, which it does once every port is served.
    pub fn start(host_table: &str, entries: &[Entry<'_>]) -> HostProcess {
        Launch::default().start(host_table, entries)
    }

    /// Like [`HostProcess::start`], with the host's `RLIMIT_NOFILE` (soft and hard) set to
    /// `nofile`, so a test can run it out of descriptors.
    pub fn start_limited(nofile: u64, host_table: &str, entries: &[Entry<'_>]) -> HostProcess {
        Launch {
            nofile: Some(nofile),
            ..Launch::default()
        }
        .start(host_table, entries)
    }
}

/// How to start a [`HostProcess`]: limits, its stderr, more environment.
#[derive(Default)]
pub struct Launch {
    /// `RLIMIT_NOFILE`, soft and hard.
    pub nofile: Option<u64>,
    /// Where it logs; a file [`HostProcess::log`] reads by default.
    pub stderr: Option<Stdio>,
    pub env: Vec<(String, String)>,
    /// More arguments for `porthost run`.
    pub args: Vec<String>,
}

impl Launch {
    pub fn start(self, host_table: &str, entries: &[Entry<'_>]) -> HostProcess {
        let (stderr, log) = match self.stderr {
            Some(stderr) => (stderr, None),
            None => {
                let (file, path) = tempfile::NamedTempFile::new().unwrap().keep().unwrap();
                (Stdio::from(file), Some(path))
            }
        };
        let listeners: Vec<TcpListener> = entries
            .iter()
            .map(|_| porthost::sockets::bind(([127, 0, 0, 1], 0).into()).unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let text = porthost::testing::config_text(host_table, &listeners, entries);
        let config = config_file(&text);
        let mut command = match self.nofile {
            None => porthost(),
            Some(n) => {
                // `ulimit -n` sets both limits; `porthost run` lifts its soft limit to the hard
                // one, so the hard limit is what counts. `exec` keeps the host's pid ours.
                let mut sh = Command::new("sh");
                sh.args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
                    .arg(n.to_string())
                    .arg(env!("CARGO_BIN_EXE_porthost"))
                    .env("RUST_LOG", "info");
                sh
            }
        };
        let mappings = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| FdMapping {
                parent_fd: OwnedFd::from(listener),
                child_fd: 3 + i as i32,
            })
            .collect();
        command
            .fd_mappings(mappings)
            .expect("distinct descriptors")
            .env("LISTEN_FDS", ports.len().to_string())
            .envs(self.env)
            .arg("run")
            .args(self.args)
            .arg("--config")
            .arg(&config.path)
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..=ports.len() {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("porthost run exited before serving");
            }
        }
        // The plan is all it prints: nothing more can fill the pipe.
        HostProcess {
            child: Some(child),
            ports,
            _config: config,
            stderr: log,
            stdout: Some(stdout),
        }
    }
}

impl HostProcess {
    /// What the host printed after its plan's table, up to its exit (signal it first).
    pub fn stdout_after_table(&mut self) -> String {
        let mut rest = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        }
        rest
    }

    /// The next line the host printed after its plan's table (the first is the live page's
    /// address when the admin endpoint is on); panics if it closed its stdout.
    pub fn stdout_line(&mut self) -> String {
        let mut line = String::new();
        let stdout = self.stdout.as_mut().expect("stdout still open");
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{}", self.log());
        line.trim_end_matches('\n').to_owned()
    }

    /// Closes the reading end of the host's stdout, as a `| tee` that was killed does.
    pub fn close_stdout(&mut self) {
        self.stdout.take();
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// Sends a signal to the host.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the host to exit, at most `limit`; `None` if it is still running.
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

    /// The fork server's pid, once process-per-client has started it.
    pub fn forker(&self) -> Option<u32> {
        children_of(self.pid()).into_iter().next()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Some(path) = self.stderr.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(mut child) = self.child.take() {
            let descendants = descendants_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for pid in descendants {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A line-protocol client with timeouts, so a wrong server fails the test instead of hanging.
pub struct Client {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::wrap(TcpStream::connect_timeout(&addr, PATIENCE).expect("connect"))
    }

    /// Connects from another loopback address (`127.0.0.2`, say), as a second client machine.
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket
            .connect_timeout(&addr.into(), PATIENCE)
            .expect("connect");
        Client::wrap(socket.into())
    }

    /// Connects with a receive buffer of about `bytes`, so that replies the client has not
    /// read yet pile up in the server's send queue.
    pub fn connect_small_window(addr: SocketAddr, bytes: usize) -> Client {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket
            .connect_timeout(&addr.into(), PATIENCE)
            .expect("connect");
        Client::wrap(socket.into())
    }

    fn wrap(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line without its `\n`; `None` at end of stream.
    pub fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(
                    buf.last(),
                    Some(&b'\n'),
                    "unterminated line {:?}",
                    text(&buf)
                );
                buf.pop();
                Some(text(&buf))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// Sends one line and returns the one-line answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.line()
            .unwrap_or_else(|| panic!("closed instead of answering {line:?}"))
    }

    /// Connects, sends one line and returns the answer; `None` if any step fails.
    pub fn try_ask(addr: SocketAddr, line: &str) -> Option<String> {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        (&stream).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).ok()?;
        answer.strip_suffix('\n').map(str::to_owned)
    }

    /// Whether a line arrives within `wait` (without consuming more than that line).
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = Vec::new();
        let got = match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 => {
                buf.pop();
                Some(text(&buf))
            }
            _ => None,
        };
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        got
    }

    /// Closes with a reset (`SO_LINGER` 0) instead of a FIN, as a crashed or rude client does.
    pub fn reset(self) {
        SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }

    /// Whether the server has closed: end of stream with no more data.
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

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
pub fn fds(pid: u32) -> usize {
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
