//! The targets porthost holds itself to, as bench scenarios and thresholds. `porthost bench
//! --targets` runs them and checks each; an ordinary bench measures too briefly to judge them.

use super::report::{Entry, Report, median};
use super::server::Subject;
use super::{BenchArgs, CHURN_WORKERS, Job, Load, baseline};
use porthost::config::Model;

/// Client counts at which the async and thread models are held against their baselines.
const COMPARED_AT: [usize; 2] = [10, 100];
/// The least time budget of a target run.
pub const MIN_BUDGET_SECS: u64 = 30;
/// Requests per measurement in the baseline comparisons.
const COMPARED_REQUESTS: usize = 200_000;
const MIN_THROUGHPUT_RATIO: f64 = 0.9;
const MAX_P99_RATIO: f64 = 1.2;
const MIN_CHURN_RATIO_VS_PYTHON: f64 = 4.0;
const ASYNC_CLIENTS: usize = 10_000;
const THREAD_CLIENTS: usize = 2_000;
const LINES_AT_SCALE: usize = 5;
const MAX_RSS_PER_IDLE_CONN_KIB: f64 = 6.0;
const GAMES: usize = 500;

/// The target scenarios.
pub fn plan(args: &BenchArgs) -> Vec<Job> {
    let palindrome = "palindrome-v3".to_owned();
    // Enough requests per measurement that it lasts about a second, at either client count.
    let compared: Vec<Load> = COMPARED_AT
        .iter()
        .map(|&clients| Load::Sessions {
            clients,
            lines: args.lines.max(COMPARED_REQUESTS / clients),
        })
        .collect();
    let churn = Load::Churn {
        total: args.churn,
        workers: CHURN_WORKERS,
    };
    let job = |subject, loads: Vec<Load>| Job {
        subject,
        service: palindrome.clone(),
        loads,
    };
    // Each model next to its baseline: runs alternate direction, so the pair stays adjacent.
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
        job(Subject::Baseline(baseline::Kind::Threads), compared.clone()),
        job(
            Subject::Model(Model::ThreadPerClient),
            [
                compared,
                vec![Load::Sessions {
                    clients: THREAD_CLIENTS,
                    lines: LINES_AT_SCALE,
                }],
            ]
            .concat(),
        ),
        job(Subject::Model(Model::ProcessPerClient), vec![churn]),
    ];
    if python_available() {
        jobs.push(job(Subject::Python, vec![churn]));
    }
    jobs.push(Job {
        subject: Subject::Model(Model::Async),
        service: "word-guess".to_owned(),
        loads: vec![Load::Game { games: GAMES }],
    });
    jobs
}

fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One target and how the results measure up to it.
#[derive(Debug)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None` when the results do not cover it.
    pub met: Option<bool>,
}

/// Checks every target against the report; those it does not cover are listed as such.
pub fn evaluate(report: &Report) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let service = "palindrome-v3";
    for (model, base) in [
        (Model::Async, baseline::Kind::Async),
        (Model::ThreadPerClient, baseline::Kind::Threads),
    ] {
        for clients in COMPARED_AT {
            let ours = report.entries.iter().find(|e| {
                e.subject == model.name()
                    && e.load.starts_with(&format!("sessions c={clients} "))
                    && !e.per_run.is_empty()
            });
            let theirs = ours.and_then(|o| {
                report.entries.iter().find(|e| {
                    e.subject == base.subject() && e.load == o.load && !e.per_run.is_empty()
                })
            });
            let target = format!(
                "{model} vs {} at {clients} clients: throughput ≥ {MIN_THROUGHPUT_RATIO}×, p99 ≤ {MAX_P99_RATIO}×",
                base.subject()
            );
            match (ours, theirs) {
                (Some(ours), Some(theirs)) => {
                    let throughput = paired_ratio(ours, theirs, "req_per_s");
                    let p99 = paired_ratio(ours, theirs, "p99_us");
                    verdicts.push(Verdict {
                        target,
                        measured: format!("throughput {throughput:.2}×, p99 {p99:.2}×"),
                        met: Some(throughput >= MIN_THROUGHPUT_RATIO && p99 <= MAX_P99_RATIO),
                    });
                }
                _ => verdicts.push(not_measured(target)),
            }
        }
    }

    let churn = |subject: &str| {
        report
            .entries
            .iter()
            .find(|e| e.subject == subject && e.load.starts_with("churn") && !e.per_run.is_empty())
    };
    let target = format!(
        "process-per-client churn ≥ {MIN_CHURN_RATIO_VS_PYTHON}× Python's ForkingTCPServer"
    );
    match (
        churn(Model::ProcessPerClient.name()),
        churn(&Subject::Python.name()),
    ) {
        (Some(ours), Some(python)) => {
            let ratio = ours.medians["conn_per_s"] / python.medians["conn_per_s"];
            verdicts.push(Verdict {
                target,
                measured: format!(
                    "{ratio:.2}× ({:.0} vs {:.0} conn/s)",
                    ours.medians["conn_per_s"], python.medians["conn_per_s"]
                ),
                met: Some(ratio >= MIN_CHURN_RATIO_VS_PYTHON),
            });
        }
        _ => verdicts.push(not_measured(target + " (needs python3)")),
    }

    let scale = |model: Model, clients: usize, verdicts: &mut Vec<Verdict>| {
        let load = Load::Sessions {
            clients,
            lines: LINES_AT_SCALE,
        };
        let target = format!(
            "{model}: {clients} clients at once, {LINES_AT_SCALE} requests each, zero errors"
        );
        match report.find(model.name(), load, service) {
            Some(e) => verdicts.push(Verdict {
                target,
                measured: format!(
                    "{} errors, {}",
                    e.errors,
                    e.unfinished.last().map_or("all finished", String::as_str)
                ),
                met: Some(e.errors == 0 && e.unfinished.is_empty()),
            }),
            None => verdicts.push(not_measured(target)),
        }
    };
    scale(Model::Async, ASYNC_CLIENTS, &mut verdicts);
    scale(Model::ThreadPerClient, THREAD_CLIENTS, &mut verdicts);

    let target = format!("async: RSS growth ≤ {MAX_RSS_PER_IDLE_CONN_KIB} KiB per idle connection");
    let footprints: Vec<_> = report
        .entries
        .iter()
        .filter(|e| {
            e.subject == Model::Async.name()
                && e.load.starts_with("footprint")
                && !e.per_run.is_empty()
        })
        .collect();
    for e in &footprints {
        let growth = e.medians["rss_per_conn_kib"];
        verdicts.push(Verdict {
            target: format!("{target} ({})", e.load),
            measured: format!("{growth:.2} KiB"),
            met: Some(growth <= MAX_RSS_PER_IDLE_CONN_KIB && e.unfinished.is_empty()),
        });
    }
    if footprints.is_empty() {
        verdicts.push(not_measured(target));
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
        Some(e) => verdicts.push(Verdict {
            target,
            measured: format!(
                "{:.0} of {GAMES} finished, {} errors",
                e.medians["games_finished"], e.errors
            ),
            met: Some(e.medians["games_finished"] as usize == GAMES && e.errors == 0),
        }),
        None => verdicts.push(not_measured(target)),
    }
    verdicts
}

/// The median over runs of `ours / theirs` for one metric, each ratio taken within one run: the
/// two were measured one right after the other, so the machine's slow swings cancel out.
fn paired_ratio(ours: &Entry, theirs: &Entry, metric: &str) -> f64 {
    let ratios = ours
        .per_run
        .iter()
        .zip(&theirs.per_run)
        .filter_map(|(o, t)| Some(o.get(metric)? / t.get(metric)?))
        .collect();
    median(ratios)
}

fn not_measured(target: String) -> Verdict {
    Verdict {
        target,
        measured: "not measured".to_owned(),
        met: None,
    }
}

pub fn render(verdicts: &[Verdict]) -> String {
    let mut rows = vec![vec![
        "TARGET".to_owned(),
        "MEASURED (medians)".to_owned(),
        "".to_owned(),
    ]];
    for v in verdicts {
        let mark = match v.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        rows.push(vec![v.target.clone(), v.measured.clone(), mark.to_owned()]);
    }
    porthost::cli::table::render(&rows)
}
