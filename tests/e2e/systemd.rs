//! porthost under systemd's own socket activation tool, `systemd-socket-activate` (Debian
//! package `systemd`): it passes listening sockets the way a `.socket` unit does (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) and starts porthost on the first connection. The test reads
//! the notify messages (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1`) from a
//! datagram socket it binds as `NOTIFY_SOCKET`. Not part of `cargo test --workspace`: run it
//! with `cargo test --test systemd` where the tool is installed (`.ci/run` does). It fails,
//! never skips, without it.
//!
//! No port number is guessed: the test binds its listening sockets to port 0 and passes them
//! to `systemd-socket-activate` as descriptors 3, 4, ... with `LISTEN_FDS`, which it reads
//! with `sd_listen_fds()` (so `LISTEN_PID` must be its own pid: it is started through `sh`,
//! which sets it to `$$` and `exec`s it) and passes on to porthost with the names `--fdname`
//! gives them.

#[path = "../support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};

use support::{
    Client, PATIENCE, PORTHOST, Proc, accept_queue, eventually, fds, listener, loopback, port_of,
};

const TOOL: &str = "systemd-socket-activate";

/// Fails the test, saying what to install, when the tool is missing.
fn require_tool() {
    let out = Command::new(TOOL).arg("--version").output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "{TOOL} is not installed: apt-get install systemd"
    );
}

/// `systemd-socket-activate` with `sockets` as its descriptors 3, 4, ... (read by it with
/// `sd_listen_fds()`, named by `fdnames`), `env` passed on to porthost with `-E`, and porthost
/// to run with `config`.
fn socket_activate(
    sockets: Vec<TcpListener>,
    fdnames: &[&str],
    env: &[(&str, &str)],
    config: &Path,
) -> Proc {
    require_tool();
    let mut command = Command::new("sh");
    // `exec` keeps the shell's pid, which `sd_listen_fds()` checks against `LISTEN_PID`.
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$@\"", "sh", TOOL])
        .env("LISTEN_FDS", sockets.len().to_string());
    for name in fdnames {
        command.arg(format!("--fdname={name}"));
    }
    for (key, value) in env {
        // porthost gets only what `-E` passes: the tool starts it with an environment of its own.
        command.arg(format!("-E{key}={value}"));
    }
    command
        .args(["-ERUST_LOG=info", PORTHOST, "run", "--config"])
        .arg(config);
    Proc::spawn(TOOL, command, fds(sockets))
}

/// A port number that the test holds and the host can still bind: a socket bound to port 0
/// with `SO_REUSEADDR` and never listening. Linux lets another socket with `SO_REUSEADDR` (the
/// host binds that way) bind an address none of whose sockets listens; the kernel gives the
/// port to no port-0 bind meanwhile, and a socket without `SO_REUSEADDR` cannot bind it.
fn reserved_port() -> (Socket, u16) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::new(loopback(1), 0).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// The datagram socket porthost is told to notify (`NOTIFY_SOCKET`).
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn bind() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notify {
            socket,
            path,
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next message, waiting at most `wait`.
    fn within(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one contains `want`; panics with what came instead.
    fn until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let message = self
                .within(PATIENCE)
                .unwrap_or_else(|| panic!("no {want:?} in {PATIENCE:?}; before it: {seen:#?}"));
            let done = message.contains(want);
            seen.push(message);
            if done {
                return seen;
            }
            assert!(seen.len() < 100, "no {want:?} in {seen:#?}");
        }
    }
}

fn config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("services.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn port(number: u16, service: &str, model: &str) -> String {
    format!("[ports.{number}]\nservice = \"{service}\"\nmodel = \"{model}\"\n")
}

/// The plan's row for a port.
fn row(plan: &[String], number: u16) -> &str {
    plan.iter()
        .find(|r| r.starts_with(&format!("{number} ")))
        .unwrap_or_else(|| panic!("no row for {number} in {plan:#?}"))
}

/// A new client on `addr` is served, or the test fails with the host's log.
fn served(process: &Proc, addr: SocketAddr) {
    let mut client = Client::connect(addr);
    client.send_line("abba");
    assert_eq!(
        client.line_within(PATIENCE).as_deref(),
        Some("1"),
        "{addr} was not served; the log:\n{}",
        process.log()
    );
}

/// Waits until the log has `text`, failing with the log.
fn logged(process: &Proc, text: &str) {
    assert!(
        eventually(|| process.log().contains(text)),
        "{} never logged {text:?}:\n{}",
        process.name,
        process.log()
    );
}

#[test]
fn porthost_serves_the_sockets_systemd_passes_and_keeps_them_across_reloads() {
    // Claimed by its name only: the config gives the port 127.0.0.1, the socket is on 127.0.0.2.
    let named = listener(loopback(2));
    // Claimed by its address, with no name.
    let unnamed = listener(loopback(1));
    // Named; a reload removes its port and another adds it back.
    let removable = listener(loopback(1));
    // No socket passed: the host binds this one itself, as without systemd.
    let (_held, own) = reserved_port();
    let (by_name, by_addr, back) = (port_of(&named), port_of(&unnamed), port_of(&removable));
    let dir = tempfile::tempdir().unwrap();
    let write = |ports: &[String]| {
        config(
            dir.path(),
            &format!("[host]\nshutdown_grace_secs = 2\n{}", ports.concat()),
        )
    };
    let path = write(&[
        port(by_name, "palindrome-v3", "async"),
        port(by_addr, "palindrome-v3", "thread-per-client"),
        port(back, "palindrome-v1", "thread-per-client"),
        port(own, "palindrome-v2", "sequential"),
    ]);
    let notify = Notify::bind();
    let mut activate = socket_activate(
        vec![named, unnamed, removable],
        &[&by_name.to_string(), "", &back.to_string()],
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &path,
    );
    // The tool took the sockets from us and waits for a first connection.
    logged(
        &activate,
        &format!("Listening on 127.0.0.2:{by_name} as 3."),
    );
    logged(
        &activate,
        &format!("Listening on 127.0.0.1:{by_addr} as 4."),
    );
    logged(&activate, &format!("Listening on 127.0.0.1:{back} as 5."));
    assert_eq!(
        notify.within(Duration::from_millis(200)),
        None,
        "porthost runs already"
    );

    // The first connection starts porthost, which serves it.
    let mut first = Client::connect(SocketAddr::new(loopback(2), by_name));
    assert_eq!(first.ask("abba"), "1");
    logged(&activate, "Execing");
    let plan = activate.plan(4);
    assert!(plan[0].ends_with("SOCKET"), "{plan:#?}");
    let expect = [
        (
            by_name,
            format!("passed (fd 3, {by_name}) on 127.0.0.2:{by_name}"),
        ),
        (by_addr, format!("passed (fd 4) on 127.0.0.1:{by_addr}")),
        (back, format!("passed (fd 5, {back}) on 127.0.0.1:{back}")),
        (own, "bound".to_owned()),
    ];
    for (number, socket) in &expect {
        assert!(row(&plan, *number).ends_with(socket.as_str()), "{plan:#?}");
    }
    // The tool exec'd porthost: one process, so LISTEN_PID was right for both.
    logged(&activate, &format!("pid={}", activate.pid()));
    let ready = notify.until("READY=1");
    let ready = ready.last().unwrap();
    assert!(ready.contains("STATUS=serving 4 ports, "), "{ready:?}");
    notify.until("WATCHDOG=1");
    for addr in [
        SocketAddr::new(loopback(1), by_addr),
        SocketAddr::new(loopback(1), back),
        SocketAddr::new(loopback(1), own),
    ] {
        let mut client = Client::connect(addr);
        assert_eq!(client.ask("abc"), "", "{addr}");
        assert_eq!(client.ask("abba"), "1", "{addr}");
    }
    drop(first);

    // A reload leaves two ports alone (they keep their passed sockets and connections) and
    // removes a third (its socket stays passed, not closed, so clients wait in its backlog).
    let mut held = Client::connect(SocketAddr::new(loopback(1), by_addr));
    assert_eq!(held.ask("abba"), "1");
    write(&[
        port(by_name, "palindrome-v3", "async"),
        port(by_addr, "palindrome-v3", "thread-per-client"),
        port(own, "palindrome-v2", "sequential"),
    ]);
    activate.signal(Signal::SIGHUP);
    let reloading = notify.until("RELOADING=1");
    assert!(
        reloading.last().unwrap().contains("MONOTONIC_USEC="),
        "{reloading:?}"
    );
    notify.until("READY=1");
    for number in [by_name, by_addr] {
        logged(&activate, &format!("reload: unchanged port={number}"));
    }
    logged(
        &activate,
        &format!("reload: removed; draining its connections port={back}"),
    );
    // Until the removed port has drained, its accept loop may still take a client.
    logged(&activate, &format!("old connections drained port={back}"));
    assert_eq!(
        held.ask("abba"),
        "1",
        "an unchanged port keeps its connections"
    );
    for addr in [
        SocketAddr::new(loopback(2), by_name),
        SocketAddr::new(loopback(1), by_addr),
    ] {
        served(&activate, addr);
    }
    // The removed port's socket still listens: this client waits in its backlog...
    let mut waiting = Client::connect(SocketAddr::new(loopback(1), back));
    waiting.send_line("abba");
    assert!(
        eventually(|| accept_queue(back) == Some(1)),
        "the client of a removed port is not left in its accept queue: {:?}",
        accept_queue(back)
    );
    assert_eq!(
        waiting.line_within(Duration::from_millis(1)),
        None,
        "served while its port is removed"
    );

    // ...until a reload adds the port back on that same socket and serves it.
    write(&[
        port(by_name, "palindrome-v3", "async"),
        port(by_addr, "palindrome-v3", "thread-per-client"),
        port(back, "palindrome-v2", "async"),
        port(own, "palindrome-v2", "sequential"),
    ]);
    activate.signal(Signal::SIGHUP);
    notify.until("RELOADING=1");
    notify.until("READY=1");
    logged(&activate, &format!("reload: added port={back}"));
    assert_eq!(waiting.expect_line(), "1");
    let mut again = Client::connect(SocketAddr::new(loopback(1), back));
    assert_eq!(again.ask("abba"), "1");
    assert!(
        !activate.log().contains("ERROR"),
        "errors in the log:\n{}",
        activate.log()
    );
    drop((held, waiting, again));

    activate.signal(Signal::SIGTERM);
    notify.until("STOPPING=1");
    let status = activate.wait_exit(PATIENCE);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        activate.log()
    );
}

#[test]
fn a_passed_socket_no_port_claims_stops_the_host_naming_its_descriptor() {
    let claimed = listener(loopback(1));
    let named = listener(loopback(1));
    let unnamed = listener(loopback(1));
    let (number, web, other) = (port_of(&claimed), port_of(&named), port_of(&unnamed));
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &port(number, "palindrome-v3", "async"));
    let notify = Notify::bind();
    let mut activate = socket_activate(
        vec![claimed, named, unnamed],
        &[&number.to_string(), "web", ""],
        &[("NOTIFY_SOCKET", notify.path())],
        &path,
    );
    logged(&activate, &format!("Listening on 127.0.0.1:{other} as 5."));
    // The first connection starts porthost, which refuses to run: the client is never served.
    let mut client = Client::connect(SocketAddr::new(loopback(1), number));
    client.send_line("abba");
    assert!(client.is_closed(), "served by a host that should not run");
    let status = activate.wait_exit(PATIENCE).expect("porthost exits");
    assert_eq!(status.code(), Some(1), "{}", activate.log());
    let log = activate.log();
    assert!(
        log.contains(&format!(
            "sockets were passed in that no port of the config claims: fd 4 (\"web\", \
             127.0.0.1:{web}), fd 5 (127.0.0.1:{other})"
        )),
        "{log}"
    );
    assert_eq!(
        notify.within(Duration::from_millis(100)),
        None,
        "told systemd something"
    );
}

/// A stopping host closes its listening sockets so that new clients are refused at once
/// (`host/listener.rs`, `hand_over`), and a proxy or client tries elsewhere, passed sockets
/// included: `Supervisor::drain` first lets go of the descriptors `Sockets` keeps for reloads.
/// (Under a real `.socket` unit systemd holds the socket anyway and clients wait for the next
/// start; a host started by `systemd-socket-activate`, by a test or by any parent that gave
/// its sockets away would otherwise leave them waiting unanswered, then reset them.)
#[test]
fn a_draining_host_refuses_new_clients_on_passed_sockets_at_once() {
    let passed = listener(loopback(1));
    let number = port_of(&passed);
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!(
            "[host]\nshutdown_grace_secs = 10\n{}",
            port(number, "palindrome-v3", "async")
        ),
    );
    let notify = Notify::bind();
    let mut activate = socket_activate(
        vec![passed],
        &[&number.to_string()],
        &[("NOTIFY_SOCKET", notify.path())],
        &path,
    );
    let addr = SocketAddr::new(loopback(1), number);
    // Connected through the drain, so that it lasts the grace period.
    let mut held = Client::connect(addr);
    assert_eq!(held.ask("abba"), "1");
    notify.until("READY=1");
    activate.signal(Signal::SIGTERM);
    notify.until("STOPPING=1");
    logged(&activate, "stopped accepting");
    // It logs that just before it closes the socket; from then on, every new client is refused
    // (the grace period lasts 10 s).
    let refused = || {
        matches!(
            TcpStream::connect_timeout(&addr, PATIENCE),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !refused() {
        assert!(
            std::time::Instant::now() < deadline,
            "new clients still connect 2 s into the drain: the socket still listens"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(held.ask("abba"), "1", "served through the grace period");
    drop(held);
    let status = activate.wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// A reload that changes a port continues on the port's socket (README: "ports whose entry
/// changed drain their clients and continue on the same socket"), also a socket claimed by its
/// name whose address is not the config's (a `.socket` unit with `ListenStream=[::]:7004`, as
/// `examples/systemd/porthost@.socket` suggests, for a port the config binds to 127.0.0.1).
/// Rebinding the config's address instead would leave the passed socket listening with nobody
/// accepting, its clients waiting for ever.
#[test]
fn a_reload_that_changes_a_port_keeps_the_socket_it_claimed_by_name() {
    let named = listener(loopback(2));
    let number = port_of(&named);
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &port(number, "palindrome-v3", "async"));
    let notify = Notify::bind();
    let activate = socket_activate(
        vec![named],
        &[&number.to_string()],
        &[("NOTIFY_SOCKET", notify.path())],
        &path,
    );
    let addr = SocketAddr::new(loopback(2), number);
    assert_eq!(Client::connect(addr).ask("abba"), "1");
    notify.until("READY=1");
    config(
        dir.path(),
        &port(number, "palindrome-v3", "thread-per-client"),
    );
    activate.signal(Signal::SIGHUP);
    notify.until("READY=1");
    logged(&activate, &format!("old connections drained port={number}"));
    let mut client = Client::connect(addr);
    client.send_line("abba");
    assert_eq!(
        client.line_within(Duration::from_secs(5)),
        Some("1".to_owned()),
        "the passed socket is no longer served after the reload:\n{}",
        activate.log()
    );
}

/// The same, for a socket claimed by its address, where a race used to lose it: the reload
/// must take the old port's listener before it tells the old accept loop to stop, or that
/// loop's `hand_over` takes (and closes) it first, and the reload, finding the passed socket
/// still listening, cannot bind its address. This test changes the port's model 100 times and
/// checks that it is served after each.
#[test]
fn every_reload_that_changes_a_port_keeps_its_passed_socket() {
    let passed = listener(loopback(1));
    let number = port_of(&passed);
    let dir = tempfile::tempdir().unwrap();
    let models = ["async", "thread-per-client"];
    let path = config(dir.path(), &port(number, "palindrome-v3", models[0]));
    let notify = Notify::bind();
    let activate = socket_activate(
        vec![passed],
        &[""],
        &[("NOTIFY_SOCKET", notify.path())],
        &path,
    );
    let addr = SocketAddr::new(loopback(1), number);
    served(&activate, addr);
    notify.until("READY=1");
    for i in 1..=100 {
        config(dir.path(), &port(number, "palindrome-v3", models[i % 2]));
        activate.signal(Signal::SIGHUP);
        notify.until("READY=1");
        // Until the old port has drained, its accept loop may still take a client.
        assert!(
            eventually(|| activate.log().matches("old connections drained").count() >= i),
            "{}",
            activate.log()
        );
        served(&activate, addr);
    }
}
