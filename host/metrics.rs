//! What the host counts about its ports, and the Prometheus text `/metrics` serves.
//!
//! Counting happens where things happen and costs an uncontended atomic or so: each connection
//! counts its own traffic ([`porthost_services::meter`]), each port its connections
//! ([`PortStats`]); nothing takes a lock per line. Everything is added up only when someone
//! looks: a scrape, or the live view's sampler once a second. Counters survive reloads: when a
//! port's entry is replaced, what its old entry counted is kept under the same labels
//! ([`Drained`]), so `rate()` never sees a reset that did not happen.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use porthost_services::meter::{LATENCY_BUCKETS, Totals};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::lock::lock;
use crate::port::{Port, PortState};
use crate::stats::Refusal;
pub use crate::stats::{Counts, PortStats, SESSION_BUCKETS};

/// The labels every port metric carries. Never the client's address: one series per client
/// would grow without bound.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct PortLabels {
    pub port: String,
    pub service: String,
    pub model: String,
}

impl PortLabels {
    pub fn of(port: &Port) -> PortLabels {
        let entry = &port.plan.entry;
        PortLabels {
            port: entry.port().to_string(),
            service: entry.service.clone(),
            model: entry.model.name().to_owned(),
        }
    }
}

/// What the entries of ports that have drained (a reload replaced or removed them) counted,
/// kept so that counters go on from there.
#[derive(Debug, Default)]
pub struct Drained {
    by_labels: Mutex<BTreeMap<PortLabels, (Counts, Totals)>>,
}

impl Drained {
    /// Keeps what a drained port counted.
    pub fn keep(&self, port: &Port) {
        let mut all = lock(&self.by_labels);
        let (counts, totals) = all.entry(PortLabels::of(port)).or_default();
        counts.add(&port.stats.counts());
        totals.add(&port.traffic());
    }

    fn get(&self) -> BTreeMap<PortLabels, (Counts, Totals)> {
        lock(&self.by_labels).clone()
    }
}

/// What the whole host counts: reloads by outcome.
#[derive(Debug, Default)]
pub struct HostStats {
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    pub drained: Drained,
}

impl HostStats {
    /// A reload ended with `outcome`: `applied`, `invalid` (the file), `failed` (a port could
    /// not be bound).
    pub fn reloaded(&self, outcome: &'static str) {
        *lock(&self.reloads).entry(outcome).or_default() += 1;
    }
}

/// Everything `/metrics` shows, read at the moment of a scrape.
#[derive(Debug)]
pub struct Scrape<'a> {
    /// Every port that has connections or accepts: the served ones and the draining ones.
    pub ports: &'a [Arc<Port>],
    pub host: &'a HostStats,
    pub process: ProcessFigures,
}

/// What `/proc` says about the host and its children.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    pub host_rss_bytes: u64,
    /// The children's proportional set size: pages they share with each other and with the
    /// fork server counted once, not once per child.
    pub children_pss_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessFigures {
    /// Reads the host's figures and its `children`'s (the fork server and the processes
    /// serving connections; one that has ended meanwhile counts nothing).
    pub fn read(children: &[u32]) -> ProcessFigures {
        let me = std::process::id();
        let children: u64 = children
            .iter()
            .filter_map(|pid| crate::procfs::memory(*pid).map(|m| m.pss_kib))
            .sum();
        ProcessFigures {
            host_rss_bytes: crate::procfs::status_kib(me, "VmRSS").unwrap_or(0) * 1024,
            children_pss_bytes: children * 1024,
            open_fds: crate::procfs::open_fds(me) as u64,
            threads: crate::procfs::threads(me) as u64,
        }
    }
}

/// One port's figures at a scrape, live and drained entries added up.
struct Row {
    labels: PortLabels,
    /// What the port's service reports about itself.
    service: Vec<porthost_services::Stat>,
    counts: Counts,
    traffic: Totals,
    open: u64,
    waiting: u64,
    threads: i64,
    busy: i64,
    children: i64,
}

impl Scrape<'_> {
    fn rows(&self) -> Vec<Row> {
        let mut rows: BTreeMap<PortLabels, Row> = BTreeMap::new();
        for (labels, (counts, traffic)) in self.host.drained.get() {
            rows.insert(
                labels.clone(),
                Row {
                    labels,
                    service: Vec::new(),
                    counts,
                    traffic,
                    open: 0,
                    waiting: 0,
                    threads: 0,
                    busy: 0,
                    children: 0,
                },
            );
        }
        for port in self.ports {
            let labels = PortLabels::of(port);
            let row = rows.entry(labels.clone()).or_insert_with(|| Row {
                labels,
                service: Vec::new(),
                counts: Counts::default(),
                traffic: Totals::default(),
                open: 0,
                waiting: 0,
                threads: 0,
                busy: 0,
                children: 0,
            });
            row.counts.add(&port.stats.counts());
            row.traffic.add(&port.traffic());
            row.open += port.open_count() as u64;
            row.waiting += port.waiting().unwrap_or(0);
            row.threads += port.stats.threads.load(Ordering::Relaxed);
            row.busy += port.stats.busy.load(Ordering::Relaxed);
            row.children += port.stats.children.load(Ordering::Relaxed);
            if port.state() == PortState::Accepting {
                row.service = port.plan.service.stats();
            }
        }
        rows.into_values().collect()
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collector {
            rows: self.rows(),
            reloads: lock(&self.host.reloads).clone(),
            process: self.process,
        }));
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[derive(Debug)]
struct Collector {
    rows: Vec<Row>,
    reloads: BTreeMap<&'static str, u64>,
    process: ProcessFigures,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// A metric family of one whole number per port.
fn per_port(
    encoder: &mut DescriptorEncoder<'_>,
    rows: &[Row],
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    value: impl Fn(&Row) -> i64,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for row in rows {
        let v = value(row);
        let mut metric = family.encode_family(&row.labels)?;
        match kind {
            MetricType::Counter => {
                metric.encode_counter::<NoLabelSet, _, u64>(&(v.max(0) as u64), None)?
            }
            _ => metric.encode_gauge(&v)?,
        }
    }
    Ok(())
}

/// A histogram in seconds per port, from `value`: the counts per bucket of `bounds` (and one
/// past the last) and the sum in nanoseconds.
fn histogram_per_port<'r>(
    encoder: &mut DescriptorEncoder<'_>,
    rows: &'r [Row],
    name: &str,
    help: &str,
    bounds: &[f64],
    value: impl Fn(&'r Row) -> (&'r [u64], u64),
) -> std::fmt::Result {
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for row in rows {
        let (counts, sum_nanos) = value(row);
        family
            .encode_family(&row.labels)?
            .encode_histogram::<NoLabelSet>(
                sum_nanos as f64 / 1e9,
                counts.iter().sum(),
                &buckets(bounds, counts),
                None,
            )?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let rows = &self.rows;
        let bytes = Some(&Unit::Bytes);
        per_port(
            &mut e,
            rows,
            "porthost_connections_open",
            "Connections being served now.",
            None,
            Gauge,
            |r| r.open as i64,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_connections_accepted",
            "Connections accepted.",
            None,
            Counter,
            |r| r.counts.accepted as i64,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_connections_waiting",
            "Connections the kernel has completed and the host has not accepted yet: the listen backlog (TCP_INFO).",
            None,
            Gauge,
            |r| r.waiting as i64,
        )?;
        {
            let mut family = e.encode_descriptor(
                "porthost_connections_refused",
                "Connections refused before any service code ran, by reason.",
                None,
                Counter,
            )?;
            for row in rows {
                for why in Refusal::ALL {
                    let labels = (row.labels.clone(), [("reason", why.name())]);
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(
                            &row.counts.refused[why as usize],
                            None,
                        )?;
                }
            }
        }
        histogram_per_port(
            &mut e,
            rows,
            "porthost_session_duration",
            "How long connections lasted.",
            &SESSION_BUCKETS,
            |r| (&r.counts.sessions, r.counts.session_nanos),
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_lines",
            "Request lines read and served.",
            None,
            Counter,
            |r| r.traffic.lines as i64,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_replies",
            "Replies written (one write each).",
            None,
            Counter,
            |r| r.traffic.replies as i64,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_received",
            "Bytes read from clients.",
            bytes,
            Counter,
            |r| r.traffic.bytes_in as i64,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_sent",
            "Bytes written to clients.",
            bytes,
            Counter,
            |r| r.traffic.bytes_out as i64,
        )?;
        histogram_per_port(
            &mut e,
            rows,
            "porthost_reply_latency",
            "From a request line read to its reply written.",
            &LATENCY_BUCKETS,
            |r| (&r.traffic.latency, r.traffic.latency_sum_nanos),
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_threads",
            "OS threads serving this port's connections now (sequential, event-loop: its one thread; thread-pool: its workers; async: none of its own).",
            None,
            Gauge,
            |r| r.threads,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_busy_workers",
            "Workers of a thread-pool port serving a connection now (the others are idle; 0 under the models without a pool).",
            None,
            Gauge,
            |r| r.busy,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_child_processes",
            "Child processes serving this port's connections now.",
            None,
            Gauge,
            |r| r.children,
        )?;
        per_port(
            &mut e,
            rows,
            "porthost_forks",
            "Child processes forked for connections.",
            None,
            Counter,
            |r| r.counts.forks as i64,
        )?;
        {
            let mut family = e.encode_descriptor(
                "porthost_child_exits",
                "Child processes reaped, by how they ended: an exit code or a signal.",
                None,
                Counter,
            )?;
            for row in rows {
                for ((how, value), n) in &row.counts.exits {
                    let labels = (
                        row.labels.clone(),
                        [("how", *how), ("value", value.as_str())],
                    );
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(n, None)?;
                }
            }
        }
        // What services report about themselves, one family per figure.
        let mut figures: BTreeMap<&str, Vec<(&PortLabels, &porthost_services::Stat)>> =
            BTreeMap::new();
        for row in rows {
            for stat in &row.service {
                figures
                    .entry(stat.name)
                    .or_default()
                    .push((&row.labels, stat));
            }
        }
        for (name, values) in figures {
            let (help, counter) = (values[0].1.help, values[0].1.counter);
            let name = format!("porthost_service_{name}");
            let kind = if counter { Counter } else { Gauge };
            let mut family = e.encode_descriptor(&name, help, None, kind)?;
            for (labels, stat) in values {
                let value = stat.value;
                let mut metric = family.encode_family(labels)?;
                if counter {
                    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                } else {
                    metric.encode_gauge(&(value as i64))?;
                }
            }
        }
        {
            let mut family = e.encode_descriptor("porthost_resident_memory", "Memory of the host (resident set) and of its child processes (proportional set: shared pages counted once).", bytes, Gauge)?;
            for (process, value) in [
                ("host", self.process.host_rss_bytes),
                ("children", self.process.children_pss_bytes),
            ] {
                family
                    .encode_family(&[("process", process)])?
                    .encode_gauge(&(value as i64))?;
            }
        }
        e.encode_descriptor(
            "porthost_open_fds",
            "File descriptors the host has open.",
            None,
            Gauge,
        )?
        .encode_gauge(&(self.process.open_fds as i64))?;
        e.encode_descriptor(
            "porthost_host_threads",
            "Threads of the host process.",
            None,
            Gauge,
        )?
        .encode_gauge(&(self.process.threads as i64))?;
        e.encode_descriptor("porthost_log_writes_dropped", "Log and plan lines that could not be written (a reader of stderr or stdout that went away) and were dropped.", None, Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&crate::logging::dropped_writes(), None)?;
        {
            let mut family = e.encode_descriptor(
                "porthost_reloads",
                "Reloads (SIGHUP), by outcome.",
                None,
                Counter,
            )?;
            for outcome in ["applied", "invalid", "failed"] {
                let n = self.reloads.get(outcome).copied().unwrap_or(0);
                family
                    .encode_family(&[("outcome", outcome)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        // A gauge of 1 with the version as a label, the classic text format's way to say it
        // (OpenMetrics' `info` type is unknown to it).
        e.encode_descriptor("porthost_build_info", "The porthost version.", None, Gauge)?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1i64)?;
        Ok(())
    }
}

/// `(upper bound, count)` pairs, `+Inf` last; the encoder makes them cumulative.
fn buckets(bounds: &[f64], counts: &[u64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_with_inf() {
        assert_eq!(
            buckets(&[1.0, 2.0], &[3, 0, 4]),
            vec![(1.0, 3), (2.0, 0), (f64::INFINITY, 4)]
        );
    }
}
