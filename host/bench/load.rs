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
use tokio::time::{Instant, timeout_at};

use porthost::procfs;
use porthost_services::word_guess::protocol::{self, Command, ServerLine};

/// What one run of a workload measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub metrics: Vec<(&'static str, f64)>,
    /// Connections that failed, broke, or got an answer the protocol does not allow.
    pub errors: u64,
    /// What did not finish within the budget, in words.
    pub unfinished: Option<String>,
}

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
    latencies: Vec<u64>,
    first_reply: Option<Duration>,
    error: bool,
    cut: bool,
}

/// `sessions`: `clients` connected at once, each sending `lines` lines one at a time and
/// waiting for each answer.
pub async fn sessions(addr: SocketAddr, clients: usize, lines: usize, budget: Duration) -> Sample {
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
            let Ok(Ok(stream)) = stream else {
                client.error = true;
                return client;
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
    let mut latency = histogram();
    let mut first = histogram();
    let (mut errors, mut never_served, mut cut) = (0u64, 0usize, 0usize);
    for task in tasks {
        let client = task.await.unwrap_or_else(|_| SessionClient {
            error: true,
            ..SessionClient::default()
        });
        for l in &client.latencies {
            latency.record(*l).expect("in bounds");
        }
        if let Some(f) = client.first_reply {
            first.record(micros(f)).expect("in bounds");
        }
        errors += u64::from(client.error);
        if client.cut {
            cut += 1;
            never_served += usize::from(client.first_reply.is_none());
        }
    }
    let elapsed = started.elapsed().min(budget + Duration::from_millis(100));
    let mut sample = Sample {
        metrics: vec![
            ("served", latency.len() as f64),
            ("req_per_s", latency.len() as f64 / elapsed.as_secs_f64()),
            ("p50_us", latency.value_at_quantile(0.5) as f64),
            ("p99_us", latency.value_at_quantile(0.99) as f64),
            ("p999_us", latency.value_at_quantile(0.999) as f64),
            (
                "first_reply_p50_ms",
                first.value_at_quantile(0.5) as f64 / 1000.0,
            ),
            ("first_reply_max_ms", first.max() as f64 / 1000.0),
        ],
        errors,
        unfinished: None,
    };
    if cut > 0 {
        let secs = budget.as_secs_f64();
        sample.unfinished = Some(if never_served > 0 {
            format!("queued: {never_served} of {clients} clients still waiting at {secs} s")
        } else {
            format!("cut: {cut} of {clients} clients had not finished at {secs} s")
        });
    }
    sample
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
    Sample {
        metrics: vec![
            ("served", done as f64),
            ("conn_per_s", done as f64 / elapsed.as_secs_f64()),
            ("p50_us", latency.value_at_quantile(0.5) as f64),
            ("p99_us", latency.value_at_quantile(0.99) as f64),
        ],
        errors,
        unfinished: (done + (errors as usize) < total).then(|| {
            format!(
                "cut: {} of {total} connections not made at {} s",
                total - done - errors as usize,
                budget.as_secs_f64()
            )
        }),
    }
}

/// `footprint`: `clients` idle connections held open (each answered once, so the server has
/// really taken it on): the server's memory, threads and processes, against its idle level.
pub async fn footprint(addr: SocketAddr, pid: u32, clients: usize, budget: Duration) -> Sample {
    // Warm the server up so that one-off start-up allocations do not count per connection.
    let warm = sessions(addr, 1, 2, budget).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = procfs::footprint(pid);
    let deadline = Instant::now() + budget;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let stream = timeout_at(deadline, TcpStream::connect(addr))
                .await
                .ok()?
                .ok()?;
            let (read, mut write) = stream.into_split();
            timeout_at(deadline, write.write_all(REQUESTS[0].0.as_bytes()))
                .await
                .ok()?
                .ok()?;
            let mut reader = BufReader::new(read);
            let mut line = Vec::new();
            let served = read_reply(&mut reader, &mut line, deadline).await;
            // Keep the connection open either way: unserved clients still weigh on a server.
            Some((served.ok().flatten().is_some(), reader, write))
        }));
    }
    let mut held = Vec::with_capacity(clients);
    let (mut served, mut errors) = (0usize, warm.errors);
    for task in tasks {
        match task.await.ok().flatten() {
            Some((ok, reader, write)) => {
                served += usize::from(ok);
                held.push((reader, write));
            }
            None => errors += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded = procfs::footprint(pid);
    drop(held);
    let growth = loaded.rss_kib.saturating_sub(idle.rss_kib) as f64;
    Sample {
        metrics: vec![
            ("rss_idle_mib", idle.rss_kib as f64 / 1024.0),
            ("rss_mib", loaded.rss_kib as f64 / 1024.0),
            ("rss_per_conn_kib", growth / served.max(1) as f64),
            ("threads", loaded.threads as f64),
            ("processes", loaded.processes as f64),
        ],
        errors,
        unfinished: (served < clients).then(|| {
            format!(
                "queued: {} of {clients} clients still waiting at {} s",
                clients - served,
                budget.as_secs_f64()
            )
        }),
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
    Sample {
        metrics: vec![
            ("games_per_s", games_done as f64 / elapsed.as_secs_f64()),
            ("move_p50_us", latency.value_at_quantile(0.5) as f64),
            ("move_p99_us", latency.value_at_quantile(0.99) as f64),
            ("games_finished", games_done as f64),
        ],
        errors,
        unfinished: (finished < games * 2).then(|| {
            format!(
                "cut: {} of {games} games not finished at {} s",
                games - games_done,
                budget.as_secs_f64()
            )
        }),
    }
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
    fn replies_match_with_or_without_cr() {
        assert!(reply_is(b"1\n", "1"));
        assert!(reply_is(b"1\r\n", "1"));
        assert!(reply_is(b"\n", ""));
        assert!(!reply_is(b"1", "1"));
        assert!(!reply_is(b"ERR x\n", ""));
    }
}
