//! `porthost bench --drive ADDR,...`: the load generator the live page starts (the host runs
//! it as a process of its own, see `porthost::admin::drive`). N clients for T seconds,
//! spread over the addresses: `sessions` clients stay connected and send line after line,
//! `churn` clients connect, send one line, leave and start again. Every line the server sends
//! back counts as a reply. A JSON line a second on stdout says how it goes; the last one says
//! `"done":true`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use porthost::admin::drive::{MAX_CLIENTS, MAX_SECONDS, Progress, Workload};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// What a driven client sends: a palindrome, which every shipped line service answers.
const LINE: &[u8] = b"abba\n";

/// How long a client waits for a reply before it counts an error and tries again.
const PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Counts {
    replies: AtomicU64,
    connections: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn progress(&self, elapsed: Duration, done: bool) -> Progress {
        Progress {
            elapsed: elapsed.as_secs_f64(),
            replies: self.replies.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            done,
        }
    }
}

/// Runs the load and prints its progress.
pub fn main(
    addrs: &[String],
    clients: u32,
    seconds: u32,
    workload: Workload,
) -> anyhow::Result<()> {
    if !(1..=MAX_CLIENTS).contains(&clients) || !(1..=MAX_SECONDS).contains(&seconds) {
        bail!("--drive-clients must be 1 to {MAX_CLIENTS} and --drive-seconds 1 to {MAX_SECONDS}");
    }
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("--drive {a:?} is not HOST:PORT"))
        })
        .collect::<anyhow::Result<_>>()?;
    if addrs.is_empty() {
        bail!("--drive needs at least one address");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let end = started + Duration::from_secs(u64::from(seconds));
        let mut clients_running = Vec::new();
        for i in 0..clients as usize {
            let addr = addrs[i % addrs.len()];
            let counts = counts.clone();
            clients_running.push(tokio::spawn(async move {
                match workload {
                    Workload::Sessions => session(addr, &counts, end).await,
                    Workload::Churn => churn(addr, &counts, end).await,
                }
            }));
        }
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        while Instant::now() < end {
            ticks.tick().await;
            report(&counts.progress(started.elapsed(), false));
        }
        for client in clients_running {
            let _ = client.await;
        }
        report(&counts.progress(started.elapsed(), true));
    });
    Ok(())
}

fn report(progress: &Progress) {
    if let Ok(line) = serde_json::to_string(progress) {
        porthost::logging::print(&format!("{line}\n"));
    }
}

/// One connection for the whole run, line after line; connects again if it is closed.
async fn session(addr: SocketAddr, counts: &Counts, end: Instant) {
    while Instant::now() < end {
        let Some(mut stream) = connect(addr, counts).await else {
            continue;
        };
        let (read, mut write) = stream.split();
        let mut replies = BufReader::new(read);
        let mut line = Vec::new();
        while Instant::now() < end {
            if !ask(&mut write, &mut replies, &mut line, counts).await {
                break;
            }
        }
    }
}

/// Connect, one line, leave, again.
async fn churn(addr: SocketAddr, counts: &Counts, end: Instant) {
    let mut line = Vec::new();
    while Instant::now() < end {
        let Some(mut stream) = connect(addr, counts).await else {
            continue;
        };
        let (read, mut write) = stream.split();
        let mut replies = BufReader::new(read);
        ask(&mut write, &mut replies, &mut line, counts).await;
    }
}

async fn connect(addr: SocketAddr, counts: &Counts) -> Option<TcpStream> {
    match timeout(PATIENCE, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            counts.connections.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        _ => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            // A refused or unreachable port: do not spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Sends a line and reads one back; `false` when the connection is no good any more.
async fn ask(
    write: &mut tokio::net::tcp::WriteHalf<'_>,
    replies: &mut BufReader<tokio::net::tcp::ReadHalf<'_>>,
    line: &mut Vec<u8>,
    counts: &Counts,
) -> bool {
    line.clear();
    let answered = async {
        write.write_all(LINE).await?;
        replies.read_until(b'\n', line).await
    };
    match timeout(PATIENCE, answered).await {
        Ok(Ok(n)) if n > 0 => {
            counts.replies.fetch_add(1, Ordering::Relaxed);
            true
        }
        _ => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}
