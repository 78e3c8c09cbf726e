//! The admin endpoint over real HTTP: every metric family with its labels, counts that are
//! exact under every model, refusals, child exits, reloads, the token rule, and the state the
//! live page and `porthost status` read.

use porthost_cli::status::http_get;
use std::net::SocketAddr;

use crate::support::{Client, MODELS, TestHost, entry, eventually, port_entry};

const TOKEN: &str = "0123456789abcdef0123";

fn admin_host(extra_host: &str, entries: &[crate::support::Entry<'_>]) -> (TestHost, SocketAddr) {
    let host = TestHost::start(&format!("admin = \"127.0.0.1:0\"\n{extra_host}"), entries);
    let addr = host.admin_addr().expect("the admin endpoint is on");
    (host, addr)
}

fn get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http_get(addr, path, None).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The value of the sample `name{labels}` in a scrape, if it is there.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let start = format!("{name}{{{labels}");
    metrics
        .lines()
        .find(|l| l.starts_with(&start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn labels(host: &TestHost, i: usize, service: &str, model: &str) -> String {
    format!(
        "port=\"{}\",service=\"{service}\",model=\"{model}\"",
        host.ports[i]
    )
}

#[test]
fn every_metric_family_is_there_with_its_labels() {
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .chain([entry("word-guess", "async", "")])
        .collect();
    let (host, admin) = admin_host("", &entries);
    let metrics = get(admin, "/metrics");
    for (i, model) in MODELS.iter().enumerate() {
        let labels = labels(&host, i, "palindrome-v3", model);
        for family in [
            "porthost_connections_open",
            "porthost_connections_accepted_total",
            "porthost_connections_waiting",
            "porthost_session_duration_seconds_count",
            "porthost_lines_total",
            "porthost_replies_total",
            "porthost_received_bytes_total",
            "porthost_sent_bytes_total",
            "porthost_reply_latency_seconds_bucket",
            "porthost_reply_latency_seconds_count",
            "porthost_threads",
            "porthost_busy_workers",
            "porthost_child_processes",
            "porthost_forks_total",
        ] {
            assert!(
                metrics.contains(&format!("{family}{{{labels}"))
                    || metrics.contains(&format!("{family}{{le=\"0.000025\",{labels}")),
                "no {family} for {labels}:\n{metrics}"
            );
        }
        assert!(
            metrics.contains(&format!(
                "porthost_connections_refused_total{{{labels},reason=\"per_address_limit\"}} 0"
            )),
            "{metrics}"
        );
    }
    for family in [
        "porthost_resident_memory_bytes{process=\"host\"}",
        "porthost_resident_memory_bytes{process=\"children\"}",
        "porthost_open_fds ",
        "porthost_host_threads ",
        "porthost_reloads_total{outcome=\"applied\"} 0",
        "porthost_build_info{version=",
        "porthost_log_writes_dropped_total ",
    ] {
        assert!(metrics.contains(family), "no {family}:\n{metrics}");
    }
    let game = labels(&host, MODELS.len(), "word-guess", "async");
    for family in [
        "porthost_service_players",
        "porthost_service_games_waiting",
        "porthost_service_games_playing",
        "porthost_service_games_started_total",
        "porthost_service_games_finished_total",
    ] {
        assert!(
            metrics.contains(&format!("{family}{{{game}}} 0")),
            "no {family} for the game:\n{metrics}"
        );
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[test]
fn after_n_clients_send_m_lines_the_counters_say_n_and_m_under_every_model() {
    const CLIENTS: usize = 3;
    const LINES: usize = 7;
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .collect();
    let (host, admin) = admin_host("", &entries);
    for i in 0..MODELS.len() {
        for _ in 0..CLIENTS {
            let mut client = Client::connect(host.addr(i));
            for _ in 0..LINES {
                assert_eq!(client.ask("abba"), "1");
            }
            // Leave by closing: no empty line, so the lines are exactly those asked.
            client.stream.shutdown(std::net::Shutdown::Write).unwrap();
            assert!(client.is_closed());
        }
    }
    for (i, model) in MODELS.iter().enumerate() {
        let labels = labels(&host, i, "palindrome-v3", model);
        let settled = || {
            let metrics = get(admin, "/metrics");
            let value = |name| sample(&metrics, name, &labels);
            value("porthost_connections_open") == Some(0.0)
                && value("porthost_connections_accepted_total") == Some(CLIENTS as f64)
                && value("porthost_lines_total") == Some((CLIENTS * LINES) as f64)
                && value("porthost_replies_total") == Some((CLIENTS * LINES) as f64)
                && value("porthost_reply_latency_seconds_count") == Some((CLIENTS * LINES) as f64)
                && value("porthost_received_bytes_total") == Some((CLIENTS * LINES * 5) as f64)
                && value("porthost_sent_bytes_total") == Some((CLIENTS * LINES * 2) as f64)
                && value("porthost_session_duration_seconds_count") == Some(CLIENTS as f64)
        };
        assert!(
            eventually(settled),
            "{model}:\n{}",
            get(admin, "/metrics")
                .lines()
                .filter(|l| l.contains(&labels))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let metrics = get(admin, "/metrics");
    let forked = labels(&host, 2, "palindrome-v3", "process-per-client");
    assert_eq!(
        sample(&metrics, "porthost_forks_total", &forked),
        Some(CLIENTS as f64)
    );
    assert!(
        metrics.contains(&format!(
            "porthost_child_exits_total{{{forked},how=\"code\",value=\"0\"}} {CLIENTS}"
        )),
        "{metrics}"
    );
}

#[test]
fn threads_and_children_show_while_clients_are_connected() {
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| {
            let extra = if *m == "thread-pool" {
                "workers = 4"
            } else {
                ""
            };
            entry("palindrome-v3", m, extra)
        })
        .collect();
    let (host, admin) = admin_host("", &entries);
    let clients: Vec<Vec<Client>> = (1..MODELS.len())
        .map(|i| {
            (0..3)
                .map(|_| {
                    let mut c = Client::connect(host.addr(i));
                    assert_eq!(c.ask("abba"), "1");
                    c
                })
                .collect()
        })
        .collect();
    let value = |i: usize, model: &str, name: &str| {
        sample(
            &get(admin, "/metrics"),
            name,
            &labels(&host, i, "palindrome-v3", model),
        )
    };
    assert_eq!(value(0, "sequential", "porthost_threads"), Some(1.0));
    assert_eq!(value(1, "thread-per-client", "porthost_threads"), Some(3.0));
    assert_eq!(
        value(2, "process-per-client", "porthost_child_processes"),
        Some(3.0)
    );
    assert_eq!(value(3, "async", "porthost_threads"), Some(0.0));
    assert_eq!(value(3, "async", "porthost_connections_open"), Some(3.0));
    // A pool's threads are there from the start; three of its four serve a client each.
    assert_eq!(value(4, "thread-pool", "porthost_threads"), Some(4.0));
    assert_eq!(value(4, "thread-pool", "porthost_busy_workers"), Some(3.0));
    // An event loop is one thread however many clients it serves.
    assert_eq!(value(5, "event-loop", "porthost_threads"), Some(1.0));
    assert_eq!(
        value(5, "event-loop", "porthost_connections_open"),
        Some(3.0)
    );
    drop(clients);
    assert!(eventually(|| value(
        4,
        "thread-pool",
        "porthost_busy_workers"
    ) == Some(0.0)));
    assert_eq!(value(4, "thread-pool", "porthost_threads"), Some(4.0));
    assert!(eventually(|| value(
        1,
        "thread-per-client",
        "porthost_threads"
    ) == Some(0.0)));
    assert!(eventually(|| value(
        2,
        "process-per-client",
        "porthost_child_processes"
    ) == Some(0.0)));
}

#[test]
fn a_child_killed_with_sigkill_shows_in_the_exits_by_signal() {
    let (host, admin) = admin_host("", &[entry("palindrome-v3", "process-per-client", "")]);
    let mut client = Client::connect(host.addr(0));
    assert_eq!(client.ask("abba"), "1");
    // The state lists the child's pid once the sampler has seen it (one port: the first).
    let mut pid = None;
    assert!(eventually(|| {
        let state: serde_json::Value = serde_json::from_str(&get(admin, "/api/state")).unwrap();
        pid = state["ports"][0]["children"][0].as_u64();
        pid.is_some()
    }));
    let pid = pid.unwrap() as i32;
    let labels = labels(&host, 0, "palindrome-v3", "process-per-client");
    // A child reports what it served once a second, so a kill loses at most its last second:
    // wait for the report, then see that it survives the kill (and is not counted twice).
    let lines = || sample(&get(admin, "/metrics"), "porthost_lines_total", &labels);
    assert!(eventually(|| lines() == Some(1.0)), "{:?}", lines());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(client.is_closed());
    let want = format!("porthost_child_exits_total{{{labels},how=\"signal\",value=\"SIGKILL\"}} 1");
    assert!(
        eventually(|| get(admin, "/metrics").contains(&want)),
        "{}",
        get(admin, "/metrics")
    );
    assert_eq!(
        lines(),
        Some(1.0),
        "what the child reported before it was killed"
    );
}

#[test]
fn a_refused_client_shows_in_refused() {
    let (host, admin) = admin_host(
        "",
        &[entry(
            "palindrome-v3",
            "async",
            "max_connections_per_ip = 1",
        )],
    );
    let mut first = Client::connect(host.addr(0));
    assert_eq!(first.ask("abba"), "1");
    let mut second = Client::connect(host.addr(0));
    assert_eq!(
        second.line().as_deref(),
        Some("ERR too many connections from your address")
    );
    let labels = labels(&host, 0, "palindrome-v3", "async");
    let want =
        format!("porthost_connections_refused_total{{{labels},reason=\"per_address_limit\"}} 1");
    assert!(get(admin, "/metrics").contains(&want));
}

#[test]
fn reloads_show_by_outcome_and_counters_go_on_across_them() {
    let (host, admin) = admin_host("", &[entry("palindrome-v3", "async", "")]);
    let mut client = Client::connect(host.addr(0));
    assert_eq!(client.ask("abba"), "1");
    let text = |options: &str| {
        format!(
            "[host]\nshutdown_grace_secs = 2\nadmin = \"{admin}\"\n{}",
            port_entry(host.ports[0], &entry("palindrome-v3", "async", options))
        )
    };
    host.reload(&text("options = { strict = true }"), Vec::new());
    host.reload("[ports.1]\nmodle = 1\n", Vec::new());
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("porthost_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("porthost_reloads_total{outcome=\"invalid\"} 1"),
        "{metrics}"
    );
    // The old entry's line is still counted after its connection drained.
    assert_eq!(client.ask("abc"), "");
    drop(client);
    let labels = labels(&host, 0, "palindrome-v3", "async");
    assert!(eventually(|| sample(
        &get(admin, "/metrics"),
        "porthost_lines_total",
        &labels
    ) == Some(2.0)));
}

#[test]
fn with_a_token_every_request_carries_it() {
    let (host, admin) = admin_host(
        &format!("admin_token = \"{TOKEN}\""),
        &[entry("palindrome-v3", "async", "")],
    );
    for path in ["/", "/metrics", "/api/state"] {
        let (status, _) = http_get(admin, path, None).unwrap();
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = http_get(admin, path, Some("not the token at all")).unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = http_get(admin, path, Some(TOKEN)).unwrap();
        assert_eq!(status, 200, "{path} with the token");
        let (status, _) = http_get(admin, &format!("{path}?token={TOKEN}"), None).unwrap();
        assert_eq!(status, 200, "{path}?token=");
        // A malformed or repeated query is not a way to learn anything before the token check
        // (found by the admin fuzz target: a repeated `token` key answered 400, not 401).
        for query in [
            "token=a&token=b",
            "token=%ZZ",
            "token",
            "token=a&token=b&x=%",
        ] {
            let (status, _) = http_get(admin, &format!("{path}?{query}"), None).unwrap();
            assert_eq!(status, 401, "{path}?{query} without the token");
        }
        let (status, _) =
            http_get(admin, &format!("{path}?token=wrong&token={TOKEN}"), None).unwrap();
        assert_eq!(status, 200, "{path} with the token among repeated keys");
    }
    drop(host);
}

#[test]
fn an_admin_endpoint_open_to_the_network_needs_a_token() {
    let parse = |host: &str| {
        porthost::config::Config::parse(
            &format!(
                "[host]\n{host}\n[ports.7001]\nservice = \"palindrome-v3\"\nmodel = \"async\"\n"
            ),
            std::path::Path::new("s.toml"),
        )
    };
    let errors = parse("admin = \"0.0.0.0:7000\"").unwrap_err().to_string();
    assert!(
        errors.starts_with(
            "s.toml:2:9: [host]: admin = \"0.0.0.0:7000\" can be reached from other machines"
        ),
        "{errors}"
    );
    let errors = parse("admin = \"0.0.0.0:7000\"\nadmin_token = \"short\"")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("s.toml:3:15: [host]: admin_token must be at least 16 characters"),
        "{errors}"
    );
    assert!(
        parse(&format!(
            "admin = \"0.0.0.0:7000\"\nadmin_token = \"{TOKEN}\""
        ))
        .is_ok()
    );
    assert!(parse("admin = \"127.0.0.1:7000\"").is_ok());
    let errors = parse(&format!("admin_token = \"{TOKEN}\""))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("admin_token has no effect without admin"),
        "{errors}"
    );
}

#[test]
fn the_state_shows_each_model_at_work() {
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .collect();
    let (host, admin) = admin_host("", &entries);
    let mut clients = Vec::new();
    for i in 0..MODELS.len() {
        let mut client = Client::connect(host.addr(i));
        assert_eq!(client.ask("abba"), "1");
        clients.push(client);
    }
    // A second client of the sequential port waits in the backlog.
    let waiting = Client::connect(host.addr(0));
    let state =
        || -> serde_json::Value { serde_json::from_str(&get(admin, "/api/state")).unwrap() };
    // Ports are listed by number; find each by its own (none before the first sample).
    let find = |state: &serde_json::Value, i: usize| {
        state["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["port"] == host.ports[i]))
            .cloned()
    };
    assert!(
        eventually(|| find(&state(), 0).is_some_and(|p| p["waiting"] == 1)),
        "{}",
        state()
    );
    let state = state();
    let ports: Vec<serde_json::Value> = (0..MODELS.len())
        .map(|i| find(&state, i).unwrap())
        .collect();
    let port = |i: usize| &ports[i];
    assert_eq!(port(0)["model"], "sequential");
    assert_eq!(
        port(0)["command"],
        serde_json::Value::Null,
        "not an exec port"
    );
    assert_eq!(port(1)["threads"], 1);
    assert_eq!(port(2)["children"].as_array().unwrap().len(), 1);
    assert_eq!(port(2)["connections"][0]["pid"], port(2)["children"][0]);
    assert_eq!(port(3)["open"], 1);
    assert!(
        state["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"].as_str().unwrap().contains("forked")),
        "{state}"
    );
    drop((waiting, clients));
}

/// Asks the admin endpoint for a load run: the status and the body.
fn post_drive(admin: SocketAddr, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(crate::support::PATIENCE))
        .build()
        .into();
    let mut response = agent
        .post(format!("http://{admin}/api/drive"))
        .content_type("application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("POST /api/drive to {admin}: {e}"));
    let text = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("reading POST /api/drive from {admin}: {e}"));
    (response.status().as_u16(), text)
}

#[test]
fn a_host_without_a_load_generator_refuses_a_load_run_saying_why() {
    // A binary built on the library without `porthost bench` offers none; neither does this
    // test binary.
    let (_host, admin) = admin_host("", &[entry("palindrome-v3", "async", "")]);
    let (status, body) = post_drive(admin, r#"{"clients":5,"seconds":2,"workload":"sessions"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("this binary has no load generator"), "{body}");
}

#[test]
fn a_load_run_from_the_page_drives_the_ports_and_says_how_it_ended() {
    let host = TestHost::start_with_load(
        "admin = \"127.0.0.1:0\"",
        &[
            entry("palindrome-v3", "async", ""),
            entry("palindrome-v3", "thread-per-client", ""),
        ],
        std::path::Path::new(env!("CARGO_BIN_EXE_porthost")),
    );
    let admin = host.admin_addr().unwrap();
    let post = |body: &str| post_drive(admin, body);
    // Bounded: more than 1000 clients, or a port that is not this host's, is refused.
    let (status, body) = post(r#"{"clients":5000,"seconds":2,"workload":"sessions"}"#);
    assert_eq!(status, 409, "{body}");
    let (status, body) = post(r#"{"ports":[1],"clients":5,"seconds":2,"workload":"sessions"}"#);
    assert_eq!(status, 409, "{body}");
    let (status, body) = post(r#"{"clients":4,"seconds":2,"workload":"sessions"}"#);
    assert_eq!(status, 202, "{body}");
    // One run at a time.
    let (status, body) = post(r#"{"clients":4,"seconds":2,"workload":"churn"}"#);
    assert_eq!(status, 409, "{body}");
    let drive = || -> serde_json::Value {
        let state: serde_json::Value = serde_json::from_str(&get(admin, "/api/state")).unwrap();
        state["drive"].clone()
    };
    assert!(
        eventually(|| drive()["outcome"] == "finished"),
        "{}",
        drive()
    );
    let progress = &drive()["progress"];
    assert_eq!(progress["done"], true, "{progress}");
    assert_eq!(progress["errors"], 0, "{progress}");
    let replies = progress["replies"].as_u64().unwrap();
    assert!(replies > 0, "{progress}");
    // Every reply the generator counted is a line the ports counted.
    let metrics = get(admin, "/metrics");
    let lines: f64 = (0..2)
        .map(|i| {
            let model = ["async", "thread-per-client"][i];
            sample(
                &metrics,
                "porthost_lines_total",
                &labels(&host, i, "palindrome-v3", model),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(lines as u64, replies, "{metrics}");
}

/// The live page lists the oldest 40 connections of a port, oldest first, and counts the rest.
#[test]
fn the_connection_list_is_the_oldest_forty_in_order_and_a_count_of_the_rest() {
    let (host, admin) = admin_host("", &[entry("palindrome-v3", "async", "")]);
    let clients: Vec<Client> = (0..45)
        .map(|_| {
            let mut client = Client::connect(host.addr(0));
            assert_eq!(client.ask("abba"), "1");
            client
        })
        .collect();
    let peers: Vec<String> = clients
        .iter()
        .map(|c| c.stream.local_addr().unwrap().to_string())
        .collect();
    let mut state = serde_json::Value::Null;
    assert!(
        eventually(|| {
            state = serde_json::from_str(&get(admin, "/api/state")).unwrap();
            state["ports"][0]["open"] == 45
        }),
        "{state}"
    );
    let port = &state["ports"][0];
    let listed: Vec<&str> = port["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["peer"].as_str().unwrap())
        .collect();
    assert_eq!(listed, peers[..40], "{port}");
    assert_eq!(port["more_connections"], 5);
}

/// A game starting and ending shows in the feed, with the count so far.
#[test]
fn games_show_in_the_event_feed() {
    let (host, admin) = admin_host(
        "",
        &[entry(
            "word-guess",
            "async",
            "options = { words = [\"ab\"] }",
        )],
    );
    let players: Vec<Client> = ["Ann", "Bob"]
        .iter()
        .map(|name| {
            let mut client = Client::connect(host.addr(0));
            client.line();
            client.send(format!("{name}\n").as_bytes());
            client
        })
        .collect();
    let events = || get(admin, "/api/state");
    assert!(
        eventually(|| events().contains("games started: +1 (1 in all)")),
        "{}",
        events()
    );
    drop(players);
}

/// An `exec` port's state carries its command, argv as configured, and each program's pid on
/// its connection, under a model that forks and one that spawns.
#[test]
fn the_state_shows_an_exec_ports_command_and_each_programs_pid() {
    // `$$` is the shell's own pid: the program the host started, not a child of it.
    let argv = ["/bin/sh", "-c", "echo $$; read line", "a word with spaces"];
    let options = format!(
        "options = {{ command = [{}] }}",
        argv.map(|w| format!("{w:?}")).join(", ")
    );
    let models = ["process-per-client", "async"];
    let entries: Vec<_> = models.iter().map(|m| entry("exec", m, &options)).collect();
    let (host, admin) = admin_host("", &entries);
    let mut clients: Vec<Client> = (0..models.len())
        .map(|i| Client::connect(host.addr(i)))
        .collect();
    let pids: Vec<u64> = clients
        .iter_mut()
        .map(|c| c.line().unwrap().parse().unwrap())
        .collect();
    let find = |i: usize| -> serde_json::Value {
        let state: serde_json::Value = serde_json::from_str(&get(admin, "/api/state")).unwrap();
        state["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["port"] == host.ports[i]))
            .cloned()
            .unwrap_or_default()
    };
    for (i, model) in models.iter().enumerate() {
        assert!(
            eventually(|| find(i)["connections"][0]["pid"] == pids[i]),
            "{model}: {}",
            find(i)
        );
        let port = find(i);
        assert_eq!(port["command"], serde_json::json!(argv), "{model}");
        assert_eq!(port["children"], serde_json::json!([pids[i]]), "{model}");
    }
    for client in &mut clients {
        client.send(b"bye\n");
        assert!(client.is_closed());
    }
    for (i, model) in models.iter().enumerate() {
        assert!(
            eventually(|| find(i)["connections"] == serde_json::json!([])),
            "{model}: the program ended, its connection is gone: {}",
            find(i)
        );
    }
}
