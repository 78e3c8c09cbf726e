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

use porthost_services::histogram::{Bounds, Snapshot};
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

impl Row {
    /// A row of what drained entries of the port counted, nothing open.
    fn new(labels: PortLabels, counts: Counts, traffic: Totals) -> Row {
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
        }
    }
}

impl Scrape<'_> {
    fn rows(&self) -> Vec<Row> {
        let mut rows: BTreeMap<PortLabels, Row> = BTreeMap::new();
        for (labels, (counts, traffic)) in self.host.drained.get() {
            rows.insert(labels.clone(), Row::new(labels, counts, traffic));
        }
        for port in self.ports {
            let labels = PortLabels::of(port);
            let row = rows
                .entry(labels.clone())
                .or_insert_with(|| Row::new(labels, Counts::default(), Totals::default()));
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

/// One metric family: what its `# HELP`, `# TYPE` and `# UNIT` lines say, and how its series
/// are read off `T` (a port's row, or the host's own figures).
struct Family<T> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    read: Read<T>,
}

/// Labels a series carries beside its port's: a refusal's reason, how a child ended.
type Extra = Vec<(&'static str, String)>;

/// How a family's series are read, which also says the family's type.
enum Read<T> {
    Gauge(fn(&T) -> i64),
    Counter(fn(&T) -> u64),
    /// One gauge per set of extra labels.
    Gauges(fn(&T) -> Vec<(Extra, i64)>),
    /// One counter per set of extra labels.
    Counters(fn(&T) -> Vec<(Extra, u64)>),
    /// A histogram of durations.
    Seconds(fn(&T) -> Seconds),
}

impl<T> Read<T> {
    fn kind(&self) -> MetricType {
        match self {
            Read::Gauge(_) | Read::Gauges(_) => MetricType::Gauge,
            Read::Counter(_) | Read::Counters(_) => MetricType::Counter,
            Read::Seconds(_) => MetricType::Histogram,
        }
    }
}

impl<T> Family<T> {
    /// Writes the family, one series (or one per extra labels) for each of `items`, under
    /// its labels.
    fn encode<L: EncodeLabelSet + Clone>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        items: &[(L, &T)],
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            self.unit.as_ref(),
            self.read.kind(),
        )?;
        for (labels, item) in items {
            match &self.read {
                Read::Gauge(read) => family.encode_family(labels)?.encode_gauge(&read(item))?,
                Read::Counter(read) => family
                    .encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&read(item), None)?,
                Read::Gauges(read) => {
                    for (extra, value) in read(item) {
                        family
                            .encode_family(&(labels.clone(), extra))?
                            .encode_gauge(&value)?;
                    }
                }
                Read::Counters(read) => {
                    for (extra, value) in read(item) {
                        family
                            .encode_family(&(labels.clone(), extra))?
                            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                    }
                }
                Read::Seconds(read) => {
                    let Seconds {
                        buckets,
                        count,
                        sum,
                    } = read(item);
                    family
                        .encode_family(labels)?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        Ok(())
    }
}

/// The families every port has, in the order `/metrics` shows them.
const PORT_FAMILIES: &[Family<Row>] = &[
    Family {
        name: "porthost_connections_open",
        help: "Connections being served now.",
        unit: None,
        read: Read::Gauge(|r| r.open as i64),
    },
    Family {
        name: "porthost_connections_accepted",
        help: "Connections accepted.",
        unit: None,
        read: Read::Counter(|r| r.counts.accepted),
    },
    Family {
        name: "porthost_connections_waiting",
        help: "Connections the kernel has completed and the host has not accepted yet: the listen backlog (TCP_INFO).",
        unit: None,
        read: Read::Gauge(|r| r.waiting as i64),
    },
    Family {
        name: "porthost_connections_refused",
        help: "Connections refused before any service code ran, by reason.",
        unit: None,
        read: Read::Counters(|r| {
            Refusal::ALL
                .iter()
                .map(|&why| {
                    let extra = vec![("reason", why.name().to_owned())];
                    (extra, r.counts.refused[why as usize])
                })
                .collect()
        }),
    },
    Family {
        name: "porthost_session_duration",
        help: "How long connections lasted.",
        unit: Some(Unit::Seconds),
        read: Read::Seconds(|r| seconds(&r.counts.sessions, &SESSION_BUCKETS)),
    },
    Family {
        name: "porthost_lines",
        help: "Request lines read and served.",
        unit: None,
        read: Read::Counter(|r| r.traffic.lines),
    },
    Family {
        name: "porthost_replies",
        help: "Replies written (one write each).",
        unit: None,
        read: Read::Counter(|r| r.traffic.replies),
    },
    Family {
        name: "porthost_received",
        help: "Bytes read from clients.",
        unit: Some(Unit::Bytes),
        read: Read::Counter(|r| r.traffic.bytes_in),
    },
    Family {
        name: "porthost_sent",
        help: "Bytes written to clients.",
        unit: Some(Unit::Bytes),
        read: Read::Counter(|r| r.traffic.bytes_out),
    },
    Family {
        name: "porthost_reply_latency",
        help: "From a request line read to its reply written.",
        unit: Some(Unit::Seconds),
        read: Read::Seconds(|r| seconds(&r.traffic.latency, &LATENCY_BUCKETS)),
    },
    Family {
        name: "porthost_threads",
        help: "OS threads serving this port's connections now (sequential, event-loop: its one thread; thread-pool: its workers; async: none of its own).",
        unit: None,
        read: Read::Gauge(|r| r.threads),
    },
    Family {
        name: "porthost_busy_workers",
        help: "Workers of a thread-pool port serving a connection now (the others are idle; 0 under the models without a pool).",
        unit: None,
        read: Read::Gauge(|r| r.busy),
    },
    Family {
        name: "porthost_child_processes",
        help: "Child processes serving this port's connections now.",
        unit: None,
        read: Read::Gauge(|r| r.children),
    },
    Family {
        name: "porthost_forks",
        help: "Child processes forked for connections.",
        unit: None,
        read: Read::Counter(|r| r.counts.forks),
    },
    Family {
        name: "porthost_child_exits",
        help: "Child processes reaped, by how they ended: an exit code or a signal.",
        unit: None,
        read: Read::Counters(|r| {
            r.counts
                .exits
                .iter()
                .map(|((how, value), &n)| {
                    (
                        vec![("how", (*how).to_owned()), ("value", value.clone())],
                        n,
                    )
                })
                .collect()
        }),
    },
];

/// The families of the host itself, shown after the ports' and their services'.
const HOST_FAMILIES: &[Family<Collector>] = &[
    Family {
        name: "porthost_resident_memory",
        help: "Memory of the host (resident set) and of its child processes (proportional set: shared pages counted once).",
        unit: Some(Unit::Bytes),
        read: Read::Gauges(|c| {
            vec![
                (
                    vec![("process", "host".to_owned())],
                    c.process.host_rss_bytes as i64,
                ),
                (
                    vec![("process", "children".to_owned())],
                    c.process.children_pss_bytes as i64,
                ),
            ]
        }),
    },
    Family {
        name: "porthost_open_fds",
        help: "File descriptors the host has open.",
        unit: None,
        read: Read::Gauge(|c| c.process.open_fds as i64),
    },
    Family {
        name: "porthost_host_threads",
        help: "Threads of the host process.",
        unit: None,
        read: Read::Gauge(|c| c.process.threads as i64),
    },
    Family {
        name: "porthost_log_writes_dropped",
        help: "Log and plan lines that could not be written (a reader of stderr or stdout that went away) and were dropped.",
        unit: None,
        read: Read::Counter(|_| crate::logging::dropped_writes()),
    },
    Family {
        name: "porthost_reloads",
        help: "Reloads (SIGHUP), by outcome.",
        unit: None,
        read: Read::Counters(|c| {
            ["applied", "invalid", "failed"]
                .into_iter()
                .map(|outcome| {
                    let n = c.reloads.get(outcome).copied().unwrap_or(0);
                    (vec![("outcome", outcome.to_owned())], n)
                })
                .collect()
        }),
    },
    // A gauge of 1 with the version as a label, the classic text format's way to say it
    // (OpenMetrics' `info` type is unknown to it).
    Family {
        name: "porthost_build_info",
        help: "The porthost version.",
        unit: None,
        read: Read::Gauges(|_| vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1)]),
    },
];

/// A histogram of durations as the encoder takes it.
struct Seconds {
    /// `(upper bound, count)` pairs, `+Inf` last.
    buckets: Vec<(f64, u64)>,
    count: u64,
    /// The sum, in seconds.
    sum: f64,
}

fn seconds<const N: usize>(snapshot: &Snapshot<N>, bounds: &Bounds<N>) -> Seconds {
    Seconds {
        buckets: snapshot.buckets(bounds),
        count: snapshot.count(),
        sum: snapshot.sum_seconds(),
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let rows: Vec<(PortLabels, &Row)> =
            self.rows.iter().map(|r| (r.labels.clone(), r)).collect();
        for family in PORT_FAMILIES {
            family.encode(&mut encoder, &rows)?;
        }
        self.encode_service_figures(&mut encoder)?;
        let host: [(Extra, &Collector); 1] = [(Vec::new(), self)];
        for family in HOST_FAMILIES {
            family.encode(&mut encoder, &host)?;
        }
        Ok(())
    }
}

impl Collector {
    /// What services report about themselves, one family per figure, named by the service.
    fn encode_service_figures(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut figures: BTreeMap<&str, Vec<(&PortLabels, &porthost_services::Stat)>> =
            BTreeMap::new();
        for row in &self.rows {
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
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = encoder.encode_descriptor(&name, help, None, kind)?;
            for (labels, stat) in values {
                let mut metric = family.encode_family(labels)?;
                if counter {
                    metric.encode_counter::<NoLabelSet, _, u64>(&stat.value, None)?;
                } else {
                    metric.encode_gauge(&(stat.value as i64))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ports whose every figure differs, one with figures of its service.
    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for (i, port) in ["7001", "7002"].into_iter().enumerate() {
            let i = i as u64 + 1;
            let mut counts = Counts {
                accepted: 10 * i,
                forks: 3 * i,
                ..Counts::default()
            };
            counts.refused = std::array::from_fn(|r| r as u64 * i);
            counts.exits.insert(("code", "0".to_owned()), 4 * i);
            counts.exits.insert(("signal", "SIGKILL".to_owned()), i);
            counts.sessions.counts = std::array::from_fn(|b| (b as u64 + i) % 3);
            counts.sessions.sum_nanos = 1_500_000_000 * i;
            let mut traffic = Totals {
                bytes_in: 100 * i,
                bytes_out: 200 * i,
                lines: 7 * i,
                replies: 6 * i,
                ..Totals::default()
            };
            traffic.latency.counts = std::array::from_fn(|b| (b as u64 * i) % 4);
            traffic.latency.sum_nanos = 12_345_678 * i;
            rows.push(Row {
                labels: PortLabels {
                    port: port.to_owned(),
                    service: "palindrome-v1".to_owned(),
                    model: "async".to_owned(),
                },
                service: if i == 1 {
                    vec![
                        porthost_services::Stat {
                            name: "games",
                            help: "Games.",
                            counter: true,
                            value: 5,
                        },
                        porthost_services::Stat {
                            name: "players",
                            help: "Players.",
                            counter: false,
                            value: 2,
                        },
                    ]
                } else {
                    Vec::new()
                },
                counts,
                traffic,
                open: i,
                waiting: 2 * i,
                threads: 3,
                busy: 1,
                children: 2,
            });
        }
        rows
    }

    /// The whole text of a scrape of two ports, against `testdata/metrics.txt`: a change to
    /// any family's name, help, type, unit, labels or order shows as a difference there.
    #[test]
    fn a_scrape_renders_as_the_golden_file_shows() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collector {
            rows: rows(),
            reloads: [("applied", 2), ("failed", 1)].into_iter().collect(),
            process: ProcessFigures {
                host_rss_bytes: 1 << 20,
                children_pss_bytes: 1 << 21,
                open_fds: 17,
                threads: 5,
            },
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let text = text.replace(env!("CARGO_PKG_VERSION"), "VERSION");
        assert!(
            text == include_str!("testdata/metrics.txt"),
            "the exposition differs from testdata/metrics.txt; it is now:\n{text}"
        );
    }
}
