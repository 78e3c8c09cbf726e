//! The command line: `porthost services`, the palindrome client, shutdown.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    Client, HostProcess, Launch, MODELS, PATIENCE, TestHost, alive, descendants_of, entry,
    eventually, refused_addr, run, text, wait_exit,
};

#[test]
fn services_lists_exactly_the_registered_names() {
    let out = run(&["services"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    // A service's first line starts with its name; its models and options are indented.
    let names: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "exec",
            "palindrome-v1",
            "palindrome-v2",
            "palindrome-v3",
            "word-guess"
        ]
    );
    assert!(stdout.contains("models: sequential, thread-per-client, process-per-client, async"));
    // Each option with its default.
    assert!(stdout.contains("options: strict = false"), "{stdout}");
    assert!(stdout.contains("once = false"), "{stdout}");
    assert!(stdout.contains("players = 2"), "{stdout}");
}

fn palindrome_client(addr: &str, input: &str) -> (i32, String, String) {
    let mut child = crate::support::porthost()
        .args(["client", "palindrome", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A client that fails at once may not read its input: that is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn the_palindrome_client_prints_verdicts_from_piped_input() {
    let host = TestHost::start("", &[entry("palindrome-v2", "async", "")]);
    let addr = host.addr(0).to_string();
    let (code, stdout, stderr) =
        palindrome_client(&addr, "abba\nabc\nА роза упала на лапу Азора\n\nignored\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "\"abba\" is a palindrome\n\"abc\" is not a palindrome\n\
         \"А роза упала на лапу Азора\" is a palindrome\n"
    );
    // EOF ends the session as well as an empty line does.
    let (code, stdout, _) = palindrome_client(&addr, "12321");
    assert_eq!((code, stdout.as_str()), (0, "\"12321\" is a palindrome\n"));
}

#[test]
fn the_palindrome_client_fails_clearly() {
    let (_held, addr) = refused_addr();
    let (code, _, stderr) = palindrome_client(&addr.to_string(), "abba\n");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot connect to {addr}")),
        "{stderr}"
    );

    let host = TestHost::start("", &[entry("palindrome-v3", "async", "max_line_bytes = 8")]);
    let (code, stdout, stderr) =
        palindrome_client(&host.addr(0).to_string(), "abba\nabbaabbaabba\nabc\n");
    assert_eq!(code, 1);
    assert_eq!(stdout, "\"abba\" is a palindrome\n");
    assert!(stderr.contains("ERR line longer than 8 bytes"), "{stderr}");
}

#[test]
fn the_palindrome_client_quotes_at_most_80_characters_of_a_refused_line() {
    let host = TestHost::start(
        "",
        &[entry("palindrome-v3", "async", "max_line_bytes = 100")],
    );
    let addr = host.addr(0);
    let long = "ab".repeat(500);
    let (code, _, stderr) = palindrome_client(&addr.to_string(), &format!("{long}\n"));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "porthost: {addr} refused \"{}…\" (1000 characters): \"ERR line longer than 100 \
             bytes\"\n",
            "ab".repeat(40)
        )
    );
}

#[test]
fn sigterm_drains_every_model_and_leaves_no_process() {
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .collect();
    let mut host = HostProcess::start("", &entries);
    let mut clients: Vec<Client> = (0..MODELS.len())
        .map(|i| {
            let mut client = Client::connect(host.addr(i));
            assert_eq!(client.ask("abba"), "1");
            client
        })
        .collect();
    let descendants = descendants_of(host.pid());
    assert_eq!(
        descendants.len(),
        2 + porthost::config::Model::default_workers(),
        "the forker, one child, and the prefork port's workers"
    );

    let start = Instant::now();
    host.signal(Signal::SIGTERM);
    // During the grace period connected clients are still served.
    for client in &mut clients {
        assert_eq!(client.ask("abc"), "");
    }
    let status = host.wait_exit(PATIENCE).expect("exits");
    let took = start.elapsed();
    assert!(status.success(), "{status:?}\n{}", host.log());
    // shutdown_grace_secs = 2 in the test config.
    assert!(
        took >= Duration::from_secs(2),
        "clients were cut before the grace period: {took:?}"
    );
    // Cut off at the end of the grace period, each is told why first.
    for (client, model) in clients.iter_mut().zip(MODELS) {
        assert_eq!(
            client.line().as_deref(),
            Some("ERR server is shutting down"),
            "{model}"
        );
        assert!(client.is_closed(), "{model}");
    }
    for pid in descendants {
        assert!(!alive(pid), "process {pid} outlived the host");
    }
}

#[test]
fn sigterm_exits_at_once_when_clients_leave() {
    // A grace period far longer than the test's patience: exiting in time means not waiting it.
    let mut host = HostProcess::start(
        "shutdown_grace_secs = 600",
        &[entry("palindrome-v1", "process-per-client", "")],
    );
    let mut client = Client::connect(host.addr(0));
    assert_eq!(client.ask("abba"), "1");
    host.signal(Signal::SIGINT);
    assert_eq!(client.ask("abba"), "1");
    client.send(b"\n");
    assert!(client.is_closed());
    assert!(host.wait_exit(PATIENCE).unwrap().success());
    assert!(descendants_of(host.pid()).is_empty());
}

#[test]
fn the_host_logs_its_pid_and_reloads_on_sighup() {
    let mut host = HostProcess::start("", &[entry("palindrome-v3", "async", "")]);
    assert!(
        eventually(|| host.log().contains(&format!("pid={}", host.pid()))),
        "{}",
        host.log()
    );
    host.signal(Signal::SIGHUP);
    assert!(
        eventually(|| host.log().contains("reload: unchanged")),
        "{}",
        host.log()
    );
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(PATIENCE).unwrap().success());
}

/// `porthost run 2>&1 | tee host.log`, then Ctrl-C: the reader is gone before the host has
/// said its last words. It must still drain, reap everything and exit 0.
#[test]
fn a_closed_stderr_and_stdout_do_not_stop_the_drain() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut host = Launch {
        stderr: Some(Stdio::from(writer)),
        ..Launch::default()
    }
    .start(
        "",
        &[
            entry("palindrome-v3", "process-per-client", ""),
            entry("palindrome-v3", "thread-per-client", ""),
        ],
    );
    // The plan has been read; nobody reads stdout any more either.
    host.close_stdout();
    let mut clients: Vec<Client> = (0..2)
        .map(|i| {
            let mut client = Client::connect(host.addr(i));
            assert_eq!(client.ask("abba"), "1");
            client
        })
        .collect();
    let descendants = descendants_of(host.pid());
    assert_eq!(descendants.len(), 2, "the fork server and one child");
    host.signal(Signal::SIGINT);
    for client in &mut clients {
        assert_eq!(client.ask("abc"), "", "served during the grace period");
        client.send(b"\n");
        assert!(client.is_closed());
    }
    let status = host.wait_exit(PATIENCE).expect("exits");
    assert!(status.success(), "{status:?}");
    for pid in descendants {
        assert!(!alive(pid), "process {pid} outlived the host");
    }
}

/// Reads one datagram from the notify socket, waiting at most [`PATIENCE`].
fn notified(socket: &std::os::unix::net::UnixDatagram) -> String {
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notify message");
    text(&buf[..n])
}

/// Messages until one contains `want`; panics with what came instead.
fn notified_until(socket: &std::os::unix::net::UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let message = notified(socket);
        let done = message.contains(want);
        seen.push(message);
        if done {
            return seen;
        }
        assert!(seen.len() < 50, "no {want:?} in {seen:#?}");
    }
}

#[test]
fn systemd_hears_ready_reloading_stopping_status_and_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut host = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Launch::default()
    }
    .start("", &[entry("palindrome-v3", "async", "")]);
    let first = notified(&socket);
    assert!(first.contains("READY=1\n"), "{first:?}");
    assert!(
        first.contains("STATUS=serving 1 port, 0 connections open"),
        "{first:?}"
    );
    // Petted at half the interval.
    notified_until(&socket, "WATCHDOG=1");

    host.signal(Signal::SIGHUP);
    let reload = notified_until(&socket, "RELOADING=1");
    let reloading = reload.last().unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    notified_until(&socket, "READY=1");

    host.signal(Signal::SIGTERM);
    notified_until(&socket, "STOPPING=1");
    assert!(host.wait_exit(PATIENCE).unwrap().success());
}

#[test]
fn json_logs_carry_each_connections_port_service_model_and_peer() {
    let mut host = Launch {
        args: vec!["--log-format".into(), "json".into()],
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Launch::default()
    }
    .start(
        "",
        &[
            entry("palindrome-v3", "thread-per-client", ""),
            entry("palindrome-v1", "process-per-client", ""),
        ],
    );
    for i in 0..2 {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("abba"), "1");
        client.send(b"\n");
        assert!(client.is_closed());
    }
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(PATIENCE).unwrap().success());
    let log = host.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for (i, (service, model)) in [
        ("palindrome-v3", "thread-per-client"),
        ("palindrome-v1", "process-per-client"),
    ]
    .into_iter()
    .enumerate()
    {
        let of_port: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["span"]["port"] == host.ports[i])
            .collect();
        for message in ["connected", "disconnected"] {
            let line = of_port
                .iter()
                .find(|l| l["fields"]["message"] == message)
                .unwrap_or_else(|| panic!("no {message:?} for {model} in:\n{log}"));
            assert_eq!(line["span"]["service"], service, "{line}");
            assert_eq!(line["span"]["model"], model, "{line}");
            assert!(
                line["span"]["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:")),
                "{line}"
            );
        }
    }
}

#[test]
fn the_line_client_sends_what_is_typed_and_prints_what_comes_back() {
    let host = TestHost::start("", &[entry("palindrome-v3", "async", "")]);
    let mut child = crate::support::porthost()
        // A port alone is on this machine.
        .args(["client", "line", &host.ports[0].to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("abba\nabc\nА роза упала на лапу Азора\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n\n1\n");
}

/// A host whose descriptor limit cannot hold its ports full says so once at start, and one
/// whose limit can says nothing about it.
#[test]
fn a_descriptor_limit_too_low_for_the_ports_is_said_at_start() {
    let mut short = HostProcess::start_limited(64, "", &[entry("palindrome-v3", "async", "")]);
    short.signal(Signal::SIGTERM);
    assert!(short.wait_exit(PATIENCE).is_some_and(|s| s.success()));
    // In the plan's block, wrapped for a terminal; never in the log.
    let note = short.stdout_after_table();
    assert!(note.lines().all(|l| l.chars().count() <= 96), "{note}");
    assert!(
        note.replace("\n  ", " ").starts_with(
            "note: the ports may hold 10000 connections at once, 2 descriptors each, but this \
             process may open 64: beyond about 32 clients"
        ),
        "{note}"
    );
    assert!(!short.log().contains("descriptors each"), "{}", short.log());
    let mut ample = HostProcess::start(
        "",
        &[entry("palindrome-v3", "async", "max_connections = 10")],
    );
    ample.signal(Signal::SIGTERM);
    assert!(ample.wait_exit(PATIENCE).is_some_and(|s| s.success()));
    assert_eq!(ample.stdout_after_table(), "");
}

/// Starts `porthost client KIND ADDR` with stdin a pipe the test keeps open (a user who has
/// not typed yet), and waits for it to exit; a client still running after [`PATIENCE`] fails.
fn client_left_waiting(kind: &str, addr: &str, typed: &[u8]) -> std::process::Output {
    let mut child = crate::support::porthost()
        .args(["client", kind, addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = child.stdin.take().unwrap();
    keys.write_all(typed).unwrap();
    if wait_exit(&mut child, PATIENCE).is_none() {
        let _ = child.kill();
        panic!("the client outlives its connection");
    }
    drop(keys);
    child.wait_with_output().unwrap()
}

/// The server closes (an idle timeout) while the user has typed nothing more: the line client
/// exits at once with the server's last line, instead of swallowing the next lines typed.
#[test]
fn the_line_client_exits_when_the_server_closes() {
    let host = TestHost::start(
        "",
        &[entry("palindrome-v3", "async", "idle_timeout_secs = 1")],
    );
    let out = client_left_waiting("line", &host.addr(0).to_string(), b"abba\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\nERR idle for 1 s, closing\n");
}

/// The palindrome client shows the server's line when the server closes, not when the user
/// next types.
#[test]
fn the_palindrome_client_reports_a_close_when_it_happens() {
    let host = TestHost::start(
        "",
        &[entry("palindrome-v3", "async", "idle_timeout_secs = 1")],
    );
    let out = client_left_waiting("palindrome", &host.addr(0).to_string(), b"abba\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "\"abba\" is a palindrome\n");
    assert_eq!(
        text(&out.stderr),
        "porthost: the server closed the connection: \"ERR idle for 1 s, closing\"\n"
    );
}

/// Bytes that are not UTF-8 go out as they are (the client used to stop reading its input).
#[test]
fn the_line_client_sends_bytes_as_they_are() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
        conn.write_all(b"got it\n").unwrap();
        got
    });
    let mut child = crate::support::porthost()
        .args(["client", "line", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"caf\xe9\n\xff\xfe\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.join().unwrap(), b"caf\xe9\n\xff\xfe\n");
    assert_eq!(text(&out.stdout), "got it\n");
}

/// The plan's hint names the config the host runs, so `status` finds the same endpoint; the
/// live page's address is printed there once, not again in the log.
#[test]
fn the_plan_hints_status_with_the_same_config() {
    let mut host = HostProcess::start(
        "admin = \"127.0.0.1:0\"",
        &[entry("palindrome-v3", "async", "")],
    );
    let hint = host.stdout_line();
    assert!(hint.starts_with("live page: http://127.0.0.1:"), "{hint}");
    let config = hint.split("porthost status --config ").nth(1);
    assert!(
        config.is_some_and(|c| c.ends_with(".toml") && std::path::Path::new(c).is_absolute()),
        "{hint}"
    );
    let url = hint.split_whitespace().nth(2).unwrap();
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(PATIENCE).is_some_and(|s| s.success()));
    let rest = host.stdout_after_table();
    let log = host.log();
    assert!(
        !rest.contains(url) && !log.contains(url),
        "{url} printed again:\n{rest}\n{log}"
    );
}

/// A missing config passed with `--config` is not answered with "pass --config PATH"; `status`
/// without a config says which address it tries instead, and why.
#[test]
fn a_missing_config_is_named_and_status_says_what_it_tries() {
    let out = run(&["check", "--config", "/nonexistent/missing.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "porthost: config file /nonexistent/missing.toml not found\n"
    );
    let out = run(&["status", "--config", "/nonexistent/missing.toml"]);
    assert!(
        text(&out.stderr).starts_with(
            "porthost: cannot read the admin address from /nonexistent/missing.toml (cannot read \
             config file /nonexistent/missing.toml"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("trying 127.0.0.1:7000 (pass --config PATH or --admin ADDR)"),
        "{}",
        text(&out.stderr)
    );
}

/// The README's recipe for adding a service names the registration macro the tree uses and the
/// test that lists every registered name: following it ends with a green test command.
#[test]
fn the_adding_a_service_recipe_matches_the_tree() {
    let readme = include_str!("../README.md");
    let recipe = readme
        .split("<!-- add-service -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /add-service -->").next())
        .expect("README.md marks the recipe with add-service");
    let this_file = include_str!("cli.rs");
    assert!(this_file.contains("fn services_lists_exactly_the_registered_names()"));
    assert!(recipe.contains("`services_lists_exactly_the_registered_names` in `tests/cli.rs`"));
    assert!(recipe.contains("`cargo test --workspace`"));
    let example = include_str!("../examples/uppercase.rs");
    let line = example
        .lines()
        .position(|l| l.starts_with("porthost_services::register!(Registration {"))
        .expect("the example registers with register!")
        + 1;
    assert!(
        recipe.contains(&format!("examples/uppercase.rs:{line}")),
        "the recipe's error names the example's register! line, {line}"
    );
    assert!(
        readme.contains("porthost_services::register!(Registration {\n    name: \"uppercase\"")
    );
}
