//! `porthost bench` and `porthost soak`: the measurement tools of the `porthost` binary, in a
//! crate of their own so that the server never links them (or their dependencies).
//!
//! `porthost bench` runs the same service under each model, side by side with hand-written
//! baselines, measured on this machine.
//!
//! Each server runs in a process of its own ([`server`]); the load generator ([`load`]) runs
//! here on its own runtime; every workload has a time budget, and clients still waiting when it
//! runs out are counted, not dropped; every figure ([`metric`]) in the table is the median of
//! `--runs` runs ([`report`]), and the chart ([`chart`]) draws them.
//!
//! - [`baseline`]: the minimal hand-written servers the models are held against, one per model
//!   (`palindrome.c` is the program `tcpserver` runs for `--tcpserver`).
//! - [`targets`]: the scenarios and thresholds the project holds itself to.
//! - [`soak`]: `porthost soak`, a bounded soak of a real host under load, garbage and reloads.
//! - [`drive`]: the load the live page starts (`--drive`).
//!
//! What both need from `/proc` is the host library's [`porthost::procfs`].

pub mod baseline;
pub mod chart;
pub mod cpu;
pub mod drive;
pub mod load;
pub mod metric;
pub mod report;
pub mod server;
pub mod soak;
pub mod targets;

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use metric::{Metric, Sample};
use porthost::config::Model;
use report::Report;
use server::{PerLine, Server, Subject, TcpserverProgram};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The service to benchmark.
    #[arg(long, default_value = "palindrome-v3")]
    pub service: String,
    /// Models to compare, comma-separated [default: every model].
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<Model>>,
    /// Leave out the hand-written baseline servers.
    #[arg(long)]
    pub no_baselines: bool,
    /// Also measure Python's socketserver.ForkingTCPServer for the same protocol (needs python3).
    #[arg(long)]
    pub python: bool,
    /// Also measure the classic fork+exec-per-connection server: tcpserver (Debian's
    /// ucspi-tcp) running a small C palindrome program (needs tcpserver and a C compiler).
    #[arg(long)]
    pub tcpserver: bool,
    /// Measure every porthost model twice, with its admin endpoint off and on (`[host] admin`
    /// in the host's config), and show what the endpoint costs the service port.
    #[arg(long)]
    pub admin: bool,
    /// Benchmark a server that is already running, as [NAME=]HOST:PORT; repeatable. Without
    /// --models, only these are measured.
    #[arg(long = "addr", value_name = "[NAME=]HOST:PORT")]
    pub addrs: Vec<String>,
    /// A small bench that finishes in seconds: every model and baseline, one run of each
    /// workload at 1, 10 and 50 clients (50 lines, 300 connections of churn), a 3 s budget.
    /// Sizes given as flags still apply.
    #[arg(long)]
    pub quick: bool,
    /// Client counts for the sessions workload, comma-separated [default: 1,10,100,1000].
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Lines each sessions client sends [default: 100].
    #[arg(long)]
    pub lines: Option<usize>,
    /// Connections the churn workload makes [default: 2000].
    #[arg(long)]
    pub churn: Option<usize>,
    /// Idle connections the footprint workload holds open [default: the largest --clients].
    #[arg(long)]
    pub idle: Option<usize>,
    /// Two-player games played at once by the game workload (--service word-guess).
    #[arg(long, default_value_t = 100)]
    pub games: usize,
    /// Clients of the sleep and busy workloads, all connected at once, each sending one line.
    #[arg(long, default_value_t = 50)]
    pub burst: usize,
    /// The palindrome service's `sleep_ms` under the sleep workload: a wait per line, done the
    /// model's way.
    #[arg(long, default_value_t = 100)]
    pub sleep_ms: u64,
    /// The palindrome service's `busy_us` under the busy workload: CPU spun per line.
    #[arg(long, default_value_t = 20_000)]
    pub busy_us: u64,
    /// Workloads to run, comma-separated [default: sessions,churn,footprint; game for
    /// word-guess]. sleep and busy run the porthost models only: the other servers do no work
    /// per line.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<Workload>>,
    /// Time budget of every workload run, in seconds; what has not finished is reported
    /// [default: 10].
    #[arg(long)]
    pub duration: Option<u64>,
    /// How many times to run everything; the report shows medians [default: 3; at least 7
    /// with --targets].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the results as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw the results as SVG: throughput, p99.9 latency and time to first reply against client
    /// count (clients still waiting shown at the budget), churn, memory per idle client, CPU
    /// per unit of work, and the last answer under sleep and busy: the panels of the workloads
    /// run.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Run the project's target scenarios (10,000 async clients, 500 games, ...) and check them.
    #[arg(long, conflicts_with = "quick")]
    pub targets: bool,
    /// Give the servers the first half of the CPUs and the load generator the rest, instead of
    /// letting them share every CPU as they do on a user's machine.
    #[arg(long)]
    pub pin: bool,
    /// Drive these addresses with load for the live page, printing a JSON line a second,
    /// instead of benchmarking (the host starts it this way).
    #[arg(long, value_delimiter = ',', hide = true)]
    pub drive: Option<Vec<String>>,
    #[arg(long, hide = true, default_value_t = 10)]
    pub drive_clients: u32,
    #[arg(long, hide = true, default_value_t = 10)]
    pub drive_seconds: u32,
    #[arg(long, hide = true, value_enum, default_value_t = DriveWorkload::Sessions)]
    pub drive_workload: DriveWorkload,
}

/// The sizes of a bench: the flags given, else `--quick`'s, else the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    pub clients: Vec<usize>,
    pub lines: usize,
    pub churn: usize,
    pub idle: usize,
    pub games: usize,
    /// The sleep and busy workloads: clients, and the work per line.
    pub burst: usize,
    pub sleep_ms: u64,
    pub busy_us: u64,
    pub budget: Duration,
    pub runs: usize,
}

/// The least number of runs whose medians the targets are judged on.
pub const TARGET_RUNS: usize = 7;

impl Sizes {
    pub fn of(args: &BenchArgs) -> anyhow::Result<Sizes> {
        let quick = args.quick;
        let clients = args.clients.clone().unwrap_or_else(|| {
            if quick {
                vec![1, 10, 50]
            } else {
                vec![1, 10, 100, 1000]
            }
        });
        if clients.is_empty() || clients.contains(&0) {
            bail!("--clients needs counts of at least 1");
        }
        let largest = clients.iter().copied().max().unwrap_or(1);
        let runs = args.runs.unwrap_or(if quick {
            1
        } else if args.targets {
            TARGET_RUNS
        } else {
            3
        });
        if runs == 0 {
            bail!("--runs must be at least 1");
        }
        if args.burst == 0 || args.sleep_ms == 0 || args.busy_us == 0 {
            bail!("--burst, --sleep-ms and --busy-us need at least 1");
        }
        if args.targets && runs < TARGET_RUNS {
            bail!("the targets are judged on medians of at least {TARGET_RUNS} runs, not {runs}");
        }
        Ok(Sizes {
            lines: args.lines.unwrap_or(if quick { 50 } else { 100 }),
            churn: args.churn.unwrap_or(if quick { 300 } else { 2000 }),
            // The footprint holds as many idle clients as the largest sessions workload.
            idle: args.idle.unwrap_or(largest),
            games: args.games,
            burst: args.burst,
            sleep_ms: args.sleep_ms,
            busy_us: args.busy_us,
            budget: Duration::from_secs(args.duration.unwrap_or(if quick { 3 } else { 10 }).max(1)),
            runs,
            clients,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Sessions,
    Churn,
    Footprint,
    Game,
    /// `clients` at once, one line each, the service waiting `sleep_ms` per line.
    Sleep,
    /// `clients` at once, one line each, the service spinning `busy_us` per line.
    Busy,
}

/// One workload with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Sessions { clients: usize, lines: usize },
    Churn { total: usize, workers: usize },
    Footprint { clients: usize },
    Game { games: usize },
    Sleep { clients: usize, ms: u64 },
    Busy { clients: usize, us: u64 },
}

impl Load {
    pub fn workload(self) -> Workload {
        match self {
            Load::Sessions { .. } => Workload::Sessions,
            Load::Churn { .. } => Workload::Churn,
            Load::Footprint { .. } => Workload::Footprint,
            Load::Game { .. } => Workload::Game,
            Load::Sleep { .. } => Workload::Sleep,
            Load::Busy { .. } => Workload::Busy,
        }
    }

    /// The work per line the service is configured with for this load.
    pub fn work(self) -> PerLine {
        match self {
            Load::Sleep { ms, .. } => PerLine {
                sleep_ms: ms,
                ..PerLine::default()
            },
            Load::Busy { us, .. } => PerLine {
                busy_us: us,
                ..PerLine::default()
            },
            _ => PerLine::default(),
        }
    }

    /// The size the report keys on: clients, connections or games.
    pub fn size(self) -> usize {
        match self {
            Load::Sessions { clients, .. }
            | Load::Footprint { clients }
            | Load::Sleep { clients, .. }
            | Load::Busy { clients, .. } => clients,
            Load::Churn { total, .. } => total,
            Load::Game { games } => games,
        }
    }

    /// Connections the server must take at once.
    fn concurrency(self) -> usize {
        match self {
            Load::Sessions { clients, .. }
            | Load::Footprint { clients }
            | Load::Sleep { clients, .. }
            | Load::Busy { clients, .. } => clients,
            Load::Churn { workers, .. } => workers,
            Load::Game { games } => games * 2,
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Sessions { clients, lines } => write!(f, "sessions c={clients} l={lines}"),
            Load::Churn { total, .. } => write!(f, "churn n={total}"),
            Load::Footprint { clients } => write!(f, "footprint c={clients}"),
            Load::Game { games } => write!(f, "game g={games}"),
            Load::Sleep { clients, ms } => write!(f, "sleep_ms={ms} c={clients}"),
            Load::Busy { clients, us } => write!(f, "busy_us={us} c={clients}"),
        }
    }
}

/// A server (subject and service) and the loads to run against it.
#[derive(Debug, Clone)]
pub struct Job {
    pub subject: Subject,
    pub service: String,
    pub loads: Vec<Load>,
}

/// Churn connects from a few workers at once: enough to keep a server busy, few enough that
/// connection set-up, not concurrency, is what is measured.
const CHURN_WORKERS: usize = 4;

/// The jobs of an ordinary comparison.
fn plan(args: &BenchArgs, sizes: &Sizes) -> anyhow::Result<Vec<Job>> {
    let palindrome = args.service.starts_with("palindrome");
    let mut subjects: Vec<Subject> = Vec::new();
    if args.models.is_some() || args.addrs.is_empty() {
        let models = args.models.clone().unwrap_or_else(|| Model::ALL.to_vec());
        let baselines = palindrome && !args.no_baselines;
        // Each baseline right after its model: runs go back and forth, so the two are always
        // measured one right after the other.
        for model in models {
            subjects.push(Subject::Model(model));
            if args.admin {
                subjects.push(Subject::Admin(model));
            }
            if baselines {
                subjects.push(Subject::Baseline(baseline::Kind::twin_of(model)));
            }
        }
    }
    if args.tcpserver {
        if !palindrome {
            bail!(
                "--tcpserver measures a palindrome server; it cannot play {}",
                args.service
            );
        }
        subjects.push(Subject::Tcpserver(
            TcpserverProgram::build().context("--tcpserver")?,
        ));
    }
    if args.python {
        if !palindrome {
            bail!(
                "--python measures a palindrome server; it cannot play {}",
                args.service
            );
        }
        subjects.push(Subject::Python);
    }
    for addr in &args.addrs {
        let (name, addr) = match addr.split_once('=') {
            Some((name, addr)) => (name.to_owned(), addr),
            None => (addr.clone(), addr.as_str()),
        };
        let addr = addr
            .parse()
            .with_context(|| format!("--addr {addr:?} is not HOST:PORT"))?;
        subjects.push(Subject::External { name, addr });
    }
    let workloads = args.workloads.clone().unwrap_or_else(|| {
        if palindrome {
            vec![Workload::Sessions, Workload::Churn, Workload::Footprint]
        } else {
            vec![Workload::Game]
        }
    });
    if !palindrome && workloads.iter().any(|w| *w != Workload::Game) {
        bail!("only the game workload can drive {}", args.service);
    }
    if palindrome && workloads.contains(&Workload::Game) {
        bail!("the game workload needs --service word-guess");
    }
    let mut jobs = Vec::new();
    for subject in subjects {
        let mut loads = Vec::new();
        for workload in &workloads {
            match workload {
                Workload::Sessions => {
                    loads.extend(sizes.clients.iter().map(|&clients| Load::Sessions {
                        clients,
                        lines: sizes.lines,
                    }))
                }
                Workload::Churn => loads.push(Load::Churn {
                    total: sizes.churn,
                    workers: CHURN_WORKERS,
                }),
                // Only a server the bench started has a process tree to measure.
                Workload::Footprint if !matches!(subject, Subject::External { .. }) => {
                    loads.push(Load::Footprint {
                        clients: sizes.idle,
                    });
                }
                Workload::Footprint => {}
                Workload::Game => loads.push(Load::Game { games: sizes.games }),
                // Only porthost's services take the work per line.
                Workload::Sleep | Workload::Busy
                    if !matches!(subject, Subject::Model(_) | Subject::Admin(_)) => {}
                Workload::Sleep => loads.push(Load::Sleep {
                    clients: sizes.burst,
                    ms: sizes.sleep_ms,
                }),
                Workload::Busy => loads.push(Load::Busy {
                    clients: sizes.burst,
                    us: sizes.busy_us,
                }),
            }
        }
        // A server with nothing to run (a twin under sleep alone) has no column.
        if !loads.is_empty() {
            jobs.push(Job {
                subject,
                service: args.service.clone(),
                loads,
            });
        }
    }
    if jobs.is_empty() {
        bail!("nothing to measure: sleep and busy run porthost's models only (--models)");
    }
    Ok(jobs)
}

/// `porthost bench`.
/// `--drive-workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriveWorkload {
    Sessions,
    Churn,
}

pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(addrs) = &args.drive {
        let workload = match args.drive_workload {
            DriveWorkload::Sessions => porthost::admin::drive::Workload::Sessions,
            DriveWorkload::Churn => porthost::admin::drive::Workload::Churn,
        };
        return drive::main(addrs, args.drive_clients, args.drive_seconds, workload);
    }
    let sizes = Sizes::of(&args)?;
    let jobs = if args.targets {
        targets::plan(&args, &sizes)
    } else {
        plan(&args, &sizes)?
    };
    // The target scenarios connect thousands of clients at once: give them room.
    let budget = if args.targets {
        sizes
            .budget
            .max(Duration::from_secs(targets::MIN_BUDGET_SECS))
    } else {
        sizes.budget
    };
    let cpus = if args.pin { Cpus::split() } else { None };
    if let Some(cpus) = &cpus {
        // Before the runtime starts: its workers inherit the load generator's CPUs.
        sched_setaffinity(Pid::from_raw(0), &cpus.load)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let steps: usize = jobs.iter().map(|j| j.loads.len()).sum::<usize>() * sizes.runs;
    let mut progress = Progress::new(steps);
    let mut report = Report::new(&jobs, sizes.runs, budget.as_secs_f64());
    for run in 1..=sizes.runs {
        // Every run goes through every server, forwards then backwards, so slow drift on the
        // machine hits all alike and a server is always measured next to its baseline.
        let order: Vec<&Job> = if run % 2 == 1 {
            jobs.iter().collect()
        } else {
            jobs.iter().rev().collect()
        };
        for job in order {
            for load in &job.loads {
                let what = format!("run {run}/{}: {} {load}", sizes.runs, job.subject.name());
                progress.start(&what);
                // A fresh server for every measurement: what one load leaves behind (allocator
                // caches, a grown runtime) must not flatter or burden the next.
                let server = Cpus::for_servers(cpus.as_ref(), || {
                    Server::start(&job.subject, &job.service, load.concurrency(), load.work())
                })
                .with_context(|| format!("starting {}", job.subject.name()))?;
                let sample = runtime.block_on(measure(&server, *load, budget));
                progress.done(&what, &sample);
                report.add(job, *load, sample);
                let log = server.log();
                server
                    .stop()
                    .with_context(|| format!("stopping {}: {log}", job.subject.name()))?;
            }
        }
    }
    progress.finish();
    print!("{}", report.table());
    // Only the target scenarios measure long enough to judge a ratio of a few percent.
    if args.targets {
        println!("\n{}", targets::render(&targets::evaluate(&report)));
    }
    if args.admin {
        println!(
            "\nWhat the admin endpoint costs:\n{}",
            targets::render(&targets::admin_cost(&report))
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report.json()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// How the bench shows that it is working: a bar on a terminal, else one line per measurement
/// on stderr (for logs, CI, and `porthost bench > results.txt`), with its headline figures.
#[derive(Debug)]
enum Progress {
    Bar(ProgressBar),
    Lines {
        steps: usize,
        done: usize,
        started: Instant,
    },
}

impl Progress {
    fn new(steps: usize) -> Progress {
        if std::io::stdout().is_terminal() {
            Progress::Bar(
                ProgressBar::new(steps as u64).with_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                ),
            )
        } else {
            Progress::Lines {
                steps,
                done: 0,
                started: Instant::now(),
            }
        }
    }

    fn start(&mut self, what: &str) {
        if let Progress::Bar(bar) = self {
            bar.set_message(what.to_owned());
        }
    }

    fn done(&mut self, what: &str, sample: &Sample) {
        match self {
            Progress::Bar(bar) => bar.inc(1),
            Progress::Lines {
                steps,
                done,
                started,
            } => {
                *done += 1;
                eprintln!(
                    "[{done}/{steps} {:.1} s] {what}: {}",
                    started.elapsed().as_secs_f64(),
                    sample.summary()
                );
            }
        }
    }

    fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Servers on the first half of the CPUs, the load generator on the rest: on a small machine
/// a server and its load fighting over the same cores make run-to-run swings larger than the
/// differences being measured.
#[derive(Debug)]
struct Cpus {
    servers: CpuSet,
    load: CpuSet,
}

impl Cpus {
    /// `None` on a single CPU, where there is nothing to split.
    fn split() -> Option<Cpus> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let ids: Vec<usize> = (0..CpuSet::count())
            .filter(|&i| allowed.is_set(i).unwrap_or(false))
            .collect();
        if ids.len() < 2 {
            return None;
        }
        let (servers, load) = ids.split_at(ids.len() / 2);
        let set = |ids: &[usize]| {
            let mut set = CpuSet::new();
            for &id in ids {
                set.set(id).ok()?;
            }
            Some(set)
        };
        Some(Cpus {
            servers: set(servers)?,
            load: set(load)?,
        })
    }

    /// Runs `start` with this thread on the servers' CPUs, so the processes it spawns inherit
    /// them, then moves the thread back.
    fn for_servers<T>(
        cpus: Option<&Cpus>,
        start: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let Some(cpus) = cpus else {
            return start();
        };
        sched_setaffinity(Pid::from_raw(0), &cpus.servers)?;
        let started = start();
        sched_setaffinity(Pid::from_raw(0), &cpus.load)?;
        started
    }
}

async fn measure(server: &Server, load: Load, budget: Duration) -> Sample {
    // With the admin endpoint on, someone is watching it, as a page open on it would: its
    // state once a second.
    let watcher = server
        .admin
        .map(|admin| tokio::spawn(load::watch_admin(admin)));
    let mut sample = measure_load(server, load, budget).await;
    if let Some(watcher) = watcher {
        watcher.abort();
        if let Ok(Some(failure)) = watcher.await {
            sample.errors += 1;
            sample
                .unfinished
                .get_or_insert(format!("admin endpoint: {failure}"));
        }
    }
    sample
}

/// Runs the load, and for sessions and churn the CPU the server's process tree spent on it,
/// per unit of work: read idle before, and after every child the load made has been reaped.
/// One connection first, so that what a server does once (porthost starts its fork server
/// with the first connection) is not charged to the load.
async fn measure_load(server: &Server, load: Load, budget: Duration) -> Sample {
    let per_unit = match load {
        Load::Sessions { .. } | Load::Sleep { .. } | Load::Busy { .. } => Some(Metric::CpuUsPerReq),
        Load::Churn { .. } => Some(Metric::CpuUsPerConn),
        Load::Footprint { .. } | Load::Game { .. } => None,
    };
    let (Some(per_unit), Some(pid)) = (per_unit, server.pid()) else {
        return run_load(server, load, budget).await;
    };
    load::churn(server.addr, 1, 1, budget).await;
    let Some(before) = cpu::quiet(pid).await else {
        let mut sample = run_load(server, load, budget).await;
        sample.unfinished.get_or_insert_with(|| {
            "CPU not measured: the server's processes did not settle within 5 s".to_owned()
        });
        return sample;
    };
    let mut sample = run_load(server, load, budget).await;
    let served = sample.get(Metric::Served).unwrap_or(0.0);
    match cpu::settled(pid, before.processes).await {
        Some(after) if served > 0.0 => {
            let cpu = after.since(before);
            sample.set(per_unit, cpu.as_secs_f64() * 1e6 / served);
            if per_unit == Metric::CpuUsPerConn {
                let faults = after.faults_since(before) as f64;
                sample.set(Metric::FaultsPerConn, faults / served);
            }
        }
        Some(_) => {}
        None => {
            sample.unfinished.get_or_insert_with(|| {
                "CPU not measured: the server's children were not all reaped within 5 s".to_owned()
            });
        }
    }
    sample
}

async fn run_load(server: &Server, load: Load, budget: Duration) -> Sample {
    match load {
        Load::Sessions { clients, lines } => {
            load::sessions(server.addr, clients, lines, budget).await
        }
        Load::Churn { total, workers } => load::churn(server.addr, total, workers, budget).await,
        Load::Footprint { clients } => match server.pid() {
            Some(pid) => load::footprint(server.addr, pid, clients, budget).await,
            None => Sample::default(),
        },
        Load::Game { games } => load::game(server.addr, games, budget).await,
        Load::Sleep { clients, .. } | Load::Busy { clients, .. } => {
            load::burst(server.addr, clients, budget).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn planned(args: &[&str]) -> anyhow::Result<Vec<Job>> {
        let args =
            Command::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?.bench;
        plan(&args, &Sizes::of(&args)?)
    }

    #[test]
    fn sleep_and_busy_run_the_models_alone_with_the_work_per_line_asked_for() {
        let jobs = planned(&[
            "--models",
            "sequential,event-loop",
            "--workloads",
            "sleep,busy,churn",
            "--burst",
            "20",
            "--sleep-ms",
            "50",
        ])
        .unwrap();
        let names: Vec<String> = jobs.iter().map(|j| j.subject.name()).collect();
        assert_eq!(
            names,
            [
                "sequential",
                "baseline-sequential",
                "event-loop",
                "baseline-loop"
            ]
        );
        let sleep = Load::Sleep {
            clients: 20,
            ms: 50,
        };
        let busy = Load::Busy {
            clients: 20,
            us: 20_000,
        };
        let churn = Load::Churn {
            total: 2000,
            workers: CHURN_WORKERS,
        };
        assert_eq!(jobs[0].loads, [sleep, busy, churn]);
        // The twins do no work per line: they get the churn alone.
        assert_eq!(jobs[1].loads, [churn]);
        assert_eq!(sleep.to_string(), "sleep_ms=50 c=20");
        assert_eq!(
            (sleep.work().sleep_ms, sleep.work().busy_us),
            (50, 0),
            "the service waits"
        );
        assert_eq!((busy.work().sleep_ms, busy.work().busy_us), (0, 20_000));
        assert_eq!(churn.work(), PerLine::default());
    }

    #[test]
    fn a_burst_with_nothing_to_run_or_no_work_is_refused() {
        let err = planned(&["--addr", "127.0.0.1:7000", "--workloads", "sleep"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("porthost's models only"),
            "{err:#}"
        );
        let err = planned(&["--workloads", "busy", "--busy-us", "0"]).unwrap_err();
        assert!(format!("{err:#}").contains("--busy-us"), "{err:#}");
    }
}
