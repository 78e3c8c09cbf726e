//! Faults that must not hurt anyone else: rude clients (resets, half-closes), connections
//! abandoned by the thousand, and garbage input. Each case checks the host's answer and that
//! the others are still served; abandoned connections also check that the host's threads and
//! descriptors come back (how much memory such faults cost is the soak's to measure).

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::thread::JoinHandle;

use porthost::services::palindrome::verdict;

use crate::support::{
    Client, HostProcess, TestHost, children_of, combos, entry, eventually, held_connections,
    open_fds, threads, zombies_of,
};

/// One host serving every palindrome version under every model, shared by a test's threads.
fn all_ports(extra: &str) -> (Arc<TestHost>, Vec<(&'static str, &'static str)>) {
    let combos = combos();
    let entries: Vec<_> = combos.iter().map(|(s, m)| entry(s, m, extra)).collect();
    (Arc::new(TestHost::start("", &entries)), combos)
}

/// Runs `check` for every port at once, each in its own thread.
fn on_every_port(
    host: &Arc<TestHost>,
    combos: &[(&'static str, &'static str)],
    check: fn(&TestHost, usize, (&str, &str)),
) {
    let threads: Vec<JoinHandle<()>> = combos
        .iter()
        .enumerate()
        .map(|(i, &combo)| {
            let host = host.clone();
            std::thread::spawn(move || check(&host, i, combo))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(!host.log().contains("panicked"), "{}", host.log());
}

/// A client connected and served before the fault, to be asked again after it. Sequential
/// ports serve one client at a time, so there it is `None`.
fn bystander(host: &TestHost, i: usize, combo: (&str, &str)) -> Option<Client> {
    (combo.1 != "sequential").then(|| {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("abba"), "1", "{combo:?}");
        client
    })
}

/// After a fault: the bystander still has its session and a new client is served.
fn others_are_served(host: &TestHost, i: usize, combo: (&str, &str), bystander: Option<Client>) {
    if let Some(mut client) = bystander {
        assert_eq!(
            client.ask("abc"),
            "",
            "{combo:?}: the bystander lost its session"
        );
    }
    assert_eq!(
        Client::connect(host.addr(i)).ask("abba"),
        "1",
        "{combo:?}: a new client is not served"
    );
}

#[test]
fn a_reset_mid_line_or_mid_reply_hurts_no_one_else() {
    let (host, combos) = all_ports("");
    on_every_port(&host, &combos, |host, i, combo| {
        let other = bystander(host, i, combo);

        let mut mid_line = Client::connect(host.addr(i));
        assert_eq!(mid_line.ask("abba"), "1", "{combo:?}");
        mid_line.send(b"half a li");
        mid_line.reset();

        // Many lines and no reads: the reset lands while replies are still being written.
        let mut mid_reply = Client::connect(host.addr(i));
        mid_reply.send(&b"abba\n".repeat(20_000));
        mid_reply.reset();

        others_are_served(host, i, combo, other);
    });
    // Process-per-client: every child of a reset connection was reaped; the forker's children
    // left are the prefork ports' workers.
    let forker = host.forker().expect("process-per-client ports were used");
    let workers = combos.iter().filter(|(_, m)| *m == "prefork").count()
        * porthost::config::Model::default_workers();
    assert!(
        eventually(|| children_of(forker).len() == workers && zombies_of(forker) == 0),
        "children left: {:?}",
        children_of(forker)
    );
}

#[test]
fn a_half_close_still_gets_every_reply_that_is_due() {
    let (host, combos) = all_ports("");
    on_every_port(&host, &combos, |host, i, combo| {
        const LINES: usize = 20_000;
        let other = bystander(host, i, combo);
        let mut client = Client::connect(host.addr(i));
        // A last line without its newline, then no more input; we go on reading.
        let mut input = b"abba\nabc\n".repeat(LINES / 2);
        input.extend_from_slice(b"xyzzyx");
        let mut writer = client.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer.write_all(&input).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        for n in 0..LINES {
            let want = if n % 2 == 0 { "1" } else { "" };
            assert_eq!(client.line().as_deref(), Some(want), "{combo:?}: reply {n}");
        }
        assert_eq!(client.line().as_deref(), Some("1"), "{combo:?}: last line");
        assert!(client.is_closed(), "{combo:?}");
        sender.join().unwrap();
        drop(client);
        others_are_served(host, i, combo, other);
    });
}

/// Opens and abandons 1000 connections to a `model` port, three rounds, and checks that each
/// round leaves the host's threads and descriptors where they were.
fn abandoned_connections_are_reclaimed(model: &str) {
    let host = HostProcess::start(
        "idle_timeout_secs = 1",
        &[entry("palindrome-v3", model, "")],
    );
    let pid = host.pid();
    let idle_threads = threads(pid);
    // The idle level of descriptors, taken once the host has served a connection: a
    // thread-per-client accept loop keeps the next connection's runtime ready.
    let mut warm_up = Client::connect(host.addr(0));
    assert_eq!(warm_up.ask("abba"), "1");
    warm_up.send(b"\n");
    assert!(warm_up.is_closed());
    drop(warm_up);
    assert!(eventually(|| threads(pid) == idle_threads));
    let port = host.addr(0).port();
    assert!(
        eventually(|| held_connections(port) == 0),
        "{model}: the warm-up connection is still open"
    );
    let idle_fds = open_fds(pid);
    for _ in 0..3 {
        let clients: Vec<Client> = (0..1000).map(|_| Client::connect(host.addr(0))).collect();
        for mut client in clients {
            assert_eq!(
                client.line().as_deref(),
                Some("ERR idle for 1 s, closing"),
                "{model}: not closed for idling"
            );
            assert!(client.is_closed(), "{model}");
        }
        assert!(
            eventually(|| threads(pid) == idle_threads),
            "{model}: {} threads, {idle_threads} when idle",
            threads(pid)
        );
        // The host closes gracefully (it waits for our FIN), so its sockets go a moment later.
        assert!(
            eventually(|| open_fds(pid) == idle_fds),
            "{model}: descriptors not reclaimed: {} open, {idle_fds} when idle",
            open_fds(pid)
        );
    }
}

#[test]
fn a_thousand_abandoned_connections_are_reclaimed() {
    // The test holds a thousand sockets at once; the soft limit is often 1024.
    porthost_cli::raise_descriptor_limit();
    let models = ["async", "thread-per-client"]
        .map(|model| std::thread::spawn(move || abandoned_connections_are_reclaimed(model)));
    for model in models {
        model.join().unwrap();
    }
}

/// Writes `bytes` from another thread until done or the server stops taking them, so the
/// caller can read replies meanwhile.
fn send_in_background(client: &Client, bytes: Vec<u8>) -> JoinHandle<()> {
    let mut writer = client.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for chunk in bytes.chunks(64 * 1024) {
            if writer.write_all(chunk).is_err() {
                return;
            }
        }
    })
}

/// The protocol's replies to a byte stream: a verdict per line until an empty line or the end,
/// or an `ERR` line at the first line over `limit` bytes.
fn replies(input: &[u8], limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limit {
            out.push(format!("ERR line longer than {limit} bytes"));
            break;
        }
        if line.is_empty() {
            break;
        }
        let answer = verdict(&String::from_utf8_lossy(line), false);
        out.push(String::from_utf8_lossy(&answer[..answer.len() - 1]).into_owned());
    }
    out
}

/// Reads lines until the server closes.
fn all_lines(client: &mut Client) -> Vec<String> {
    std::iter::from_fn(|| client.line()).collect()
}

#[test]
fn random_bytes_get_the_protocols_answers() {
    let (host, combos) = all_ports("max_line_bytes = 1000");
    on_every_port(&host, &combos, |host, i, combo| {
        let other = bystander(host, i, combo);
        // xorshift: the same bytes every run, different per port. Newlines are made more
        // common so that most lines fit the limit; the empty line at the end ends the session.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ i as u64;
        let mut input: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match state % 64 {
                    0 => b'\n',
                    _ => (state >> 8) as u8,
                }
            })
            .collect();
        input.extend_from_slice(b"\n\n");
        let expected = replies(&input, 1000);
        let mut client = Client::connect(host.addr(i));
        let sender = send_in_background(&client, input);
        assert_eq!(all_lines(&mut client), expected, "{combo:?}");
        sender.join().unwrap();
        drop(client);
        others_are_served(host, i, combo, other);
    });
}

#[test]
fn nul_bytes_are_data_not_terminators() {
    let (host, combos) = all_ports("");
    on_every_port(&host, &combos, |host, i, combo| {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("ab\0ba"), "1", "{combo:?}");
        assert_eq!(client.ask("ab\0c"), "", "{combo:?}");
        // Not an empty line: the session goes on.
        assert_eq!(client.ask("\0"), "1", "{combo:?}");
        assert_eq!(client.ask(&"\0".repeat(10_000)), "1", "{combo:?}");
        assert_eq!(client.ask("abc"), "", "{combo:?}");
    });
}

#[test]
fn ten_thousand_empty_lines_end_one_session_and_lose_no_reply() {
    let (host, combos) = all_ports("");
    on_every_port(&host, &combos, |host, i, combo| {
        const LINES: usize = 20_000;
        let other = bystander(host, i, combo);
        let mut input = b"a\n".repeat(LINES);
        input.extend_from_slice(&b"\n".repeat(5_000));
        input.extend_from_slice(&b"\r\n".repeat(5_000));
        // Many replies in quick succession, then a small window: either way some are still
        // queued on the server's side when the first empty line ends the session with the
        // rest of the input unread.
        for mut client in [
            Client::connect(host.addr(i)),
            Client::connect_small_window(host.addr(i), 4096),
        ] {
            let sender = send_in_background(&client, input.clone());
            assert_eq!(all_lines(&mut client), vec!["1"; LINES], "{combo:?}");
            sender.join().unwrap();
        }
        others_are_served(host, i, combo, other);
    });
}

/// The memory such a line costs (a few KiB, only `max_line_bytes` of it is ever buffered) is
/// measured by the soak, which sends one to every port.
#[test]
fn a_100_mb_line_is_refused_and_hurts_no_one_else() {
    let (host, combos) = all_ports("");
    on_every_port(&host, &combos, |host, i, combo| {
        let other = bystander(host, i, combo);
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("abba"), "1", "{combo:?}");
        let mut writer = client.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            // 100 MiB without a newline, until the server stops taking it.
            let chunk = [b'x'; 64 * 1024];
            for _ in 0..1600 {
                if writer.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        assert_eq!(
            client.line().as_deref(),
            Some("ERR line longer than 65536 bytes"),
            "{combo:?}"
        );
        sender.join().unwrap();
        assert!(client.is_closed(), "{combo:?}");
        drop(client);
        others_are_served(host, i, combo, other);
    });
}
