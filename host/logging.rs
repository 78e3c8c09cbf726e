//! Where the host's words go: logs on stderr, the plan on stdout. Nothing written here may
//! take the host down: a reader that went away (`porthost run | tee log`, then Ctrl-C) turns
//! every write into an error, and an error here is counted and dropped, never a panic. Panics
//! elsewhere are logged like any other event, inside the span of the connection they ended.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    tracing::error!("panicked{location}: {message}");
}
