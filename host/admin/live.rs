//! The live view's state: a [`Snapshot`] of every port, taken once a second by [`sample`],
//! which also keeps what the snapshot compares with (a minute of lines per second, the latency
//! of the last ten seconds, which connections were busy). The page, `/api/state` and `porthost
//! status` all read the latest snapshot; nothing here runs unless the admin endpoint is on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use porthost_services::meter::Totals;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Kind};
use crate::metrics::ProcessFigures;
use crate::observed::Observed;
use crate::port::{Port, PortState};

/// How often the state is sampled.
pub const EVERY: Duration = Duration::from_secs(1);

/// Samples of lines per second kept for a port's sparkline: two minutes.
const HISTORY: usize = 120;

/// The window of the latency percentiles, in samples.
const WINDOW: usize = 10;

/// Connections listed per port; the rest are counted.
const LISTED: usize = 40;

/// Events sent with each snapshot: the page keeps its own longer feed.
const RECENT_EVENTS: usize = 60;

/// Everything the live view shows, at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub pid: u32,
    /// Seconds since the host started.
    pub uptime: f64,
    pub host: HostView,
    pub ports: Vec<PortView>,
    pub events: Vec<Event>,
    /// The load run started from the page, if there is or was one.
    pub drive: Option<super::drive::DriveView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostView {
    pub rss_kib: u64,
    /// Proportional set size of the fork server and its children: shared pages counted once.
    pub children_pss_kib: u64,
    pub threads: u64,
    /// The shared runtime's worker threads, which run every async port's tasks (and this
    /// endpoint).
    pub runtime_workers: usize,
    pub open_fds: u64,
}

/// One port, as its card shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PortView {
    pub port: u16,
    pub address: String,
    pub service: String,
    pub model: String,
    /// `accepting`, `draining` or `retired`.
    pub state: PortState,
    pub max_connections: usize,
    pub open: usize,
    /// Clients the kernel has queued in the listen backlog, not yet accepted.
    pub waiting: Option<u64>,
    pub accepted: u64,
    pub refused: BTreeMap<&'static str, u64>,
    /// OS threads serving the port now.
    pub threads: i64,
    /// The size of its pool, under a model that has one (`thread-pool`, `prefork`).
    pub workers: Option<usize>,
    /// A prefork port's worker processes now, each with the clients it has taken.
    pub pool: Vec<WorkerView>,
    /// Workers of the pool serving a client now; the rest are idle.
    pub busy: i64,
    /// The pids of the child processes serving it now (an `exec` port's programs, under
    /// every model).
    pub children: Vec<u32>,
    /// The command an `exec` port runs for each connection: its argv as configured (never
    /// through a shell), so a word with a space stays one word.
    pub command: Option<Vec<String>>,
    pub lines: u64,
    pub lines_per_s: f64,
    pub replies_per_s: f64,
    /// Reply latency over the last ten seconds, in milliseconds (upper bounds of buckets).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Lines per second, one a second, oldest first.
    pub history: Vec<f64>,
    /// Proportional set size of its child processes (process-per-client and prefork only).
    pub memory_kib: Option<u64>,
    pub connections: Vec<ConnView>,
    /// Connections open beyond those listed.
    pub more_connections: usize,
    /// What the service says about itself (a game's players).
    pub service_stats: Vec<StatView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnView {
    pub peer: String,
    /// Seconds since it was accepted.
    pub age: f64,
    pub lines: u64,
    /// `busy` when it sent lines in the last second, else how long it has been quiet.
    pub state: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub pid: u32,
    /// Clients it has taken since it was forked (the one it serves now included).
    pub served: u64,
    /// Whether it serves a client now.
    pub busy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatView {
    pub name: &'static str,
    pub value: u64,
}

/// What the sampler remembers of a port between samples.
#[derive(Debug, Default)]
struct Memory {
    /// Totals at each of the last samples, newest last.
    totals: VecDeque<Totals>,
    history: VecDeque<f64>,
    waiting: u64,
    /// Per connection: its lines at the last change, and when that was.
    quiet: HashMap<u64, (u64, Instant)>,
    /// The service's counters at the last sample, to announce what changed.
    stats: HashMap<&'static str, u64>,
}

/// Samples the host every [`EVERY`] into `latest` until `stop`.
pub async fn sample(
    observed: Arc<Observed>,
    latest: watch::Sender<Arc<Snapshot>>,
    drive: super::drive::Drives,
    stop: CancellationToken,
) {
    let mut memory: HashMap<usize, Memory> = HashMap::new();
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let ports = observed.ports();
        // Reading /proc is blocking work; a second's worth of it is small but not free.
        let children = observed.children();
        let figures = tokio::task::spawn_blocking(move || ProcessFigures::read(&children))
            .await
            .unwrap_or_default();
        let views = ports
            .iter()
            .map(|port| {
                let key = Arc::as_ptr(port) as usize;
                view(port, memory.entry(key).or_default())
            })
            .collect();
        let alive: Vec<usize> = ports.iter().map(|p| Arc::as_ptr(p) as usize).collect();
        memory.retain(|key, _| alive.contains(key));
        observed.events.tick();
        let events = observed.events.after(0);
        let skip = events.len().saturating_sub(RECENT_EVENTS);
        let snapshot = Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            // The events' clock, so an event's `at` and the uptime agree even when the admin
            // endpoint was turned on by a reload, long after the host started.
            uptime: observed.events.uptime(),
            host: HostView {
                rss_kib: figures.host_rss_bytes / 1024,
                children_pss_kib: figures.children_pss_bytes / 1024,
                threads: figures.threads,
                runtime_workers: tokio::runtime::Handle::current().metrics().num_workers(),
                open_fds: figures.open_fds,
            },
            ports: views,
            events: events.into_iter().skip(skip).collect(),
            drive: drive.view(),
        };
        latest.send_replace(Arc::new(snapshot));
    }
}

/// One port's view, and what to remember for the next.
fn view(port: &Arc<Port>, memory: &mut Memory) -> PortView {
    let entry = &port.plan.entry;
    let now = Instant::now();
    let totals = port.traffic();
    let previous = memory.totals.back().copied().unwrap_or(totals);
    let seconds = EVERY.as_secs_f64();
    let lines_per_s = totals.since(&previous).lines as f64 / seconds;
    let replies_per_s = totals.since(&previous).replies as f64 / seconds;
    memory.totals.push_back(totals);
    if memory.totals.len() > WINDOW + 1 {
        memory.totals.pop_front();
    }
    let window = totals.since(memory.totals.front().expect("just pushed"));
    memory.history.push_back(lines_per_s);
    if memory.history.len() > HISTORY {
        memory.history.pop_front();
    }

    let waiting = port.waiting();
    let queued = waiting.unwrap_or(0);
    if queued > memory.waiting {
        port.events.push(Some(port.port()), Kind::Queued, || {
            format!(
                "{queued} client{} waiting in the backlog",
                if queued == 1 { "" } else { "s" }
            )
        });
    }
    memory.waiting = queued;

    let (open, count) = port.open_connections(LISTED);
    let mut seen = HashMap::new();
    let connections = open
        .iter()
        .map(|c| {
            let (lines, since) = match memory.quiet.get(&c.id) {
                Some(&(lines, since)) if lines == c.traffic.lines => (lines, since),
                _ => (c.traffic.lines, now),
            };
            seen.insert(c.id, (lines, since));
            let quiet = now.duration_since(since);
            ConnView {
                peer: c.peer.to_string(),
                age: now.duration_since(c.since).as_secs_f64(),
                lines: c.traffic.lines,
                state: if quiet < EVERY {
                    "busy".to_owned()
                } else {
                    format!("quiet {} s", quiet.as_secs())
                },
                pid: c.pid,
            }
        })
        .collect();
    memory.quiet = seen;

    let children = port.child_pids();
    let serving: std::collections::HashSet<u32> = port.serving_pids().into_iter().collect();
    let pool = port
        .stats
        .workers()
        .into_iter()
        .map(|(pid, served)| WorkerView {
            pid,
            served,
            busy: serving.contains(&pid),
        })
        .collect();
    let forks = matches!(
        entry.model,
        crate::config::Model::ProcessPerClient | crate::config::Model::Prefork
    );
    let memory_kib = forks.then(|| {
        children
            .iter()
            .filter_map(|pid| crate::procfs::memory(*pid).map(|m| m.pss_kib))
            .sum()
    });

    let stats = port.plan.service.stats();
    // A counter counts from the port's start: on first sight, everything so far is news (a
    // game that started before the first sample is reported, not taken as the baseline).
    for stat in stats.iter().filter(|s| s.counter) {
        let before = memory.stats.insert(stat.name, stat.value).unwrap_or(0);
        if stat.value > before {
            let n = stat.value - before;
            port.events.push(Some(port.port()), Kind::Game, || {
                format!(
                    "{}: +{n} ({} in all)",
                    stat.name.replace('_', " "),
                    stat.value
                )
            });
        }
    }
    let counts = port.stats.counts();
    PortView {
        port: port.port(),
        address: entry.addr.ip().to_string(),
        service: entry.service.clone(),
        model: entry.model.name().to_owned(),
        state: port.state(),
        max_connections: entry.max_connections,
        open: count,
        waiting,
        accepted: counts.accepted,
        refused: crate::port::Refusal::ALL
            .iter()
            .map(|r| (r.name(), counts.refused[*r as usize]))
            .collect(),
        threads: port.stats.threads.load(Ordering::Relaxed),
        workers: entry.workers,
        pool,
        busy: port.stats.busy.load(Ordering::Relaxed),
        children,
        command: crate::exec::of(&*port.plan.service).map(|e| e.program.args.clone()),
        lines: totals.lines,
        lines_per_s,
        replies_per_s,
        p50_ms: window.latency_quantile(0.5).map(|s| s * 1000.0),
        p99_ms: window.latency_quantile(0.99).map(|s| s * 1000.0),
        history: memory.history.iter().copied().collect(),
        memory_kib,
        more_connections: count.saturating_sub(LISTED),
        connections,
        service_stats: stats
            .iter()
            .map(|s| StatView {
                name: s.name,
                value: s.value,
            })
            .collect(),
    }
}
