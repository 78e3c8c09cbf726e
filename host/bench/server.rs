//! The servers a bench measures, each in a process of its own so that the load generator never
//! shares their runtime or their CPU accounting: a `porthost run` per model (with or without
//! its admin endpoint), the baselines, Python's `ForkingTCPServer`, `tcpserver` running a C
//! program, or a server someone else started (`--addr`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::baseline;
use porthost::config::Model;

/// The Python `socketserver.ForkingTCPServer` the process-per-client model is compared with:
/// the lecture's own kind of server, kept in the repository as a script.
const PYTHON_FORKING_SERVER: &str = include_str!("../../examples/python/forking_server.py");

/// The C program `tcpserver` runs per connection.
const TCPSERVER_PROGRAM: &str = include_str!("palindrome.c");

/// What the bench measures, one column of its table.
#[derive(Debug, Clone)]
pub enum Subject {
    Model(Model),
    /// A model with the host's admin endpoint on (`[host] admin = ...`), to measure what the
    /// endpoint costs the service ports.
    Admin(Model),
    Baseline(baseline::Kind),
    /// Python's `socketserver.ForkingTCPServer` for the palindrome protocol.
    Python,
    /// `tcpserver` (ucspi-tcp) forking and exec'ing a C palindrome program per connection.
    Tcpserver(TcpserverProgram),
    /// A server already running, named for the table (`--addr [NAME=]HOST:PORT`).
    External {
        name: String,
        addr: SocketAddr,
    },
}

impl Subject {
    pub fn name(&self) -> String {
        match self {
            Subject::Model(model) => model.name().to_owned(),
            Subject::Admin(model) => format!("{model}+admin"),
            Subject::Baseline(kind) => kind.subject().to_owned(),
            Subject::Python => PYTHON.to_owned(),
            Subject::Tcpserver(_) => TCPSERVER.to_owned(),
            Subject::External { name, .. } => name.clone(),
        }
    }
}

/// The names of the forking peers in the table.
pub const PYTHON: &str = "python-forking";
pub const TCPSERVER: &str = "tcpserver-exec";

/// The palindrome program for `tcpserver`, compiled once per bench.
#[derive(Debug, Clone)]
pub struct TcpserverProgram {
    path: PathBuf,
    /// Removed, with the program, when the last subject using it is dropped.
    _dir: Arc<tempfile::TempDir>,
}

impl TcpserverProgram {
    /// Checks that `tcpserver` is installed and compiles the program with `cc`; says what is
    /// missing otherwise.
    pub fn build() -> anyhow::Result<TcpserverProgram> {
        // tcpserver has no --version: run it without arguments, which prints its usage.
        if let Err(e) = Command::new("tcpserver").output() {
            bail!(
                "cannot run tcpserver ({e}): it comes with ucspi-tcp (apt-get install ucspi-tcp)"
            );
        }
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("palindrome.c");
        let path = dir.path().join("palindrome");
        std::fs::write(&source, TCPSERVER_PROGRAM)?;
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let out = Command::new(&compiler)
            .args(["-O2", "-o"])
            .arg(&path)
            .arg(&source)
            .output()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot run the C compiler {compiler:?} ({e}) to build tcpserver's palindrome \
                     program: install one (apt-get install gcc) or name it in $CC"
                )
            })?;
        if !out.status.success() {
            bail!(
                "{compiler} could not build tcpserver's palindrome program:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(TcpserverProgram {
            path,
            _dir: Arc::new(dir),
        })
    }
}

/// The work per line a palindrome service is configured with (its `busy_us` and `sleep_ms`
/// options), for the workloads that show how each model bears it; zero for the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerLine {
    pub busy_us: u64,
    pub sleep_ms: u64,
}

impl PerLine {
    /// The service's `options` line, or `None` for no work at all.
    fn options(self) -> Option<String> {
        let mut keys = Vec::new();
        if self.busy_us > 0 {
            keys.push(format!("busy_us = {}", self.busy_us));
        }
        if self.sleep_ms > 0 {
            keys.push(format!("sleep_ms = {}", self.sleep_ms));
        }
        (!keys.is_empty()).then(|| format!("options = {{ {} }}\n", keys.join(", ")))
    }
}

/// A server being measured.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// The host's admin endpoint, when it is on.
    pub admin: Option<SocketAddr>,
    child: Option<Child>,
    /// The host's config and log; kept until the server is stopped.
    dir: Option<tempfile::TempDir>,
}

/// The words bench games are played with: letters only, so the bots' alphabet covers them.
pub const GAME_WORDS: [&str; 12] = [
    "socket", "server", "thread", "process", "fork", "select", "listen", "accept", "buffer",
    "stream", "packet", "kernel",
];

impl Server {
    /// Starts the server for `subject`, serving `service`, sized for `max_clients` at once;
    /// `work` is for porthost's services, which alone take it.
    pub fn start(
        subject: &Subject,
        service: &str,
        max_clients: usize,
        work: PerLine,
    ) -> anyhow::Result<Server> {
        match subject {
            Subject::Model(model) => start_host(*model, service, max_clients, work, false),
            Subject::Admin(model) => start_host(*model, service, max_clients, work, true),
            Subject::Baseline(kind) => {
                let mut command = Command::new(baseline::program(*kind)?);
                command.args(kind.args(max_clients));
                start_printing_addr(command, None, "")
            }
            Subject::Python => {
                let dir = tempfile::tempdir()?;
                let script = dir.path().join("forking_server.py");
                std::fs::write(&script, PYTHON_FORKING_SERVER)?;
                let mut command = Command::new("python3");
                command.arg(&script);
                start_printing_addr(command, Some(dir), "").context("is python3 installed?")
            }
            Subject::Tcpserver(program) => {
                // -1: print the port; -H -R -l0: no DNS or ident look-ups per connection; -D:
                // TCP_NODELAY like every other server here; the host's backlog and room for
                // every client at once.
                let mut command = Command::new("tcpserver");
                command
                    .args(["-1", "-q", "-H", "-R", "-D", "-l", "0"])
                    .args(["-b", &porthost::sockets::BACKLOG.to_string()])
                    .args(["-c", &(max_clients + 16).to_string()])
                    .args(["127.0.0.1", "0"])
                    .arg(&program.path);
                // It prints the port alone.
                start_printing_addr(command, None, "127.0.0.1:")
            }
            Subject::External { addr, .. } => Ok(Server {
                addr: *addr,
                admin: None,
                child: None,
                dir: None,
            }),
        }
    }

    /// The server's pid, when the bench started it (and so can read its footprint).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server: SIGTERM, and SIGKILL if it has not ended after a few seconds.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        bail!("the server did not stop within 5 s of SIGTERM and was killed")
    }

    /// The server's log, for error messages.
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("host.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a server that binds an ephemeral port and prints its address (after `prefix`) as its
/// first line.
fn start_printing_addr(
    mut command: Command,
    dir: Option<tempfile::TempDir>,
    prefix: &str,
) -> anyhow::Result<Server> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = format!("{prefix}{}", line.trim())
        .parse()
        .with_context(|| format!("{command:?} printed {line:?}, not an address"))?;
    Ok(Server {
        addr,
        admin: None,
        child: Some(child),
        dir,
    })
}

/// Starts `porthost run` on a config with one free loopback port (and, with `admin`, the admin
/// endpoint on another).
fn start_host(
    model: Model,
    service: &str,
    max_clients: usize,
    work: PerLine,
    admin: bool,
) -> anyhow::Result<Server> {
    let mut last_error = None;
    // A free port can be taken by someone else before the host binds it: try again.
    for _ in 0..5 {
        let port = free_port()?;
        let admin = if admin { Some(free_port()?) } else { None };
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("services.toml");
        std::fs::write(
            &config,
            host_config(port, model, service, max_clients, work, admin),
        )?;
        let log = std::fs::File::create(dir.path().join("host.log"))?;
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        if let Some(child) = run_host(&config, 1, log, &level)? {
            return Ok(Server {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                admin: admin.map(|admin| SocketAddr::from(([127, 0, 0, 1], admin))),
                child: Some(child),
                dir: Some(dir),
            });
        }
        last_error = Some(std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default());
    }
    bail!(
        "porthost run did not start: {}",
        last_error.unwrap_or_default().trim()
    )
}

/// Starts `porthost run --config <config>`, logging to `log` at `level`, and waits until it
/// has bound its `ports` ports: it prints its plan (a header and a row a port) only then.
/// `None` when it exited instead (a port was taken, say); its log says why.
pub fn run_host(
    config: &Path,
    ports: usize,
    log: File,
    level: &str,
) -> anyhow::Result<Option<Child>> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start porthost run")?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    for _ in 0..=ports {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            let _ = child.wait();
            return Ok(None);
        }
    }
    // Keep draining stdout so the host never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Ok(Some(child))
}

/// A loopback port free at the time of asking.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The config of a host the bench starts: one port, and the admin endpoint on `admin` if given.
fn host_config(
    port: u16,
    model: Model,
    service: &str,
    max_clients: usize,
    work: PerLine,
    admin: Option<u16>,
) -> String {
    let mut text = String::from("[host]\nshutdown_grace_secs = 1\n");
    if let Some(admin) = admin {
        text.push_str(&format!("admin = \"127.0.0.1:{admin}\"\n"));
    }
    text.push_str(&format!(
        "\n[ports.{port}]\nservice = \"{service}\"\nmodel = \"{model}\"\n"
    ));
    // Size every model for the load, so the table compares models, not default limits.
    match model {
        Model::Sequential => {}
        // A pool's concurrency is its size: the twin's.
        Model::ThreadPool => text.push_str(&format!(
            "workers = {}\n",
            baseline::pool_workers(max_clients)
        )),
        Model::Prefork => text.push_str(&format!(
            "workers = {}\n",
            baseline::prefork_workers(max_clients)
        )),
        _ => {
            let max = model
                .default_max_connections(Model::default_workers())
                .max(max_clients + 16);
            text.push_str(&format!("max_connections = {max}\n"));
        }
    }
    if service == "word-guess" {
        let words: Vec<String> = GAME_WORDS.iter().map(|w| format!("{w:?}")).collect();
        text.push_str(&format!(
            "options = {{ players = 2, words = [{}] }}\n",
            words.join(", ")
        ));
    } else if let Some(options) = work.options() {
        text.push_str(&options);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_config_is_valid_and_turns_the_admin_endpoint_on_when_asked() {
        let plain = host_config(
            7001,
            Model::ThreadPerClient,
            "palindrome-v3",
            2000,
            PerLine::default(),
            None,
        );
        let config = porthost::config::Config::parse(&plain, Path::new("bench.toml")).unwrap();
        assert_eq!(config.ports.len(), 1);
        assert_eq!(config.ports[0].entry.max_connections, 2016);
        assert!(!plain.contains("admin"));
        assert!(!plain.contains("options"));
        let admin = host_config(
            7001,
            Model::Async,
            "palindrome-v3",
            10,
            PerLine::default(),
            Some(7000),
        );
        let host = admin.split("\n\n").next().unwrap();
        assert!(host.starts_with("[host]\n"), "{admin}");
        assert!(host.ends_with("\nadmin = \"127.0.0.1:7000\""), "{admin}");
    }

    #[test]
    fn the_work_per_line_reaches_the_palindrome_service() {
        for (work, options) in [
            (
                PerLine {
                    sleep_ms: 100,
                    busy_us: 0,
                },
                "options = { sleep_ms = 100 }\n",
            ),
            (
                PerLine {
                    sleep_ms: 0,
                    busy_us: 20000,
                },
                "options = { busy_us = 20000 }\n",
            ),
        ] {
            let text = host_config(7001, Model::EventLoop, "palindrome-v3", 50, work, None);
            assert!(text.ends_with(options), "{text}");
            // The host takes it: the service's own option reader has checked the keys.
            porthost::config::Config::parse(&text, Path::new("bench.toml")).unwrap();
        }
    }
}
