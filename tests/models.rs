//! The models are real and observable: threads, processes, a flat thread count.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{
    Client, HostProcess, TestHost, alive, children_of, entry, eventually, held_connections,
    open_fds, threads, zombies_of,
};

const CLIENTS: usize = 12;

fn connect_and_ask(host: &HostProcess, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut client = Client::connect(host.addr(0));
            assert_eq!(client.ask("abba"), "1");
            client
        })
        .collect()
}

#[test]
fn thread_per_client_has_one_more_thread_per_client() {
    let host = HostProcess::start("", &[entry("palindrome-v3", "thread-per-client", "")]);
    let pid = host.pid();
    let before = threads(pid);
    let clients = connect_and_ask(&host, CLIENTS);
    assert!(
        eventually(|| threads(pid) == before + CLIENTS),
        "{} threads with {CLIENTS} clients, {before} before",
        threads(pid)
    );
    drop(clients);
    assert!(
        eventually(|| threads(pid) == before),
        "threads did not end: {}",
        threads(pid)
    );
}

#[test]
fn process_per_client_has_one_child_per_client() {
    let host = HostProcess::start("", &[entry("palindrome-v2", "process-per-client", "")]);
    let mut clients = connect_and_ask(&host, CLIENTS);
    let forker = host
        .forker()
        .expect("the forker runs once a client connected");
    assert!(
        eventually(|| children_of(forker).len() == CLIENTS),
        "{} children for {CLIENTS} clients",
        children_of(forker).len()
    );
    for client in &mut clients {
        client.send(b"\n");
        assert!(client.is_closed());
    }
    assert!(eventually(
        || children_of(forker).is_empty() && zombies_of(forker) == 0
    ));
}

/// `ForkingTCPServer`'s shape: the fork server accepts, so the host is on no connection's
/// path and holds none of their sockets (handed over, it would hold one per client, to close it
/// with a reason at the end of a drain).
#[test]
fn the_fork_server_accepts_and_the_host_holds_no_socket_of_its_clients() {
    let host = HostProcess::start("", &[entry("palindrome-v3", "process-per-client", "")]);
    assert!(
        eventually(|| host.forker().is_some()),
        "the fork server starts with the port, to accept its clients"
    );
    let forker = host.forker().unwrap();
    let port = host.addr(0).port();
    // Once a client has been served, the fork server accepts (and the host holds nothing).
    let mut first = Client::connect(host.addr(0));
    assert_eq!(first.ask("abba"), "1");
    first.send(b"\n");
    assert!(first.is_closed());
    assert!(eventually(|| held_connections(port) == 0));
    let (host_fds, forker_fds) = (open_fds(host.pid()), open_fds(forker));
    let clients = connect_and_ask(&host, CLIENTS);
    assert_eq!(held_connections(port), CLIENTS);
    assert_eq!(
        open_fds(host.pid()),
        host_fds,
        "the host holds descriptors of the clients"
    );
    // The fork server's own handle on each, to tell its client why a drain cuts it off.
    assert_eq!(open_fds(forker), forker_fds + CLIENTS);
    drop(clients);
    assert!(eventually(
        || open_fds(forker) == forker_fds && held_connections(port) == 0
    ));
}

#[test]
fn async_keeps_the_thread_count_flat() {
    let host = HostProcess::start("", &[entry("palindrome-v1", "async", "")]);
    let pid = host.pid();
    let warm = connect_and_ask(&host, 1);
    let before = threads(pid);
    let clients = connect_and_ask(&host, 100);
    assert_eq!(threads(pid), before, "async grew threads with clients");
    assert!(children_of(pid).is_empty());
    drop((warm, clients));
}

#[test]
fn a_thread_pool_keeps_its_workers_and_leaves_the_next_client_in_the_backlog() {
    let host = HostProcess::start("", &[entry("palindrome-v3", "thread-pool", "workers = 3")]);
    let pid = host.pid();
    let mut clients = connect_and_ask(&host, 1);
    let before = threads(pid);
    clients.extend(connect_and_ask(&host, 2));
    assert_eq!(threads(pid), before, "the pool grew with its clients");
    // Every worker is busy: the fourth client is not served until one leaves.
    let mut fourth = Client::connect(host.addr(0));
    fourth.send(b"abba\n");
    assert_eq!(fourth.line_within(Duration::from_millis(300)), None);
    clients[0].send(b"\n");
    assert!(clients[0].is_closed());
    assert_eq!(fourth.line().as_deref(), Some("1"));
    drop((clients, fourth));
    assert!(eventually(|| threads(pid) == before));
    assert!(children_of(pid).is_empty());
}

#[test]
fn prefork_keeps_its_workers_and_forks_none_per_client() {
    let host = HostProcess::start("", &[entry("palindrome-v3", "prefork", "workers = 3")]);
    assert!(
        eventually(|| host.forker().is_some_and(|f| children_of(f).len() == 3)),
        "the fork server forks the port's three workers when the port starts"
    );
    let forker = host.forker().unwrap();
    let workers = children_of(forker);
    let mut clients = connect_and_ask(&host, 3);
    assert_eq!(
        children_of(forker),
        workers,
        "a client got a process of its own"
    );
    // Every worker is busy: the fourth client waits in the backlog until one leaves.
    let mut fourth = Client::connect(host.addr(0));
    fourth.send(b"abba\n");
    assert_eq!(fourth.line_within(Duration::from_millis(300)), None);
    clients[0].send(b"\n");
    assert!(clients[0].is_closed());
    assert_eq!(fourth.line().as_deref(), Some("1"));
    drop((clients, fourth));
    for _ in 0..CLIENTS {
        assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
    }
    assert_eq!(children_of(forker), workers);
    assert!(children_of(host.pid()) == [forker], "the host forked");
    assert_eq!(zombies_of(forker), 0);
}

#[test]
fn a_prefork_worker_is_recycled_after_its_connections_and_replaced_when_killed() {
    let mut host = HostProcess::start(
        "",
        &[entry(
            "palindrome-v3",
            "prefork",
            "workers = 1\nmax_connections_per_worker = 2",
        )],
    );
    assert!(eventually(|| host
        .forker()
        .is_some_and(|f| children_of(f).len() == 1)));
    let forker = host.forker().unwrap();
    let first = children_of(forker)[0];
    for _ in 0..2 {
        assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
    }
    assert!(
        eventually(|| !alive(first) && children_of(forker).len() == 1),
        "the worker was not replaced after its two connections"
    );
    let second = children_of(forker)[0];
    assert_ne!(second, first);
    assert!(
        eventually(|| host.log().contains("after 2 connections")),
        "{}",
        host.log()
    );

    let mut victim = Client::connect(host.addr(0));
    assert_eq!(victim.ask("abba"), "1");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    assert!(victim.is_closed());
    assert!(
        eventually(|| !alive(second) && zombies_of(forker) == 0 && children_of(forker).len() == 1),
        "the killed worker was not reaped and replaced"
    );
    assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
    assert!(
        eventually(|| host.log().contains("killed by SIGKILL")),
        "{}",
        host.log()
    );
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(!alive(forker));
}

#[test]
fn an_event_loop_serves_every_client_on_its_one_thread() {
    let host = HostProcess::start("", &[entry("palindrome-v1", "event-loop", "")]);
    let pid = host.pid();
    let warm = connect_and_ask(&host, 1);
    let before = threads(pid);
    let clients = connect_and_ask(&host, 100);
    assert_eq!(threads(pid), before, "event-loop grew threads with clients");
    drop((warm, clients));
}

/// Sends one line from each client at once and returns how long each took to be answered.
fn answer_times(clients: &mut [Client]) -> Vec<Duration> {
    let start = std::time::Instant::now();
    for client in clients.iter_mut() {
        client.send(b"abba\n");
    }
    clients
        .iter_mut()
        .map(|client| {
            assert_eq!(client.line().as_deref(), Some("1"));
            start.elapsed()
        })
        .collect()
}

#[test]
fn on_an_event_loop_a_wait_stalls_no_one_and_a_spin_stalls_everyone() {
    let host = TestHost::start(
        "",
        &[
            entry(
                "palindrome-v3",
                "event-loop",
                "options = { sleep_ms = 300 }",
            ),
            entry(
                "palindrome-v2",
                "event-loop",
                "options = { busy_us = 150000 }",
            ),
        ],
    );
    // Ten waits of 300 ms at once end together: the timers run side by side.
    let mut waiting: Vec<Client> = (0..10).map(|_| Client::connect(host.addr(0))).collect();
    let times = answer_times(&mut waiting);
    let last = *times.iter().max().unwrap();
    assert!(
        last >= Duration::from_millis(300) && last < Duration::from_millis(2500),
        "the last of ten 300 ms waits came after {last:?}"
    );
    // Four spins of 150 ms on the one thread take their turns: the last waits for all four.
    let mut spinning: Vec<Client> = (0..4).map(|_| Client::connect(host.addr(1))).collect();
    let times = answer_times(&mut spinning);
    let last = *times.iter().max().unwrap();
    assert!(
        last >= Duration::from_millis(600),
        "four 150 ms spins on one thread were all answered within {last:?}"
    );
}

#[test]
fn under_a_thread_model_the_wait_is_a_blocking_sleep_per_client() {
    // Two workers, four clients: each worker sleeps through its client's 300 ms, so the last
    // two clients wait for the first two.
    let host = TestHost::start(
        "",
        &[entry(
            "palindrome-v1",
            "thread-pool",
            "workers = 2\noptions = { sleep_ms = 300 }",
        )],
    );
    let mut clients: Vec<Client> = (0..2).map(|_| Client::connect(host.addr(0))).collect();
    let times = answer_times(&mut clients);
    assert!(
        times.iter().all(|t| *t >= Duration::from_millis(300)),
        "{times:?}"
    );
    drop(clients);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(host.addr(0))).collect();
    for client in &mut clients[..2] {
        client.send(b"abba\n");
        assert_eq!(client.line().as_deref(), Some("1"));
    }
    // The first two hold both workers: the others are answered only once they leave.
    let start = std::time::Instant::now();
    for client in &mut clients[2..] {
        client.send(b"abba\n");
    }
    assert_eq!(clients[2].line_within(Duration::from_millis(100)), None);
    for client in &mut clients[..2] {
        client.send(b"\n");
        assert!(client.is_closed());
    }
    for client in &mut clients[2..] {
        assert_eq!(client.line().as_deref(), Some("1"));
    }
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_child_killed_mid_session_hurts_no_one_else() {
    // Two slots: the next client is served only if the killed child's slot is given back.
    let mut host = HostProcess::start(
        "",
        &[entry(
            "palindrome-v3",
            "process-per-client",
            "max_connections = 2",
        )],
    );
    let mut victim = Client::connect(host.addr(0));
    assert_eq!(victim.ask("abba"), "1");
    let forker = host.forker().unwrap();
    assert!(eventually(|| children_of(forker).len() == 1));
    let child = children_of(forker)[0];
    let mut other = Client::connect(host.addr(0));
    assert_eq!(other.ask("abba"), "1");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), Signal::SIGKILL).unwrap();
    assert!(victim.is_closed());
    assert!(
        eventually(|| !alive(child) && zombies_of(forker) == 0),
        "the child was not reaped"
    );
    assert_eq!(other.ask("abc"), "", "the other client lost its session");
    let mut next = Client::connect(host.addr(0));
    assert_eq!(next.ask("abba"), "1");
    assert!(
        eventually(|| host.log().contains("killed by SIGKILL")),
        "{}",
        host.log()
    );
    drop((other, next));
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_killed_forker_is_replaced_for_the_next_client() {
    let host = HostProcess::start("", &[entry("palindrome-v1", "process-per-client", "")]);
    assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
    let forker = host.forker().expect("started by the first client");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(forker as i32), Signal::SIGKILL).unwrap();
    assert!(
        eventually(|| host.log().contains("fork server went away")),
        "{}",
        host.log()
    );
    assert!(
        eventually(|| !alive(forker) && zombies_of(host.pid()) == 0),
        "the old forker was not reaped"
    );
    assert_eq!(Client::connect(host.addr(0)).ask("abc"), "");
    assert_ne!(host.forker(), Some(forker));
}
