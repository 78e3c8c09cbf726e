//! The models are real and observable: threads, processes, a flat thread count.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{
    Client, HostProcess, alive, children_of, entry, eventually, threads, zombies_of,
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
