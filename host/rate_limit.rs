//! New connections per address ([`ConnectionRate`], for `max_connection_rate_per_ip`), with the
//! clock passed in so tests need no sleeps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A sustained rate with a burst: `burst` connections at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    per_second: f64,
    burst: u32,
}

impl Rate {
    /// The rate, or a message for the config to attach to the value. Fractions are allowed
    /// (`0.1` is one connection every ten seconds).
    pub fn new(per_second: f64, burst: u32) -> Result<Rate, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "the rate must be a positive number of connections per second, not {per_second}"
            ));
        }
        if burst == 0 {
            return Err("the burst must be at least 1 connection".to_owned());
        }
        Ok(Rate { per_second, burst })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long an empty bucket takes to fill up again.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.per_second)
    }
}

/// A token bucket per client address: each new connection takes a token, tokens come back at
/// the rate's pace up to its burst, and a client with none left is refused.
///
/// Memory is bounded: the table holds at most `capacity` addresses. When a new address finds
/// it full, buckets that have filled up again are dropped first (a full bucket is the same as
/// none). If the table is still above seven eighths of its capacity (a flood from more
/// addresses than it holds, all within one refill time), the buckets with the most tokens left
/// are dropped down to that mark: those addresses have used the least of their burst, so
/// forgetting them changes least. A dropped address starts again with a full burst, so a flood
/// from more distinct addresses than `capacity` is limited less strictly, never more: the
/// alternative, refusing addresses the table has no room for, would shut out every new client
/// during such a flood. Each sweep leaves an eighth of the table free, so its cost is spread
/// over that many new addresses.
///
/// IPv4-mapped IPv6 addresses share the IPv4 address's bucket.
#[derive(Debug)]
pub struct ConnectionRate {
    rate: Rate,
    capacity: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// The tokens at `now`. A `now` earlier than the last update (two threads that read the
    /// clock before taking the lock in the other order) adds nothing.
    fn tokens(&self, now: Instant, rate: &Rate) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst))
    }
}

impl ConnectionRate {
    /// Room for this many addresses: about 4 MiB. More than any legitimate crowd of distinct
    /// clients within one refill time.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    pub fn new(rate: Rate, capacity: usize) -> ConnectionRate {
        ConnectionRate {
            rate,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip` at `now`: `true` if it is within the rate.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        if self.buckets.len() >= self.capacity && !self.buckets.contains_key(&ip) {
            self.make_room(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        bucket.tokens = bucket.tokens(now, &rate);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets buckets that have filled up, then, if that was not enough, the fullest ones,
    /// down to seven eighths of the capacity.
    fn make_room(&mut self, now: Instant) {
        let rate = self.rate;
        let full = f64::from(rate.burst);
        self.buckets.retain(|_, b| b.tokens(now, &rate) < full);
        let low_water = self.capacity - (self.capacity / 8).max(1);
        let excess = self.buckets.len().saturating_sub(low_water);
        if excess == 0 {
            return;
        }
        let mut by_tokens: Vec<(f64, IpAddr)> = self
            .buckets
            .iter()
            .map(|(ip, b)| (b.tokens(now, &rate), *ip))
            .collect();
        by_tokens.select_nth_unstable_by(excess - 1, |a, b| b.0.total_cmp(&a.0));
        for (_, ip) in &by_tokens[..excess] {
            self.buckets.remove(ip);
        }
    }

    /// Drops every bucket that has filled up again; for a periodic tidy-up, so that a table
    /// that once held a flood gives its memory back even if no new address ever fills it.
    pub fn forget_idle(&mut self, now: Instant) {
        let rate = self.rate;
        let full = f64::from(rate.burst);
        self.buckets.retain(|_, b| b.tokens(now, &rate) < full);
        if self.buckets.capacity() > 2 * self.buckets.len().max(64) {
            self.buckets.shrink_to_fit();
        }
    }

    /// How often [`ConnectionRate::forget_idle`] is worth calling: a bucket left alone is
    /// full again after this long.
    pub fn idle_after(&self) -> Duration {
        self.rate.refill_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn rates_are_checked() {
        assert!(Rate::new(0.0, 1).unwrap_err().contains("positive"));
        assert!(Rate::new(-1.0, 1).is_err());
        assert!(Rate::new(f64::NAN, 1).is_err());
        assert!(Rate::new(f64::INFINITY, 1).is_err());
        assert!(Rate::new(1.0, 0).unwrap_err().contains("burst"));
        let r = Rate::new(0.5, 3).unwrap();
        assert_eq!((r.per_second(), r.burst()), (0.5, 3));
        assert_eq!(r.refill_time(), Duration::from_secs(6));
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(2.0, 3).unwrap(), 16);
        let a = ip("192.0.2.1");
        assert!(limit.admit(a, t0));
        assert!(limit.admit(a, t0));
        assert!(limit.admit(a, t0));
        assert!(!limit.admit(a, t0), "the burst is spent");
        assert!(
            !limit.admit(a, t0 + ms(499)),
            "half a second brings one token"
        );
        assert!(limit.admit(a, t0 + ms(500)));
        assert!(!limit.admit(a, t0 + ms(500)));
        // Another address has a bucket of its own.
        assert!(limit.admit(ip("192.0.2.2"), t0 + ms(500)));
        // A long pause refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limit.admit(a, later));
        }
        assert!(!limit.admit(a, later));
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(10.0, 1).unwrap(), 16);
        for i in 0..1000 {
            assert!(limit.admit(ip("::1"), t0 + ms(100 * i)), "connection {i}");
        }
        assert!(!limit.admit(ip("::1"), t0 + ms(100 * 999 + 50)));
    }

    #[test]
    fn ipv4_mapped_addresses_share_the_ipv4_bucket() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1.0, 1).unwrap(), 16);
        assert!(limit.admit(ip("10.1.2.3"), t0));
        assert!(!limit.admit(ip("::ffff:10.1.2.3"), t0));
        assert_eq!(limit.len(), 1);
    }

    #[test]
    fn a_clock_that_steps_back_adds_no_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut limit = ConnectionRate::new(Rate::new(1.0, 1).unwrap(), 16);
        assert!(limit.admit(ip("::1"), t0));
        assert!(!limit.admit(ip("::1"), t0 - Duration::from_secs(5)));
        assert!(!limit.admit(ip("::1"), t0 + ms(999)));
        assert!(limit.admit(ip("::1"), t0 + ms(1000)));
    }

    #[test]
    fn a_flood_from_many_addresses_stays_within_the_capacity() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1.0, 5).unwrap(), 64);
        // A heavy client spends its whole burst first.
        let heavy = ip("198.51.100.7");
        for _ in 0..5 {
            assert!(limit.admit(heavy, t0));
        }
        // Then 10,000 addresses connect once each, all within the same millisecond.
        for i in 0..10_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(
                limit.admit(a, t0 + ms(1)),
                "a first connection is within any burst"
            );
            assert!(limit.len() <= 64);
        }
        // The flood's addresses each have 4 of 5 tokens left, the heavy one none: eviction
        // drops the fullest, so the heavy client is still remembered and still refused.
        assert!(!limit.admit(heavy, t0 + ms(2)));
    }

    #[test]
    fn full_buckets_are_dropped_before_any_other() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1.0, 2).unwrap(), 8);
        for i in 0..8u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limit.admit(a, t0 + Duration::from_secs(u64::from(i))));
        }
        // At t0 + 7.5 s the first seven have refilled (1 s after their one connection); the
        // eighth, which came at 7 s, has not, and a newcomer takes the room of the others.
        assert!(limit.admit(ip("::1"), t0 + Duration::from_secs(7) + ms(500)));
        assert_eq!(limit.len(), 2, "the one still refilling, and the newcomer");
        limit.forget_idle(t0 + Duration::from_secs(60));
        assert!(limit.is_empty());
        assert_eq!(limit.idle_after(), Duration::from_secs(2));
    }

    #[test]
    fn a_capacity_of_one_still_works() {
        let t0 = Instant::now();
        let mut limit = ConnectionRate::new(Rate::new(1.0, 1).unwrap(), 0);
        assert!(limit.admit(ip("::1"), t0));
        assert!(limit.admit(ip("::2"), t0));
        assert_eq!(limit.len(), 1);
    }
}
