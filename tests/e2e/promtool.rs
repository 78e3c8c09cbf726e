//! `/metrics` checked by Prometheus' own linter, `promtool check metrics` (Debian package
//! `prometheus`), after traffic under every model, a refusal and a child's exit. Not part of
//! `cargo test --workspace`: run it with `cargo test --test promtool` where promtool is
//! installed (`.ci/run` does). It fails, never skips, without promtool.
//!
//! promtool lints the classic text format, where a counter family `x` written the OpenMetrics
//! way as `x_total` draws "x_total no help text" although `x` has its HELP line. That message,
//! for a family that has its HELP line, is the only finding accepted.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use porthost::testing::{TestHost, entry};
use porthost_cli::status::http_get;

porthost::forker_entry_point!();

fn ask(addr: std::net::SocketAddr, lines: &[&str]) {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for line in lines {
        (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
    }
}

#[test]
fn promtool_accepts_the_metrics() {
    let models = [
        "sequential",
        "thread-per-client",
        "process-per-client",
        "async",
    ];
    let mut entries: Vec<_> = models
        .iter()
        .map(|m| entry("palindrome-v3", m, "max_connections_per_ip = 4"))
        .collect();
    entries.push(entry("word-guess", "async", ""));
    let host = TestHost::start("admin = \"127.0.0.1:0\"", &entries);
    let admin = host.admin_addr().unwrap();
    for i in 0..models.len() {
        ask(host.addr(i), &["abba", "abc", "А роза упала на лапу Азора"]);
    }
    let (status, metrics) = http_get(admin, "/metrics", None).unwrap();
    assert_eq!(status, 200);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: apt-get install prometheus");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for finding in findings.lines().filter(|l| !l.trim().is_empty()) {
        let family = finding
            .strip_suffix("_total no help text")
            .unwrap_or_else(|| panic!("promtool found {finding:?} in:\n{metrics}"));
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family} has no HELP line:\n{metrics}"
        );
    }
    // 0: nothing found; 3: only lint findings, the accepted ones checked above.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool failed ({}): {findings}",
        out.status
    );
}
