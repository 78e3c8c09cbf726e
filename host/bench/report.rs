//! The bench's results: medians over runs, as a side-by-side table, JSON, CSV and an SVG chart.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::metric::{Metric, Sample};
use super::{Job, Load, Workload};
use porthost_cli::table::render as render_table;

/// How the bench measures memory, for the table and the outputs.
pub const MEMORY: &str = "PSS (proportional set size, from /proc/<pid>/smaps_rollup) summed over \
     the server's processes: a page shared by several processes is split among them, so \
     shared pages count once in all, however many processes map them; growth per idle client \
     from its anonymous part (Pss_Anon), which other processes mapping the same files leave alone";

/// How the bench measures CPU time, for the table.
pub const CPU: &str = "user + system time of the server's processes and threads, and of every \
     child they reaped (/proc/<pid>/stat: utime, stime, cutime, cstime; a single-threaded \
     process's own time from /proc/<pid>/schedstat, in nanoseconds, since stat rounds each \
     process down to a 10 ms tick), per request answered (sessions) or connection served \
     (churn); a multi-threaded process's time is still in ticks, so a measurement of less than \
     a second of CPU is coarse";

/// One workload against one server, over every run.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub workload: Workload,
    /// The workload and its size as the table shows it, e.g. `sessions c=100 l=100`.
    pub load: String,
    /// Clients, connections or games.
    pub size: usize,
    pub service: String,
    pub subject: String,
    /// The median of each metric over the runs.
    pub medians: BTreeMap<Metric, f64>,
    /// Medians that are only lower bounds, because clients were still waiting when the
    /// budget ran out (see [`crate::load::sessions`]).
    pub lower_bounds: BTreeSet<Metric>,
    pub per_run: Vec<Run>,
    /// Errors summed over the runs.
    pub errors: u64,
    /// What did not finish in time, per run where something did not.
    pub unfinished: Vec<String>,
}

/// One run of one entry.
#[derive(Debug, Serialize)]
pub struct Run {
    pub metrics: BTreeMap<Metric, f64>,
    pub lower_bounds: BTreeSet<Metric>,
    pub errors: u64,
    pub unfinished: Option<String>,
}

impl Entry {
    pub fn median(&self, metric: Metric) -> Option<f64> {
        self.medians.get(&metric).copied()
    }

    pub fn measured(&self) -> bool {
        !self.per_run.is_empty()
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    /// The time budget of every workload run, in seconds.
    pub budget_secs: f64,
    /// How memory is measured.
    pub memory: &'static str,
    /// The table's columns, in order.
    pub subjects: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn new(jobs: &[Job], runs: usize, budget_secs: f64) -> Report {
        let mut subjects: Vec<String> = Vec::new();
        let mut entries = Vec::new();
        for job in jobs {
            let subject = job.subject.name();
            if !subjects.contains(&subject) {
                subjects.push(subject.clone());
            }
            for load in &job.loads {
                entries.push(Entry {
                    workload: load.workload(),
                    load: load.to_string(),
                    size: load.size(),
                    service: job.service.clone(),
                    subject: subject.clone(),
                    medians: BTreeMap::new(),
                    lower_bounds: BTreeSet::new(),
                    per_run: Vec::new(),
                    errors: 0,
                    unfinished: Vec::new(),
                });
            }
        }
        Report {
            runs,
            budget_secs,
            memory: MEMORY,
            subjects,
            entries,
        }
    }

    /// Records one run of `load` against `job`'s server.
    pub fn add(&mut self, job: &Job, load: Load, sample: Sample) {
        let (subject, label) = (job.subject.name(), load.to_string());
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.subject == subject && e.load == label && e.service == job.service)
            .expect("every planned load has an entry");
        entry.errors += sample.errors;
        entry.unfinished.extend(sample.unfinished.clone());
        entry.per_run.push(Run {
            metrics: sample.metrics,
            lower_bounds: sample.lower_bounds,
            errors: sample.errors,
            unfinished: sample.unfinished,
        });
        let keys: BTreeSet<Metric> = entry
            .per_run
            .iter()
            .flat_map(|r| r.metrics.keys().copied())
            .collect();
        entry.medians.clear();
        entry.lower_bounds.clear();
        for key in keys {
            let values: Vec<(f64, bool)> = entry
                .per_run
                .iter()
                .filter_map(|r| Some((*r.metrics.get(&key)?, r.lower_bounds.contains(&key))))
                .collect();
            let middle = median(values.iter().map(|v| v.0).collect());
            entry.medians.insert(key, middle);
            // A lower bound at or below the median could, once its true value is known, move
            // the median up; lower bounds above it cannot.
            if values.iter().any(|&(v, bound)| bound && v <= middle) {
                entry.lower_bounds.insert(key);
            }
        }
    }

    pub fn find(&self, subject: &str, load: Load, service: &str) -> Option<&Entry> {
        let label = load.to_string();
        self.entries.iter().find(|e| {
            e.subject == subject && e.load == label && e.service == service && !e.per_run.is_empty()
        })
    }

    /// Workloads down, servers across; every number a median over the runs.
    pub fn table(&self) -> String {
        let mut header = vec!["WORKLOAD".to_owned(), "METRIC".to_owned()];
        header.extend(self.subjects.iter().cloned());
        let mut rows = vec![header];
        let mut loads: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !loads.contains(&e.load.as_str()) {
                loads.push(&e.load);
            }
        }
        for load in loads {
            let of_load: Vec<&Entry> = self.entries.iter().filter(|e| e.load == load).collect();
            let mut first = true;
            for row in Row::ALL {
                let cells: Vec<String> = self
                    .subjects
                    .iter()
                    .map(|s| {
                        of_load
                            .iter()
                            .find(|e| &e.subject == s)
                            .and_then(|e| row.cell(e))
                            .unwrap_or_else(|| "-".to_owned())
                    })
                    .collect();
                if cells.iter().all(|c| c == "-") {
                    continue;
                }
                if let Row::Metric(metric) = row
                    && metric.only_if_nonzero()
                    && of_load
                        .iter()
                        .all(|e| e.median(metric).unwrap_or(0.0) == 0.0)
                {
                    continue;
                }
                let mut row = vec![
                    if first {
                        load.to_owned()
                    } else {
                        String::new()
                    },
                    row.label().to_owned(),
                ];
                row.extend(cells);
                rows.push(row);
                first = false;
            }
        }
        let mut out = render_table(&rows);
        if self
            .entries
            .iter()
            .any(|e| e.median(Metric::PssMib).is_some())
        {
            out.push_str(&format!("\nMemory: {MEMORY}.\n"));
        }
        if self.entries.iter().any(|e| {
            e.median(Metric::CpuUsPerReq).is_some() || e.median(Metric::CpuUsPerConn).is_some()
        }) {
            out.push_str(&format!("\nCPU: {CPU}.\n"));
        }
        if self.entries.iter().any(|e| !e.lower_bounds.is_empty()) {
            out.push_str(&format!(
                "\n≥: a lower bound. Clients still waiting when the {} s budget ran out count \
                 with the time they had waited; the queue is longer than that.\n",
                self.budget_secs
            ));
        }
        let notes: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !e.unfinished.is_empty())
            .map(|e| {
                format!(
                    "- {} {}: {} (in {} of {} runs)",
                    e.subject,
                    e.load,
                    e.unfinished.last().expect("not empty"),
                    e.unfinished.len(),
                    e.per_run.len()
                )
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNot finished within the time budget:\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// One row per entry and metric:
    /// `workload,load,size,service,subject,metric,median,lower_bound,runs`.
    pub fn csv(&self) -> String {
        let mut out =
            String::from("workload,load,size,service,subject,metric,median,lower_bound,runs\n");
        for e in &self.entries {
            let workload = serde_json::to_value(e.workload).expect("a unit variant");
            let workload = workload.as_str().unwrap_or_default();
            let mut metrics: Vec<(String, f64, bool)> = e
                .medians
                .iter()
                .map(|(k, v)| {
                    let name = serde_json::to_value(k).expect("a unit variant");
                    let name = name.as_str().unwrap_or_default().to_owned();
                    (name, *v, e.lower_bounds.contains(k))
                })
                .collect();
            metrics.push(("errors".to_owned(), e.errors as f64, false));
            for (metric, value, bound) in metrics {
                out.push_str(&format!(
                    "{workload},{},{},{},{},{metric},{value},{bound},{}\n",
                    e.load,
                    e.size,
                    e.service,
                    e.subject,
                    e.per_run.len()
                ));
            }
        }
        out
    }

    /// The chart: see [`crate::chart`].
    pub fn svg(&self) -> anyhow::Result<String> {
        crate::chart::svg(self)
    }
}

/// A row of the table under each workload: a metric, or the errors and runs of the entry.
#[derive(Debug, Clone, Copy)]
enum Row {
    Metric(Metric),
    Errors,
    Runs,
}

impl Row {
    const ALL: [Row; 25] = [
        Row::Metric(Metric::ReqPerS),
        Row::Metric(Metric::ConnPerS),
        Row::Metric(Metric::CpuUsPerReq),
        Row::Metric(Metric::CpuUsPerConn),
        Row::Metric(Metric::FaultsPerConn),
        Row::Metric(Metric::GamesPerS),
        Row::Metric(Metric::GamesFinished),
        Row::Metric(Metric::P50Us),
        Row::Metric(Metric::P99Us),
        Row::Metric(Metric::P999Us),
        Row::Metric(Metric::MoveP50Us),
        Row::Metric(Metric::MoveP99Us),
        Row::Metric(Metric::FirstReplyP50Ms),
        Row::Metric(Metric::FirstReplyMaxMs),
        Row::Metric(Metric::AnswerP50Ms),
        Row::Metric(Metric::AnswerP99Ms),
        Row::Metric(Metric::LastAnswerMs),
        Row::Metric(Metric::Waiting),
        Row::Metric(Metric::PssIdleMib),
        Row::Metric(Metric::PssMib),
        Row::Metric(Metric::PssPerConnKib),
        Row::Metric(Metric::Threads),
        Row::Metric(Metric::Processes),
        Row::Errors,
        Row::Runs,
    ];

    fn label(self) -> &'static str {
        match self {
            Row::Metric(metric) => metric.label().unwrap_or_default(),
            Row::Errors => "errors",
            Row::Runs => "runs",
        }
    }

    /// The cell for one entry, formatted for the unit; `≥` marks a lower bound.
    fn cell(self, entry: &Entry) -> Option<String> {
        match self {
            Row::Metric(metric) => {
                let value = entry.median(metric)?;
                let bound = if entry.lower_bounds.contains(&metric) {
                    "≥"
                } else {
                    ""
                };
                Some(format!("{bound}{}", metric.format(value)))
            }
            Row::Errors => Some(entry.errors.to_string()),
            Row::Runs => Some(entry.per_run.len().to_string()),
        }
    }
}
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_median_is_a_lower_bound_when_a_bound_at_or_below_it_could_raise_it() {
        use crate::server::Subject;
        let load = Load::Sessions {
            clients: 10,
            lines: 1,
        };
        let job = Job {
            subject: Subject::Model(porthost::config::Model::Sequential),
            service: "palindrome-v3".to_owned(),
            loads: vec![load],
        };
        let mut report = Report::new(std::slice::from_ref(&job), 3, 1.0);
        for (value, bound) in [(10.0, false), (20.0, false), (30.0, true)] {
            let mut sample = Sample::default();
            sample.set_bound(Metric::FirstReplyMaxMs, value, bound);
            report.add(&job, load, sample);
        }
        let entry = &report.entries[0];
        assert_eq!(entry.median(Metric::FirstReplyMaxMs), Some(20.0));
        assert!(entry.lower_bounds.is_empty(), "a bound above the median");
        let mut sample = Sample::default();
        sample.set_bound(Metric::FirstReplyMaxMs, 15.0, true);
        report.add(&job, load, sample);
        let entry = &report.entries[0];
        assert_eq!(entry.median(Metric::FirstReplyMaxMs), Some(17.5));
        assert!(entry.lower_bounds.contains(&Metric::FirstReplyMaxMs));
        assert!(report.table().contains("≥17.5"), "{}", report.table());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
