//! A histogram of durations that the hot path fills lock-free and the host reads when it
//! samples: each connection's reply latency ([`crate::meter`]) and each port's session
//! lengths (the host's port counters) are one.
//!
//! [`Histogram`] is the live one, plain atomics that one writer adds to; [`Snapshot`] is a copy
//! as numbers, to add up, subtract, send and render.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of a histogram's `N` buckets, in seconds, ascending, the last `+Inf` so
/// that every duration has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds<const N: usize>([f64; N]);

impl<const N: usize> Bounds<N> {
    /// Bounds from `bounds`, which must ascend and end with `f64::INFINITY`.
    pub const fn new(bounds: [f64; N]) -> Bounds<N> {
        assert!(
            N > 0 && bounds[N - 1] == f64::INFINITY,
            "the last bound is +Inf"
        );
        Bounds(bounds)
    }

    /// The bucket `took` falls in: the first whose bound it does not pass.
    pub fn bucket(&self, took: Duration) -> usize {
        let seconds = took.as_secs_f64();
        self.0
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(N - 1)
    }
}

/// Durations counted by bucket of some [`Bounds`] (not cumulative) and added up in
/// nanoseconds: two relaxed atomic adds per duration, no lock.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    counts: [AtomicU64; N],
    sum_nanos: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Counts one duration.
    pub fn observe(&self, bounds: &Bounds<N>, took: Duration) {
        self.counts[bounds.bucket(took)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn snapshot(&self) -> Snapshot<N> {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }

    /// Sets the counts to `snapshot`: what was counted elsewhere (a child process) and
    /// reported.
    pub fn store(&self, snapshot: &Snapshot<N>) {
        for (count, &value) in self.counts.iter().zip(&snapshot.counts) {
            count.store(value, Ordering::Relaxed);
        }
        self.sum_nanos.store(snapshot.sum_nanos, Ordering::Relaxed);
    }
}

/// A histogram's counts as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot<const N: usize> {
    /// Durations per bucket, not cumulative: the encoder makes them so when it renders them.
    pub counts: [u64; N],
    pub sum_nanos: u64,
}

impl<const N: usize> Default for Snapshot<N> {
    fn default() -> Self {
        Snapshot {
            counts: [0; N],
            sum_nanos: 0,
        }
    }
}

impl<const N: usize> Snapshot<N> {
    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    pub fn add(&mut self, other: &Snapshot<N>) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_nanos += other.sum_nanos;
    }

    /// What was counted between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot<N>) -> Snapshot<N> {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
        }
    }

    /// The duration below which a share `q` (0.5, 0.99) of those counted fell, as the upper
    /// bound of its bucket; `None` when none was counted.
    pub fn quantile(&self, bounds: &Bounds<N>, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bound, count) in bounds.0.iter().zip(&self.counts) {
            seen += count;
            if seen >= rank {
                return Some(*bound);
            }
        }
        None
    }

    /// `(upper bound, count)` pairs, `+Inf` last, as Prometheus encoders take them.
    pub fn buckets(&self, bounds: &Bounds<N>) -> Vec<(f64, u64)> {
        bounds.0.iter().copied().zip(self.counts).collect()
    }
}

/// A snapshot crosses from a child to the host as its `N` counts and the sum, in that order
/// (serde derives nothing for an array of any length `N`).
impl<const N: usize> serde::Serialize for Snapshot<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(N + 1)?;
        for count in &self.counts {
            tuple.serialize_element(count)?;
        }
        tuple.serialize_element(&self.sum_nanos)?;
        tuple.end()
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Snapshot<N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Numbers<const N: usize>;

        impl<'de, const N: usize> serde::de::Visitor<'de> for Numbers<N> {
            type Value = Snapshot<N>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} bucket counts and a sum", N)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Snapshot<N>, A::Error> {
                let mut snapshot = Snapshot::default();
                for (i, count) in snapshot.counts.iter_mut().enumerate() {
                    *count = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                snapshot.sum_nanos = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(N, &self))?;
                Ok(snapshot)
            }
        }

        deserializer.deserialize_tuple(N + 1, Numbers::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds<3> = Bounds::new([0.001, 1.0, f64::INFINITY]);

    #[test]
    fn durations_land_in_the_first_bucket_they_do_not_pass() {
        let histogram = Histogram::default();
        for millis in [0, 1, 2, 1000, 1001, 60_000] {
            histogram.observe(&BOUNDS, Duration::from_millis(millis));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, [2, 2, 2]);
        assert_eq!(snapshot.sum_nanos, 62_004_000_000);
        assert_eq!(
            snapshot.buckets(&BOUNDS),
            vec![(0.001, 2), (1.0, 2), (f64::INFINITY, 2)]
        );
        assert_eq!(snapshot.quantile(&BOUNDS, 0.5), Some(1.0));
        assert_eq!(snapshot.quantile(&BOUNDS, 0.99), Some(f64::INFINITY));
        assert_eq!(Snapshot::<3>::default().quantile(&BOUNDS, 0.5), None);

        let mut twice = snapshot;
        twice.add(&snapshot);
        assert_eq!(twice.since(&snapshot), snapshot);
        let copy = Histogram::default();
        copy.store(&twice);
        assert_eq!(copy.snapshot(), twice);
    }

    #[test]
    fn a_snapshot_crosses_as_its_numbers_in_order() {
        let snapshot = Snapshot {
            counts: [1, 2, 3],
            sum_nanos: 4,
        };
        let text = toml::to_string(&std::collections::BTreeMap::from([("s", snapshot)])).unwrap();
        assert_eq!(text.trim(), "s = [1, 2, 3, 4]");
        let back: std::collections::BTreeMap<String, Snapshot<3>> = toml::from_str(&text).unwrap();
        assert_eq!(back["s"], snapshot);
        assert!(
            toml::from_str::<std::collections::BTreeMap<String, Snapshot<3>>>("s = [1, 2, 3]")
                .is_err()
        );
    }
}
