//! "Drive N clients for T seconds" from the live page: the host starts the bench's load
//! generator (`porthost bench --drive ...`) as a child process of its own, never inside its
//! runtime, aimed only at its own ports on loopback; one run at a time, bounded, cancellable.
//! The generator prints a JSON line a second ([`Progress`]); the page shows them as they come.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::{Events, Kind};

/// The most clients a run may drive.
pub const MAX_CLIENTS: u32 = 1000;
/// The longest a run may last, in seconds.
pub const MAX_SECONDS: u32 = 60;

/// What the page asks for.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DriveRequest {
    /// Ports of this host to drive; every accepting port when empty.
    #[serde(default)]
    pub ports: Vec<u16>,
    pub clients: u32,
    pub seconds: u32,
    /// `sessions` (clients stay and send line after line) or `churn` (connect, one line,
    /// disconnect, again).
    pub workload: Workload,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Sessions,
    Churn,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Sessions => "sessions",
            Workload::Churn => "churn",
        }
    }
}

/// One line the load generator prints: where it is, or (with `done`) how it ended.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Progress {
    /// Seconds since it started.
    pub elapsed: f64,
    /// Replies received, connections made and errors, so far.
    pub replies: u64,
    pub connections: u64,
    pub errors: u64,
    pub done: bool,
}

/// A run, as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriveView {
    pub request: DriveRequest,
    pub targets: Vec<u16>,
    pub running: bool,
    pub progress: Progress,
    /// How it ended, once it has: finished, cancelled, or what went wrong.
    pub outcome: Option<String>,
}

/// How the host starts the load generator: normally this very binary's `bench`.
#[derive(Debug, Clone)]
pub struct LoadCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Set by a binary that has the `bench` subcommand: the host library knows no load generator
/// (it lives in the `porthost-bench` crate, which the server never links), so only the binary
/// that links one can say so.
static OFFERED: std::sync::OnceLock<LoadCommand> = std::sync::OnceLock::new();

/// Says that this binary's `bench` subcommand is the load generator, for the live page's load
/// runs. `porthost` calls it; a binary built on the library without `porthost-bench` does not,
/// and its page refuses a run with [`DriveError::NoLoadGenerator`].
pub fn offer_load_generator() -> std::io::Result<()> {
    let command = LoadCommand {
        program: std::env::current_exe()?,
        args: vec!["bench".to_owned()],
    };
    // A second offer can only name the same binary.
    let _ = OFFERED.set(command);
    Ok(())
}

impl LoadCommand {
    /// This binary's load generator, if it offered one.
    pub fn offered() -> Option<LoadCommand> {
        OFFERED.get().cloned()
    }
}

/// The runs: the one going on, or the last one.
#[derive(Debug, Clone)]
pub struct Drives {
    command: Option<LoadCommand>,
    state: Arc<Mutex<State>>,
    events: Arc<Events>,
}

#[derive(Debug, Default)]
struct State {
    view: Option<DriveView>,
    cancel: Option<CancellationToken>,
}

/// Why a run was not started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DriveError {
    #[error("a run is going on; cancel it first")]
    Busy,
    #[error("clients must be 1 to {MAX_CLIENTS} and seconds 1 to {MAX_SECONDS}")]
    OutOfBounds,
    #[error("port {0} is not one of this host's accepting ports")]
    NotOurs(u16),
    #[error("no port to drive")]
    NoPorts,
    #[error(
        "this binary has no load generator (the `bench` subcommand of the porthost binary); \
         run the host with `porthost run` to drive load from the page"
    )]
    NoLoadGenerator,
}

impl Drives {
    pub fn new(command: Option<LoadCommand>, events: Arc<Events>) -> Drives {
        Drives {
            command,
            state: Arc::default(),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.state)
    }

    pub fn view(&self) -> Option<DriveView> {
        self.lock().view.clone()
    }

    /// Starts a run against `ours`, the accepting ports and their loopback addresses.
    pub fn start(
        &self,
        request: DriveRequest,
        ours: &[(u16, SocketAddr)],
    ) -> Result<DriveView, DriveError> {
        let Some(command) = self.command.clone() else {
            return Err(DriveError::NoLoadGenerator);
        };
        if !(1..=MAX_CLIENTS).contains(&request.clients)
            || !(1..=MAX_SECONDS).contains(&request.seconds)
        {
            return Err(DriveError::OutOfBounds);
        }
        let targets: Vec<(u16, SocketAddr)> = if request.ports.is_empty() {
            ours.to_vec()
        } else {
            request
                .ports
                .iter()
                .map(|p| {
                    ours.iter()
                        .find(|(port, _)| port == p)
                        .copied()
                        .ok_or(DriveError::NotOurs(*p))
                })
                .collect::<Result<_, _>>()?
        };
        if targets.is_empty() {
            return Err(DriveError::NoPorts);
        }
        let mut state = self.lock();
        if state.view.as_ref().is_some_and(|v| v.running) {
            return Err(DriveError::Busy);
        }
        let view = DriveView {
            request: request.clone(),
            targets: targets.iter().map(|(p, _)| *p).collect(),
            running: true,
            progress: Progress::default(),
            outcome: None,
        };
        let cancel = CancellationToken::new();
        state.view = Some(view.clone());
        state.cancel = Some(cancel.clone());
        drop(state);
        self.events.push(None, Kind::Drive, || {
            format!(
                "driving {} {} client(s) for {} s at port(s) {:?}",
                request.clients,
                request.workload.name(),
                request.seconds,
                view.targets
            )
        });
        let drives = self.clone();
        let addrs: Vec<SocketAddr> = targets.iter().map(|(_, a)| *a).collect();
        tokio::spawn(async move {
            let outcome = drives.run(&command, &request, &addrs, &cancel).await;
            let mut state = drives.lock();
            if let Some(view) = &mut state.view {
                view.running = false;
                view.outcome = Some(outcome.clone());
            }
            state.cancel = None;
            drop(state);
            drives
                .events
                .push(None, Kind::Drive, || format!("load run {outcome}"));
        });
        Ok(view)
    }

    /// Cancels the run going on; `false` when there is none.
    pub fn cancel(&self) -> bool {
        match &self.lock().cancel {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs the load generator to its end (or until cancelled), updating the view; returns how
    /// it ended.
    async fn run(
        &self,
        command: &LoadCommand,
        request: &DriveRequest,
        addrs: &[SocketAddr],
        cancel: &CancellationToken,
    ) -> String {
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let mut child = match tokio::process::Command::new(&command.program)
            .args(&command.args)
            .arg("--drive")
            .arg(addrs.join(","))
            .args(["--drive-clients", &request.clients.to_string()])
            .args(["--drive-seconds", &request.seconds.to_string()])
            .args(["--drive-workload", request.workload.name()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                warn!("cannot start the load generator: {e}");
                return format!("failed: cannot start the load generator: {e}");
            }
        };
        info!(pid = child.id(), "started a load run from the admin page");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let complaint = tokio::spawn(complaint(child.stderr.take().expect("piped")));
        let cancelled = loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Ok(progress) = serde_json::from_str::<Progress>(&line)
                            && let Some(view) = &mut self.lock().view
                        {
                            view.progress = progress;
                        }
                    }
                    _ => break false,
                },
                () = cancel.cancelled() => break true,
            }
        };
        if cancelled && let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
        let complaint = complaint.await.unwrap_or_default();
        match status {
            _ if cancelled => "cancelled".to_owned(),
            Ok(Ok(status)) if status.success() => "finished".to_owned(),
            Ok(Ok(status)) => format!("failed ({status}): {complaint}"),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => {
                let _ = child.kill().await;
                "failed: the load generator did not end; killed".to_owned()
            }
        }
    }
}

/// What a failed run said: clap's `error: ...` line, or else the first line it wrote, cut to a
/// line's length. Reads all of stderr meanwhile, so a chatty generator never blocks on a full
/// pipe.
async fn complaint(stderr: tokio::process::ChildStderr) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let (mut error, mut first) = (None, None);
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if error.is_none() && line.starts_with("error") {
            error = Some(line.to_owned());
        }
        first.get_or_insert_with(|| line.to_owned());
    }
    let mut said = error.or(first).unwrap_or_else(|| "no message".to_owned());
    if let Some((cut, _)) = said.char_indices().nth(200) {
        said.truncate(cut);
        said.push('…');
    }
    said
}

#[cfg(test)]
mod tests {
    use super::complaint;

    async fn said(script: &str) -> String {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let said = complaint(child.stderr.take().unwrap()).await;
        child.wait().await.unwrap();
        said
    }

    #[tokio::test]
    async fn a_failed_run_is_told_by_its_error_line_or_its_first_line() {
        assert_eq!(
            said("echo; echo 'Usage: x' >&2; echo 'error: bad flag' >&2; echo 'try --help' >&2")
                .await,
            "error: bad flag"
        );
        assert_eq!(said("echo first >&2; echo second >&2").await, "first");
        assert_eq!(said("true").await, "no message");
        let long = said("printf '%0300d\\n' 0 >&2").await;
        assert_eq!(long.chars().count(), 201, "{long}");
        assert!(long.ends_with('…'));
    }
}
