//! `reuse_port = true` hand-over under load, with real processes: host A serves a port, host B
//! starts on the same port (`SO_REUSEPORT`, so the kernel shares new connections between
//! them), A gets SIGTERM while clients keep connecting, then host C takes over from B the same
//! way. Not one connection may fail. Not part of `cargo test --workspace`: run it with
//! `cargo test --test handover` (`.ci/run` does), as root.
//!
//! A host that stops accepts what is queued on its socket and closes it, but a client whose
//! handshake completes between its last accept and its close is queued on a socket that is
//! going away, and the kernel resets it (measured here: about one connection in 15,000 during
//! a hand-over) unless `net.ipv4.tcp_migrate_req = 1` (Linux 5.14+), which moves such clients
//! to another socket of the same `SO_REUSEPORT` group. So the test needs that setting. It does
//! not change the machine's: it runs in a network namespace of its own (the test's thread
//! unshares its network namespace, brings up its loopback and sets the sysctl there; every
//! socket and process it then creates lives in it), which also keeps it clear of every other
//! test's ports. It fails, explaining why, where it cannot (not root, no `ip`, an old kernel).

#[path = "../support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Load, Proc, accepted, admin_addr, eventually, loopback, metrics, porthost_run};

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Moves the calling thread (and whatever it starts from now on) into a network namespace of
/// its own, with loopback up and `tcp_migrate_req = 1`; the machine's namespace is untouched.
/// The namespace goes away with its last socket and process.
fn own_network_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
        panic!(
            "cannot create a network namespace ({e}): this test runs as root (CAP_SYS_ADMIN), \
             as it does in CI, so that it can set net.ipv4.tcp_migrate_req = 1 without \
             touching the machine's setting"
        )
    });
    // `ip` runs in this thread's new namespace: a child starts in its parent thread's.
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): apt-get install iproute2"));
    assert!(up.success(), "`ip link set lo up` failed: {up}");
    // /proc/sys/net is the calling thread's namespace's.
    std::fs::write(MIGRATE_REQ, "1").unwrap_or_else(|e| {
        panic!(
            "cannot set {MIGRATE_REQ} ({e}): the test needs Linux 5.14 or newer, where \
             net.ipv4.tcp_migrate_req moves clients queued on a closing SO_REUSEPORT socket \
             to another one"
        )
    });
    assert_eq!(std::fs::read_to_string(MIGRATE_REQ).unwrap().trim(), "1");
}

/// One host's config: the shared port with `reuse_port = true`, under `model`, and an admin
/// endpoint to count what it accepted.
fn config(dir: &Path, name: &str, port: u16, model: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[host]\nshutdown_grace_secs = 5\nadmin = \"127.0.0.1:0\"\n\n\
         [ports.{port}]\nservice = \"palindrome-v3\"\nmodel = \"{model}\"\nreuse_port = true\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A host on the shared port: on `socket` when given (passed as systemd would), else binding
/// the port itself. Returns once it serves, with its admin endpoint's address.
fn start(name: &str, config: &Path, socket: Option<TcpListener>) -> (Proc, SocketAddr) {
    let (command, fds) = porthost_run(config, socket.into_iter().map(|s| (s, None)).collect());
    let mut host = Proc::spawn(name, command, fds);
    host.plan(1);
    let line = host.stdout_line();
    let admin = admin_addr(&line)
        .unwrap_or_else(|| panic!("{name} printed no admin address under its plan: {line}"));
    (host, admin)
}

/// Connections the host accepted on the shared port.
fn accepted_by(admin: SocketAddr, port: u16) -> u64 {
    accepted(&metrics(admin, None), port)
}

/// Fails the test if any session has failed so far.
fn no_failures(load: &Load, during: &str, hosts: &[&Proc]) {
    let failures = load.failures();
    let logs: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}:\n{}", h.name, h.log()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} sessions failed during {during}: {failures:#?}\n{}",
        failures.len(),
        load.served() as usize + failures.len(),
        logs.join("\n")
    );
}

#[test]
fn reuse_port_hosts_hand_over_under_load_without_failing_a_connection() {
    own_network_namespace();
    let dir = tempfile::tempdir().unwrap();
    let socket = porthost::sockets::bind_with(SocketAddr::new(loopback(1), 0), true).unwrap();
    let port = socket.local_addr().unwrap().port();
    let addr = SocketAddr::new(loopback(1), port);

    // Host A on a socket passed to it, the way systemd passes them.
    let (mut a, a_admin) = start(
        "host A",
        &config(dir.path(), "a", port, "async"),
        Some(socket),
    );
    let load = Load::start(&[addr], 4);
    load.wait_for(500);
    no_failures(&load, "host A alone", &[&a]);

    // Host B binds the same port itself; the kernel shares new clients between the two.
    let (mut b, b_admin) = start(
        "host B",
        &config(dir.path(), "b", port, "thread-per-client"),
        None,
    );
    let a_then = accepted_by(a_admin, port);
    assert!(
        eventually(|| {
            accepted_by(b_admin, port) >= 100 && accepted_by(a_admin, port) >= a_then + 100
        }),
        "A and B do not share the clients: {:?}",
        load.failures()
    );
    a.stop();
    let b_then = accepted_by(b_admin, port);
    load.wait_for(1000);
    no_failures(&load, "the hand-over from A to B", &[&a, &b]);
    // (Up to 4 of those sessions were accepted before `b_then` was read.)
    assert!(accepted_by(b_admin, port) >= b_then + 990, "B serves alone");

    // Host C takes over from host B the same way; B bound its socket itself.
    let (mut c, c_admin) = start(
        "host C",
        &config(dir.path(), "c", port, "process-per-client"),
        None,
    );
    assert!(
        eventually(|| accepted_by(c_admin, port) >= 100),
        "host C gets no clients: {:?}",
        load.failures()
    );
    b.stop();
    let c_then = accepted_by(c_admin, port);
    load.wait_for(500);
    no_failures(&load, "the hand-over from B to C", &[&b, &c]);
    assert!(accepted_by(c_admin, port) >= c_then + 490, "C serves alone");

    let (served, failures) = load.stop();
    assert!(failures.is_empty(), "{failures:#?}");
    c.stop();
    eprintln!("{served} sessions through two hand-overs, none failed");
}
