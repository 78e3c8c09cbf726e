//! The workloads: load generators that talk to a server over loopback and measure it. Every
//! one has a time budget; what did not finish in it is reported, never waited for or dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, timeout_at};

use porthost::procfs;
use porthost_services::word_guess::protocol::{self, Command, ServerLine};

pub use crate::metric::{Metric, Sample};

/// The lines the palindrome workloads send, with the answers they must get.
const REQUESTS: [(&str, &str); 2] = [("А роза упала на лапу Азора\n", "1"), ("palindrome\n", "")];

/// Longest reply line accepted; protects the bench from a server gone wrong.
const MAX_REPLY: usize = 64 * 1024;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, 600_000_000) as u64
}

/// Reads one reply line before `deadline`: `Ok(None)` when the deadline passed first.
async fn read_reply(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<Option<()>> {
    line.clear();
    match timeout_at(deadline, reader.read_until(b'\n', line)).await {
        Err(_) => Ok(None),
        Ok(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Ok(_)) if line.len() > MAX_REPLY => Err(std::io::Error::other("reply too long")),
        Ok(Ok(_)) => Ok(Some(())),
        Ok(Err(e)) => Err(e),
    }
}

fn reply_is(line: &[u8], want: &str) -> bool {
    line.strip_suffix(b"\n")
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        == Some(want.as_bytes())
}

/// How one session client fared.
#[derive(Debug, Default)]
struct SessionClient {
    /// Latencies of the requests answered, in µs.
    latencies: Vec<u64>,
    /// The request still unanswered when the budget ran out: how long it had waited, in µs.
    pending: Option<u64>,
    first_reply: Option<Duration>,
    error: bool,
    /// The budget ran out before the client was done (`first_reply` tells whether it had
    /// been served at all).
    cut: bool,
}

/// A histogram of latencies some of which are only lower bounds (requests still waiting when
/// the budget ran out, counted with the time they had waited).
struct Censored {
    /// Every value, lower bounds included: what the figures show.
    all: Histogram<u64>,
    /// The exact values only.
    exact: Histogram<u64>,
}

impl Censored {
    fn new() -> Censored {
        Censored {
            all: histogram(),
            exact: histogram(),
        }
    }

    fn record(&mut self, micros: u64) {
        self.all.record(micros).expect("in bounds");
        self.exact.record(micros).expect("in bounds");
    }

    fn record_bound(&mut self, micros: u64) {
        self.all.record(micros).expect("in bounds");
    }

    fn bounds(&self) -> u64 {
        self.all.len() - self.exact.len()
    }

    /// The value at `quantile`, and whether it is only a lower bound. The true value lies
    /// between the value shown and what it would be were every lower bound infinite: the value
    /// at the same rank among the exact values alone, or none if the rank falls among the
    /// bounds. It is exact when both ends agree.
    fn at(&self, quantile: f64) -> (u64, bool) {
        let value = self.all.value_at_quantile(quantile);
        if self.bounds() == 0 {
            return (value, false);
        }
        let rank = (quantile * self.all.len() as f64).ceil().max(1.0);
        if rank > self.exact.len() as f64 {
            return (value, true);
        }
        let upper = self.exact.value_at_quantile(rank / self.exact.len() as f64);
        (value, !self.all.equivalent(value, upper))
    }

    /// The largest value: a lower bound as soon as any value is.
    fn max(&self) -> (u64, bool) {
        (self.all.max(), self.bounds() > 0)
    }
}

/// `sessions`: `clients` connected at once, each sending `lines` lines one at a time and
/// waiting for each answer.
///
/// Clients still waiting when the budget runs out are part of the latency users see: the
/// request each of them had in flight counts with the time it had waited, and a client never
/// answered counts the whole budget as its time to first reply. Figures that such waits reach
/// are marked as lower bounds.
pub async fn sessions(addr: SocketAddr, clients: usize, lines: usize, budget: Duration) -> Sample {
    let (served, elapsed) = serve_sessions(addr, clients, lines, budget).await;
    let tally = Tally::of(&served, budget);
    let mut sample = tally.sample(clients, budget);
    let elapsed = elapsed.min(budget + Duration::from_millis(100));
    sample.set(Metric::ReqPerS, tally.served as f64 / elapsed.as_secs_f64());
    for (metric, quantile) in [
        (Metric::P50Us, 0.5),
        (Metric::P99Us, 0.99),
        (Metric::P999Us, 0.999),
    ] {
        let (value, bound) = tally.latency.at(quantile);
        sample.set_bound(metric, value as f64, bound);
    }
    let (p50, bound) = tally.first.at(0.5);
    sample.set_bound(Metric::FirstReplyP50Ms, p50 as f64 / 1000.0, bound);
    let (max, bound) = tally.first.max();
    sample.set_bound(Metric::FirstReplyMaxMs, max as f64 / 1000.0, bound);
    sample
}

/// `sleep` and `busy`: `clients` connected at once, each sending one line, as a crowd arrives
/// at a server whose every answer takes time. What users see: the time from the moment all
/// are connected to each one's answer, the wait in the server's queue (the listen backlog, a
/// pool's queue, a loop's turn) included, and when the last one got it.
pub async fn burst(addr: SocketAddr, clients: usize, budget: Duration) -> Sample {
    let (served, _) = serve_sessions(addr, clients, 1, budget).await;
    burst_sample(&served, clients, budget)
}

/// The figures of a burst from how each client fared.
fn burst_sample(served: &[SessionClient], clients: usize, budget: Duration) -> Sample {
    let tally = Tally::of(served, budget);
    let mut sample = tally.sample(clients, budget);
    for (metric, quantile) in [(Metric::AnswerP50Ms, 0.5), (Metric::AnswerP99Ms, 0.99)] {
        let (value, bound) = tally.first.at(quantile);
        sample.set_bound(metric, value as f64 / 1000.0, bound);
    }
    let (last, bound) = tally.first.max();
    sample.set_bound(Metric::LastAnswerMs, last as f64 / 1000.0, bound);
    sample
}

/// Runs `clients` session clients of `lines` lines each: how each fared, and how long it took
/// from the moment all were connected.
async fn serve_sessions(
    addr: SocketAddr,
    clients: usize,
    lines: usize,
    budget: Duration,
) -> (Vec<SessionClient>, Duration) {
    let connect_deadline = Instant::now() + budget;
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let start = Arc::new(std::sync::OnceLock::new());
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (barrier, start) = (barrier.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let stream = timeout_at(connect_deadline, TcpStream::connect(addr)).await;
            barrier.wait().await;
            let mut client = SessionClient::default();
            let stream = match stream {
                Ok(Ok(stream)) => stream,
                // Still in a full backlog at the end of the budget: waiting, not broken.
                Err(_) => {
                    client.cut = true;
                    return client;
                }
                Ok(Err(_)) => {
                    client.error = true;
                    return client;
                }
            };
            let _ = stream.set_nodelay(true);
            let started: Instant = *start.get().expect("set before the barrier opens");
            let deadline = started + budget;
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut line = Vec::new();
            for i in 0..lines {
                let (request, answer) = REQUESTS[i % 2];
                let sent = Instant::now();
                let replied = match timeout_at(deadline, write.write_all(request.as_bytes())).await
                {
                    Err(_) => Ok(None),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => read_reply(&mut reader, &mut line, deadline).await,
                };
                match replied {
                    Ok(Some(())) if reply_is(&line, answer) => {
                        let now = Instant::now();
                        client.first_reply.get_or_insert(now - started);
                        client.latencies.push(micros(now - sent));
                    }
                    Ok(None) => {
                        client.pending = Some(micros(sent.elapsed()));
                        client.cut = true;
                        break;
                    }
                    _ => {
                        client.error = true;
                        break;
                    }
                }
            }
            client
        }));
    }
    start.set(Instant::now()).expect("set once");
    barrier.wait().await;
    let started = *start.get().expect("set");
    let mut served = Vec::with_capacity(clients);
    for task in tasks {
        served.push(task.await.unwrap_or_else(|_| SessionClient {
            error: true,
            ..SessionClient::default()
        }));
    }
    (served, started.elapsed())
}

/// Session clients summed up: every latency and first reply, the waits cut short by the budget
/// as lower bounds.
struct Tally {
    latency: Censored,
    first: Censored,
    errors: u64,
    /// Requests answered.
    served: u64,
    /// Clients never answered at all.
    waiting: usize,
    /// Clients the budget cut short, answered or not.
    cut: usize,
}

impl Tally {
    fn of(clients: &[SessionClient], budget: Duration) -> Tally {
        let mut tally = Tally {
            latency: Censored::new(),
            first: Censored::new(),
            errors: 0,
            served: 0,
            waiting: 0,
            cut: 0,
        };
        for client in clients {
            tally.served += client.latencies.len() as u64;
            for l in &client.latencies {
                tally.latency.record(*l);
            }
            if let Some(pending) = client.pending {
                tally.latency.record_bound(pending);
            }
            match client.first_reply {
                Some(f) => tally.first.record(micros(f)),
                None if client.cut => tally.first.record_bound(micros(budget)),
                None => {}
            }
            tally.errors += u64::from(client.error);
            if client.cut {
                tally.cut += 1;
                tally.waiting += usize::from(client.first_reply.is_none());
            }
        }
        tally
    }

    /// What every session workload reports: errors, requests served, clients still waiting,
    /// and what the budget cut short.
    fn sample(&self, clients: usize, budget: Duration) -> Sample {
        let mut sample = Sample {
            errors: self.errors,
            ..Sample::default()
        };
        sample.set(Metric::Served, self.served as f64);
        sample.set(Metric::Waiting, self.waiting as f64);
        if self.cut > 0 {
            let secs = budget.as_secs_f64();
            let (waiting, cut) = (self.waiting, self.cut);
            sample.unfinished = Some(if waiting > 0 {
                format!("queued: {waiting} of {clients} clients still waiting at {secs} s")
            } else {
                format!("cut: {cut} of {clients} clients had not finished at {secs} s")
            });
        }
        sample
    }
}

/// `churn`: `workers` clients each connect, send one line, read the answer and disconnect,
/// `total` connections in all.
pub async fn churn(addr: SocketAddr, total: usize, workers: usize, budget: Duration) -> Sample {
    let deadline = Instant::now() + budget;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut line = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let begun = Instant::now();
                let result = async {
                    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
                        Err(_) => return Ok(None),
                        Ok(stream) => stream?,
                    };
                    stream.set_nodelay(true)?;
                    let (read, mut write) = stream.into_split();
                    write.write_all(REQUESTS[0].0.as_bytes()).await?;
                    let mut reader = BufReader::new(read);
                    let replied = read_reply(&mut reader, &mut line, deadline).await?;
                    Ok::<_, std::io::Error>(replied.map(|()| reply_is(&line, REQUESTS[0].1)))
                }
                .await;
                match result {
                    Ok(Some(true)) => latencies.push(micros(begun.elapsed())),
                    Ok(None) => break,
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latency = histogram();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap_or_default();
        for l in latencies {
            latency.record(l).expect("in bounds");
        }
        errors += e;
    }
    let elapsed = started.elapsed();
    let done = latency.len() as usize;
    let mut sample = Sample {
        errors,
        unfinished: (done + (errors as usize) < total).then(|| {
            format!(
                "cut: {} of {total} connections not made at {} s",
                total - done - errors as usize,
                budget.as_secs_f64()
            )
        }),
        ..Sample::default()
    };
    sample.set(Metric::Served, done as f64);
    sample.set(Metric::ConnPerS, done as f64 / elapsed.as_secs_f64());
    sample.set(Metric::P50Us, latency.value_at_quantile(0.5) as f64);
    sample.set(Metric::P99Us, latency.value_at_quantile(0.99) as f64);
    sample
}

/// How long the footprint waits without a single new client answered before it takes the
/// measure: a sequential server serves its first idle client and never the others, and waiting
/// the whole budget for them would teach nothing more.
const STALL: Duration = Duration::from_secs(1);

/// Footprint clients connecting, and not yet answered, at once. Thousands of handshakes at once
/// overflow a listen backlog (the kernel's cap is 4096 here), and the handshakes it drops
/// complete a second or three later, when the kernel sends them again: a stall that is the
/// load generator's, not the server's.
const CONNECTING_AT_ONCE: usize = 1000;

/// `footprint`: `clients` idle connections held open (each answered once, so the server has
/// really taken it on): the server's memory (PSS, summed over its processes), threads and
/// processes, against its idle level.
pub async fn footprint(addr: SocketAddr, pid: u32, clients: usize, budget: Duration) -> Sample {
    // Warm the server up so that one-off start-up allocations do not count per connection.
    let warm = sessions(addr, 1, 2, budget).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = procfs::footprint(pid);
    let deadline = Instant::now() + budget;
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let progress = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (served, failed, progress) = (served.clone(), failed.clone(), progress.clone());
        let connecting = connecting.clone();
        tasks.push(tokio::spawn(async move {
            let held = async {
                let _turn = timeout_at(deadline, connecting.acquire())
                    .await
                    .ok()?
                    .ok()?;
                let stream = timeout_at(deadline, TcpStream::connect(addr)).await.ok()?;
                let Ok(stream) = stream else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                let (read, mut write) = stream.into_split();
                timeout_at(deadline, write.write_all(REQUESTS[0].0.as_bytes()))
                    .await
                    .ok()?
                    .ok()?;
                let mut reader = BufReader::new(read);
                let mut line = Vec::new();
                match read_reply(&mut reader, &mut line, deadline).await {
                    Ok(Some(())) if reply_is(&line, REQUESTS[0].1) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    // Unserved clients still weigh on a server: keep them connected.
                    Ok(None) => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
                Some((reader, write))
            }
            .await;
            progress.notify_one();
            // Hold the connection until the measure is taken and this task is aborted.
            let _held = held;
            std::future::pending::<()>().await;
        }));
    }
    let mut stalled = false;
    while served.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < clients {
        let wake = (Instant::now() + STALL).min(deadline);
        if timeout_at(wake, progress.notified()).await.is_err() {
            stalled = Instant::now() < deadline;
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded = procfs::footprint(pid);
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let served = served.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let waiting = clients - served - failed;
    // Growth in anonymous PSS: the file pages' share of PSS moves whenever another process maps
    // the same binary or libc (a test run starts dozens), by more than a few idle clients add.
    let growth = loaded.pss_anon_kib.saturating_sub(idle.pss_anon_kib) as f64;
    let mut sample = Sample {
        errors: warm.errors + failed as u64,
        unfinished: (waiting > 0).then(|| {
            if stalled {
                format!(
                    "queued: {waiting} of {clients} clients still waiting \
                     (none answered in the last {} s)",
                    STALL.as_secs_f64()
                )
            } else {
                format!(
                    "queued: {waiting} of {clients} clients still waiting at {} s",
                    budget.as_secs_f64()
                )
            }
        }),
        ..Sample::default()
    };
    sample.set(Metric::PssIdleMib, idle.pss_kib as f64 / 1024.0);
    sample.set(Metric::PssMib, loaded.pss_kib as f64 / 1024.0);
    // Per client only where most clients were served: the growth of a handful (a sequential
    // server serves one) is mostly noise, and the table says how many were left waiting.
    if served * 2 >= clients {
        sample.set(Metric::PssPerConnKib, growth / served.max(1) as f64);
    }
    sample.set(Metric::Threads, loaded.threads as f64);
    sample.set(Metric::Processes, loaded.processes as f64);
    sample.set(Metric::Waiting, waiting as f64);
    sample
}

/// Fetches the host's `/api/state` from its admin endpoint once a second, as the live page
/// would, until aborted. Returns the first failure, if the endpoint ever failed to answer.
pub async fn watch_admin(admin: SocketAddr) -> Option<String> {
    loop {
        // `porthost status`'s client: blocking, every step with a timeout, the body bounded.
        let fetched = tokio::task::spawn_blocking(move || {
            porthost_cli::status::http_get(admin, "/api/state", None)
        })
        .await;
        match fetched {
            Ok(Ok((200, _))) => {}
            Ok(Ok((status, _))) => {
                return Some(format!("GET /api/state from {admin} answered {status}"));
            }
            Ok(Err(e)) => return Some(format!("{e:#}")),
            Err(e) => return Some(format!("GET /api/state from {admin}: {e}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The letters bots try: English by frequency, then Ukrainian by frequency, so they can finish
/// games with the built-in word list as well as the bench's own.
const ALPHABET: &str = "etaoinsrhdlcumwfgypbvkjxqzоаніитевкрслудмпзяьгбчхйшюцщєїжфґ";

/// How one bot fared.
#[derive(Debug, Default)]
struct Bot {
    latencies: Vec<u64>,
    finished: bool,
    errors: u64,
}

/// `game`: `games` two-player games at once, played by bots to the end: games per second and
/// the latency of a move (sending it until its announcement comes back).
pub async fn game(addr: SocketAddr, games: usize, budget: Duration) -> Sample {
    let deadline = Instant::now() + budget;
    let started = Instant::now();
    let bots: Vec<_> = (0..games * 2)
        .map(|i| tokio::spawn(bot(addr, format!("bot{i}"), deadline)))
        .collect();
    let mut latency = histogram();
    let (mut finished, mut errors) = (0usize, 0u64);
    for bot in bots {
        let bot = bot.await.unwrap_or_default();
        for l in bot.latencies {
            latency.record(l).expect("in bounds");
        }
        finished += usize::from(bot.finished);
        errors += bot.errors;
    }
    let elapsed = started.elapsed();
    let games_done = finished / 2;
    let mut sample = Sample {
        errors,
        unfinished: (finished < games * 2).then(|| {
            format!(
                "cut: {} of {games} games not finished at {} s",
                games - games_done,
                budget.as_secs_f64()
            )
        }),
        ..Sample::default()
    };
    sample.set(Metric::GamesPerS, games_done as f64 / elapsed.as_secs_f64());
    sample.set(Metric::MoveP50Us, latency.value_at_quantile(0.5) as f64);
    sample.set(Metric::MoveP99Us, latency.value_at_quantile(0.99) as f64);
    sample.set(Metric::GamesFinished, games_done as f64);
    sample
}

/// One player: names itself, and on each `/turn` sends the most frequent letter nobody has
/// tried yet. Any `Error:` line or unknown command is a protocol error. The lines are read and
/// written with the game's own [`protocol`], as the bundled client does.
async fn bot(addr: SocketAddr, name: String, deadline: Instant) -> Bot {
    let mut bot = Bot::default();
    let Ok(Ok(stream)) = timeout_at(deadline, TcpStream::connect(addr)).await else {
        bot.errors += 1;
        return bot;
    };
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let mut tried: Vec<char> = Vec::new();
    let mine = protocol::quoted(&name);
    let mut sent_at: Option<Instant> = None;
    if write
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        bot.errors += 1;
        return bot;
    }
    loop {
        match read_reply(&mut reader, &mut line, deadline).await {
            Ok(Some(())) => {}
            Ok(None) => return bot,
            Err(_) => {
                bot.errors += 1;
                return bot;
            }
        }
        let text = String::from_utf8_lossy(&line);
        match protocol::server_line(text.trim_end_matches(['\n', '\r'])) {
            ServerLine::Letter { mover, letter } => {
                tried.push(letter);
                if mover == mine
                    && let Some(sent) = sent_at.take()
                {
                    bot.latencies.push(micros(sent.elapsed()));
                }
            }
            ServerLine::YourTurn => {
                let Some(letter) = ALPHABET.chars().find(|c| !tried.contains(c)) else {
                    bot.errors += 1;
                    return bot;
                };
                sent_at = Some(Instant::now());
                let command = format!("{}\n", Command::Letter(letter));
                if write.write_all(command.as_bytes()).await.is_err() {
                    bot.errors += 1;
                    return bot;
                }
            }
            ServerLine::Quit => {
                bot.finished = true;
                return bot;
            }
            ServerLine::UnknownCommand(_) | ServerLine::Error(_) => bot.errors += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::GAME_WORDS;
    use super::*;

    #[test]
    fn the_bots_alphabet_covers_every_game_word() {
        for word in GAME_WORDS {
            assert!(word.chars().all(|c| ALPHABET.contains(c)), "{word}");
        }
    }

    #[test]
    fn waits_cut_short_make_a_quantile_a_lower_bound_only_where_they_reach_it() {
        let mut latencies = Censored::new();
        for _ in 0..990 {
            latencies.record(100);
        }
        // One client cut while being served (a short wait), nine queued for the whole budget.
        latencies.record_bound(50);
        for _ in 0..9 {
            latencies.record_bound(2_000_000);
        }
        let (p50, bound) = latencies.at(0.5);
        assert_eq!((latencies.all.equivalent(p50, 100), bound), (true, false));
        let (p99, bound) = latencies.at(0.99);
        assert!(
            latencies.all.equivalent(p99, 100) && !bound,
            "{p99} {bound}"
        );
        let (p999, bound) = latencies.at(0.999);
        assert!(
            latencies.all.equivalent(p999, 2_000_000) && bound,
            "{p999} {bound}"
        );
        assert!(latencies.max().1);

        let mut exact = Censored::new();
        exact.record(100);
        assert!(!exact.at(0.99).1);
        assert!(!exact.max().1);
    }

    #[tokio::test]
    async fn the_admin_watcher_reports_an_endpoint_that_stops_answering() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for status in ["200 OK", "404 Not Found"] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = stream.read(&mut request).unwrap();
                assert!(request[..n].starts_with(b"GET /api/state HTTP/1.1\r\n"));
                write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}").unwrap();
            }
        });
        let failure = tokio::time::timeout(Duration::from_secs(10), watch_admin(admin))
            .await
            .unwrap();
        assert_eq!(
            failure.as_deref(),
            Some(format!("GET /api/state from {admin} answered 404").as_str())
        );
    }

    #[test]
    fn a_burst_reports_the_last_answer_with_the_queue_and_the_clients_never_answered() {
        let answered = |ms: u64| SessionClient {
            latencies: vec![ms * 1000],
            first_reply: Some(Duration::from_millis(ms)),
            ..SessionClient::default()
        };
        // A sequential server with a 100 ms wait per line: the n-th client is answered after
        // n × 100 ms.
        let queue: Vec<SessionClient> = (1..=50).map(|n| answered(n * 100)).collect();
        let sample = burst_sample(&queue, 50, Duration::from_secs(10));
        let near = |metric: Metric, want: f64| {
            let got = sample.get(metric).unwrap();
            assert!(
                (got - want).abs() <= want * 0.01,
                "{metric:?}: {got} vs {want}"
            );
            assert!(!sample.lower_bounds.contains(&metric), "{metric:?}");
        };
        near(Metric::AnswerP50Ms, 2500.0);
        near(Metric::AnswerP99Ms, 5000.0);
        near(Metric::LastAnswerMs, 5000.0);
        assert_eq!(sample.get(Metric::Served), Some(50.0));
        assert_eq!(sample.get(Metric::Waiting), Some(0.0));
        assert!(sample.unfinished.is_none() && sample.errors == 0);

        // The budget ran out with 20 clients still queued and one broken: the queue is at
        // least the budget long, and the broken client is an error, not an answer.
        let mut cut: Vec<SessionClient> = (1..=29).map(|n| answered(n * 100)).collect();
        cut.extend((0..20).map(|_| SessionClient {
            cut: true,
            ..SessionClient::default()
        }));
        cut.push(SessionClient {
            error: true,
            ..SessionClient::default()
        });
        let sample = burst_sample(&cut, 50, Duration::from_secs(3));
        let last = sample.get(Metric::LastAnswerMs).unwrap();
        assert!((3000.0..3004.0).contains(&last), "{last}");
        assert!(sample.lower_bounds.contains(&Metric::LastAnswerMs));
        assert!(sample.lower_bounds.contains(&Metric::AnswerP99Ms));
        assert!(!sample.lower_bounds.contains(&Metric::AnswerP50Ms));
        assert_eq!(sample.get(Metric::Waiting), Some(20.0));
        assert_eq!(sample.errors, 1);
        assert_eq!(
            sample.unfinished.as_deref(),
            Some("queued: 20 of 50 clients still waiting at 3 s")
        );
    }

    #[test]
    fn replies_match_with_or_without_cr() {
        assert!(reply_is(b"1\n", "1"));
        assert!(reply_is(b"1\r\n", "1"));
        assert!(reply_is(b"\n", ""));
        assert!(!reply_is(b"1", "1"));
        assert!(!reply_is(b"ERR x\n", ""));
    }
}
