//! The range of every number a config may hold. Wide enough for any real use, narrow enough
//! that nothing the host computes from them (deadlines, buffer sizes, permit counts) can
//! overflow; a value outside is a config error with its line and the allowed range.

/// One numeric key and the whole numbers it accepts.
#[derive(Debug)]
pub struct Bound {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// What the number counts, for messages: "seconds", "bytes", "connections".
    pub unit: &'static str,
}

/// A week: longer than any client should sit silent.
pub const IDLE_TIMEOUT_SECS: Bound = Bound {
    key: "idle_timeout_secs",
    min: 0,
    max: 7 * 24 * 3600,
    unit: "seconds",
};

/// An hour: a drain longer than that is a hang.
pub const SHUTDOWN_GRACE_SECS: Bound = Bound {
    key: "shutdown_grace_secs",
    min: 0,
    max: 3600,
    unit: "seconds",
};

/// A line is buffered whole, so this bounds the memory of every client.
pub const MAX_LINE_BYTES: Bound = Bound {
    key: "max_line_bytes",
    min: 1,
    max: 16 * 1024 * 1024,
    unit: "bytes",
};

/// More connections than one machine's descriptors could hold.
pub const MAX_CONNECTIONS: Bound = Bound {
    key: "max_connections",
    min: 1,
    max: 1_000_000,
    unit: "connections",
};

pub const MAX_CONNECTIONS_PER_IP: Bound = Bound {
    key: "max_connections_per_ip",
    min: 1,
    max: 1_000_000,
    unit: "connections",
};

/// A thread pool's `workers`: each thread is a stack of its own, and the pool never shrinks.
pub const WORKER_THREADS: Bound = Bound {
    key: "workers",
    min: 1,
    max: 1024,
    unit: "threads",
};

/// A prefork port's `workers`: each is a process of its own, forked at start and kept.
pub const WORKER_PROCESSES: Bound = Bound {
    key: "workers",
    min: 1,
    max: 256,
    unit: "processes",
};

/// `max_connections_per_worker`: a prefork worker is replaced after serving this many.
pub const CONNECTIONS_PER_WORKER: Bound = Bound {
    key: "max_connections_per_worker",
    min: 1,
    max: 1_000_000_000,
    unit: "connections",
};

impl Bound {
    /// The number, or a message that says what is allowed.
    pub fn check(&self, value: &toml::Value) -> Result<u64, String> {
        match value {
            toml::Value::Integer(n) => u64::try_from(*n)
                .ok()
                .filter(|n| (self.min..=self.max).contains(n))
                .ok_or_else(|| self.expected(&n.to_string())),
            other => Err(self.expected(&describe(other))),
        }
    }

    fn expected(&self, got: &str) -> String {
        format!(
            "{} must be a whole number of {} from {} to {}, not {got}",
            self.key, self.unit, self.min, self.max
        )
    }
}

/// A TOML value as a message names it: `the string "300"`, `1.5`, `an array`.
pub fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// A checked number as a count; every bound fits in `usize`.
pub fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_range_pass_and_the_rest_say_what_is_allowed() {
        let b = &IDLE_TIMEOUT_SECS;
        assert_eq!(b.check(&toml::Value::Integer(0)), Ok(0));
        assert_eq!(b.check(&toml::Value::Integer(604_800)), Ok(604_800));
        let expected = "idle_timeout_secs must be a whole number of seconds from 0 to 604800, not";
        for (value, shown) in [
            (toml::Value::Integer(604_801), "604801"),
            (toml::Value::Integer(-1), "-1"),
            (toml::Value::Integer(i64::MAX), "9223372036854775807"),
            (toml::Value::Float(1.5), "1.5"),
            (toml::Value::String("300".into()), "the string \"300\""),
        ] {
            assert_eq!(b.check(&value), Err(format!("{expected} {shown}")));
        }
    }
}
