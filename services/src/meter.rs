//! What a connection served, counted for the host's metrics and live view: bytes in and out,
//! lines, replies, and how long each reply took.
//!
//! Every connection has a [`Traffic`] of its own: plain atomics that only its own thread or
//! task writes (so they never contend) and the host reads when it samples. The host adds up
//! the open connections' and keeps the closed ones' totals per port. The framing helpers of
//! this crate count for the services that use them; a service with its own framing (like
//! `palindrome-v1`) calls [`Meter::lines`] and [`Meter::replied`] itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::histogram::{Bounds, Histogram, Snapshot};

/// Upper bounds of the reply latency buckets, in seconds: from a fast loopback reply to a
/// client stalled behind a queue.
pub const LATENCY_BUCKETS: Bounds<17> = Bounds::new([
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
    f64::INFINITY,
]);

/// One connection's counts. Only its own connection writes them.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub lines: AtomicU64,
    pub replies: AtomicU64,
    /// Replies by latency, on [`LATENCY_BUCKETS`].
    pub latency: Histogram<17>,
}

/// A plain copy of [`Traffic`], to add up, subtract and send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub lines: u64,
    pub replies: u64,
    pub latency: Snapshot<17>,
}

impl Traffic {
    pub fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            lines: get(&self.lines),
            replies: get(&self.replies),
            latency: self.latency.snapshot(),
        }
    }
}

impl Traffic {
    /// Sets the counts to `totals`: what a connection served elsewhere (a child process) and
    /// reported.
    pub fn store(&self, totals: &Totals) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.bytes_in, totals.bytes_in);
        set(&self.bytes_out, totals.bytes_out);
        set(&self.lines, totals.lines);
        set(&self.replies, totals.replies);
        self.latency.store(&totals.latency);
    }
}

impl Totals {
    /// Adds `other` into these totals.
    pub fn add(&mut self, other: &Totals) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.lines += other.lines;
        self.replies += other.replies;
        self.latency.add(&other.latency);
    }

    /// What happened between `earlier` and these totals.
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            lines: self.lines.saturating_sub(earlier.lines),
            replies: self.replies.saturating_sub(earlier.replies),
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// The latency below which a share `q` (0.5, 0.99) of the replies fell, as the upper bound
    /// of its bucket; `None` without replies.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        self.latency.quantile(&LATENCY_BUCKETS, q)
    }
}

/// Hands a connection's traffic to the host, where it cannot read it (a child process).
pub type Report = Arc<dyn Fn(&Traffic) + Send + Sync>;

/// Where a connection's service counts what it serves.
#[derive(Clone, Default)]
pub struct Meter {
    traffic: Arc<Traffic>,
    /// Called after a reply with the traffic so far, where the host cannot read `traffic`
    /// itself (a process-per-client child): it forwards it now and then.
    report: Option<Report>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("traffic", &self.traffic)
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// A meter counting into `traffic`, which the host reads.
    pub fn new(traffic: Arc<Traffic>) -> Meter {
        Meter {
            traffic,
            report: None,
        }
    }

    /// A meter that also hands its traffic to `report` after each reply.
    pub fn reporting(traffic: Arc<Traffic>, report: Report) -> Meter {
        Meter {
            traffic,
            report: Some(report),
        }
    }

    pub fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }

    /// `n` bytes were read from the client.
    pub fn received(&self, n: usize) {
        self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` request lines were framed; returns now, for [`Meter::replied`].
    pub fn lines(&self, n: u64) -> Instant {
        self.traffic.lines.fetch_add(n, Ordering::Relaxed);
        Instant::now()
    }

    /// A reply of `n` bytes was written; `since` is when the line it answers was framed, if
    /// it answers one (a message pushed by another client does not).
    pub fn replied(&self, n: usize, since: Option<Instant>) {
        let t = &self.traffic;
        t.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        t.replies.fetch_add(1, Ordering::Relaxed);
        if let Some(since) = since {
            t.latency.observe(&LATENCY_BUCKETS, since.elapsed());
        }
        if let Some(report) = &self.report {
            report(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        let meter = Meter::default();
        meter.received(10);
        let since = meter.lines(2);
        meter.replied(4, Some(since));
        meter.replied(3, None);
        let totals = meter.traffic().totals();
        assert_eq!(
            (
                totals.bytes_in,
                totals.lines,
                totals.replies,
                totals.bytes_out
            ),
            (10, 2, 2, 7)
        );
        assert_eq!(totals.latency.count(), 1);
        assert!(totals.latency_quantile(0.5).unwrap() <= 0.001);
        let mut sum = totals;
        sum.add(&totals);
        assert_eq!(sum.since(&totals), totals);
        assert_eq!(Totals::default().latency_quantile(0.99), None);
    }
}
