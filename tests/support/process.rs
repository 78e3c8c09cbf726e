//! Programs under test as processes that die with the test: any program ([`Proc`]), and the
//! real `porthost run` on sockets the test bound ([`HostProcess`]).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::Signal;

use super::{ConfigFile, Entry, PATIENCE, children_of, config_file, fds, listener, loopback};

/// The `porthost` binary of this build.
pub const PORTHOST: &str = env!("CARGO_BIN_EXE_porthost");

/// `porthost`, logging at `info`.
pub fn porthost() -> Command {
    let mut command = Command::new(PORTHOST);
    command.env("RUST_LOG", "info");
    command
}

/// Runs `porthost` with arguments to completion.
pub fn run(args: &[&str]) -> Output {
    porthost().args(args).output().expect("porthost runs")
}

/// Waits for `child` to exit, at most `limit`; `None` if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
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

/// `porthost run --config <config>` on `sockets`, passed the way systemd passes them
/// (`LISTEN_FDS`, and `LISTEN_FDNAMES` when any has a name), logging at `info`; with the
/// descriptors to give it, for [`Proc::spawn`].
pub fn porthost_run(
    config: &Path,
    sockets: Vec<(TcpListener, Option<String>)>,
) -> (Command, Vec<OwnedFd>) {
    let mut command = porthost();
    command.args(["run", "--config"]).arg(config);
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
    let fds = fds(sockets.into_iter().map(|(s, _)| s));
    (command, fds)
}

/// A program under test: its stderr goes to a file (unless the test gave it another), its
/// stdout to a pipe the test may read. Killed, with every process below it, if the test ends
/// without stopping it.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    /// Its stderr, when that is a file of ours.
    log: Option<PathBuf>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `command` with `fds` as its descriptors 3, 4, ... (and nothing else inherited).
    pub fn spawn(name: &str, command: Command, fds: Vec<OwnedFd>) -> Proc {
        Proc::spawn_with_stderr(name, command, fds, None)
    }

    /// Like [`Proc::spawn`], with its stderr going to `stderr` (`None`: a file [`Proc::log`]
    /// reads).
    pub fn spawn_with_stderr(
        name: &str,
        mut command: Command,
        fds: Vec<OwnedFd>,
        stderr: Option<Stdio>,
    ) -> Proc {
        let (stderr, log) = match stderr {
            Some(stderr) => (stderr, None),
            None => {
                let (file, path) = tempfile::NamedTempFile::new().unwrap().keep().unwrap();
                (Stdio::from(file), Some(path))
            }
        };
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
            .stderr(stderr);
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

    /// What it wrote to stderr so far (nothing, when its stderr is not ours to read).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
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

    /// The rest of its stdout, up to its exit (signal it first).
    pub fn rest_of_stdout(&mut self) -> String {
        let mut rest = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            stdout.read_to_string(&mut rest).unwrap();
        }
        rest
    }

    /// Closes the reading end of its stdout, as a `| tee` that was killed does.
    pub fn close_stdout(&mut self) {
        self.stdout.take();
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
        wait_exit(self.child.as_mut().unwrap(), limit)
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
        if let Some(path) = self.log.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The real `porthost run`, on listening sockets this test bound to port 0 and passed to it
/// the way systemd does (`LISTEN_FDS`).
pub struct HostProcess {
    /// First, so that the host is gone before its config is.
    process: Proc,
    pub ports: Vec<u16>,
    /// The host's config, kept until it stops.
    _config: ConfigFile,
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

    /// The next line the host printed after its plan's table (the first is the live page's
    /// address when the admin endpoint is on).
    pub fn stdout_line(&mut self) -> String {
        self.process.stdout_line()
    }

    /// What the host printed after its plan's table, up to its exit (signal it first).
    pub fn stdout_after_table(&mut self) -> String {
        self.process.rest_of_stdout()
    }

    /// Closes the reading end of the host's stdout, as a `| tee` that was killed does.
    pub fn close_stdout(&mut self) {
        self.process.close_stdout();
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// Waits for the host to exit, at most `limit`; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(limit)
    }

    /// The fork server's pid, once process-per-client has started it.
    pub fn forker(&self) -> Option<u32> {
        children_of(self.pid()).into_iter().next()
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
    /// Supplementary groups for the host (it must run as root): it starts under
    /// `setpriv --groups`, which `exec`s it, so its pid stays the one the test started.
    pub groups: Vec<u32>,
}

impl Launch {
    pub fn start(self, host_table: &str, entries: &[Entry<'_>]) -> HostProcess {
        let listeners: Vec<TcpListener> = entries.iter().map(|_| listener(loopback(1))).collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let config = config_file(&porthost::testing::config_text(
            host_table, &listeners, entries,
        ));
        let mut command = match self.nofile {
            None if !self.groups.is_empty() => {
                let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .arg("--groups")
                    .arg(groups.join(","))
                    .arg("--")
                    .arg(PORTHOST)
                    .env("RUST_LOG", "info");
                setpriv
            }
            None => porthost(),
            Some(n) => {
                // `ulimit -n` sets both limits; `porthost run` lifts its soft limit to the hard
                // one, so the hard limit is what counts. `exec` keeps the host's pid ours.
                let mut sh = Command::new("sh");
                sh.args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
                    .arg(n.to_string())
                    .arg(PORTHOST)
                    .env("RUST_LOG", "info");
                sh
            }
        };
        command
            .env("LISTEN_FDS", ports.len().to_string())
            .envs(self.env)
            .arg("run")
            .args(self.args)
            .arg("--config")
            .arg(&config.path);
        let mut process =
            Proc::spawn_with_stderr("porthost run", command, fds(listeners), self.stderr);
        // The plan is all it prints: nothing more can fill the pipe.
        process.plan(ports.len());
        HostProcess {
            process,
            ports,
            _config: config,
        }
    }
}
