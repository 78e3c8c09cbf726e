//! `porthost status`: the live view as a table in the terminal, for a server without a
//! browser. It reads `/api/state` from the admin endpoint, once or (with `--watch`) every
//! second.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::table;

/// How long any step of a request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response read: a snapshot is tens of KiB.
const MAX_RESPONSE: u64 = 16 << 20;

/// What `status` reads of a snapshot (the fields it shows).
#[derive(Debug, Deserialize)]
struct Snapshot {
    version: String,
    pid: u32,
    uptime: f64,
    host: Host,
    ports: Vec<Port>,
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Host {
    rss_kib: u64,
    children_pss_kib: u64,
    threads: u64,
    /// The shared runtime's threads, which run every async port's tasks.
    runtime_workers: usize,
    open_fds: u64,
}

#[derive(Debug, Deserialize)]
struct Port {
    port: u16,
    service: String,
    model: String,
    state: String,
    open: usize,
    waiting: Option<u64>,
    refused: std::collections::BTreeMap<String, u64>,
    threads: i64,
    /// A thread-pool or prefork port's size and the workers serving a client (absent from an
    /// older host's snapshot).
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    busy: i64,
    children: Vec<u32>,
    /// A prefork port's worker processes (absent from an older host's snapshot).
    #[serde(default)]
    pool: Vec<Worker>,
    /// An `exec` port's command, its argv (absent from an older host's snapshot).
    #[serde(default)]
    command: Option<Vec<String>>,
    lines_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    lines: u64,
}

#[derive(Debug, Deserialize)]
struct Worker {
    pid: u32,
    served: u64,
    busy: bool,
}

#[derive(Debug, Deserialize)]
struct Event {
    at: f64,
    port: Option<u16>,
    text: String,
}

/// Shows the host at `addr` once, or every second until interrupted.
pub fn run(addr: &str, token: Option<&str>, watch: bool) -> anyhow::Result<()> {
    let addr = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr:?} is not an address"))?
        .next()
        .with_context(|| format!("{addr:?} resolves to nothing"))?;
    loop {
        let (status, body) = http_get(addr, "/api/state", token)?;
        match status {
            200 => {}
            401 => bail!("{addr} wants the admin token: pass --token or set PORTHOST_ADMIN_TOKEN"),
            other => bail!("{addr} answered {other}: {}", body.trim()),
        }
        let snapshot: Snapshot = serde_json::from_str(&body)
            .with_context(|| format!("{addr} sent something that is not porthost's state"))?;
        let text = render(&snapshot);
        if watch {
            // Clear the screen and go home, then the table: a refresh in place.
            porthost::logging::print(&format!("\x1b[2J\x1b[H{text}"));
            std::thread::sleep(Duration::from_secs(1));
        } else {
            porthost::logging::print(&text);
            return Ok(());
        }
    }
}

fn render(s: &Snapshot) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let mut rows = vec![
        [
            "PORT", "SERVICE", "MODEL", "STATE", "OPEN", "WAITING", "THREADS", "PROCS", "LINES",
            "LINES/S", "P50 MS", "P99 MS", "REFUSED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in &s.ports {
        rows.push(vec![
            p.port.to_string(),
            p.service.clone(),
            p.model.clone(),
            p.state.clone(),
            p.open.to_string(),
            p.waiting.map_or("-".to_owned(), |w| w.to_string()),
            // An async port has no threads of its own: a task per client on the shared ones.
            match (p.model.as_str(), p.workers) {
                ("async", _) => format!(
                    "{} task{} on {}",
                    p.open,
                    if p.open == 1 { "" } else { "s" },
                    s.host.runtime_workers
                ),
                // A prefork port's workers are processes: counted under PROCS.
                ("prefork", _) => p.threads.to_string(),
                (_, Some(workers)) => format!("{} ({} busy of {workers})", p.threads, p.busy),
                _ => p.threads.to_string(),
            },
            match (p.model.as_str(), p.workers) {
                ("prefork", Some(workers)) => {
                    format!("{} ({} busy of {workers})", p.children.len(), p.busy)
                }
                _ => p.children.len().to_string(),
            },
            p.lines.to_string(),
            format!("{:.0}", p.lines_per_s),
            ms(p.p50_ms),
            ms(p.p99_ms),
            p.refused.values().sum::<u64>().to_string(),
        ]);
    }
    let mut out = format!(
        "porthost {} (pid {}), up {:.0} s: host {} KiB, children {} KiB (PSS), {} threads, {} descriptors\n\n",
        s.version,
        s.pid,
        s.uptime,
        s.host.rss_kib,
        s.host.children_pss_kib,
        s.host.threads,
        s.host.open_fds
    );
    out.push_str(&table::render(&rows));
    // Every exec port's command, with a row per program running (a `-` when none is).
    let programs: Vec<Vec<String>> = s
        .ports
        .iter()
        .filter_map(|p| Some((p, porthost::exec::shell_words(p.command.as_ref()?))))
        .flat_map(|(p, command)| {
            let pids: Vec<String> = match p.children.as_slice() {
                [] => vec!["-".to_owned()],
                pids => pids.iter().map(u32::to_string).collect(),
            };
            pids.into_iter()
                .map(move |pid| vec![p.port.to_string(), pid, command.clone()])
        })
        .collect();
    if !programs.is_empty() {
        out.push_str("\nexec programs running:\n");
        let mut rows = vec![["PORT", "PID", "COMMAND"].map(str::to_owned).to_vec()];
        rows.extend(programs);
        out.push_str(&table::render(&rows));
    }
    // Every prefork worker, with the clients it has taken.
    let workers: Vec<Vec<String>> = s
        .ports
        .iter()
        .flat_map(|p| {
            p.pool.iter().map(|w| {
                vec![
                    p.port.to_string(),
                    w.pid.to_string(),
                    w.served.to_string(),
                    if w.busy { "busy" } else { "idle" }.to_owned(),
                ]
            })
        })
        .collect();
    if !workers.is_empty() {
        out.push_str("\nprefork workers:\n");
        let mut rows = vec![
            ["PORT", "PID", "CLIENTS", "NOW"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(workers);
        out.push_str(&table::render(&rows));
    }
    let recent: Vec<&Event> = s.events.iter().rev().take(8).collect();
    if !recent.is_empty() {
        out.push_str("\nrecent events (seconds since the host started):\n");
        for e in recent.into_iter().rev() {
            let port = e.port.map_or(String::new(), |p| format!("{p} "));
            out.push_str(&format!("  at {:>8.1} s  {port}{}\n", e.at, e.text));
        }
    }
    out
}

/// A GET with a bearer token: the status and the body (at most [`MAX_RESPONSE`] bytes), every
/// step with a timeout. Redirects are not followed and no proxy is used: the admin endpoint
/// is asked directly, and what it answers is what is shown.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(TIMEOUT))
        .timeout_per_read(Some(TIMEOUT))
        .timeout_per_write(Some(TIMEOUT))
        .build()
        .into();
    let mut request = agent.get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request
        .call()
        .with_context(|| format!("GET {path} from the admin endpoint at {addr}"))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .with_context(|| format!("reading GET {path} from the admin endpoint at {addr}"))?;
    Ok((
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ports_list_their_programs_with_pid_and_command() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 7, "uptime": 3.0,
            "host": { "rss_kib": 1, "children_pss_kib": 0, "threads": 2, "runtime_workers": 2,
                      "open_fds": 9 },
            "ports": [
                { "port": 7030, "service": "exec", "model": "async", "state": "accepting",
                  "open": 2, "waiting": 0, "refused": {}, "threads": 0, "children": [41, 42],
                  "command": ["python3", "palindrome_stdio.py"], "lines_per_s": 0.0,
                  "p50_ms": null, "p99_ms": null, "lines": 0 },
                { "port": 7031, "service": "exec", "model": "sequential", "state": "accepting",
                  "open": 0, "waiting": 0, "refused": {}, "threads": 0, "children": [],
                  "command": ["/bin/sh", "-c", "echo it's me"], "lines_per_s": 0.0,
                  "p50_ms": null, "p99_ms": null, "lines": 0 },
                { "port": 7001, "service": "palindrome-v3", "model": "async",
                  "state": "accepting", "open": 0, "waiting": 0, "refused": {}, "threads": 0,
                  "children": [], "lines_per_s": 0.0, "p50_ms": null, "p99_ms": null,
                  "lines": 0 }
            ],
            "events": []
        }))
        .unwrap();
        let text = render(&snapshot);
        let programs = text.split("exec programs running:\n").nth(1).expect(&text);
        let rows: Vec<&str> = programs.lines().map(str::trim_end).collect();
        assert_eq!(rows.len(), 4, "{text}");
        let words: Vec<Vec<&str>> = rows
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(words[0], ["PORT", "PID", "COMMAND"]);
        assert_eq!(words[1], ["7030", "41", "python3", "palindrome_stdio.py"]);
        assert_eq!(words[2], ["7030", "42", "python3", "palindrome_stdio.py"]);
        // None running: the command all the same; a word with spaces or quotes stays one.
        assert!(
            rows[3].starts_with("7031") && rows[3].ends_with(r"/bin/sh -c 'echo it'\''s me'"),
            "{text}"
        );
    }

    #[test]
    fn an_async_row_counts_tasks_on_the_shared_threads_and_events_say_since_when() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 7, "uptime": 300.0,
            "host": { "rss_kib": 1, "children_pss_kib": 0, "threads": 9, "runtime_workers": 2,
                      "open_fds": 20 },
            "ports": [{ "port": 7004, "service": "palindrome-v3", "model": "async",
                        "state": "accepting", "open": 19, "waiting": 0, "refused": {},
                        "threads": 0, "children": [], "lines_per_s": 0.0, "p50_ms": null,
                        "p99_ms": null, "lines": 0 }],
            "events": [{ "at": 261.0, "port": 7004, "text": "127.0.0.1:1 connected" }],
        }))
        .unwrap();
        let text = render(&snapshot);
        assert!(text.contains("  19 tasks on 2  "), "{text}");
        let mut snapshot = snapshot;
        snapshot.ports[0].open = 1;
        let text = render(&snapshot);
        assert!(text.contains("  1 task on 2  "), "{text}");
        assert!(
            text.contains(
                "recent events (seconds since the host started):\n  at    261.0 s  7004 127.0.0.1:1"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_pool_row_says_how_many_of_its_workers_are_busy() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 7, "uptime": 3.0,
            "host": { "rss_kib": 1, "children_pss_kib": 0, "threads": 9, "runtime_workers": 2,
                      "open_fds": 20 },
            "ports": [{ "port": 7005, "service": "palindrome-v3", "model": "thread-pool",
                        "state": "accepting", "open": 3, "waiting": 2, "refused": {},
                        "threads": 4, "workers": 4, "busy": 3, "children": [],
                        "lines_per_s": 0.0, "p50_ms": null, "p99_ms": null, "lines": 0 }],
            "events": [],
        }))
        .unwrap();
        let text = render(&snapshot);
        assert!(text.contains("  4 (3 busy of 4)  "), "{text}");
    }

    #[test]
    fn a_prefork_row_counts_its_workers_as_processes_and_lists_them() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 7, "uptime": 3.0,
            "host": { "rss_kib": 1, "children_pss_kib": 0, "threads": 9, "runtime_workers": 2,
                      "open_fds": 20 },
            "ports": [{ "port": 7107, "service": "palindrome-v3", "model": "prefork",
                        "state": "accepting", "open": 1, "waiting": 0, "refused": {},
                        "threads": 0, "workers": 2, "busy": 1, "children": [41, 42],
                        "pool": [{ "pid": 41, "served": 7, "busy": true },
                                 { "pid": 42, "served": 3, "busy": false }],
                        "lines_per_s": 0.0, "p50_ms": null, "p99_ms": null, "lines": 0 }],
            "events": [],
        }))
        .unwrap();
        let text = render(&snapshot);
        assert!(text.contains("  2 (1 busy of 2)  "), "{text}");
        assert!(text.contains("prefork workers:"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.contains(&vec!["7107", "41", "7", "busy"]), "{text}");
        assert!(rows.contains(&vec!["7107", "42", "3", "idle"]), "{text}");
    }
}
