//! A program's stderr into the host's log: one log line per line it writes, inside the
//! connection's span (port, service, model, peer) and with its pid; bounded so that a program
//! writing megabytes fills neither the disk nor the host's memory. Lines longer than
//! [`MAX_LINE`] are cut; past [`BUDGET`] lines in an interval the rest are read and dropped,
//! then counted in one line. The pipe is always read, so the program never blocks on it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::info;

use crate::logging::LogBudget;

/// The longest line logged; the rest of a longer one is dropped, and the line says so.
pub const MAX_LINE: usize = 1024;

/// At most this many lines per this interval, per program.
pub const BUDGET: (u32, Duration) = (50, Duration::from_secs(10));

/// Logs what `pipe` carries until it ends. `pid` says which program wrote it, once known.
pub async fn log(mut pipe: impl AsyncRead + Unpin, pid: impl Fn() -> Option<u32>) {
    let mut budget = LogBudget::new(BUDGET.0, BUDGET.1);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    // Bytes of the current line past `MAX_LINE`, dropped.
    let mut cut = 0usize;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for chunk in buf[..n].split_inclusive(|&b| b == b'\n') {
            let (text, ends) = match chunk.split_last() {
                Some((b'\n', text)) => (text, true),
                _ => (chunk, false),
            };
            let room = MAX_LINE - line.len();
            line.extend_from_slice(&text[..text.len().min(room)]);
            cut = cut.saturating_add(text.len().saturating_sub(room));
            if ends {
                emit(&mut budget, &line, cut, &pid);
                line.clear();
                cut = 0;
            }
        }
    }
    if !line.is_empty() || cut > 0 {
        emit(&mut budget, &line, cut, &pid);
    }
    if let Some(held) = budget.flush(Instant::now() + BUDGET.1) {
        info!(
            pid = pid(),
            "stderr: {} more lines dropped (at most {} per {:?})", held.count, BUDGET.0, BUDGET.1
        );
    }
}

fn emit(budget: &mut LogBudget, line: &[u8], cut: usize, pid: &impl Fn() -> Option<u32>) {
    let verdict = budget.event(Instant::now());
    if let Some(held) = verdict.summary {
        info!(
            pid = pid(),
            "stderr: {} more lines dropped (at most {} per {:?})", held.count, BUDGET.0, BUDGET.1
        );
    }
    if !verdict.log {
        return;
    }
    let text = String::from_utf8_lossy(line);
    if cut > 0 {
        info!(pid = pid(), "stderr: {text}... ({cut} more bytes cut)");
    } else {
        info!(pid = pid(), "stderr: {text}");
    }
}
