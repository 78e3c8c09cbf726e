//! `porthost bench` itself, at small sizes: it runs end to end on every model, its outputs are
//! complete and parse, and a server that never answers makes it report, not hang.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::{porthost, text};

/// Every model, each followed by its hand-written twin.
const SUBJECTS: [&str; 14] = [
    "sequential",
    "baseline-sequential",
    "thread-per-client",
    "baseline-threads",
    "process-per-client",
    "baseline-fork",
    "async",
    "baseline-async",
    "thread-pool",
    "baseline-pool",
    "event-loop",
    "baseline-loop",
    "prefork",
    "baseline-prefork",
];

#[test]
fn compares_every_model_and_writes_json_csv_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (json, csv, svg) = (
        dir.path().join("b.json"),
        dir.path().join("b.csv"),
        dir.path().join("b.svg"),
    );
    // --quick, with its sizes made smaller still by the flags; no --idle: the footprint holds
    // as many idle clients as the largest --clients.
    let out = porthost()
        .args(["bench", "--quick", "--clients", "1,3", "--lines", "4"])
        .args(["--churn", "12", "--duration", "2"])
        .args(["--json", json.to_str().unwrap()])
        .args(["--csv", csv.to_str().unwrap()])
        .args(["--svg", svg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // stdout is not a terminal: one progress line per measurement, on stderr.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("] run 1/1: "))
        .collect();
    assert_eq!(progress.len(), SUBJECTS.len() * 4, "{stderr}");
    assert!(progress[0].starts_with("[1/56 "), "{stderr}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains("async sessions c=3 l=4: ") && l.contains(" req/s")),
        "{stderr}"
    );

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
        "first reply max ms",
        "conn/s",
        "still waiting",
        "PSS KiB/idle client",
        "CPU µs/request",
        "CPU µs/connection",
        "threads",
        "processes",
        "errors",
    ] {
        assert!(stdout.contains(metric), "no {metric} row in\n{stdout}");
    }
    assert!(
        stdout.contains("\nMemory: PSS (proportional set size"),
        "{stdout}"
    );
    // Sequential serves one idle client of three: the other two are reported as waiting (once
    // none has answered for a second, or at the end of the budget on a machine so busy that
    // the two come at once).
    assert!(
        stdout.contains("sequential footprint c=3: queued: 2 of 3 clients still waiting "),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["memory"].as_str().unwrap().starts_with("PSS"));
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), SUBJECTS.len() * 4);
    for e in entries {
        assert_eq!(e["per_run"].as_array().unwrap().len(), 1, "{e}");
        assert_eq!(e["errors"], 0, "{e}");
    }
    let entry = |subject: &str, load: &str| {
        entries
            .iter()
            .find(|e| e["subject"] == subject && e["load"] == load)
            .unwrap()
    };
    assert!(
        entry("async", "sessions c=3 l=4")["medians"]["req_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let sequential = &entry("sequential", "footprint c=3")["medians"];
    assert_eq!(sequential["waiting"], 2.0, "{sequential}");
    assert!(sequential.get("pss_per_conn_kib").is_none(), "{sequential}");
    // The hand-written forking server holds a child per idle client.
    let fork = &entry("baseline-fork", "footprint c=3")["medians"];
    assert_eq!(fork["processes"], 4.0, "{fork}");
    assert!(fork["pss_per_conn_kib"].as_f64().unwrap() > 0.0, "{fork}");

    // CPU per unit of work for every server the bench started, sessions and churn alike (the
    // twins too: programs of their own, their children reaped and counted).
    for subject in SUBJECTS {
        for (load, metric) in [
            ("sessions c=3 l=4", "cpu_us_per_req"),
            ("churn n=12", "cpu_us_per_conn"),
        ] {
            let medians = &entry(subject, load)["medians"];
            assert!(
                medians[metric].as_f64().unwrap() >= 0.0,
                "{subject}: {medians}"
            );
        }
        assert!(
            entry(subject, "footprint c=3")["medians"]
                .get("cpu_us_per_req")
                .is_none()
        );
    }

    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("workload,load,size,service,subject,metric,median,lower_bound,runs")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 9), "{csv}");
    assert!(rows.iter().all(|r| r[6].parse::<f64>().is_ok()), "{csv}");
    assert!(
        rows.iter().all(|r| r[7] == "true" || r[7] == "false"),
        "{csv}"
    );
    for subject in SUBJECTS {
        for metric in ["req_per_s", "cpu_us_per_req", "cpu_us_per_conn"] {
            assert!(
                rows.iter().any(|r| r[4] == subject && r[5] == metric),
                "{subject} {metric}: {csv}"
            );
        }
    }

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for title in [
        "Throughput (sessions)",
        "Slowest replies: p99.9 latency (sessions, log scale)",
        "Time to first reply of the last client (log scale)",
        "Churn: connect, one line, close",
        "Memory per idle client (PSS growth, log scale)",
    ] {
        assert!(svg.contains(&format!(">\n{title}\n</text>")), "no {title}");
    }
    for subject in SUBJECTS {
        // In the legend, and as a bar in the churn and the memory charts.
        let label = format!(">\n{subject}\n</text>");
        assert!(svg.matches(&label).count() >= 3, "{subject}");
    }
    // Sequential's two queued idle clients are in the memory chart, not left out.
    assert!(svg.contains(">\n2 of 3 never served\n</text>"), "{svg}");
    // The x-axes have a tick at each client count measured.
    assert!(svg.contains(">\n1\n</text>") && svg.contains(">\n3\n</text>"));
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
    // The clients that waited are in the latency figures, as lower bounds, not left out.
    let row = |label: &str| {
        stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label} row in\n{stdout}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    };
    assert_eq!(row("still waiting"), "3", "{stdout}");
    let first = row("first reply max ms");
    let waited: f64 = first.strip_prefix('≥').unwrap().parse().unwrap();
    assert!(waited >= 1000.0, "{stdout}");
    assert!(row("p99 µs").starts_with('≥'), "{stdout}");
    assert!(stdout.contains("\n≥: a lower bound."), "{stdout}");
}

#[test]
fn tcpserver_missing_is_said_clearly() {
    let empty = tempfile::tempdir().unwrap();
    let out = porthost()
        .args([
            "bench",
            "--tcpserver",
            "--models",
            "async",
            "--workloads",
            "churn",
        ])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--tcpserver: cannot run tcpserver") && stderr.contains("ucspi-tcp"),
        "{stderr}"
    );
}

#[test]
fn targets_need_seven_runs() {
    let out = porthost()
        .args(["bench", "--targets", "--runs", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("medians of at least 7 runs, not 5"),
        "{}",
        text(&out.stderr)
    );
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

#[test]
fn a_crowd_waits_in_line_for_a_sequential_server_that_sleeps_and_every_spin_costs_its_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let out = porthost()
        .args(["bench", "--models", "sequential,event-loop"])
        .args(["--workloads", "sleep,busy", "--burst", "5"])
        .args(["--sleep-ms", "40", "--busy-us", "20000", "--runs", "1"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // The models alone: the twins do no work per line.
    let header: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["WORKLOAD", "METRIC", "sequential", "event-loop"]);
    for row in ["sleep_ms=40 c=5", "busy_us=20000 c=5", "last answer ms"] {
        assert!(stdout.contains(row), "no {row} in\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let medians = |subject: &str, load: &str| {
        let entries = report["entries"].as_array().unwrap();
        let entry = entries
            .iter()
            .find(|e| e["subject"] == subject && e["load"] == load)
            .unwrap();
        assert_eq!(entry["errors"], 0, "{entry}");
        entry["medians"].clone()
    };
    // Five blocking sleeps of 40 ms one after another: the last client waits for all of them.
    let sequential = medians("sequential", "sleep_ms=40 c=5");
    assert!(
        sequential["last_answer_ms"].as_f64().unwrap() >= 200.0,
        "{sequential}"
    );
    assert_eq!(sequential["waiting"], 0.0, "{sequential}");
    // A spin is CPU time, whichever model runs it (/proc's ticks allow some rounding).
    for subject in ["sequential", "event-loop"] {
        let busy = medians(subject, "busy_us=20000 c=5");
        assert!(
            busy["cpu_us_per_req"].as_f64().unwrap() >= 16_000.0,
            "{subject}: {busy}"
        );
    }
}
