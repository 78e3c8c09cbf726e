//! `porthost check` and `porthost run` on bad configs: every error names the file, the line
//! and column, the port entry and the reason, and the exit code is 1.

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use command_fds::{CommandFdExt, FdMapping};

use crate::support::{TestHost, config_file, entry, porthost, refused_addr, run, text};

/// Runs `porthost check` on `config` text; returns (exit code, stderr, config path).
fn check(config: &str) -> (i32, String, String) {
    let file = config_file(config);
    let path = file.path.to_str().unwrap().to_owned();
    let out = run(&["check", "--config", &path]);
    (out.status.code().unwrap(), text(&out.stderr), path)
}

fn assert_error(config: &str, position: &str, entry: &str, reason: &str) {
    let (code, stderr, path) = check(config);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("{path}:{position}: {entry}{reason}");
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
}

const GOOD: &str = "[ports.7001]\nservice = \"palindrome-v1\"\nmodel = \"sequential\"\n";

#[test]
fn a_valid_config_prints_the_plan() {
    let file = config_file(&format!("[host]\nbind = \"::1\"\n{GOOD}"));
    let out = run(&["check", "--config", file.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("7001  ::1      palindrome-v1  sequential  1"),
        "{stdout}"
    );
}

#[test]
fn the_shipped_config_is_valid() {
    let out = run(&[
        "check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/services.toml"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn unknown_keys_are_typos() {
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v1\"\nmodle = \"sequential\"\n",
        "3:1",
        "[ports.7001]: ",
        "unknown field `modle`, expected one of",
    );
    assert_error(
        &format!("[host]\nbnd = \"127.0.0.1\"\n{GOOD}"),
        "2:1",
        "[host]: ",
        "unknown field `bnd`",
    );
    assert_error(
        &format!("[hosts]\n{GOOD}"),
        "1:2",
        "",
        "unknown table `hosts`",
    );
}

#[test]
fn wrong_types() {
    assert_error(
        &format!("{GOOD}max_line_bytes = \"big\"\n"),
        "4:18",
        "[ports.7001]: ",
        "max_line_bytes must be a whole number of bytes from 1 to 16777216, not the string \"big\"",
    );
    assert_error(
        &format!("[host]\nshutdown_grace_secs = -1\n{GOOD}"),
        "2:23",
        "[host]: ",
        "shutdown_grace_secs must be a whole number of seconds from 0 to 3600, not -1",
    );
    assert_error(
        "[ports.7001]\nservice = 5\nmodel = \"async\"\n",
        "2:11",
        "[ports.7001]: ",
        "service must be a string, the name of a registered service, not 5",
    );
}

#[test]
fn ports_are_numbers_from_1_to_65535() {
    for (key, column) in [("0", 8), ("65536", 8), ("http", 8), ("\"70.1\"", 8)] {
        let config = format!("[ports.{key}]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n");
        let shown = key.trim_matches('"');
        assert_error(
            &config,
            &format!("1:{column}"),
            &format!("[ports.{shown}]: "),
            &format!("port \"{shown}\" is not a number between 1 and 65535"),
        );
    }
}

#[test]
fn unknown_services_list_the_registered_ones_and_suggest() {
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v4\"\nmodel = \"async\"\n",
        "2:11",
        "[ports.7001]: ",
        "unknown service \"palindrome-v4\"; did you mean \"palindrome-v1\"? registered services: \
         exec, palindrome-v1, palindrome-v2, palindrome-v3",
    );
}

#[test]
fn unknown_models_list_the_four() {
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v1\"\nmodel = \"forking\"\n",
        "3:9",
        "[ports.7001]: ",
        "unknown model \"forking\"; expected one of: sequential, thread-per-client, \
         process-per-client, async",
    );
}

#[test]
fn invalid_service_options_carry_the_service_message() {
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v3\"\nmodel = \"async\"\noptions = { strict = \"yes\" }\n",
        "4:11",
        "[ports.7001]: ",
        "invalid options for palindrome-v3: strict must be true or false, not the string \"yes\"",
    );
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v2\"\nmodel = \"async\"\noptions = { once = true }\n",
        "4:11",
        "[ports.7001]: ",
        "invalid options for palindrome-v2: unknown field `once`, expected `strict`, `busy_us` or \
         `sleep_ms`",
    );
    // The work per line is bounded.
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v3\"\nmodel = \"event-loop\"\noptions = { sleep_ms = 10001 }\n",
        "4:11",
        "[ports.7001]: ",
        "invalid options for palindrome-v3: sleep_ms must be a whole number of milliseconds from \
         0 to 10000, not 10001",
    );
    // Every mistake in the table, not only the first.
    assert_error(
        "[ports.7001]\nservice = \"palindrome-v1\"\nmodel = \"async\"\noptions = { strictt = true, once = 1 }\n",
        "4:11",
        "[ports.7001]: ",
        "invalid options for palindrome-v1: unknown field `strictt`, expected `strict`, \
         `busy_us`, `sleep_ms` or `once`; once must be true or false, not 1",
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let (code, stderr, _) = check(
        "[ports.7001]\nservice = \"nope\"\nmodel = \"async\"\n\
         [ports.7002]\nservice = \"palindrome-v1\"\nmodel = \"nope\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":2:11: [ports.7001]: unknown service"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":6:9: [ports.7002]: unknown model"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors in"), "{stderr}");
}

#[test]
fn run_validates_before_binding_anything() {
    // Held by this test, so the host could not bind it either way.
    let (_held, addr) = refused_addr();
    let port = addr.port();
    let file = config_file(&format!(
        "[ports.{port}]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n\
         [ports.7002]\nservice = \"palindrome-v1\"\nmodel = \"nope\"\n"
    ));
    let out = run(&["run", "--config", file.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("[ports.7002]: unknown model"));
    assert!(text(&out.stdout).is_empty(), "nothing may be served");
}

#[test]
fn a_port_in_use_fails_the_start_naming_port_and_service() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    // The other port's socket is passed in, as systemd does: it is claimed, not bound.
    let passed = porthost::sockets::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let passed_port = passed.local_addr().unwrap().port();
    let file = config_file(&format!(
        "[ports.{passed_port}]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n\n\
         [ports.{taken_port}]\nservice = \"palindrome-v2\"\nmodel = \"thread-per-client\"\n"
    ));
    let mut command = porthost();
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: OwnedFd::from(passed),
            child_fd: 3,
        }])
        .unwrap()
        .env("LISTEN_FDS", "1")
        .args(["run", "--config", file.path.to_str().unwrap()]);
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot bind 127.0.0.1:{taken_port} for [ports.{taken_port}] (palindrome-v2, line 5)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was bound"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "nothing may be served");
}

#[test]
fn a_missing_config_file_mentions_the_option() {
    let out = porthost()
        .args(["check"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config file config/services.toml not found"),
        "{stderr}"
    );
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn once_closes_the_port_after_the_first_client() {
    let host = TestHost::start(
        "",
        &[entry(
            "palindrome-v1",
            "sequential",
            "options = { once = true }",
        )],
    );
    let mut first = crate::support::Client::connect(host.addr(0));
    assert_eq!(first.ask("abba"), "1");
    first.send(b"\n");
    assert!(first.is_closed());
    assert!(
        crate::support::eventually(|| std::net::TcpStream::connect(host.addr(0)).is_err()),
        "the port still accepts"
    );
    assert!(
        host.log().contains("first client has left"),
        "{}",
        host.log()
    );
}

#[test]
fn a_byte_that_is_not_utf8_is_reported_at_its_line() {
    let file = config_file("");
    std::fs::write(
        &file.path,
        b"[ports.7001]\nservice = \"palindrome-v1\"\nmodel = \"sequ\xffential\"\n",
    )
    .unwrap();
    let out = run(&["check", "--config", file.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("{}:3:14: byte 0xff is not UTF-8", file.path.display());
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
}

mod twice {
    //! Two services registered under one name in this test binary.
    use std::sync::Arc;

    use porthost_services::lines::{Flow, LineHandler, LineServer, LineService};
    use porthost_services::{Options, Registration, Service};

    pub struct Quiet;
    pub struct Handler;

    impl LineService for Quiet {
        type Handler = Handler;
        fn connect(&self, _peer: std::net::SocketAddr) -> Handler {
            Handler
        }
    }

    impl LineHandler for Handler {
        fn handle(&mut self, _line: &str, _reply: &mut Vec<u8>) -> Flow {
            Flow::Close
        }
    }

    fn build(_options: &Options) -> Result<Arc<dyn Service>, String> {
        Ok(Arc::new(LineServer(Quiet)))
    }

    porthost_services::register!(Registration {
        name: "test-twice",
        summary: "the first of two (tests only)",
        options: &[],
        build,
    });

    porthost_services::register!(Registration {
        name: "test-twice",
        summary: "the second of two (tests only)",
        options: &[],
        build,
    });
}

/// A name registered twice (a service copied into the tree next to the example it came from)
/// is refused with both places named, rather than served by whichever `inventory` met first.
#[test]
fn a_service_name_registered_twice_is_refused_naming_both_places() {
    let err = porthost::registry::find("test-twice").unwrap_err();
    // The lines of the two `register!` calls above.
    let source = include_str!("config.rs");
    let at: Vec<String> = source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name: \"test-twice\""))
        .map(|(i, _)| format!("tests/config.rs:{i}"))
        .collect();
    assert_eq!(
        err,
        format!(
            "service name \"test-twice\" is registered 2 times: {}; give each service a name \
             of its own",
            at.join(", ")
        )
    );
    assert_eq!(porthost_services::duplicates(), [err]);
    assert!(porthost::registry::find("palindrome-v3").is_ok());
}

#[test]
fn the_textbook_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/textbook.toml");
    let out = run(&["check", "--config", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let rows: Vec<Vec<&str>> = plan
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for row in [
        ["7102", "127.0.0.1", "palindrome-v3", "thread-pool", "8"],
        ["7103", "127.0.0.1", "palindrome-v3", "event-loop", "10000"],
        ["7107", "127.0.0.1", "palindrome-v3", "prefork", "4"],
    ] {
        assert!(rows.contains(&row.to_vec()), "{row:?} in {plan}");
    }
}
