//! `porthost soak`: a bounded soak of a real host on loopback. It drives mixed load at every port
//! of a config — sessions and churn at the palindrome ports, games at the game ports, garbage
//! everywhere — while reloading a changed config every so often, then stops by itself and
//! reports what was served, the errors, and whether the host's memory, descriptors and
//! processes came back flat.
//!
//! Before the load it sends a 100 MiB line to every port at once and records the peak memory
//! of the host and of every process below it (`VmHWM`, and PSS sampled as the lines arrive):
//! the host buffers at most `max_line_bytes` of a line, so no process may come near the line's
//! size. This is where that promise is checked; no test asserts memory.
//!
//! Every model is soaked, whatever the config covers: for a model no port of the config runs,
//! the soak adds a `palindrome-v3` port of its own on a free loopback port to its copy of the
//! config (the thread pool's with a `workers` count that each reload changes, so a reload also
//! replaces a pool).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
pub struct Tally {
    pub requests: u64,
    pub connections: u64,
    pub games: u64,
    pub errors: u64,
    pub errors_by_port: std::collections::BTreeMap<u16, u64>,
    pub garbage_sent: u64,
    /// Garbage the host did not answer with an error line or a close, or that hurt it.
    pub garbage_mishandled: u64,
}

/// Budget of one round of a workload; rounds repeat until the soak is over.
const ROUND: Duration = Duration::from_secs(30);

/// The line sent to every port at once while memory is watched.
const HUGE_LINE_BYTES: usize = 100 << 20;
/// The most any one process (the host, the forker, a connection's child) may peak at while the
/// huge lines arrive: far below the line, since only `max_line_bytes` of it is ever buffered.
pub const MEMORY_BOUND_KIB: u64 = 48 * 1024;

pub fn main(args: SoakArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = Config::parse(&text, &args.config)?;
    let variant = changed(&text, &config).context("no port to change on reload")?;
    let added = missing_models(&config)
        .into_iter()
        .map(|model| Ok((model, free_port()?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let text = format!("{text}{}", added_ports(&added, false));
    let variant = format!("{variant}{}", added_ports(&added, true));
    let config = Config::parse(&text, &args.config)
        .with_context(|| format!("{} with the soak's own ports", args.config.display()))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("services.toml");
    std::fs::write(&path, &text)?;

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
    let peak = runtime.block_on(huge_lines(pid, &entries));

    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut next_reload = Instant::now() + Duration::from_secs(args.reload_every);
    let mut reloads = 0u32;
    let began = Instant::now();
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

    let findings = Findings {
        config: args.config,
        added,
        minutes: args.minutes,
        reloads,
        tally,
        start,
        finish,
        rss_by_minute: by_minute,
        peak,
        log_warnings: host_log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count(),
    };
    print!("{findings}");
    let failures = findings.failures();
    if !failures.is_empty() {
        bail!("the soak found: {}", failures.join("; "));
    }
    Ok(())
}

/// Everything the soak found: what it prints, and what makes it fail.
#[derive(Debug)]
pub struct Findings {
    pub config: PathBuf,
    /// The ports the soak added for the models the config has none for.
    pub added: Vec<(Model, u16)>,
    pub minutes: f64,
    pub reloads: u32,
    pub tally: Tally,
    /// The host's level after the warm-up, and after the load has settled.
    pub start: Level,
    pub finish: Level,
    /// The host's `VmRSS` after each minute: growth that flattens is allocator caching, growth
    /// that keeps going is a leak.
    pub rss_by_minute: Vec<u64>,
    pub peak: Peak,
    /// Warning and error lines in the host's log.
    pub log_warnings: usize,
}

impl Findings {
    /// What went wrong, in words; empty when the soak passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.tally.errors > 0 {
            failures.push(format!("{} errors", self.tally.errors));
        }
        if self.tally.garbage_mishandled > 0 {
            failures.push(format!(
                "{} garbage connections mishandled",
                self.tally.garbage_mishandled
            ));
        }
        if self.finish.zombies > 0 {
            failures.push(format!("{} zombies", self.finish.zombies));
        }
        if self.peak.refused < self.peak.ports {
            failures.push(format!(
                "{} of {} ports did not refuse a {} MiB line with an ERR line and a close",
                self.peak.ports - self.peak.refused,
                self.peak.ports,
                HUGE_LINE_BYTES >> 20
            ));
        }
        for (who, kib) in [
            ("the host", self.peak.host_hwm_kib),
            ("a child process", self.peak.child_hwm_kib),
        ] {
            if kib >= MEMORY_BOUND_KIB {
                failures.push(format!(
                    "{who} peaked at {kib} KiB during the {} MiB lines (bound: {MEMORY_BOUND_KIB} KiB)",
                    HUGE_LINE_BYTES >> 20
                ));
            }
        }
        failures
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, start, finish, peak) = (&self.tally, &self.start, &self.finish, &self.peak);
        writeln!(
            f,
            "soak of {} for {:.1} min, {} reloads",
            self.config.display(),
            self.minutes,
            self.reloads
        )?;
        if !self.added.is_empty() {
            let added: Vec<String> = self
                .added
                .iter()
                .map(|(model, port)| format!("{model} on {port}"))
                .collect();
            writeln!(f, "ports added          {}", added.join(", "))?;
        }
        writeln!(f, "requests served      {}", t.requests)?;
        writeln!(f, "connections churned  {}", t.connections)?;
        writeln!(f, "games finished       {}", t.games)?;
        writeln!(
            f,
            "errors               {} {:?}",
            t.errors, t.errors_by_port
        )?;
        writeln!(
            f,
            "garbage sent         {} (mishandled: {})",
            t.garbage_sent, t.garbage_mishandled
        )?;
        writeln!(
            f,
            "{} MiB line to each port at once: {} of {} refused it (ERR line, close) in {:.1} s, \
             after taking {:.1} MiB in all",
            HUGE_LINE_BYTES >> 20,
            peak.refused,
            peak.ports,
            peak.seconds,
            peak.sent_bytes as f64 / (1 << 20) as f64
        )?;
        writeln!(
            f,
            "  peak VmHWM         host {} KiB, largest child {} KiB (bound {MEMORY_BOUND_KIB} KiB each)",
            peak.host_hwm_kib, peak.child_hwm_kib
        )?;
        writeln!(
            f,
            "  peak PSS           host and children {} KiB (before: {} KiB)",
            peak.pss_kib, peak.pss_before_kib
        )?;
        writeln!(
            f,
            "host RSS             {} KiB -> {} KiB",
            start.rss_kib, finish.rss_kib
        )?;
        writeln!(f, "host RSS each minute {:?} KiB", self.rss_by_minute)?;
        writeln!(
            f,
            "host+children PSS    {} KiB -> {} KiB",
            start.pss_kib, finish.pss_kib
        )?;
        writeln!(f, "host descriptors     {} -> {}", start.fds, finish.fds)?;
        writeln!(
            f,
            "host threads         {} -> {}",
            start.threads, finish.threads
        )?;
        writeln!(
            f,
            "child processes      {} -> {}",
            start.children, finish.children
        )?;
        writeln!(
            f,
            "zombies              {} -> {}",
            start.zombies, finish.zombies
        )?;
        writeln!(f, "host warnings/errors {} log lines", self.log_warnings)
    }
}

/// Peak memory while a huge line arrives at every port at once.
#[derive(Debug, Default)]
pub struct Peak {
    pub ports: usize,
    /// Ports that answered with the over-long-line `ERR` and closed.
    pub refused: usize,
    /// What the host had taken of the lines when it closed the connections, in all.
    pub sent_bytes: u64,
    pub seconds: f64,
    /// The host's `VmHWM`, reset just before the lines: its peak resident size while they came.
    pub host_hwm_kib: u64,
    /// The largest `VmHWM` of any process below the host (reset too), sampled while they came.
    pub child_hwm_kib: u64,
    /// PSS of the host and everything below it, before and at its highest sample.
    pub pss_before_kib: u64,
    pub pss_kib: u64,
}

/// Sends a [`HUGE_LINE_BYTES`] line to every port at once, while a thread samples the memory of
/// the host and of every process below it every 20 ms.
async fn huge_lines(pid: u32, entries: &[PortEntry]) -> Peak {
    let below = |pid| {
        procfs::descendants(pid)
            .into_iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.pid)
            .collect::<Vec<_>>()
    };
    procfs::reset_peak(pid);
    for child in below(pid) {
        procfs::reset_peak(child);
    }
    let pss_before_kib = procfs::footprint(pid).pss_kib;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut child_hwm, mut pss) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                for child in below(pid) {
                    child_hwm = child_hwm.max(procfs::status_kib(child, "VmHWM").unwrap_or(0));
                }
                pss = pss.max(procfs::footprint(pid).pss_kib);
                std::thread::sleep(Duration::from_millis(20));
            }
            (child_hwm, pss)
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = entries
        .iter()
        .map(|entry| {
            let (addr, limit) = (entry.addr, entry.limits.max_line_bytes);
            tokio::spawn(refuses_huge_line(addr, limit))
        })
        .collect();
    let (mut refused, mut sent_bytes) = (0, 0);
    for task in tasks {
        let (ok, sent) = task.await.unwrap_or((false, 0));
        refused += usize::from(ok);
        sent_bytes += sent;
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (child_hwm_kib, pss_kib) = sampler.join().unwrap_or_default();
    Peak {
        ports: entries.len(),
        refused,
        sent_bytes,
        seconds,
        host_hwm_kib: procfs::status_kib(pid, "VmHWM").unwrap_or(0),
        child_hwm_kib,
        pss_before_kib,
        pss_kib,
    }
}

/// Sends a huge line with no newline until the host stops taking it; `true` when the host
/// answered `ERR line longer than <limit> bytes` and closed the connection, with the bytes the
/// host took before that.
async fn refuses_huge_line(addr: SocketAddr, limit: usize) -> (bool, u64) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (false, 0);
    };
    let (read, mut write) = stream.into_split();
    let send = async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        for _ in 0..HUGE_LINE_BYTES / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    };
    let want = format!("ERR line longer than {limit} bytes");
    let receive = async move {
        let mut reader = BufReader::new(read).take(1 << 20);
        let mut refused = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return refused,
                Ok(_) => refused |= line.trim_end() == want,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let (sent, refused) = tokio::join!(send, receive);
        (refused, sent)
    })
    .await
    .unwrap_or((false, 0))
}

/// The host's resource level: what must come back flat after load.
#[derive(Debug)]
pub struct Level {
    /// The host's own `VmRSS`.
    pub rss_kib: u64,
    /// PSS of the host and everything below it.
    pub pss_kib: u64,
    pub fds: usize,
    pub threads: usize,
    /// Live processes below the host, the forker included.
    pub children: usize,
    pub zombies: usize,
}

impl Level {
    fn of(pid: u32) -> Level {
        let below = procfs::descendants(pid);
        Level {
            rss_kib: procfs::status_kib(pid, "VmRSS").unwrap_or(0),
            pss_kib: procfs::footprint(pid).pss_kib,
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

/// The models no port of `config` runs, in their order.
fn missing_models(config: &Config) -> Vec<Model> {
    Model::ALL
        .into_iter()
        .filter(|model| !config.ports.iter().any(|p| p.entry.model == *model))
        .collect()
}

/// The pool the soak's own thread-pool port starts with, and has after every other reload:
/// fewer workers than a round's 20 clients, so that clients also wait in its queue.
const POOL_WORKERS: [u32; 2] = [4, 6];

/// The TOML of the ports the soak adds, a palindrome-v3 port per model; `reloaded`: as the
/// reload's config has them.
fn added_ports(added: &[(Model, u16)], reloaded: bool) -> String {
    let mut text = String::new();
    for (model, port) in added {
        text.push_str(&format!(
            "\n# Added by porthost soak: {model} has no port in the config.\n\
             [ports.{port}]\nservice = \"palindrome-v3\"\nmodel = \"{model}\"\n"
        ));
        if *model == Model::ThreadPool {
            let workers = POOL_WORKERS[usize::from(reloaded)];
            text.push_str(&format!("workers = {workers}\n"));
        }
    }
    text
}

/// A loopback port free at the time of asking.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(peak: Peak) -> Findings {
        let level = || Level {
            rss_kib: 8000,
            pss_kib: 6000,
            fds: 30,
            threads: 3,
            children: 1,
            zombies: 0,
        };
        Findings {
            config: "services.toml".into(),
            added: Vec::new(),
            minutes: 1.0,
            reloads: 1,
            tally: Tally::default(),
            start: level(),
            finish: level(),
            rss_by_minute: vec![8000],
            peak,
            log_warnings: 0,
        }
    }

    #[test]
    fn peak_memory_near_the_line_fails_the_soak() {
        let calm = findings(Peak {
            ports: 8,
            refused: 8,
            host_hwm_kib: 9000,
            child_hwm_kib: 5000,
            ..Peak::default()
        });
        assert!(calm.failures().is_empty(), "{:?}", calm.failures());
        assert!(
            calm.to_string()
                .contains("peak VmHWM         host 9000 KiB")
        );
        let swollen = findings(Peak {
            ports: 8,
            refused: 7,
            host_hwm_kib: 9000,
            child_hwm_kib: 100 * 1024,
            ..Peak::default()
        });
        let failures = swollen.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("1 of 8 ports did not refuse"));
        assert!(failures[1].starts_with("a child process peaked at 102400 KiB"));
    }

    #[test]
    fn the_models_the_config_lacks_get_ports_of_their_own_and_the_pool_is_resized_on_reload() {
        let text = "[ports.7001]\nservice = \"palindrome-v3\"\nmodel = \"sequential\"\n\n\
                    [ports.7002]\nservice = \"palindrome-v3\"\nmodel = \"thread-per-client\"\n";
        let path = std::path::Path::new("services.toml");
        let config = Config::parse(text, path).unwrap();
        let missing = missing_models(&config);
        assert_eq!(missing.len(), Model::ALL.len() - 2);
        assert!(!missing.contains(&Model::Sequential) && missing.contains(&Model::ThreadPool));
        let added: Vec<(Model, u16)> = missing.into_iter().zip(40001..).collect();
        for reloaded in [false, true] {
            let all = format!("{text}{}", added_ports(&added, reloaded));
            let soaked = Config::parse(&all, path).unwrap();
            assert!(missing_models(&soaked).is_empty(), "{all}");
            assert_eq!(soaked.ports.len(), Model::ALL.len(), "{all}");
            let pool = soaked
                .ports
                .iter()
                .find(|p| p.entry.model == Model::ThreadPool)
                .unwrap();
            let workers = POOL_WORKERS[usize::from(reloaded)] as usize;
            assert_eq!(pool.entry.workers, Some(workers), "{all}");
        }
        assert!(added_ports(&[], false).is_empty());
    }
}
