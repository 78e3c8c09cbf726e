//! `porthost bench` and `porthost soak`: the measurement tools of the `porthost` binary, in a
//! crate of their own so that the server never links them (or their dependencies).
//!
//! `porthost bench` runs the same service under each model, side by side with hand-written
//! baselines, measured on this machine.
//!
//! Each server runs in a process of its own ([`server`]); the load generator ([`load`]) runs
//! here on its own runtime; every workload has a time budget; every number in the table is the
//! median of `--runs` runs ([`report`]).
//!
//! - [`baseline`]: the minimal hand-written servers the models are held against.
//! - [`targets`]: the scenarios and thresholds the project holds itself to.
//! - [`soak`]: `porthost soak`, a bounded soak of a real host under load, garbage and reloads.
//!
//! What both need from `/proc` is the host library's [`porthost::procfs`].

pub mod baseline;
pub mod load;
pub mod report;
pub mod server;
pub mod soak;
pub mod targets;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use load::Sample;
use porthost::config::Model;
use report::Report;
use server::{Server, Subject};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The service to benchmark.
    #[arg(long, default_value = "palindrome-v3")]
    pub service: String,
    /// Models to compare, comma-separated [default: all four].
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<Model>>,
    /// Leave out the hand-written baseline servers.
    #[arg(long)]
    pub no_baselines: bool,
    /// Also measure Python's socketserver.ForkingTCPServer for the same protocol (needs python3).
    #[arg(long)]
    pub python: bool,
    /// Benchmark a server that is already running, as [NAME=]HOST:PORT; repeatable. Without
    /// --models, only these are measured.
    #[arg(long = "addr", value_name = "[NAME=]HOST:PORT")]
    pub addrs: Vec<String>,
    /// Client counts for the sessions workload, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub clients: Vec<usize>,
    /// Lines each sessions client sends.
    #[arg(long, default_value_t = 100)]
    pub lines: usize,
    /// Connections the churn workload makes.
    #[arg(long, default_value_t = 2000)]
    pub churn: usize,
    /// Idle connections the footprint workload holds open.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Two-player games played at once by the game workload (--service word-guess).
    #[arg(long, default_value_t = 100)]
    pub games: usize,
    /// Workloads to run, comma-separated [default: sessions,churn,footprint; game for word-guess].
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<Workload>>,
    /// Time budget of every workload run, in seconds; what has not finished is reported.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// How many times to run everything; the report shows medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the results as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw throughput and p99 latency against client count, one line per model, as SVG.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Run the project's target scenarios (10,000 async clients, 500 games, ...) and check them.
    #[arg(long)]
    pub targets: bool,
    /// Let servers and the load generator share every CPU, instead of giving the servers the
    /// first half of the CPUs and the load generator the rest.
    #[arg(long)]
    pub no_pin: bool,
    /// Serve as a baseline server instead of benchmarking (the bench starts its baselines
    /// this way).
    #[arg(long, value_enum, hide = true)]
    pub serve_baseline: Option<baseline::Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Sessions,
    Churn,
    Footprint,
    Game,
}

/// One workload with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Sessions { clients: usize, lines: usize },
    Churn { total: usize, workers: usize },
    Footprint { clients: usize },
    Game { games: usize },
}

impl Load {
    pub fn workload(self) -> Workload {
        match self {
            Load::Sessions { .. } => Workload::Sessions,
            Load::Churn { .. } => Workload::Churn,
            Load::Footprint { .. } => Workload::Footprint,
            Load::Game { .. } => Workload::Game,
        }
    }

    /// The size the report keys on: clients, connections or games.
    pub fn size(self) -> usize {
        match self {
            Load::Sessions { clients, .. } | Load::Footprint { clients } => clients,
            Load::Churn { total, .. } => total,
            Load::Game { games } => games,
        }
    }

    /// Connections the server must take at once.
    fn concurrency(self) -> usize {
        match self {
            Load::Sessions { clients, .. } | Load::Footprint { clients } => clients,
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
fn plan(args: &BenchArgs) -> anyhow::Result<Vec<Job>> {
    let palindrome = args.service.starts_with("palindrome");
    let mut subjects: Vec<Subject> = Vec::new();
    if args.models.is_some() || args.addrs.is_empty() {
        let models = args.models.clone().unwrap_or_else(|| Model::ALL.to_vec());
        let baselines = palindrome && !args.no_baselines;
        // Each baseline right after its model: runs go back and forth, so the two are always
        // measured one right after the other.
        for model in models {
            subjects.push(Subject::Model(model));
            match model {
                Model::ThreadPerClient if baselines => {
                    subjects.push(Subject::Baseline(baseline::Kind::Threads));
                }
                Model::Async if baselines => {
                    subjects.push(Subject::Baseline(baseline::Kind::Async))
                }
                _ => {}
            }
        }
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
                    loads.extend(args.clients.iter().map(|&clients| Load::Sessions {
                        clients,
                        lines: args.lines,
                    }))
                }
                Workload::Churn => loads.push(Load::Churn {
                    total: args.churn,
                    workers: CHURN_WORKERS,
                }),
                // Only a server the bench started has a process tree to measure.
                Workload::Footprint if !matches!(subject, Subject::External { .. }) => {
                    loads.push(Load::Footprint { clients: args.idle });
                }
                Workload::Footprint => {}
                Workload::Game => loads.push(Load::Game { games: args.games }),
            }
        }
        jobs.push(Job {
            subject,
            service: args.service.clone(),
            loads,
        });
    }
    Ok(jobs)
}

/// `porthost bench`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(kind) = args.serve_baseline {
        return baseline::main(kind);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let jobs = if args.targets {
        targets::plan(&args)
    } else {
        plan(&args)?
    };
    // The target scenarios connect thousands of clients at once: give them room.
    let budget = Duration::from_secs(if args.targets {
        args.duration.max(targets::MIN_BUDGET_SECS)
    } else {
        args.duration.max(1)
    });
    let cpus = if args.no_pin { None } else { Cpus::split() };
    if let Some(cpus) = &cpus {
        // Before the runtime starts: its workers inherit the load generator's CPUs.
        sched_setaffinity(Pid::from_raw(0), &cpus.load)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let steps: usize = jobs.iter().map(|j| j.loads.len()).sum::<usize>() * args.runs;
    let progress = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut report = Report::new(&jobs, args.runs);
    for run in 1..=args.runs {
        // Every run goes through every server, forwards then backwards, so slow drift on the
        // machine hits all alike and a server is always measured next to its baseline.
        let order: Vec<&Job> = if run % 2 == 1 {
            jobs.iter().collect()
        } else {
            jobs.iter().rev().collect()
        };
        for job in order {
            for load in &job.loads {
                progress.set_message(format!(
                    "run {run}/{}: {} {load}",
                    args.runs,
                    job.subject.name()
                ));
                // A fresh server for every measurement: what one load leaves behind (allocator
                // caches, a grown runtime) must not flatter or burden the next.
                let server = Cpus::for_servers(cpus.as_ref(), || {
                    Server::start(&job.subject, &job.service, load.concurrency())
                })
                .with_context(|| format!("starting {}", job.subject.name()))?;
                let sample = runtime.block_on(measure(&server, *load, budget));
                report.add(job, *load, sample);
                let log = server.log();
                server
                    .stop()
                    .with_context(|| format!("stopping {}: {log}", job.subject.name()))?;
                progress.inc(1);
            }
        }
    }
    progress.finish_and_clear();
    print!("{}", report.table());
    // Only the target scenarios measure long enough to judge a ratio of a few percent.
    if args.targets {
        println!("\n{}", targets::render(&targets::evaluate(&report)));
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
    }
}
