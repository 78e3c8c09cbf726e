//! A port's admission rules and the counts they need ([`Gate`]), apart from any socket, lock or
//! clock, so that whoever accepts (the host's accept loop through [`crate::port::Port::admit`],
//! or a process that accepts on its own) decides with the same code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::access::Access;
use crate::rate_limit::{ConnectionRate, Rate};

/// Why a client is turned away before any service code runs: the line it gets (if any), then
/// a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// Its address already has `max_connections_per_ip` connections open.
    TooManyFromAddress = 0,
    /// `allow`/`deny` do not let its address in.
    AccessDenied = 1,
    /// Its address opened more than `max_connection_rate_per_ip` allows.
    TooFast = 2,
    /// On a `proxy_protocol` port: the connection is not from a trusted proxy.
    UntrustedProxy = 3,
    /// On a `proxy_protocol` port: no valid PROXY header came in time.
    BadProxyHeader = 4,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::TooManyFromAddress,
        Refusal::AccessDenied,
        Refusal::TooFast,
        Refusal::UntrustedProxy,
        Refusal::BadProxyHeader,
    ];

    /// The line the client gets. A connection that is not a client at all (not from the
    /// proxy, or a proxy that said nothing usable) gets nothing.
    pub fn reply(self) -> &'static [u8] {
        match self {
            Refusal::TooManyFromAddress => b"ERR too many connections from your address\n",
            Refusal::AccessDenied => b"ERR access denied\n",
            Refusal::TooFast => {
                b"ERR too many new connections from your address; try again later\n"
            }
            Refusal::UntrustedProxy | Refusal::BadProxyHeader => b"",
        }
    }

    /// The `reason` label of the refused-connections metric.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::TooManyFromAddress => "per_address_limit",
            Refusal::AccessDenied => "access_denied",
            Refusal::TooFast => "rate_limit",
            Refusal::UntrustedProxy => "untrusted_proxy",
            Refusal::BadProxyHeader => "bad_proxy_header",
        }
    }
}

/// A port's admission rules as its entry states them: what a [`Gate`] is built from, in the
/// host or in the fork server (which gets them over its channel, hence serializable).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    pub access: Access,
    pub rate: Option<Rate>,
    pub max_connections: usize,
    pub per_ip_limit: Option<usize>,
}

impl Rules {
    /// The rules of a port's entry.
    pub fn of(entry: &crate::config::PortEntry) -> Rules {
        Rules {
            access: entry.edge.access.clone(),
            rate: entry.edge.rate,
            max_connections: entry.max_connections,
            per_ip_limit: entry.max_connections_per_ip,
        }
    }
}

/// What a port lets in: `max_connections`, `max_connections_per_ip`, `allow`/`deny` and
/// `max_connection_rate_per_ip`, with the counts of what it has let in. Every admitted
/// connection holds a [`Pass`] and gives it back through [`Gate::leave`].
///
/// `max_connections` is not a refusal: a full port takes no one else until a connection
/// leaves, and the clients above the limit wait in the listen backlog. [`Gate::is_full`] says
/// so to an accept loop that polls; the host's loop waits on a semaphore with the same limit.
#[derive(Debug)]
pub struct Gate {
    access: Access,
    rate: Option<ConnectionRate>,
    max_connections: usize,
    per_ip_limit: Option<usize>,
    open: usize,
    /// Open connections per client address, kept only with a `per_ip_limit`.
    per_ip: HashMap<IpAddr, usize>,
}

/// An admitted connection's hold on its [`Gate`]: give it back with [`Gate::leave`].
#[derive(Debug)]
#[must_use = "a pass not given back keeps its connection counted"]
pub struct Pass {
    /// The address counted against `max_connections_per_ip`, if there is a limit.
    counted: Option<IpAddr>,
}

impl Gate {
    pub fn new(rules: Rules) -> Gate {
        let Rules {
            access,
            rate,
            max_connections,
            per_ip_limit,
        } = rules;
        Gate {
            access,
            rate: rate.map(|rate| ConnectionRate::new(rate, ConnectionRate::DEFAULT_CAPACITY)),
            max_connections,
            per_ip_limit,
            open: 0,
            per_ip: HashMap::new(),
        }
    }

    /// The gate of a port's entry.
    pub fn of(entry: &crate::config::PortEntry) -> Gate {
        Gate::new(Rules::of(entry))
    }

    /// Whether the port holds `max_connections` connections, and so takes no one else now.
    pub fn is_full(&self) -> bool {
        self.open >= self.max_connections
    }

    pub fn open(&self) -> usize {
        self.open
    }

    /// Lets a client from `ip` in, or says why not: its address must be allowed, not over its
    /// rate of new connections, and not over its number of open ones, checked in that order
    /// (a denied address spends no token, a client over its rate takes no place).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Pass, Refusal> {
        // An IPv4 client is IPv4 however it arrived (`::ffff:a.b.c.d` on a `::` listener).
        let ip = ip.to_canonical();
        if !self.access.is_open() && !self.access.check(ip).allowed {
            return Err(Refusal::AccessDenied);
        }
        if let Some(rate) = &mut self.rate
            && !rate.admit(ip, now)
        {
            return Err(Refusal::TooFast);
        }
        let counted = match self.per_ip_limit {
            None => None,
            Some(limit) => {
                let count = self.per_ip.entry(ip).or_default();
                if *count >= limit {
                    return Err(Refusal::TooManyFromAddress);
                }
                *count += 1;
                Some(ip)
            }
        };
        self.open += 1;
        Ok(Pass { counted })
    }

    /// Gives an admitted connection's place back.
    pub fn leave(&mut self, pass: Pass) {
        self.open -= 1;
        if let Some(ip) = pass.counted
            && let Some(count) = self.per_ip.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// How many addresses the gate remembers: rate buckets and per-address counts.
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.rate.as_ref().map_or(0, ConnectionRate::len),
            self.per_ip.len(),
        )
    }

    /// Forgets the rate buckets that have filled up again (see [`ConnectionRate::forget_idle`]).
    pub fn forget_idle(&mut self, now: Instant) {
        if let Some(rate) = &mut self.rate {
            rate.forget_idle(now);
        }
    }

    /// How long after its last connection an address's rate bucket is full again, if there is a
    /// rate: how often [`Gate::forget_idle`] is worth calling.
    pub fn idle_after(&self) -> Option<Duration> {
        self.rate.as_ref().map(ConnectionRate::idle_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessLists;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn open_gate(max: usize, per_ip: Option<usize>, rate: Option<Rate>) -> Gate {
        Gate::new(Rules {
            access: Access::default(),
            rate,
            max_connections: max,
            per_ip_limit: per_ip,
        })
    }

    #[test]
    fn per_address_places_are_counted_and_given_back() {
        let mut gate = open_gate(10, Some(2), None);
        let now = Instant::now();
        let a = gate.admit(ip("10.0.0.1"), now).unwrap();
        let b = gate.admit(ip("10.0.0.1"), now).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // The mapped form is the same client.
        assert_eq!(
            gate.admit(ip("::ffff:10.0.0.1"), now).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let other = gate.admit(ip("10.0.0.2"), now).unwrap();
        assert_eq!(gate.open(), 3);
        gate.leave(a);
        let c = gate.admit(ip("10.0.0.1"), now).unwrap();
        for pass in [b, c, other] {
            gate.leave(pass);
        }
        assert_eq!(gate.open(), 0);
        assert_eq!(gate.remembered(), (0, 0));
    }

    #[test]
    fn max_connections_fills_the_gate_without_refusing() {
        let mut gate = open_gate(2, None, None);
        let now = Instant::now();
        let a = gate.admit(ip("10.0.0.1"), now).unwrap();
        assert!(!gate.is_full());
        let b = gate.admit(ip("10.0.0.1"), now).unwrap();
        assert!(gate.is_full());
        gate.leave(a);
        assert!(!gate.is_full());
        gate.leave(b);
        assert_eq!(
            gate.remembered(),
            (0, 0),
            "no per-address counts without a limit"
        );
    }

    #[test]
    fn a_denied_address_spends_no_token_and_a_fast_one_takes_no_place() {
        let port =
            AccessLists::parse(Some(&["10.0.0.0/8"][..]), Some(&["10.9.0.0/16"][..])).unwrap();
        let access = Access::new(&AccessLists::default(), &port);
        let mut gate = Gate::new(Rules {
            access,
            rate: Some(Rate::new(1.0, 1).unwrap()),
            max_connections: 10,
            per_ip_limit: Some(1),
        });
        let now = Instant::now();
        assert_eq!(
            gate.admit(ip("192.168.0.1"), now).unwrap_err(),
            Refusal::AccessDenied
        );
        assert_eq!(
            gate.admit(ip("10.9.0.1"), now).unwrap_err(),
            Refusal::AccessDenied
        );
        assert_eq!(gate.remembered(), (0, 0));
        let first = gate.admit(ip("10.0.0.1"), now).unwrap();
        gate.leave(first);
        assert_eq!(
            gate.admit(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::TooFast
        );
        assert_eq!(gate.open(), 0);
        assert_eq!(gate.remembered(), (1, 0));
        let later = now + Duration::from_secs(1);
        let again = gate.admit(ip("10.0.0.1"), later).unwrap();
        gate.leave(again);
        gate.forget_idle(later + gate.idle_after().unwrap());
        assert_eq!(gate.remembered(), (0, 0));
    }
}
