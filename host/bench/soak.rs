//! `porthost soak`: a bounded soak of a real host on loopback. It drives mixed load at every port
//! of a config — sessions and churn at the palindrome ports, games at the game ports, garbage
//! everywhere — while reloading a changed config every so often, then stops by itself and
//! reports what was served, the errors, and whether the host's memory, descriptors and
//! processes came back flat.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use porthost::config::Model;
use porthost::config::{Config, PortEntry};
use porthost::procfs;

use crate::load;
use crate::metric::{Metric, Sample};
use crate::server::run_host;

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// The config whose ports are soaked (its ports must be free; it is copied, so relative
    /// `words_file` paths in it are not supported).
    #[arg(long, default_value = "config/services.toml")]
    pub config: PathBuf,
    /// How long to soak.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seconds between reloads (SIGHUP) with a changed config.
    #[arg(long, default_value_t = 60)]
    pub reload_every: u64,
}

/// What the soak counts.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    connections: u64,
    games: u64,
    errors: u64,
    errors_by_port: std::collections::BTreeMap<u16, u64>,
    garbage_sent: u64,
    /// Garbage the host did not answer with an error line or a close, or that hurt it.
    garbage_mishandled: u64,
}

/// Budget of one round of a workload; rounds repeat until the soak is over.
const ROUND: Duration = Duration::from_secs(30);

pub fn main(args: SoakArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = Config::parse(&text, &args.config)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("services.toml");
    std::fs::write(&path, &text)?;
    let variant = changed(&text, &config).context("no port to change on reload")?;

    let log = std::fs::File::create(dir.path().join("host.log"))?;
    let Some(mut host) = run_host(&path, config.ports.len(), log, "info")? else {
        let log = std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default();
        bail!("the host did not start:\n{log}");
    };
    let pid = host.id();

    let runtime = tokio::runtime::Runtime::new()?;
    let entries: Vec<PortEntry> = config.ports.iter().map(|p| p.entry.clone()).collect();
    // Warm up every port once, then take the host's resting level.
    let mut tally = Tally::default();
    runtime.block_on(round(&entries, &mut tally, Instant::now() + ROUND, true));
    std::thread::sleep(Duration::from_secs(1));
    let start = Level::of(pid);

    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut next_reload = Instant::now() + Duration::from_secs(args.reload_every);
    let mut reloads = 0u32;
    let began = Instant::now();
    // The host's RSS after each minute: growth that flattens is allocator caching, growth that
    // keeps going is a leak.
    let mut by_minute: Vec<u64> = Vec::new();
    while Instant::now() < end {
        runtime.block_on(round(&entries, &mut tally, end, false));
        if began.elapsed() >= Duration::from_secs(60 * (by_minute.len() as u64 + 1)) {
            by_minute.push(procfs::status_kib(pid, "VmRSS").unwrap_or(0));
        }
        if Instant::now() >= next_reload {
            reloads += 1;
            std::fs::write(&path, if reloads % 2 == 1 { &variant } else { &text })?;
            kill(Pid::from_raw(pid as i32), Signal::SIGHUP)?;
            next_reload += Duration::from_secs(args.reload_every);
        }
    }
    // Let drains, idle timeouts of garbage connections and reaping settle.
    std::thread::sleep(Duration::from_secs(8));
    let finish = Level::of(pid);
    let host_log = std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default();
    stop(&mut host)?;

    println!(
        "soak of {} for {:.1} min, {reloads} reloads",
        args.config.display(),
        args.minutes
    );
    println!("requests served      {}", tally.requests);
    println!("connections churned  {}", tally.connections);
    println!("games finished       {}", tally.games);
    println!(
        "errors               {} {:?}",
        tally.errors, tally.errors_by_port
    );
    println!(
        "garbage sent         {} (mishandled: {})",
        tally.garbage_sent, tally.garbage_mishandled
    );
    println!(
        "host RSS             {} KiB -> {} KiB",
        start.rss_kib, finish.rss_kib
    );
    println!("host RSS each minute {by_minute:?} KiB");
    println!("host descriptors     {} -> {}", start.fds, finish.fds);
    println!(
        "host threads         {} -> {}",
        start.threads, finish.threads
    );
    println!(
        "child processes      {} -> {}",
        start.children, finish.children
    );
    println!(
        "zombies              {} -> {}",
        start.zombies, finish.zombies
    );
    let warnings = host_log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    println!("host warnings/errors {warnings} log lines");
    if tally.errors > 0 || tally.garbage_mishandled > 0 || finish.zombies > 0 {
        bail!("the soak found errors");
    }
    Ok(())
}

/// The host's resource level: what must come back flat after load.
#[derive(Debug)]
struct Level {
    rss_kib: u64,
    fds: usize,
    threads: usize,
    /// Live processes below the host, the forker included.
    children: usize,
    zombies: usize,
}

impl Level {
    fn of(pid: u32) -> Level {
        let below = procfs::descendants(pid);
        Level {
            rss_kib: procfs::status_kib(pid, "VmRSS").unwrap_or(0),
            fds: procfs::open_fds(pid),
            threads: procfs::threads(pid),
            children: below.iter().filter(|p| p.state != 'Z').count(),
            zombies: below.iter().filter(|p| p.state == 'Z').count(),
        }
    }
}

/// The config with one entry changed, so a reload restarts that port and leaves the others:
/// the model of the first thread-per-client palindrome port flips to async.
fn changed(text: &str, config: &Config) -> Option<String> {
    let port = config
        .ports
        .iter()
        .find(|p| {
            p.entry.model == Model::ThreadPerClient && p.entry.service.starts_with("palindrome")
        })?
        .entry
        .port();
    let header = format!("[ports.{port}]");
    let at = text.find(&header)?;
    let model = text[at..].find("model = \"thread-per-client\"")? + at;
    Some(format!(
        "{}model = \"async\"{}",
        &text[..model],
        &text[model + "model = \"thread-per-client\"".len()..]
    ))
}

/// One round: every port gets its workload at once.
async fn round(entries: &[PortEntry], tally: &mut Tally, end: Instant, warm_up: bool) {
    let deadline = (Instant::now() + ROUND).min(end);
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let mut tasks = Vec::new();
    for entry in entries {
        let addr = entry.addr;
        let (service, model, max_line) = (
            entry.service.clone(),
            entry.model,
            entry.limits.max_line_bytes,
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            if service == "word-guess" {
                let sample = load::game(addr, if warm_up { 1 } else { 10 }, budget).await;
                tally.games += count(&sample, Metric::GamesFinished);
                tally.errors += sample.errors;
                tally.garbage(garbage_name(addr).await);
            } else {
                let clients = if model == Model::Sequential { 4 } else { 20 };
                let sample = load::sessions(addr, clients, 20, budget).await;
                tally.requests += count(&sample, Metric::Served);
                tally.errors += sample.errors;
                let sample = load::churn(addr, 100, 4, budget).await;
                tally.connections += count(&sample, Metric::Served);
                tally.errors += sample.errors;
                if !warm_up {
                    tally.garbage(garbage_bytes(addr, max_line).await);
                }
            }
            tally
        }));
    }
    for (task, entry) in tasks.into_iter().zip(entries) {
        if let Ok(t) = task.await {
            if t.errors > 0 {
                *tally.errors_by_port.entry(entry.addr.port()).or_default() += t.errors;
            }
            tally.requests += t.requests;
            tally.connections += t.connections;
            tally.games += t.games;
            tally.errors += t.errors;
            tally.garbage_sent += t.garbage_sent;
            tally.garbage_mishandled += t.garbage_mishandled;
        }
    }
}

/// A count a sample measured (requests or connections served, games finished).
fn count(sample: &Sample, metric: Metric) -> u64 {
    sample.get(metric).map_or(0, |n| n as u64)
}

impl Tally {
    fn garbage(&mut self, outcomes: Vec<bool>) {
        self.garbage_sent += outcomes.len() as u64;
        self.garbage_mishandled += outcomes.iter().filter(|ok| !**ok).count() as u64;
    }
}

/// Sends each kind of garbage on its own connection; `true` where the host answered with an
/// `ERR` line, a verdict, or closed the connection, as it should.
async fn garbage_bytes(addr: SocketAddr, max_line: usize) -> Vec<bool> {
    let mut random = vec![0u8; 4096];
    rand::fill(&mut random[..]);
    let nul = vec![0u8; 2048];
    let empties = vec![b'\n'; 10_000];
    let mut outcomes = Vec::new();
    for payload in [random, nul, empties] {
        outcomes.push(answered_or_closed(addr, &payload).await);
    }
    // A line far over the limit: the host must answer ERR and close without buffering it.
    let long = vec![b'x'; (max_line + 1).max(1 << 20)];
    outcomes.push(answered_or_closed(addr, &long).await);
    outcomes
}

/// A 10 KB name at a game port: refused with a message, the connection stays usable.
async fn garbage_name(addr: SocketAddr) -> Vec<bool> {
    let name = format!("{}\n", "n".repeat(10 * 1024));
    vec![answered_or_closed(addr, name.as_bytes()).await]
}

async fn answered_or_closed(addr: SocketAddr, payload: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let (mut read, mut write) = stream.split();
    let send = async {
        let _ = write.write_all(payload).await;
        let _ = write.shutdown().await;
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => got += n,
            }
            if got > 16 << 20 {
                return false;
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(send, receive).1
        })
        .await,
        Ok(true)
    )
}

fn stop(host: &mut Child) -> anyhow::Result<()> {
    kill(Pid::from_raw(host.id() as i32), Signal::SIGTERM)?;
    let status = host.wait()?;
    if !status.success() {
        bail!("the host exited with {status}");
    }
    Ok(())
}
