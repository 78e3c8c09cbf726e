//! The baselines: minimal hand-written servers for the palindrome protocol, one for each model,
//! with no host machinery (no limits, no config, no spans), so the bench shows what the host
//! itself costs. Each is a small program of its own (`host/bench/twins/`, about 1 MB, where
//! `porthost` is 9 MB): what a fork costs grows with the program that forks. They answer with
//! the same `verdict` as the services, so the work per line is identical, and listen with the
//! host's backlog, so a queue is the same length in front of either.
//!
//! | baseline | program | the twin of | how it serves |
//! |---|---|---|---|
//! | `baseline-sequential` | `twin-sequential` | `sequential` | accept, serve with blocking I/O, accept the next |
//! | `baseline-threads` | `twin-threads` | `thread-per-client` | a thread per connection, blocking I/O |
//! | `baseline-fork` | `twin-fork` | `process-per-client` | a `fork()` per connection from a single-threaded server, blocking I/O in the child, a SIGCHLD handler reaping |
//! | `baseline-async` | `twin-async` | `async` | a tokio task per connection |
//! | `baseline-pool` | `twin-thread-pool` | `thread-pool` | `--workers` threads started first, each blocking in `accept` on the shared socket, then serving with blocking I/O |
//! | `baseline-loop` | `twin-event-loop` | `event-loop` | a tokio task per connection on a current-thread runtime |
//! | `baseline-prefork` | `twin-prefork` | `prefork` | `--workers` single-threaded processes forked at start, each blocking in `accept` on the shared socket, then serving with blocking I/O |
//!
//! They are binaries of the `porthost` package, so `cargo build` and `cargo install --path .`
//! put them next to `porthost`, where [`program`] finds them. `cargo run -- bench` builds only
//! `porthost`: run from the source tree, the bench then builds them with the same cargo,
//! profile and target folder (a few seconds, once), and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use porthost::config::Model;

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sequential,
    Threads,
    Fork,
    Async,
    Pool,
    Loop,
    Prefork,
}

impl Kind {
    /// The twin's program.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Sequential => "twin-sequential",
            Kind::Threads => "twin-threads",
            Kind::Fork => "twin-fork",
            Kind::Async => "twin-async",
            Kind::Pool => "twin-thread-pool",
            Kind::Loop => "twin-event-loop",
            Kind::Prefork => "twin-prefork",
        }
    }

    /// The baseline a model is shown next to.
    pub fn twin_of(model: Model) -> Kind {
        match model {
            Model::Sequential => Kind::Sequential,
            Model::ThreadPerClient => Kind::Threads,
            Model::ProcessPerClient => Kind::Fork,
            Model::Async => Kind::Async,
            Model::ThreadPool => Kind::Pool,
            Model::EventLoop => Kind::Loop,
            Model::Prefork => Kind::Prefork,
        }
    }

    pub fn subject(self) -> &'static str {
        match self {
            Kind::Sequential => "baseline-sequential",
            Kind::Threads => "baseline-threads",
            Kind::Fork => "baseline-fork",
            Kind::Async => "baseline-async",
            Kind::Pool => "baseline-pool",
            Kind::Loop => "baseline-loop",
            Kind::Prefork => "baseline-prefork",
        }
    }

    /// The twin's arguments when it serves up to `max_clients` at once: the pool's size.
    pub fn args(self, max_clients: usize) -> Vec<String> {
        let workers = match self {
            Kind::Pool => pool_workers(max_clients),
            Kind::Prefork => prefork_workers(max_clients),
            _ => return Vec::new(),
        };
        vec!["--workers".to_owned(), workers.to_string()]
    }
}

/// The workers of a thread pool the bench sizes for `max_clients` at once, host and twin
/// alike: one per client, as every model is sized for the load, within the pool's bound.
pub fn pool_workers(max_clients: usize) -> usize {
    (max_clients + 16).min(porthost::config::bounds::to_usize(
        porthost::config::bounds::WORKER_THREADS.max,
    ))
}

/// The worker processes of a prefork server the bench sizes for `max_clients` at once, host
/// and twin alike: one per client, as for the thread pool, within the processes' bound.
pub fn prefork_workers(max_clients: usize) -> usize {
    (max_clients + 16).min(porthost::config::bounds::to_usize(
        porthost::config::bounds::WORKER_PROCESSES.max,
    ))
}

/// Every twin, for building them at once.
const ALL: [Kind; 7] = [
    Kind::Sequential,
    Kind::Threads,
    Kind::Fork,
    Kind::Async,
    Kind::Pool,
    Kind::Loop,
    Kind::Prefork,
];

/// The twin's program next to the running `porthost`, built first when `porthost` runs from a
/// source tree's target folder without it.
pub fn program(kind: Kind) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let folder = exe.parent().context("porthost's own folder")?;
    let path = folder.join(kind.binary());
    if path.exists() {
        return Ok(path);
    }
    build_twins(folder).with_context(|| {
        format!(
            "{} is not next to {} (`cargo build --release --bins` or `cargo install --path .` \
             puts it there)",
            kind.binary(),
            exe.display()
        )
    })?;
    Ok(path)
}

/// Builds every twin into `folder`, a cargo target folder's `release` or `debug`, from the
/// source tree this bench was built from.
fn build_twins(folder: &Path) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest = root.join("Cargo.toml");
    if !manifest.exists() {
        bail!("no source tree at {} to build it from", root.display());
    }
    let profile = folder.file_name().and_then(|n| n.to_str());
    let target_dir = folder.parent().context("the target folder")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        Some("release") => {
            command.arg("--release");
        }
        Some("debug") => {}
        _ => bail!("{} is not a cargo target folder", folder.display()),
    }
    for kind in ALL {
        command.args(["--bin", kind.binary()]);
    }
    eprintln!("building the bench's twins: {command:?}");
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("{command:?} failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pools_get_a_worker_per_client_within_their_bounds() {
        assert_eq!(Kind::Pool.args(50), ["--workers", "66"]);
        assert_eq!(Kind::Prefork.args(50), ["--workers", "66"]);
        assert_eq!(Kind::Prefork.args(1000), ["--workers", "256"]);
        assert!(Kind::Fork.args(50).is_empty());
        // Every twin's program is a binary of its own, built by `build_twins`.
        let mut binaries: Vec<&str> = ALL.iter().map(|k| k.binary()).collect();
        binaries.sort_unstable();
        binaries.dedup();
        assert_eq!(binaries.len(), ALL.len());
    }
}
