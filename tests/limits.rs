//! Limits and timeouts against the real binary: per-address limits, the idle timeout (slowloris
//! included) under every model, deferred accept above `max_connections`, and an accept loop
//! that outlives running out of descriptors.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Client, HostProcess, TestHost, combos, entry, eventually, open_fds};

const TOO_MANY: &str = "ERR too many connections from your address";

/// The models that serve more than one client at once (a per-address or connection limit means
/// nothing to `sequential`, which serves exactly one).
const CONCURRENT: [&str; 3] = ["thread-per-client", "process-per-client", "async"];

/// The models a per-address limit applies to: the concurrent ones, and prefork, whose workers
/// accept and the fork server admits.
const PER_ADDRESS: [&str; 4] = [
    "thread-per-client",
    "process-per-client",
    "async",
    "prefork",
];

#[test]
fn the_connection_over_the_per_address_limit_is_refused_alone() {
    let entries: Vec<_> = PER_ADDRESS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .collect();
    // Set in [host], so every port inherits it.
    let host = TestHost::start("max_connections_per_ip = 2", &entries);
    for (i, model) in PER_ADDRESS.iter().enumerate() {
        let mut first = Client::connect(host.addr(i));
        let mut second = Client::connect(host.addr(i));
        assert_eq!(first.ask("abba"), "1", "{model}");
        assert_eq!(second.ask("abba"), "1", "{model}");

        let mut third = Client::connect(host.addr(i));
        assert_eq!(third.line().as_deref(), Some(TOO_MANY), "{model}");
        assert!(third.is_closed(), "{model}");

        assert_eq!(first.ask("abc"), "", "{model}: the others are unaffected");
        assert_eq!(second.ask("abc"), "", "{model}");
        let mut elsewhere = Client::connect_from([127, 0, 0, 2].into(), host.addr(i));
        assert_eq!(
            elsewhere.ask("abba"),
            "1",
            "{model}: another address has its own count"
        );

        first.send(b"\n");
        assert!(first.is_closed(), "{model}");
        assert!(
            eventually(|| Client::try_ask(host.addr(i), "abba").as_deref() == Some("1")),
            "{model}: the slot of a client that left is not given back"
        );
    }
}

#[test]
fn above_max_connections_clients_wait_instead_of_being_dropped() {
    let entries: Vec<_> = CONCURRENT
        .iter()
        .map(|m| entry("palindrome-v2", m, "max_connections = 2"))
        .collect();
    let host = TestHost::start("", &entries);
    for (i, model) in CONCURRENT.iter().enumerate() {
        let mut first = Client::connect(host.addr(i));
        let mut second = Client::connect(host.addr(i));
        assert_eq!(first.ask("abba"), "1", "{model}");
        assert_eq!(second.ask("abba"), "1", "{model}");

        // The kernel completes the handshake from the backlog; the host does not accept yet.
        let mut third = Client::connect(host.addr(i));
        third.send(b"abba\n");
        assert!(
            eventually(|| host.waiting(i) == Some(1)),
            "{model}: the client above max_connections is not left in the accept queue"
        );
        assert_eq!(
            third.line_within(Duration::from_millis(1)),
            None,
            "{model}: served above max_connections"
        );
        first.send(b"\n");
        assert!(first.is_closed(), "{model}");
        assert_eq!(
            third.line().as_deref(),
            Some("1"),
            "{model}: the waiting client is served once a slot frees"
        );
        assert_eq!(second.ask("abc"), "", "{model}");
    }
}

/// Sends one byte of a line every 200 ms, never finishing it, until told to stop or the server
/// closes: a slowloris client, which an idle timeout counted per read would never cut.
fn dribble(client: &Client, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut stream = client.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) && stream.write_all(b"a").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Expects the idle line and the close, then leaves (a sequential port serves no one else until
/// then).
fn closed_for_idling(mut client: Client, what: &str) {
    assert_eq!(
        client.line().as_deref(),
        Some("ERR idle for 1 s, closing"),
        "{what}"
    );
    assert!(client.is_closed(), "{what}");
}

#[test]
fn idle_and_slowloris_clients_are_closed_under_every_model() {
    let combos = combos();
    let entries: Vec<_> = combos.iter().map(|(s, m)| entry(s, m, "")).collect();
    let host = Arc::new(TestHost::start("idle_timeout_secs = 1", &entries));
    let checks: Vec<_> = combos
        .into_iter()
        .enumerate()
        .map(|(i, combo)| {
            let host = host.clone();
            std::thread::spawn(move || {
                let silent = Client::connect(host.addr(i));
                closed_for_idling(silent, &format!("{combo:?}: silent"));

                let mut half = Client::connect(host.addr(i));
                assert_eq!(half.ask("abba"), "1", "{combo:?}");
                half.send(b"half a li");
                closed_for_idling(half, &format!("{combo:?}: half a line"));

                let slow = Client::connect(host.addr(i));
                let stop = Arc::new(AtomicBool::new(false));
                let dribbler = dribble(&slow, stop.clone());
                closed_for_idling(slow, &format!("{combo:?}: slowloris"));
                stop.store(true, Ordering::Relaxed);
                dribbler.join().unwrap();

                assert_eq!(
                    Client::connect(host.addr(i)).ask("abba"),
                    "1",
                    "{combo:?}: the port goes on"
                );
            })
        })
        .collect();
    for check in checks {
        check.join().unwrap();
    }
}

/// Runs a host with a handful of spare descriptors out of them, and checks that its accept loop
/// backs off (a few log lines, not a spin), keeps the waiting clients in the backlog, and
/// serves them once descriptors free up.
fn out_of_descriptors(model: &str) {
    const NOFILE: u64 = 64;
    let mut host = HostProcess::start_limited(
        NOFILE,
        "",
        &[entry("palindrome-v3", model, "max_line_bytes = 100")],
    );
    let pid = host.pid();
    let idle_fds = open_fds(pid) as u64;
    assert!(idle_fds < NOFILE, "{idle_fds} descriptors at start");
    // More clients than could have a descriptor each: the last ones hit EMFILE.
    let clients: Vec<Client> = (0..NOFILE - idle_fds + 4)
        .map(|_| {
            let mut client = Client::connect(host.addr(0));
            client.send(b"abba\n");
            client
        })
        .collect();
    assert!(
        eventually(|| host.log().contains("retrying in 1s")),
        "the accept loop never ran out of descriptors, or never backed off to its cap:\n{}",
        host.log()
    );
    // Backing off doubles the pause from 10 ms to 1 s: eight failures reach the cap. A loop
    // that spins would log thousands.
    let failures = host.log().matches("; retrying in ").count();
    assert!(
        failures <= 12,
        "{failures} failures logged:\n{}",
        host.log()
    );
    assert!(host.log().contains("Too many open files"), "{}", host.log());

    // Each client that leaves frees what it held, so the next one waiting gets its turn.
    for (n, mut client) in clients.into_iter().enumerate() {
        assert_eq!(
            client.line().as_deref(),
            Some("1"),
            "{model}: client {n} was not served after descriptors freed up"
        );
    }
    assert!(host.wait_exit(Duration::ZERO).is_none(), "the host exited");
    assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
}

#[test]
fn async_survives_running_out_of_descriptors() {
    out_of_descriptors("async");
}

#[test]
fn thread_per_client_survives_running_out_of_descriptors() {
    out_of_descriptors("thread-per-client");
}
