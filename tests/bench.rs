//! `porthost bench` itself, at small sizes: it runs end to end on every model, its outputs are
//! complete and parse, and a server that never answers makes it report, not hang.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::util::{porthost, text};

const SUBJECTS: [&str; 6] = [
    "sequential",
    "thread-per-client",
    "baseline-threads",
    "process-per-client",
    "async",
    "baseline-async",
];

#[test]
fn compares_every_model_and_writes_json_csv_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (json, csv, svg) = (
        dir.path().join("b.json"),
        dir.path().join("b.csv"),
        dir.path().join("b.svg"),
    );
    let out = porthost()
        .args([
            "bench",
            "--runs",
            "1",
            "--clients",
            "1,3",
            "--lines",
            "4",
            "--churn",
            "12",
            "--idle",
            "3",
        ])
        .args([
            "--duration",
            "2",
            "--json",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ])
        .args(["--svg", svg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));

    let header = stdout.lines().next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(columns[..2], ["WORKLOAD", "METRIC"]);
    assert_eq!(columns[2..], SUBJECTS);
    for row in [
        "sessions c=1 l=4",
        "sessions c=3 l=4",
        "churn n=12",
        "footprint c=3",
    ] {
        assert!(stdout.contains(row), "no {row} rows in\n{stdout}");
    }
    for metric in [
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "first reply p50 ms",
        "conn/s",
        "RSS growth KiB/conn",
        "threads",
        "processes",
        "errors",
    ] {
        assert!(stdout.contains(metric), "no {metric} row in\n{stdout}");
    }
    // Sequential serves one idle client of three: the other two are reported as waiting.
    assert!(
        stdout.contains("sequential footprint c=3: queued: 2 of 3 clients still waiting at 2 s"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), SUBJECTS.len() * 4);
    for e in entries {
        assert_eq!(e["per_run"].as_array().unwrap().len(), 1, "{e}");
        assert_eq!(e["errors"], 0, "{e}");
    }
    let async_sessions = entries
        .iter()
        .find(|e| e["subject"] == "async" && e["load"] == "sessions c=3 l=4")
        .unwrap();
    assert!(async_sessions["medians"]["req_per_s"].as_f64().unwrap() > 0.0);

    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("workload,load,size,service,subject,metric,median,runs")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 8), "{csv}");
    assert!(rows.iter().all(|r| r[6].parse::<f64>().is_ok()), "{csv}");
    for subject in SUBJECTS {
        assert!(
            rows.iter().any(|r| r[4] == subject && r[5] == "req_per_s"),
            "{subject}: {csv}"
        );
    }

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for subject in SUBJECTS {
        let legend = format!(">\n{subject}\n</text>");
        assert_eq!(
            svg.matches(&legend).count(),
            2,
            "one legend entry per chart for {subject}"
        );
    }
    // Two charts, each with one line per server.
    assert!(
        svg.matches("<polyline").count() >= 2 * SUBJECTS.len(),
        "{svg}"
    );
}

#[test]
fn a_server_that_never_answers_is_reported_not_waited_for() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection, never reading or writing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let out = porthost()
        .args([
            "bench",
            "--addr",
            &format!("stuck={addr}"),
            "--clients",
            "3",
            "--lines",
            "2",
        ])
        .args(["--churn", "5", "--duration", "1", "--runs", "1"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stdout.contains("stuck sessions c=3 l=2: queued: 3 of 3 clients still waiting at 1 s"),
        "{stdout}"
    );
    assert!(stdout.contains("stuck churn n=5: cut: "), "{stdout}");
}

#[test]
fn bots_play_games_to_the_end() {
    let mut child = porthost()
        .args([
            "bench",
            "--service",
            "word-guess",
            "--models",
            "async,thread-per-client",
            "--games",
            "4",
        ])
        .args(["--runs", "1", "--duration", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stdout}");
    let finished = stdout
        .lines()
        .find(|l| l.contains("games finished"))
        .unwrap();
    assert_eq!(
        finished
            .split_whitespace()
            .rev()
            .take(2)
            .collect::<Vec<_>>(),
        ["4", "4"],
        "{stdout}"
    );
    let errors = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("errors"))
        .unwrap();
    assert!(
        errors.split_whitespace().skip(1).all(|n| n == "0"),
        "{stdout}"
    );
}
