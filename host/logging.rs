//! Where the host's words go: logs on stderr, the plan on stdout. Nothing written here may
//! take the host down: a reader that went away (`porthost run | tee log`, then Ctrl-C) turns
//! every write into an error, and an error here is counted and dropped, never a panic. Panics
//! elsewhere are logged like any other event, inside the span of the connection they ended.
//! Nor can a flood of events fill the disk: [`LogBudget`] holds lines about them to a rate.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Writes to stderr or stdout that failed and were dropped.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines and printed lines could not be written.
pub fn dropped_writes() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A writer that never fails: what cannot be written is counted and dropped.
#[derive(Debug)]
struct Forgiving<W>(W);

impl<W: Write> Write for Forgiving<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: one line an event, the span's fields in front.
    Text,
    /// For log shippers: one JSON object a line, with the span's fields
    /// (`"span":{"port":7004,"service":...,"peer":...}`).
    Json,
}

/// Tells the fork server (a program of its own) how the host logs.
pub const FORMAT_ENV: &str = "PORTHOST_LOG_FORMAT";

impl Format {
    /// What the host asked for, in a process it started.
    pub fn from_env() -> Format {
        match std::env::var(FORMAT_ENV).as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Text,
        }
    }

    /// How [`Format::from_env`] reads it.
    pub fn env_value(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// Logs to stderr at the level `RUST_LOG` asks for (info by default).
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Forgiving(std::io::stderr()))
        // Its own complaint about a failed write goes to stderr with `eprintln!`, which panics
        // when stderr is gone.
        .log_internal_errors(false);
    let _ = match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    install_panic_hook();
}

/// Prints to stdout; a stdout nobody reads any more is not the host's problem.
pub fn print(text: &str) {
    let mut out = Forgiving(std::io::stdout().lock());
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Logs panics as errors through `tracing`, so that a panic in service code shows up with the
/// connection's port, service, model and peer, and never writes to a stderr that may be gone.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(log_panic));
}

/// Like [`install_panic_hook`], keeping the hook that was there (in a test binary, the one
/// that shows a failed assertion), once per process.
#[cfg(feature = "testing")]
pub fn install_test_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log_panic(info);
            previous(info);
        }));
    });
}

fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    match PANIC_SPAN.get() {
        // A forked child logs in its connection's span, built only now that it is needed.
        Some(span) if tracing::Span::current().is_none() => {
            span().in_scope(|| tracing::error!("panicked{location}: {message}"));
        }
        _ => tracing::error!("panicked{location}: {message}"),
    }
}

/// Where a panic outside any span finds the span it belongs in: a process-per-client child
/// builds its connection's span only when it has something to log (see
/// [`crate::models::fork_server`]), and a panic is such a thing.
static PANIC_SPAN: std::sync::OnceLock<fn() -> tracing::Span> = std::sync::OnceLock::new();

/// Sets, once per process, where [`PANIC_SPAN`] comes from.
pub fn set_panic_span(span: fn() -> tracing::Span) {
    let _ = PANIC_SPAN.set(span);
}

/// At most `lines` log lines per `interval`; the events past that are counted, and the count
/// comes back once as a [`Suppressed`] summary ("… and K more refused") when the interval is
/// over. So a flood of refused clients writes at most `lines + 1` lines per interval.
///
/// Intervals start with the first event after a quiet spell, not on a fixed grid.
#[derive(Debug)]
pub struct LogBudget {
    lines: u32,
    interval: Duration,
    /// The start of the current interval; `None` when no interval is running.
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether to log this event's own line.
    pub log: bool,
    /// The previous interval's summary, to log first, if it held back any lines.
    pub summary: Option<Suppressed>,
}

/// How many lines an interval held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub count: u64,
    /// The interval they fell in, for the message ("in the last 10 s").
    pub interval: Duration,
}

impl LogBudget {
    pub fn new(lines: u32, interval: Duration) -> LogBudget {
        LogBudget {
            lines,
            interval,
            started: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Counts one event at `now` and says whether to log it.
    pub fn event(&mut self, now: Instant) -> Verdict {
        let summary = self.flush(now);
        if self.started.is_none() {
            self.started = Some(now);
        }
        let log = self.logged < self.lines;
        if log {
            self.logged += 1;
        } else {
            self.suppressed += 1;
        }
        Verdict { log, summary }
    }

    /// Ends the current interval if it is over, and returns its summary if it held back any
    /// lines. Call it at [`LogBudget::due`] so that the count of a flood that has stopped is
    /// still logged; [`LogBudget::event`] calls it too.
    pub fn flush(&mut self, now: Instant) -> Option<Suppressed> {
        let started = self.started?;
        if now.saturating_duration_since(started) < self.interval {
            return None;
        }
        self.started = None;
        self.logged = 0;
        let count = std::mem::take(&mut self.suppressed);
        (count > 0).then_some(Suppressed {
            count,
            interval: self.interval,
        })
    }

    /// When a summary will be ready to [`flush`](LogBudget::flush); `None` while nothing is
    /// held back.
    pub fn due(&self) -> Option<Instant> {
        match self.started {
            Some(started) if self.suppressed > 0 => Some(started + self.interval),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_log_budget_logs_n_lines_then_summarises() {
        let t0 = Instant::now();
        let mut budget = LogBudget::new(3, Duration::from_secs(10));
        let logged: Vec<bool> = (0..10).map(|i| budget.event(t0 + ms(i)).log).collect();
        assert_eq!(
            logged,
            [
                true, true, true, false, false, false, false, false, false, false
            ]
        );
        assert_eq!(budget.due(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            budget.flush(t0 + Duration::from_secs(9)),
            None,
            "not over yet"
        );
        // The next event after the interval brings the summary and is logged itself.
        let v = budget.event(t0 + Duration::from_secs(10));
        assert_eq!(
            v,
            Verdict {
                log: true,
                summary: Some(Suppressed {
                    count: 7,
                    interval: Duration::from_secs(10)
                })
            }
        );
        assert_eq!(budget.due(), None, "nothing held back in the new interval");
    }

    #[test]
    fn a_flood_that_stops_is_summarised_by_flush() {
        let t0 = Instant::now();
        let mut budget = LogBudget::new(1, Duration::from_secs(1));
        assert!(budget.event(t0).log);
        for i in 1..=1000 {
            assert!(!budget.event(t0 + Duration::from_micros(i)).log);
        }
        let due = budget.due().unwrap();
        assert_eq!(
            budget.flush(due),
            Some(Suppressed {
                count: 1000,
                interval: Duration::from_secs(1)
            })
        );
        assert_eq!(
            budget.flush(due + Duration::from_secs(5)),
            None,
            "only once"
        );
        assert_eq!(budget.due(), None);
        // A quiet spell, then one event: a fresh interval, logged, no summary.
        let v = budget.event(due + Duration::from_secs(30));
        assert_eq!(
            v,
            Verdict {
                log: true,
                summary: None
            }
        );
    }

    #[test]
    fn a_zero_budget_only_summarises() {
        let t0 = Instant::now();
        let mut budget = LogBudget::new(0, Duration::from_secs(1));
        assert!(!budget.event(t0).log);
        assert!(!budget.event(t0).log);
        assert_eq!(budget.flush(t0 + Duration::from_secs(1)).unwrap().count, 2);
    }
}
