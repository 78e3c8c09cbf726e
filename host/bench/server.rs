//! The servers a bench measures, each in a process of its own so that the load generator never
//! shares their runtime or their CPU accounting: a `porthost run` per model, the two baselines,
//! or a server someone else started (`--addr`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::baseline;
use porthost::config::Model;

/// The Python `socketserver.ForkingTCPServer` the process-per-client model is compared with:
/// the lecture's own kind of server, kept in the repository as a script.
const PYTHON_FORKING_SERVER: &str = include_str!("../../examples/python/forking_server.py");

/// What the bench measures, one column of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Model(Model),
    Baseline(baseline::Kind),
    /// Python's `socketserver.ForkingTCPServer` for the palindrome protocol.
    Python,
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
            Subject::Baseline(kind) => kind.subject().to_owned(),
            Subject::Python => "python-forking".to_owned(),
            Subject::External { name, .. } => name.clone(),
        }
    }
}

/// A server being measured.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
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
    /// Starts the server for `subject`, serving `service`, sized for `max_clients` at once.
    pub fn start(subject: &Subject, service: &str, max_clients: usize) -> anyhow::Result<Server> {
        match subject {
            Subject::Model(model) => start_host(*model, service, max_clients),
            Subject::Baseline(kind) => {
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["bench", "--serve-baseline", kind.arg()]);
                start_printing_addr(command, None)
            }
            Subject::Python => {
                let dir = tempfile::tempdir()?;
                let script = dir.path().join("forking_server.py");
                std::fs::write(&script, PYTHON_FORKING_SERVER)?;
                let mut command = Command::new("python3");
                command.arg(&script);
                start_printing_addr(command, Some(dir)).context("is python3 installed?")
            }
            Subject::External { addr, .. } => Ok(Server {
                addr: *addr,
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

/// Starts a server that binds an ephemeral port and prints its address as its first line.
fn start_printing_addr(
    mut command: Command,
    dir: Option<tempfile::TempDir>,
) -> anyhow::Result<Server> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .parse()
        .with_context(|| format!("{command:?} printed {line:?}, not an address"))?;
    Ok(Server {
        addr,
        child: Some(child),
        dir,
    })
}

/// Starts `porthost run` on a config with one free loopback port.
fn start_host(model: Model, service: &str, max_clients: usize) -> anyhow::Result<Server> {
    let mut last_error = None;
    // A free port can be taken by someone else before the host binds it: try again.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("services.toml");
        std::fs::write(&config, host_config(port, model, service, max_clients))?;
        let log = std::fs::File::create(dir.path().join("host.log"))?;
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        if let Some(child) = run_host(&config, 1, log, &level)? {
            return Ok(Server {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
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

fn host_config(port: u16, model: Model, service: &str, max_clients: usize) -> String {
    let mut text = format!(
        "[host]\nshutdown_grace_secs = 1\n\n[ports.{port}]\nservice = \"{service}\"\nmodel = \"{model}\"\n"
    );
    // Size every model for the load, so the table compares models, not default limits.
    if model != Model::Sequential {
        let max = model.default_max_connections().max(max_clients + 16);
        text.push_str(&format!("max_connections = {max}\n"));
    }
    if service == "word-guess" {
        let words: Vec<String> = GAME_WORDS.iter().map(|w| format!("{w:?}")).collect();
        text.push_str(&format!(
            "options = {{ players = 2, words = [{}] }}\n",
            words.join(", ")
        ));
    }
    text
}
