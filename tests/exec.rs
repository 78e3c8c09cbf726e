//! `exec` ports against real programs: `/bin/cat`, a shell script, the Python palindrome
//! server of `examples/`, a C program this test compiles; under every model, with the
//! environment, the user, limits, stderr, drain and the faults a program can commit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    Client, EXEC_MODELS, HostProcess, TestHost, alive, config_file, descendants_of, entry,
    eventually, open_fds, run, text, zombies_of,
};

/// `options = { command = [...] }` for an entry, each word quoted as TOML.
fn command(words: &[&str]) -> String {
    let words: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    format!("options = {{ command = [{}] }}", words.join(", "))
}

/// A shell script in `dir`, executable.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn python_example() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/palindrome_stdio.py"
    )
    .to_owned()
}

#[test]
fn cat_echoes_under_every_model() {
    let cat = command(&["/bin/cat"]);
    let entries: Vec<_> = EXEC_MODELS.iter().map(|m| entry("exec", m, &cat)).collect();
    let host = TestHost::start("", &entries);
    for (i, model) in EXEC_MODELS.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("hello"), "hello", "{model}");
        assert_eq!(client.ask("А роза"), "А роза", "{model}");
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(client.is_closed(), "{model}: cat ends at end of input");
    }
}

#[test]
fn the_python_example_answers_like_palindrome_v3_under_every_model() {
    let python = command(&["python3", &python_example()]);
    let mut entries: Vec<_> = EXEC_MODELS
        .iter()
        .map(|m| entry("exec", m, &python))
        .collect();
    entries.push(entry("palindrome-v3", "async", ""));
    let host = TestHost::start("", &entries);
    let lines = [
        "abba",
        "А роза упала на лапу Азора",
        "abc",
        "Was it a car or a cat I saw?",
        "ab1",
        "12321",
        "паліндром",
        "ЇаЇ",
        "abba\r",
    ];
    let mut reference = Client::connect(host.addr(EXEC_MODELS.len()));
    let want: Vec<String> = lines.iter().map(|l| reference.ask(l)).collect();
    let long = "a".repeat(70_000);
    reference.send(format!("{long}\n").as_bytes());
    let too_long = reference.line();
    for (i, model) in EXEC_MODELS.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        let got: Vec<String> = lines.iter().map(|l| client.ask(l)).collect();
        assert_eq!(got, want, "{model}");
        client.send(b"\n");
        assert!(
            client.is_closed(),
            "{model}: an empty line ends the session"
        );
        let mut client = Client::connect(host.addr(i));
        client.send(format!("{long}\n").as_bytes());
        assert_eq!(client.line(), too_long, "{model}");
    }
}

#[test]
fn the_environment_is_clean_with_the_ucspi_variables() {
    let dir = tempfile::tempdir().unwrap();
    let env = script(dir.path(), "env.sh", "env | sort; pwd");
    let options = format!(
        "options = {{ command = [{:?}], env = {{ GREETING = \"hi there\" }} }}",
        env.to_str().unwrap()
    );
    let host = TestHost::start(
        "",
        &[
            entry("exec", "thread-per-client", &options),
            entry("exec", "process-per-client", &options),
        ],
    );
    for i in 0..2 {
        let mut client = Client::connect(host.addr(i));
        let local_port = client.stream.local_addr().unwrap().port();
        let mut lines = Vec::new();
        while let Some(line) = client.line() {
            lines.push(line);
        }
        let vars: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains('='))
            .map(|l| l.split('=').next().unwrap())
            .collect();
        // `sh` adds PWD (and may add SHLVL, `_`); nothing of the host's comes through.
        let expected = [
            "GREETING",
            "PATH",
            "PROTO",
            "TCPLOCALIP",
            "TCPLOCALPORT",
            "TCPREMOTEIP",
            "TCPREMOTEPORT",
        ];
        let unexpected: Vec<&&str> = vars
            .iter()
            .filter(|v| !expected.contains(v) && !["PWD", "SHLVL", "_", "OLDPWD"].contains(v))
            .collect();
        assert!(unexpected.is_empty(), "{lines:?}");
        for want in [
            "GREETING=hi there".to_owned(),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "PROTO=TCP".to_owned(),
            "TCPREMOTEIP=127.0.0.1".to_owned(),
            format!("TCPREMOTEPORT={local_port}"),
            "TCPLOCALIP=127.0.0.1".to_owned(),
            format!("TCPLOCALPORT={}", host.addr(i).port()),
        ] {
            assert!(lines.contains(&want), "{want} not in {lines:?}");
        }
        // The working directory is the config file's folder.
        assert_eq!(
            lines.last().map(PathBuf::from),
            Some(std::fs::canonicalize(&host.dir).unwrap()),
            "{lines:?}"
        );
    }
}

#[test]
fn a_c_program_runs_under_process_per_client_and_async() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("upper.c");
    std::fs::write(
        &source,
        "#include <ctype.h>\n#include <stdio.h>\n#include <stdlib.h>\n\
         int main(void) { const char *p = getenv(\"TCPREMOTEIP\"); printf(\"from %s\\n\", p ? p : \"?\");\n\
         fflush(stdout); int c; while ((c = getchar()) != EOF) { putchar(toupper(c)); if (c == '\\n') fflush(stdout); }\n\
         return 3; }\n",
    )
    .unwrap();
    let binary = dir.path().join("upper");
    let built = std::process::Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("cc runs");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let options = command(&[binary.to_str().unwrap()]);
    let host = HostProcess::start(
        "",
        &[
            entry("exec", "process-per-client", &options),
            entry("exec", "async", &options),
        ],
    );
    for i in 0..2 {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.line().as_deref(), Some("from 127.0.0.1"));
        assert_eq!(client.ask("shout"), "SHOUT");
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(client.is_closed());
    }
    // Both exits (code 3) are counted, and logged.
    assert!(
        eventually(|| host.log().matches("exited with code 3").count() >= 2),
        "{}",
        host.log()
    );
    assert_eq!(zombies_of(host.pid()), 0);
}

#[test]
fn check_reports_a_missing_program_an_unknown_user_and_refused_keys_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("data.txt");
    std::fs::write(&not_exec, "x").unwrap();
    let file = config_file(&format!(
        "[ports.7001]\nservice = \"exec\"\nmodel = \"async\"\noptions = {{ command = [\"no/such/prog\"] }}\n\
         [ports.7002]\nservice = \"exec\"\nmodel = \"async\"\noptions = {{ command = [{:?}] }}\n\
         [ports.7003]\nservice = \"exec\"\nmodel = \"async\"\noptions = {{ command = [\"/bin/cat\"], user = \"no-such-user-x\" }}\n\
         [ports.7004]\nservice = \"exec\"\nmodel = \"async\"\nidle_timeout_secs = 5\nmax_line_bytes = 10\noptions = {{ command = [\"/bin/cat\"] }}\n\
         [ports.7005]\nservice = \"exec\"\nmodel = \"async\"\noptions = {{ command = [\"/bin/cat\"], env = {{ TCPREMOTEIP = \"1.2.3.4\" }}, max_open_files = 1 }}\n",
        not_exec.to_str().unwrap()
    ));
    let path = file.path.to_str().unwrap();
    let out = run(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let folder = file.path.parent().unwrap().display().to_string();
    for want in [
        format!(
            "{path}:4:11: [ports.7001]: invalid options for exec: command[0] \"no/such/prog\" \
             (resolved to {folder}/no/such/prog) does not exist"
        ),
        format!("{path}:8:11: [ports.7002]: invalid options for exec: command[0]"),
        format!(
            "{path}:12:11: [ports.7003]: invalid options for exec: user \"no-such-user-x\" does not exist"
        ),
        format!("{path}:16:21: [ports.7004]: idle_timeout_secs does not apply to an exec port"),
        format!("{path}:17:18: [ports.7004]: max_line_bytes does not apply to an exec port"),
        format!(
            "{path}:22:11: [ports.7005]: invalid options for exec: env TCPREMOTEIP: the host sets"
        ),
    ] {
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
    assert!(stderr.contains("is not executable"), "{stderr}");
    assert!(
        stderr.contains("max_open_files = 1: must be from 3"),
        "{stderr}"
    );
}

#[test]
fn a_user_other_than_the_hosts_runs_only_under_root_with_that_users_groups() {
    let id = script(
        tempfile::tempdir().unwrap().keep().as_path(),
        "id.sh",
        "id -u; id -g; id -G",
    );
    let options = |user: &str| {
        format!(
            "options = {{ command = [{:?}], user = {user:?} }}",
            id.to_str().unwrap()
        )
    };
    if !nix::unistd::Uid::effective().is_root() {
        let err =
            TestHost::try_start("", &[entry("exec", "async", &options("nobody"))]).unwrap_err();
        assert!(
            err.contains("not as root, so it cannot run programs as another user"),
            "{err}"
        );
        return;
    }
    // The host holds groups of its own, which no program run as another user may keep.
    let host_groups = [0, 4242, 4343];
    // `nobody` is in no group but its own; a member of some other group shows that the
    // user's supplementary groups are given, not only root's taken away.
    let mut users = vec!["nobody".to_owned()];
    users.extend(a_user_with_supplementary_groups());
    for name in &users {
        let user = nix::unistd::User::from_name(name).unwrap().unwrap();
        let expected = std::process::Command::new("id")
            .args(["-G", name])
            .output()
            .unwrap();
        let expected = group_set(&text(&expected.stdout));
        for model in ["process-per-client", "thread-per-client"] {
            let host = crate::support::Launch {
                groups: host_groups.to_vec(),
                ..Default::default()
            }
            .start("", &[entry("exec", model, &options(name))]);
            let mut client = Client::connect(host.addr(0));
            assert_eq!(client.line(), Some(user.uid.to_string()), "{model} {name}");
            assert_eq!(client.line(), Some(user.gid.to_string()), "{model} {name}");
            let got = group_set(&client.line().unwrap());
            assert_eq!(got, expected, "{model}, user {name}: its groups");
            assert!(
                !got.contains(&4242) && !got.contains(&4343),
                "{model}, user {name}: the host's groups leaked: {got:?}"
            );
        }
    }
}

/// A user the group database lists as a member of some group, besides its own: a program run
/// as it must hold that group too. `None` on a machine without one.
fn a_user_with_supplementary_groups() -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups
        .lines()
        .filter_map(|line| line.split(':').nth(3))
        .flat_map(|members| members.split(','))
        .find(|name| !name.is_empty() && matches!(nix::unistd::User::from_name(name), Ok(Some(_))))
        .map(str::to_owned)
}

/// `id -G` words, as a sorted set.
fn group_set(line: &str) -> Vec<u32> {
    let mut groups: Vec<u32> = line
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[test]
fn a_program_starts_with_blocking_descriptors_and_default_signals_under_every_model() {
    let dir = tempfile::tempdir().unwrap();
    // The descriptors and signal state the shell got from the host, kept across its `exec`
    // (a shell running commands blocks signals of its own around each).
    let state = script(
        dir.path(),
        "state.sh",
        "exec grep -E '^(flags|SigBlk|SigIgn)' /proc/self/fdinfo/0 /proc/self/fdinfo/1 \
         /proc/self/fdinfo/2 /proc/self/status",
    );
    let options = command(&[state.to_str().unwrap()]);
    let entries: Vec<_> = EXEC_MODELS
        .iter()
        .map(|m| entry("exec", m, &options))
        .collect();
    let host = TestHost::start("", &entries);
    for (i, model) in EXEC_MODELS.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        let lines: Vec<String> = std::iter::from_fn(|| client.line()).collect();
        assert_eq!(lines.len(), 5, "{model}: {lines:?}");
        let value = |line: &str| line.rsplit(['\t', ' ']).next().unwrap().to_owned();
        for (fd, line) in lines[..3].iter().enumerate() {
            let flags = u32::from_str_radix(&value(line), 8).unwrap();
            assert_eq!(
                flags & nix::libc::O_NONBLOCK as u32,
                0,
                "{model}: descriptor {fd} is non-blocking: {line}"
            );
        }
        let mask = |line: &str| u64::from_str_radix(&value(line), 16);
        assert_eq!(
            mask(&lines[3]),
            Ok(0),
            "{model}: blocked signals: {lines:?}"
        );
        // Rust ignores SIGPIPE in the host; a program gets it back at its default.
        let sigpipe = 1 << (nix::libc::SIGPIPE - 1);
        assert_eq!(
            mask(&lines[4]).unwrap() & sigpipe,
            0,
            "{model}: SIGPIPE ignored: {lines:?}"
        );
    }
}

#[test]
fn limits_reach_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let limits = script(dir.path(), "limits.sh", "ulimit -n; ulimit -t; ulimit -v");
    let options = format!(
        "options = {{ command = [{:?}], max_open_files = 20, max_cpu_secs = 7, \
         max_address_space_bytes = 1073741824 }}",
        limits.to_str().unwrap()
    );
    for model in ["process-per-client", "async"] {
        let host = TestHost::start("", &[entry("exec", model, &options)]);
        let mut client = Client::connect(host.addr(0));
        assert_eq!(client.line().as_deref(), Some("20"), "{model}");
        assert_eq!(client.line().as_deref(), Some("7"), "{model}");
        assert_eq!(
            client.line().as_deref(),
            Some("1048576"),
            "{model}: ulimit -v is in KiB"
        );
    }
}

#[test]
fn faults_end_the_client_and_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let crash = script(dir.path(), "crash.sh", "echo bye; kill -SEGV $$");
    let quick = script(dir.path(), "quick.sh", "exit 0");
    // A child in the program's group, and a grandchild in a session of its own; both hold the
    // socket after the program has exited.
    let forks = script(
        dir.path(),
        "forks.sh",
        "sleep 300 & echo $!; setsid sleep 301 & p=$!; \
         while [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do sleep 0.01; done; \
         echo $p; echo ready; exit 0",
    );
    for model in [
        "process-per-client",
        "thread-per-client",
        "async",
        "sequential",
    ] {
        let removed = script(dir.path(), "removed.sh", "echo never");
        let host = HostProcess::start(
            "",
            &[
                entry("exec", model, &command(&[crash.to_str().unwrap()])),
                entry("exec", model, &command(&[quick.to_str().unwrap()])),
                entry("exec", model, &command(&[removed.to_str().unwrap()])),
                entry("exec", model, &command(&[forks.to_str().unwrap()])),
                entry("exec", model, &command(&["/bin/cat"])),
            ],
        );
        if model == "process-per-client" {
            // The fork server starts with the first client; count descriptors after it.
            let mut first = Client::connect(host.addr(4));
            assert_eq!(first.ask("warm"), "warm");
        }
        let before = open_fds(host.pid());
        // A client of `cat` that stays connected through everything.
        let mut bystander = Client::connect(host.addr(4));
        assert_eq!(bystander.ask("one"), "one");
        std::fs::remove_file(&removed).ok();
        for round in 0..3 {
            let mut crashed = Client::connect(host.addr(0));
            assert_eq!(crashed.line().as_deref(), Some("bye"), "{model}");
            assert!(crashed.is_closed(), "{model}");
            assert!(Client::connect(host.addr(1)).is_closed(), "{model}");
            assert!(
                Client::connect(host.addr(2)).is_closed(),
                "{model}: removed after check"
            );
            let mut forked = Client::connect(host.addr(3));
            let in_group: u32 = forked.line().unwrap().parse().unwrap();
            let escaped: i32 = forked.line().unwrap().parse().unwrap();
            assert_eq!(forked.line().as_deref(), Some("ready"));
            let started = Instant::now();
            assert!(forked.is_closed(), "{model} round {round}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{model}: held open"
            );
            assert!(
                eventually(|| !alive(in_group)),
                "{model}: the group's child lives on"
            );
            // The grandchild in its own session outlives its program, but not with the socket.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(escaped), Signal::SIGKILL).unwrap();
        }
        assert_eq!(
            bystander.ask("two"),
            "two",
            "{model}: the bystander noticed"
        );
        drop(bystander);
        let log = host.log();
        assert!(log.contains("killed by SIGSEGV"), "{model}: {log}");
        assert!(log.contains("removed.sh"), "{model}: {log}");
        let host_pid = host.pid();
        let forker = host.forker();
        assert!(
            eventually(|| open_fds(host_pid) <= before
                && zombies_of(host_pid) == 0
                && forker.is_none_or(|f| zombies_of(f) == 0)),
            "{model}: {} descriptors, {before} before; {} zombies",
            open_fds(host_pid),
            zombies_of(host_pid)
        );
    }
}

#[test]
fn a_drain_terms_then_kills_a_program_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let stubborn = script(
        dir.path(),
        "stubborn.sh",
        "trap 'echo got TERM >&2' TERM; echo $$; while true; do sleep 0.1; done",
    );
    let polite = script(
        dir.path(),
        "polite.sh",
        "trap 'exit 0' TERM; echo $$; while true; do sleep 0.1; done",
    );
    for model in ["process-per-client", "thread-per-client", "async"] {
        let mut host = HostProcess::start(
            "shutdown_grace_secs = 2",
            &[
                entry("exec", model, &command(&[stubborn.to_str().unwrap()])),
                entry("exec", model, &command(&[polite.to_str().unwrap()])),
            ],
        );
        let mut stubborn_client = Client::connect(host.addr(0));
        let stubborn_pid: u32 = stubborn_client.line().unwrap().parse().unwrap();
        let mut polite_client = Client::connect(host.addr(1));
        let polite_pid: u32 = polite_client.line().unwrap().parse().unwrap();
        let started = Instant::now();
        host.signal(Signal::SIGTERM);
        assert!(
            eventually(|| !alive(polite_pid)),
            "{model}: SIGTERM at the drain's start"
        );
        assert!(started.elapsed() < Duration::from_millis(1500), "{model}");
        assert!(polite_client.is_closed());
        let status = host
            .wait_exit(Duration::from_secs(10))
            .expect("the host ends");
        assert!(status.success(), "{model}");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{model}: killed before the grace"
        );
        assert!(!alive(stubborn_pid), "{model}");
        assert!(stubborn_client.is_closed());
        let log = host.log();
        assert!(log.contains("got TERM"), "{model}: {log}");
        assert!(log.contains("killed by SIGKILL"), "{model}: {log}");
    }
}

#[test]
fn a_stderr_flood_is_logged_bounded_and_the_program_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let flood = script(
        dir.path(),
        "flood.sh",
        "head -c 3000 /dev/zero | tr '\\0' x >&2; echo >&2; \
         i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done >&2; echo done",
    );
    for model in ["process-per-client", "async"] {
        let host = HostProcess::start(
            "",
            &[entry("exec", model, &command(&[flood.to_str().unwrap()]))],
        );
        let mut client = Client::connect(host.addr(0));
        assert_eq!(client.line().as_deref(), Some("done"), "{model}");
        assert!(client.is_closed());
        assert!(
            eventually(|| host.log().contains("more lines dropped")),
            "{model}"
        );
        let log = host.log();
        let logged = log.lines().filter(|l| l.contains("stderr: line ")).count();
        assert!((1..=50).contains(&logged), "{model}: {logged} lines logged");
        assert!(log.contains("(1976 more bytes cut)"), "{model}: {log}");
        assert!(
            log.lines()
                .filter(|l| l.contains("stderr:"))
                .all(|l| l.len() < 1400)
        );
        assert!(log.contains("pid="), "{model}");
        assert!(descendants_of(host.pid()).len() <= 1, "{model}");
    }
}

#[test]
fn the_state_and_metrics_show_programs_their_pids_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "pid.sh", "echo $$; read line; exit 4");
    let options = command(&[program.to_str().unwrap()]);
    let host = TestHost::start(
        "admin = \"127.0.0.1:0\"",
        &[
            entry("exec", "thread-per-client", &options),
            entry("exec", "process-per-client", &options),
        ],
    );
    let admin = host.admin_addr().unwrap();
    let get = |path: &str| {
        let (status, body) = porthost_cli::status::http_get(admin, path, None).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let mut clients: Vec<Client> = (0..2).map(|i| Client::connect(host.addr(i))).collect();
    let pids: Vec<u32> = clients
        .iter_mut()
        .map(|c| c.line().unwrap().parse().unwrap())
        .collect();
    // The state lists ports by number, not in the config's order, and only once sampled.
    let port_view = |i: usize| -> serde_json::Value {
        let state: serde_json::Value = serde_json::from_str(&get("/api/state")).unwrap();
        state["ports"]
            .as_array()
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p["port"] == serde_json::json!(host.ports[i]))
            })
            .cloned()
            .unwrap_or_default()
    };
    for (i, pid) in pids.iter().enumerate() {
        assert!(
            eventually(|| port_view(i)["children"] == serde_json::json!([pid])),
            "{i}: {}",
            port_view(i)
        );
        assert_eq!(
            port_view(i)["command"],
            serde_json::json!([program.to_str().unwrap()])
        );
    }
    for client in &mut clients {
        client.send(b"bye\n");
        assert!(client.is_closed());
    }
    for (i, model) in ["thread-per-client", "process-per-client"]
        .iter()
        .enumerate()
    {
        let labels = format!(
            "porthost_child_exits_total{{port=\"{}\",service=\"exec\",model=\"{model}\",how=\"code\",value=\"4\"}} 1",
            host.ports[i]
        );
        assert!(
            eventually(|| get("/metrics").contains(&labels)),
            "{labels}\n{}",
            get("/metrics")
        );
    }
}

#[test]
fn behind_a_proxy_the_program_sees_the_real_client_and_where_it_connected() {
    let dir = tempfile::tempdir().unwrap();
    let env = script(
        dir.path(),
        "addresses.sh",
        "echo $TCPREMOTEIP $TCPREMOTEPORT $TCPLOCALIP $TCPLOCALPORT",
    );
    let options = format!(
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n{}",
        command(&[env.to_str().unwrap()])
    );
    let entries: Vec<_> = EXEC_MODELS
        .iter()
        .map(|m| entry("exec", m, &options))
        .collect();
    let host = TestHost::start("", &entries);
    for (i, model) in EXEC_MODELS.iter().enumerate() {
        let mut client = Client::connect(host.addr(i));
        client.send(b"PROXY TCP4 192.0.2.7 198.51.100.9 5555 8080\r\n");
        assert_eq!(
            client.line().as_deref(),
            Some("192.0.2.7 5555 198.51.100.9 8080"),
            "{model}"
        );
        // A header without addresses: the socket's own stand, as the spec says.
        let mut client = Client::connect(host.addr(i));
        let me = client.stream.local_addr().unwrap();
        client.send(b"PROXY UNKNOWN\r\n");
        assert_eq!(
            client.line(),
            Some(format!(
                "127.0.0.1 {} 127.0.0.1 {}",
                me.port(),
                host.addr(i).port()
            )),
            "{model}"
        );
    }
}
