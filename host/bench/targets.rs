//! The targets porthost holds itself to, as bench scenarios and thresholds. `porthost bench
//! --targets` runs them and checks each; an ordinary bench measures too briefly to judge them.
//!
//! Every model is held against its hand-written twin ([`crate::baseline`]) measured right next
//! to it in the same run; a ratio is the median over the runs (at least
//! [`crate::TARGET_RUNS`]) of the ratio within each run, so the machine's slow swings cancel out.

use super::metric::Metric;
use super::report::{Entry, Report, median};
use super::server::{PYTHON, Subject, TCPSERVER, TcpserverProgram};
use super::{BenchArgs, CHURN_WORKERS, Job, Load, Sizes, Workload, baseline};
use porthost::config::Model;

/// Client counts at which the async and thread models are held against their baselines.
const COMPARED_AT: [usize; 2] = [10, 100];
/// Clients at which process-per-client sessions are held against `baseline-threads`.
const PROCESS_COMPARED_AT: usize = 10;
/// The least time budget of a target run.
pub const MIN_BUDGET_SECS: u64 = 30;
/// Requests per measurement in the baseline comparisons: a few seconds each.
const COMPARED_REQUESTS: usize = 200_000;
/// Requests of the one sequential client: the model serves ~20,000 a second.
const SEQUENTIAL_REQUESTS: usize = 40_000;
const ASYNC_CLIENTS: usize = 10_000;
const THREAD_CLIENTS: usize = 2_000;
/// Idle clients at which thread-per-client's memory is held against `baseline-threads`'.
const THREAD_IDLE: usize = 1_000;
const LINES_AT_SCALE: usize = 5;
const MAX_PSS_PER_IDLE_CONN_KIB: f64 = 6.0;
const GAMES: usize = 500;

/// A model against its baseline in sessions: CPU per request at most `cpu`×, throughput at least
/// `throughput`× (where held), p99 at most `p99.1`× at `p99.0` clients.
struct Pairing {
    model: Model,
    baseline: baseline::Kind,
    clients: &'static [usize],
    cpu: f64,
    throughput: Option<f64>,
    p99: Option<(usize, f64)>,
}

const PAIRINGS: [Pairing; 7] = [
    Pairing {
        model: Model::ThreadPerClient,
        baseline: baseline::Kind::Threads,
        clients: &COMPARED_AT,
        cpu: 1.1,
        throughput: Some(0.95),
        p99: Some((100, 1.3)),
    },
    Pairing {
        model: Model::Sequential,
        baseline: baseline::Kind::Sequential,
        clients: &[1],
        cpu: 1.1,
        throughput: Some(0.95),
        p99: None,
    },
    Pairing {
        model: Model::ProcessPerClient,
        baseline: baseline::Kind::Fork,
        clients: &[PROCESS_COMPARED_AT],
        cpu: 1.1,
        throughput: None,
        p99: None,
    },
    Pairing {
        model: Model::Async,
        baseline: baseline::Kind::Async,
        clients: &COMPARED_AT,
        cpu: 1.1,
        throughput: Some(0.95),
        p99: Some((100, 1.3)),
    },
    Pairing {
        model: Model::ThreadPool,
        baseline: baseline::Kind::Pool,
        clients: &COMPARED_AT,
        cpu: 1.1,
        throughput: Some(0.95),
        p99: None,
    },
    Pairing {
        model: Model::EventLoop,
        baseline: baseline::Kind::Loop,
        clients: &COMPARED_AT,
        cpu: 1.1,
        throughput: Some(0.95),
        p99: None,
    },
    Pairing {
        model: Model::Prefork,
        baseline: baseline::Kind::Prefork,
        clients: &COMPARED_AT,
        cpu: 1.1,
        throughput: Some(0.95),
        p99: None,
    },
];

/// Prefork churn against process-per-client's: connections per second at least this many
/// times (no fork per connection).
const MIN_PREFORK_CHURN_VS_PROCESS: f64 = 3.0;

/// Process-per-client churn against the minimal forking twin: CPU per connection at most
/// this many times the twin's, and connections per second at least...
const MAX_CHURN_CPU_VS_FORK: f64 = 1.3;
/// ... this share of the twin's.
const MIN_CHURN_VS_FORK: f64 = 0.75;
/// Connections of the churn measurements: enough CPU time (a second or more for porthost) that
/// `/proc`'s 10 ms ticks are a percent of it.
const CHURN_CONNECTIONS: usize = 4000;

/// Thread-per-client's PSS per idle client, against `baseline-threads`'.
const MAX_THREAD_PSS_RATIO: f64 = 1.1;
/// Process-per-client churn against the classic fork+exec server and Python's.
const MIN_CHURN_VS_TCPSERVER: f64 = 1.5;
const MIN_CHURN_VS_PYTHON: f64 = 5.0;

/// The target scenarios.
pub fn plan(_args: &BenchArgs, sizes: &Sizes) -> Vec<Job> {
    let palindrome = "palindrome-v3".to_owned();
    let sessions = |clients: usize, requests: usize| Load::Sessions {
        clients,
        // Enough requests per measurement that it lasts a few seconds at any client count.
        lines: sizes.lines.max(requests / clients),
    };
    let compared: Vec<Load> = COMPARED_AT
        .iter()
        .map(|&clients| sessions(clients, COMPARED_REQUESTS))
        .collect();
    let churn = Load::Churn {
        total: sizes.churn.max(CHURN_CONNECTIONS),
        workers: CHURN_WORKERS,
    };
    let thread_idle = Load::Footprint {
        clients: THREAD_IDLE,
    };
    let job = |subject, loads: Vec<Load>| Job {
        subject,
        service: palindrome.clone(),
        loads,
    };
    // Each model next to its baseline: runs alternate direction, so pairs stay adjacent.
    let mut jobs = vec![
        job(
            Subject::Model(Model::Async),
            [
                compared.clone(),
                vec![
                    Load::Sessions {
                        clients: ASYNC_CLIENTS,
                        lines: LINES_AT_SCALE,
                    },
                    Load::Footprint {
                        clients: ASYNC_CLIENTS,
                    },
                ],
            ]
            .concat(),
        ),
        job(Subject::Baseline(baseline::Kind::Async), compared.clone()),
        job(
            Subject::Model(Model::ThreadPerClient),
            [
                compared.clone(),
                vec![
                    Load::Sessions {
                        clients: THREAD_CLIENTS,
                        lines: LINES_AT_SCALE,
                    },
                    thread_idle,
                ],
            ]
            .concat(),
        ),
        job(
            Subject::Baseline(baseline::Kind::Threads),
            [compared.clone(), vec![thread_idle]].concat(),
        ),
        job(
            Subject::Model(Model::ProcessPerClient),
            vec![sessions(PROCESS_COMPARED_AT, COMPARED_REQUESTS), churn],
        ),
        job(
            Subject::Baseline(baseline::Kind::Fork),
            vec![sessions(PROCESS_COMPARED_AT, COMPARED_REQUESTS), churn],
        ),
    ];
    // The rest of the textbook: each pool and loop next to its twin; prefork's churn next to
    // process-per-client's, measured above; the event loop's idle clients on its one thread.
    jobs.extend([
        job(Subject::Model(Model::ThreadPool), compared.clone()),
        job(Subject::Baseline(baseline::Kind::Pool), compared.clone()),
        job(
            Subject::Model(Model::EventLoop),
            [
                compared.clone(),
                vec![Load::Footprint {
                    clients: ASYNC_CLIENTS,
                }],
            ]
            .concat(),
        ),
        job(Subject::Baseline(baseline::Kind::Loop), compared.clone()),
        job(
            Subject::Model(Model::Prefork),
            [compared.clone(), vec![churn]].concat(),
        ),
        job(
            Subject::Baseline(baseline::Kind::Prefork),
            [compared.clone(), vec![churn]].concat(),
        ),
    ]);
    match TcpserverProgram::build() {
        Ok(program) => jobs.push(job(Subject::Tcpserver(program), vec![churn])),
        Err(e) => eprintln!("{TCPSERVER} left out of the targets: {e:#}"),
    }
    if python_available() {
        jobs.push(job(Subject::Python, vec![churn]));
    } else {
        eprintln!("{PYTHON} left out of the targets: python3 does not run");
    }
    jobs.push(job(
        Subject::Model(Model::Sequential),
        vec![sessions(1, SEQUENTIAL_REQUESTS)],
    ));
    jobs.push(job(
        Subject::Baseline(baseline::Kind::Sequential),
        vec![sessions(1, SEQUENTIAL_REQUESTS)],
    ));
    jobs.push(Job {
        subject: Subject::Model(Model::Async),
        service: "word-guess".to_owned(),
        loads: vec![Load::Game { games: GAMES }],
    });
    jobs
}

pub fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How a target came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Met,
    Missed,
    /// The results do not cover it.
    NotMeasured,
    /// A comparison shown for information, with no threshold.
    Info,
}

/// One target and how the results measure up to it.
#[derive(Debug)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub mark: Mark,
}

impl Verdict {
    fn judged(target: String, measured: String, met: bool) -> Verdict {
        let mark = if met { Mark::Met } else { Mark::Missed };
        Verdict {
            target,
            measured,
            mark,
        }
    }
}

/// The measured entry of `subject` for a workload of `size`, serving palindrome-v3.
fn entry<'a>(
    report: &'a Report,
    subject: &str,
    workload: Workload,
    size: usize,
) -> Option<&'a Entry> {
    report.entries.iter().find(|e| {
        e.subject == subject
            && e.workload == workload
            && e.size == size
            && e.service == "palindrome-v3"
            && e.measured()
    })
}

/// Checks every target against the report; those it does not cover are listed as such.
pub fn evaluate(report: &Report) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for pairing in &PAIRINGS {
        let theirs_name = pairing.baseline.subject();
        for &clients in pairing.clients {
            let mut target = format!(
                "{} vs {theirs_name} at {clients} client{}: CPU per request ≤ {}×",
                pairing.model,
                if clients == 1 { "" } else { "s" },
                pairing.cpu
            );
            if let Some(throughput) = pairing.throughput {
                target.push_str(&format!(", throughput ≥ {throughput}×"));
            }
            let p99_max = pairing
                .p99
                .and_then(|(at, max)| (at == clients).then_some(max));
            if let Some(p99) = p99_max {
                target.push_str(&format!(", p99 ≤ {p99}×"));
            }
            let ours = entry(report, pairing.model.name(), Workload::Sessions, clients);
            let theirs = entry(report, theirs_name, Workload::Sessions, clients);
            let (Some(ours), Some(theirs)) = (ours, theirs) else {
                verdicts.push(not_measured(target));
                continue;
            };
            let cpu = paired_ratio(ours, theirs, Metric::CpuUsPerReq);
            let throughput = paired_ratio(ours, theirs, Metric::ReqPerS);
            let mut measured = format!(
                "CPU {cpu:.2}× ({:.2} vs {:.2} µs/request), throughput {throughput:.2}× ({:.0} vs {:.0} req/s)",
                ours.median(Metric::CpuUsPerReq).unwrap_or(f64::NAN),
                theirs.median(Metric::CpuUsPerReq).unwrap_or(f64::NAN),
                ours.median(Metric::ReqPerS).unwrap_or(f64::NAN),
                theirs.median(Metric::ReqPerS).unwrap_or(f64::NAN)
            );
            let mut met = cpu <= pairing.cpu;
            if let Some(min) = pairing.throughput {
                met &= throughput >= min;
            }
            if let Some(max) = p99_max {
                let p99 = paired_ratio(ours, theirs, Metric::P99Us);
                measured.push_str(&format!(
                    ", p99 {p99:.2}× ({:.0} vs {:.0} µs)",
                    ours.median(Metric::P99Us).unwrap_or(f64::NAN),
                    theirs.median(Metric::P99Us).unwrap_or(f64::NAN)
                ));
                met &= p99 <= max;
            }
            met &= unfinished_and_errors(&[ours, theirs], &mut measured);
            verdicts.push(Verdict::judged(target, measured, met));
        }
    }

    let target = format!(
        "thread-per-client PSS per idle client ≤ {MAX_THREAD_PSS_RATIO}× baseline-threads' ({THREAD_IDLE} idle clients)"
    );
    match (
        entry(
            report,
            Model::ThreadPerClient.name(),
            Workload::Footprint,
            THREAD_IDLE,
        ),
        entry(
            report,
            baseline::Kind::Threads.subject(),
            Workload::Footprint,
            THREAD_IDLE,
        ),
    ) {
        (Some(ours), Some(theirs)) => {
            let ratio = paired_ratio(ours, theirs, Metric::PssPerConnKib);
            let mut measured = format!(
                "{ratio:.2}× ({:.1} vs {:.1} KiB)",
                ours.median(Metric::PssPerConnKib).unwrap_or(f64::NAN),
                theirs.median(Metric::PssPerConnKib).unwrap_or(f64::NAN)
            );
            let complete = unfinished_and_errors(&[ours, theirs], &mut measured);
            verdicts.push(Verdict::judged(
                target,
                measured,
                ratio <= MAX_THREAD_PSS_RATIO && complete,
            ));
        }
        _ => verdicts.push(not_measured(target)),
    }

    let churn = |subject: &str| {
        report
            .entries
            .iter()
            .find(|e| e.subject == subject && e.workload == Workload::Churn && e.measured())
    };
    let ours = churn(Model::ProcessPerClient.name());
    let fork = baseline::Kind::Fork.subject();
    let target = format!(
        "process-per-client churn vs {fork}: CPU per connection ≤ {MAX_CHURN_CPU_VS_FORK}×, \
         connections/s ≥ {MIN_CHURN_VS_FORK}×"
    );
    match (ours, churn(fork)) {
        (Some(ours), Some(theirs)) => {
            let cpu = paired_ratio(ours, theirs, Metric::CpuUsPerConn);
            let rate = paired_ratio(ours, theirs, Metric::ConnPerS);
            let mut measured = format!(
                "CPU {cpu:.2}× ({:.1} vs {:.1} µs/connection), {rate:.2}× ({:.0} vs {:.0} conn/s)",
                ours.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
                theirs.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
                ours.median(Metric::ConnPerS).unwrap_or(f64::NAN),
                theirs.median(Metric::ConnPerS).unwrap_or(f64::NAN)
            );
            let complete = unfinished_and_errors(&[ours, theirs], &mut measured);
            verdicts.push(Verdict::judged(
                target,
                measured,
                cpu <= MAX_CHURN_CPU_VS_FORK && rate >= MIN_CHURN_VS_FORK && complete,
            ));
        }
        _ => verdicts.push(not_measured(target)),
    }
    for (peer, at_least, why) in [
        (
            TCPSERVER,
            MIN_CHURN_VS_TCPSERVER,
            "tcpserver's fork+exec per connection",
        ),
        (PYTHON, MIN_CHURN_VS_PYTHON, "Python's ForkingTCPServer"),
    ] {
        let target = format!("process-per-client churn ≥ {at_least}× {why} ({peer})");
        let (Some(ours), Some(theirs)) = (ours, churn(peer)) else {
            verdicts.push(not_measured(target));
            continue;
        };
        let ratio = paired_ratio(ours, theirs, Metric::ConnPerS);
        let mut measured = format!(
            "{ratio:.2}× ({:.0} vs {:.0} conn/s; CPU {:.1} vs {:.1} µs/connection)",
            ours.median(Metric::ConnPerS).unwrap_or(f64::NAN),
            theirs.median(Metric::ConnPerS).unwrap_or(f64::NAN),
            ours.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
            theirs.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN)
        );
        let complete = unfinished_and_errors(&[ours, theirs], &mut measured);
        verdicts.push(Verdict::judged(
            target,
            measured,
            ratio >= at_least && complete,
        ));
    }

    let target = format!(
        "prefork churn ≥ {MIN_PREFORK_CHURN_VS_PROCESS}× process-per-client's connections/s \
         (no fork per connection)"
    );
    match (churn(Model::Prefork.name()), ours) {
        (Some(prefork), Some(forking)) => {
            let ratio = paired_ratio(prefork, forking, Metric::ConnPerS);
            let mut measured = format!(
                "{ratio:.2}× ({:.0} vs {:.0} conn/s; CPU {:.1} vs {:.1} µs/connection)",
                prefork.median(Metric::ConnPerS).unwrap_or(f64::NAN),
                forking.median(Metric::ConnPerS).unwrap_or(f64::NAN),
                prefork.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
                forking.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN)
            );
            let complete = unfinished_and_errors(&[prefork, forking], &mut measured);
            verdicts.push(Verdict::judged(
                target,
                measured,
                ratio >= MIN_PREFORK_CHURN_VS_PROCESS && complete,
            ));
        }
        _ => verdicts.push(not_measured(target)),
    }
    let target = format!(
        "prefork churn vs {}: CPU per connection, connections/s",
        baseline::Kind::Prefork.subject()
    );
    if let (Some(ours), Some(theirs)) = (
        churn(Model::Prefork.name()),
        churn(baseline::Kind::Prefork.subject()),
    ) {
        verdicts.push(Verdict {
            target,
            measured: format!(
                "CPU {:.2}× ({:.1} vs {:.1} µs/connection), {:.2}× ({:.0} vs {:.0} conn/s)",
                paired_ratio(ours, theirs, Metric::CpuUsPerConn),
                ours.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
                theirs.median(Metric::CpuUsPerConn).unwrap_or(f64::NAN),
                paired_ratio(ours, theirs, Metric::ConnPerS),
                ours.median(Metric::ConnPerS).unwrap_or(f64::NAN),
                theirs.median(Metric::ConnPerS).unwrap_or(f64::NAN)
            ),
            mark: Mark::Info,
        });
    }

    for (model, clients) in [
        (Model::Async, ASYNC_CLIENTS),
        (Model::ThreadPerClient, THREAD_CLIENTS),
    ] {
        let target = format!(
            "{model}: {clients} clients at once, {LINES_AT_SCALE} requests each, zero errors"
        );
        match entry(report, model.name(), Workload::Sessions, clients) {
            Some(e) => verdicts.push(Verdict::judged(
                target,
                format!(
                    "{} errors, {}",
                    e.errors,
                    e.unfinished.last().map_or("all finished", String::as_str)
                ),
                e.errors == 0 && e.unfinished.is_empty(),
            )),
            None => verdicts.push(not_measured(target)),
        }
    }

    for model in [Model::Async, Model::EventLoop] {
        let target = format!(
            "{model}: PSS growth ≤ {MAX_PSS_PER_IDLE_CONN_KIB} KiB per idle connection \
             ({ASYNC_CLIENTS} clients)"
        );
        match entry(report, model.name(), Workload::Footprint, ASYNC_CLIENTS) {
            Some(e) => {
                let growth = e.median(Metric::PssPerConnKib).unwrap_or(f64::NAN);
                let mut measured = format!("{growth:.2} KiB");
                let complete = unfinished_and_errors(&[e], &mut measured);
                verdicts.push(Verdict::judged(
                    target,
                    measured,
                    growth <= MAX_PSS_PER_IDLE_CONN_KIB && complete,
                ));
            }
            None => verdicts.push(not_measured(target)),
        }
    }

    let target = format!(
        "word-guess: {} bots in {GAMES} games on one async port, all finished, zero protocol errors",
        GAMES * 2
    );
    match report.find(
        Model::Async.name(),
        Load::Game { games: GAMES },
        "word-guess",
    ) {
        Some(e) => {
            let finished = e.median(Metric::GamesFinished).unwrap_or(0.0);
            verdicts.push(Verdict::judged(
                target,
                format!("{finished:.0} of {GAMES} finished, {} errors", e.errors),
                finished as usize == GAMES && e.errors == 0,
            ));
        }
        None => verdicts.push(not_measured(target)),
    }
    verdicts
}

/// Throughput with the admin endpoint on, against the same model with it off in the same run.
const MIN_ADMIN_THROUGHPUT_RATIO: f64 = 0.97;

/// What the admin endpoint costs each model (`porthost bench --admin`): its sessions throughput
/// and p99 with the endpoint on, against the same model with it off, measured next to each
/// other. Async and thread-per-client are held to `MIN_ADMIN_THROUGHPUT_RATIO` (0.97×).
pub fn admin_cost(report: &Report) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for model in Model::ALL {
        let on = Subject::Admin(model).name();
        for ours in report
            .entries
            .iter()
            .filter(|e| e.subject == on && e.workload == Workload::Sessions && e.measured())
        {
            let held = matches!(model, Model::Async | Model::ThreadPerClient);
            let target = if held {
                format!(
                    "{on} vs {model}, {}: throughput ≥ {MIN_ADMIN_THROUGHPUT_RATIO}×",
                    ours.load
                )
            } else {
                format!("{on} vs {model}, {}", ours.load)
            };
            let off = report.entries.iter().find(|e| {
                e.subject == model.name()
                    && e.load == ours.load
                    && e.service == ours.service
                    && e.measured()
            });
            let Some(off) = off else {
                verdicts.push(not_measured(target));
                continue;
            };
            let throughput = paired_ratio(ours, off, Metric::ReqPerS);
            let p99 = paired_ratio(ours, off, Metric::P99Us);
            let mut measured = format!("throughput {throughput:.2}×, p99 {p99:.2}×");
            let complete = unfinished_and_errors(&[ours, off], &mut measured);
            verdicts.push(if held {
                Verdict::judged(
                    target,
                    measured,
                    throughput >= MIN_ADMIN_THROUGHPUT_RATIO && complete,
                )
            } else {
                Verdict {
                    target,
                    measured,
                    mark: Mark::Info,
                }
            });
        }
    }
    verdicts
}

/// Notes errors and unfinished runs of compared entries in `measured`; `true` when there were
/// none, as a comparison needs.
fn unfinished_and_errors(entries: &[&Entry], measured: &mut String) -> bool {
    let mut clean = true;
    for e in entries {
        if e.errors > 0 {
            measured.push_str(&format!("; {}: {} errors", e.subject, e.errors));
            clean = false;
        }
        if let Some(note) = e.unfinished.last() {
            measured.push_str(&format!("; {}: {note}", e.subject));
            clean = false;
        }
    }
    clean
}

/// The median over runs of `ours / theirs` for one metric, each ratio taken within one run: the
/// two were measured one right after the other, so the machine's slow swings cancel out.
fn paired_ratio(ours: &Entry, theirs: &Entry, metric: Metric) -> f64 {
    let ratios = ours
        .per_run
        .iter()
        .zip(&theirs.per_run)
        .filter_map(|(o, t)| Some(o.metrics.get(&metric)? / t.metrics.get(&metric)?))
        .collect();
    median(ratios)
}

fn not_measured(target: String) -> Verdict {
    Verdict {
        target,
        measured: "not measured".to_owned(),
        mark: Mark::NotMeasured,
    }
}

pub fn render(verdicts: &[Verdict]) -> String {
    let mut rows = vec![vec![
        "TARGET".to_owned(),
        "MEASURED (medians of per-run ratios)".to_owned(),
        "".to_owned(),
    ]];
    for v in verdicts {
        let mark = match v.mark {
            Mark::Met => "met",
            Mark::Missed => "MISSED",
            Mark::NotMeasured => "-",
            Mark::Info => "info",
        };
        rows.push(vec![v.target.clone(), v.measured.clone(), mark.to_owned()]);
    }
    porthost_cli::table::render(&rows)
}
