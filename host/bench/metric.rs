//! The figures the workloads measure, each named once: the table's label and unit, the key in
//! the JSON and CSV outputs, and what the soak and the targets read back.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One figure a workload measures. The order here is the order of the table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Sessions: replies per second over all clients.
    ReqPerS,
    /// Churn: connections made, served and closed per second.
    ConnPerS,
    /// Game: games played to the end per second.
    GamesPerS,
    GamesFinished,
    /// Latency of a request (sessions) or of a whole connection (churn), in µs. A request
    /// still unanswered at the end of the budget counts with the time it had waited.
    P50Us,
    P99Us,
    P999Us,
    /// Game: from sending a move to its announcement.
    MoveP50Us,
    MoveP99Us,
    /// Sessions: from the start to a client's first reply, in ms; a client never answered
    /// counts with the whole budget.
    FirstReplyP50Ms,
    /// The last client's first reply: how long the queue in front of a server is.
    FirstReplyMaxMs,
    /// Sleep and busy: from the moment every client is connected to a client's answer, the
    /// wait in the server's queue included, in ms: the median and the 99th percentile ...
    AnswerP50Ms,
    AnswerP99Ms,
    /// ... and the last client's answer: when the whole crowd has been served.
    LastAnswerMs,
    /// Clients that had no reply at all when the budget ran out (queued, or stuck).
    Waiting,
    /// Footprint: memory (PSS summed over the server's processes) before the idle clients...
    PssIdleMib,
    /// ... and with them connected.
    PssMib,
    /// The growth of anonymous PSS (`Pss_Anon`: stacks, heaps, buffers, copy-on-write copies),
    /// per client served: the file pages' share moves with every unrelated process that maps
    /// the same binary or libc.
    PssPerConnKib,
    Threads,
    Processes,
    /// CPU time (user + system) of the server's whole process tree, reaped children included
    /// ([`crate::cpu`]), per request answered (sessions) ...
    CpuUsPerReq,
    /// ... and per connection served (churn).
    CpuUsPerConn,
    /// Churn: minor page faults of the server's process tree per connection, reaped children
    /// included: mostly a forked child touching its pages again.
    FaultsPerConn,
    /// Requests (sessions) or connections (churn) answered: what the soak counts.
    Served,
}

impl Metric {
    /// The label of the metric's row in the table; `None` for metrics only the JSON and CSV
    /// carry.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            Metric::ReqPerS => "req/s",
            Metric::ConnPerS => "conn/s",
            Metric::GamesPerS => "games/s",
            Metric::GamesFinished => "games finished",
            Metric::P50Us => "p50 µs",
            Metric::P99Us => "p99 µs",
            Metric::P999Us => "p99.9 µs",
            Metric::MoveP50Us => "move p50 µs",
            Metric::MoveP99Us => "move p99 µs",
            Metric::FirstReplyP50Ms => "first reply p50 ms",
            Metric::FirstReplyMaxMs => "first reply max ms",
            Metric::AnswerP50Ms => "answer p50 ms",
            Metric::AnswerP99Ms => "answer p99 ms",
            Metric::LastAnswerMs => "last answer ms",
            Metric::Waiting => "clients still waiting",
            Metric::PssIdleMib => "PSS idle MiB",
            Metric::PssMib => "PSS loaded MiB",
            Metric::PssPerConnKib => "PSS KiB/idle client",
            Metric::Threads => "threads",
            Metric::Processes => "processes",
            Metric::CpuUsPerReq => "CPU µs/request",
            Metric::CpuUsPerConn => "CPU µs/connection",
            Metric::FaultsPerConn => "page faults/connection",
            Metric::Served => return None,
        })
    }

    /// The value as the table shows it, in the metric's unit.
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::FirstReplyP50Ms
            | Metric::FirstReplyMaxMs
            | Metric::AnswerP50Ms
            | Metric::AnswerP99Ms
            | Metric::LastAnswerMs
            | Metric::PssIdleMib
            | Metric::PssMib => format!("{value:.1}"),
            // Work per line (busy_us) makes a request cost milliseconds: no decimals there.
            Metric::CpuUsPerReq if value >= 1000.0 => format!("{value:.0}"),
            Metric::PssPerConnKib | Metric::CpuUsPerReq => format!("{value:.2}"),
            Metric::CpuUsPerConn => format!("{value:.1}"),
            _ => format!("{value:.0}"),
        }
    }

    /// Rows shown only where some server has a value other than zero.
    pub fn only_if_nonzero(self) -> bool {
        self == Metric::Waiting
    }
}

/// What one run of a workload measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub metrics: BTreeMap<Metric, f64>,
    /// Metrics whose value is only a lower bound: clients still waiting when the budget ran
    /// out were counted with the time they had waited so far.
    pub lower_bounds: BTreeSet<Metric>,
    /// Connections that failed, broke, or got an answer the protocol does not allow.
    pub errors: u64,
    /// What did not finish within the budget, in words.
    pub unfinished: Option<String>,
}

impl Sample {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics.get(&metric).copied()
    }

    pub(crate) fn set(&mut self, metric: Metric, value: f64) {
        self.metrics.insert(metric, value);
    }

    /// Sets a metric, marked as a lower bound when `lower_bound`.
    pub(crate) fn set_bound(&mut self, metric: Metric, value: f64, lower_bound: bool) {
        self.set(metric, value);
        if lower_bound {
            self.lower_bounds.insert(metric);
        }
    }

    /// One line for the progress log: the headline figures.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (metric, text) in [
            (Metric::ReqPerS, "{} req/s"),
            (Metric::ConnPerS, "{} conn/s"),
            (Metric::GamesPerS, "{} games/s"),
            (Metric::P99Us, "p99 {} µs"),
            (Metric::CpuUsPerReq, "CPU {} µs/request"),
            (Metric::CpuUsPerConn, "CPU {} µs/connection"),
            (Metric::FaultsPerConn, "{} page faults/connection"),
            (Metric::FirstReplyMaxMs, "last first reply {} ms"),
            (Metric::AnswerP50Ms, "answer p50 {} ms"),
            (Metric::LastAnswerMs, "last answer {} ms"),
            (Metric::Waiting, "{} still waiting"),
            (Metric::PssPerConnKib, "PSS {} KiB per idle client"),
        ] {
            let Some(value) = self.get(metric) else {
                continue;
            };
            if metric.only_if_nonzero() && value == 0.0 {
                continue;
            }
            let bound = if self.lower_bounds.contains(&metric) {
                "≥"
            } else {
                ""
            };
            parts.push(text.replace("{}", &format!("{bound}{}", metric.format(value))));
        }
        if self.errors > 0 {
            parts.push(format!("{} errors", self.errors));
        }
        parts.join(", ")
    }
}
