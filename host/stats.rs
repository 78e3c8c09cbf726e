//! The counters a port keeps on the hot path (accepts, refusals, children, session lengths)
//! and why a client can be refused: written by the port and its listener, read by
//! the metrics module at scrape time. Below both, so that neither reads the other.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use porthost_services::histogram::{Bounds, Histogram, Snapshot};
use porthost_services::meter::Totals;

pub use crate::gate::Refusal;
use crate::lock::lock;

/// Upper bounds of the session duration buckets, in seconds.
pub const SESSION_BUCKETS: Bounds<11> = Bounds::new([
    0.01,
    0.1,
    0.5,
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    f64::INFINITY,
]);

/// What one port counts, beside its connections' own traffic.
#[derive(Debug, Default)]
pub struct PortStats {
    pub accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// OS threads serving this port's connections now.
    pub threads: AtomicI64,
    /// Workers of the port's pool serving a connection now (`thread-pool`); the others wait
    /// for one.
    pub busy: AtomicI64,
    /// Child processes serving this port's connections now (a prefork port's workers).
    pub children: AtomicI64,
    /// A prefork port's workers, by pid, with the connections each has taken.
    workers: Mutex<BTreeMap<u32, u64>>,
    pub forks: AtomicU64,
    /// How children ended: `("code", "0")`, `("signal", "SIGKILL")`.
    exits: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Session durations, on [`SESSION_BUCKETS`].
    sessions: Histogram<11>,
    /// The traffic of connections that have ended.
    closed: Mutex<Totals>,
}

impl PortStats {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn exited(&self, how: &'static str, value: String) {
        *lock(&self.exits).entry((how, value)).or_default() += 1;
    }

    /// A connection ended after `lasted`, having served `traffic`.
    pub fn ended(&self, lasted: Duration, traffic: &Totals) {
        self.sessions.observe(&SESSION_BUCKETS, lasted);
        lock(&self.closed).add(traffic);
    }

    /// The traffic of the connections that have ended.
    pub fn closed_traffic(&self) -> Totals {
        *lock(&self.closed)
    }

    /// A prefork worker was forked.
    pub fn worker_started(&self, pid: u32) {
        if lock(&self.workers).insert(pid, 0).is_none() {
            self.children.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A prefork worker took a connection.
    pub fn worker_serves(&self, pid: u32) {
        if let Some(served) = lock(&self.workers).get_mut(&pid) {
            *served += 1;
        }
    }

    /// A prefork worker was reaped.
    pub fn worker_ended(&self, pid: u32) {
        if lock(&self.workers).remove(&pid).is_some() {
            self.children.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every worker is gone at once (the port is forgotten, or the fork server went away).
    pub fn workers_gone(&self) {
        let mut workers = lock(&self.workers);
        self.children
            .fetch_sub(workers.len() as i64, Ordering::Relaxed);
        workers.clear();
    }

    /// A prefork port's workers now: pid and the connections each has taken, by pid.
    pub fn workers(&self) -> Vec<(u32, u64)> {
        lock(&self.workers).iter().map(|(p, n)| (*p, *n)).collect()
    }

    /// A copy of every counter, for adding up and rendering.
    pub fn counts(&self) -> Counts {
        Counts {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed)),
            forks: self.forks.load(Ordering::Relaxed),
            exits: lock(&self.exits).clone(),
            sessions: self.sessions.snapshot(),
        }
    }
}

/// The counters of a port (or of several entries of one port over reloads), as numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub accepted: u64,
    pub refused: [u64; Refusal::ALL.len()],
    pub forks: u64,
    pub exits: BTreeMap<(&'static str, String), u64>,
    pub sessions: Snapshot<11>,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.accepted += other.accepted;
        for (a, b) in self.refused.iter_mut().zip(&other.refused) {
            *a += b;
        }
        self.forks += other.forks;
        for (key, n) in &other.exits {
            *self.exits.entry(key.clone()).or_default() += n;
        }
        self.sessions.add(&other.sessions);
    }
}
