//! The shipped deployment example, run for real: HAProxy (Debian package `haproxy`) with
//! `examples/deploy/haproxy.cfg`, in front of two porthost hosts serving
//! `config/services.toml`, host A on 127.0.0.2 and host B on 127.0.0.3, each with
//! `proxy_protocol = true` and `trusted_proxies = ["127.0.0.1"]`, HAProxy on 127.0.0.1 sending
//! PROXY v2. It checks that HAProxy's health checks pass, that load is served by both hosts,
//! that per-address limits see the real client addresses, that a game can be played through
//! HAProxy, and that host A can be drained and stopped under load without failing a request.
//! Not part of `cargo test --workspace`: run it with `cargo test --test haproxy` where HAProxy
//! is installed (`.ci/run` does). It fails, never skips, without it.
//!
//! No port number is guessed. The test binds every listening socket to port 0: HAProxy's
//! (its `bind 127.0.0.1:PORT` lines become `bind fd@N`, sockets it inherits) and the hosts'
//! (passed with `LISTEN_FDS`, named after the config's ports with `LISTEN_FDNAMES`, as
//! systemd's `.socket` units do, so the config keeps its port numbers). HAProxy's `server`
//! lines get the hosts' real ports.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use command_fds::{CommandFdExt, FdMapping};
use porthost::services::word_guess::protocol::{self, ServerLine};

use support::{
    Client, Load, PATIENCE, Proc, accepted, admin_addr, eventually, fds, listener, loopback,
    metrics, port_of, porthost_run,
};

const TEMPLATE: &str = include_str!("../../examples/deploy/haproxy.cfg");
const SERVICES: &str = include_str!("../../config/services.toml");
const TOKEN: &str = "e2e-haproxy-admin-token";

/// The palindrome ports of `config/services.toml`.
const PALINDROME_PORTS: [u16; 6] = [7001, 7002, 7003, 7004, 7011, 7012];
/// A word-guess port with `balance source` where the test limits connections per address.
const LIMITED_PORT: u16 = 7021;
const LIMIT: usize = 2;
/// A word-guess port with `balance source` where the test plays a game.
const GAME_PORT: u16 = 7022;

/// One porthost host behind HAProxy.
struct Host {
    ip: IpAddr,
    process: Proc,
    admin: SocketAddr,
    /// The config's port number -> the port its socket really has.
    ports: BTreeMap<u16, u16>,
}

impl Host {
    /// Starts a host on `ip` serving the shipped config, every port on a socket bound to port
    /// 0 of `ip` and passed by the config's port number.
    fn start(name: &str, ip: IpAddr, dir: &Path) -> Host {
        let mut config: toml::Table = SERVICES.parse().expect("config/services.toml");
        let numbers: Vec<u16> = config["ports"]
            .as_table()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let host = config["host"].as_table_mut().unwrap();
        let set = |table: &mut toml::Table, key: &str, value: toml::Value| {
            table.insert(key.to_owned(), value);
        };
        set(host, "bind", ip.to_string().into());
        set(host, "shutdown_grace_secs", 2.into());
        set(host, "proxy_protocol", true.into());
        set(host, "trusted_proxies", vec!["127.0.0.1"].into());
        set(host, "admin", format!("{ip}:0").into());
        set(host, "admin_token", TOKEN.into());
        let ports = config["ports"].as_table_mut().unwrap();
        let limited = ports[&LIMITED_PORT.to_string()].as_table_mut().unwrap();
        set(limited, "max_connections_per_ip", (LIMIT as i64).into());
        let game = ports[&GAME_PORT.to_string()].as_table_mut().unwrap();
        let options = game["options"].as_table_mut().unwrap();
        set(options, "words", vec!["abba"].into());
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

        let sockets: Vec<(TcpListener, Option<String>)> = numbers
            .iter()
            .map(|n| (listener(ip), Some(n.to_string())))
            .collect();
        let ports = numbers
            .iter()
            .zip(&sockets)
            .map(|(n, (s, _))| (*n, port_of(s)))
            .collect();
        let (command, fds) = porthost_run(&path, sockets);
        let mut process = Proc::spawn(name, command, fds);
        let plan = process.plan(numbers.len());
        // Every port on its passed socket, claimed by name.
        for n in &numbers {
            let claimed = format!(", {n}) on {ip}:");
            assert!(
                plan.iter()
                    .any(|row| row.starts_with(&format!("{n} ")) && row.contains(&claimed)),
                "{plan:#?}"
            );
        }
        let line = process.stdout_line();
        let admin = admin_addr(&line)
            .unwrap_or_else(|| panic!("{name} printed no admin address under its plan: {line}"));
        Host {
            ip,
            process,
            admin,
            ports,
        }
    }

    fn metrics(&self) -> String {
        metrics(self.admin, Some(TOKEN))
    }

    /// The client addresses of the connections open on a port, from `/api/state`.
    fn peers(&self, port: u16) -> Vec<IpAddr> {
        let (status, body) =
            porthost_cli::status::http_get(self.admin, "/api/state", Some(TOKEN)).unwrap();
        assert_eq!(status, 200, "{body}");
        let state: serde_json::Value = serde_json::from_str(&body).unwrap();
        state["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["port"] == port)
            .flat_map(|p| p["connections"].as_array().unwrap().clone())
            .map(|c| {
                c["peer"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
                    .ip()
            })
            .collect()
    }
}

/// HAProxy running the template with the test's sockets and ports.
struct Haproxy {
    process: Proc,
    /// The template's `bind` port -> where HAProxy really listens.
    fronts: BTreeMap<u16, SocketAddr>,
    socket: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, hosts: &[&Host]) -> Haproxy {
        let version = Command::new("haproxy").arg("-v").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "haproxy is not installed: apt-get install haproxy"
        );
        let socket = dir.join("haproxy.sock");
        let (config, fronts, listeners) = haproxy_config(&socket, hosts);
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        // Checked on copies of the sockets: `fd@N` must be a socket there too.
        let mut check = Command::new("haproxy");
        check.args(["-c", "-f"]).arg(&path);
        let copies = listeners.iter().map(|l| l.try_clone().unwrap());
        let check = check
            .fd_mappings(
                fds(copies)
                    .into_iter()
                    .enumerate()
                    .map(|(i, fd)| FdMapping {
                        parent_fd: fd,
                        child_fd: 3 + i as i32,
                    })
                    .collect(),
            )
            .unwrap()
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c refuses the config:\n{}{}\n{config}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut command = Command::new("haproxy");
        // -db: in the foreground, logging to stderr as `log stderr` says.
        command.args(["-db", "-f"]).arg(&path);
        let process = Proc::spawn("haproxy", command, fds(listeners));
        let haproxy = Haproxy {
            process,
            fronts,
            socket,
        };
        assert!(
            eventually(|| UnixStream::connect(&haproxy.socket).is_ok()),
            "HAProxy's stats socket never came up:\n{}",
            haproxy.process.log()
        );
        haproxy
    }

    fn front(&self, port: u16) -> SocketAddr {
        self.fronts[&port]
    }

    /// A command on the stats socket, and its answer.
    fn cli(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// `show stat`'s rows for the servers (not the frontends and backends), as maps.
    fn servers(&self) -> Vec<HashMap<String, String>> {
        let stat = self.cli("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        lines
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                header
                    .iter()
                    .map(|h| h.to_string())
                    .zip(line.split(',').map(str::to_owned))
                    .collect::<HashMap<_, _>>()
            })
            .filter(|row| {
                !matches!(
                    row.get("svname").map(String::as_str),
                    Some("FRONTEND" | "BACKEND")
                )
            })
            .collect()
    }
}

/// The template with its `bind` lines on inherited sockets (`fd@3`, ...), its `server` lines
/// on the hosts' real ports and its stats socket in `socket`; the sockets to pass, and where
/// each `bind` port is served.
fn haproxy_config(
    socket: &Path,
    hosts: &[&Host],
) -> (String, BTreeMap<u16, SocketAddr>, Vec<TcpListener>) {
    let mut listeners = Vec::new();
    let mut fronts = BTreeMap::new();
    let mut servers = 0;
    let mut out = String::new();
    for line in TEMPLATE.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = line.split_whitespace().collect();
        let rewritten = match words.as_slice() {
            ["bind", addr, rest @ ..] => {
                let addr: SocketAddr = addr.parse().expect("bind ADDRESS:PORT in the template");
                assert_eq!(addr.ip(), loopback(1), "{line}");
                let front = listener(addr.ip());
                fronts.insert(addr.port(), front.local_addr().unwrap());
                listeners.push(front);
                let fd = 2 + listeners.len();
                format!("{indent}bind fd@{fd} {}", rest.join(" "))
            }
            ["server", name, addr, rest @ ..] => {
                let addr: SocketAddr = addr.parse().expect("server NAME ADDRESS:PORT");
                let host = hosts
                    .iter()
                    .find(|h| h.ip == addr.ip())
                    .unwrap_or_else(|| panic!("no host for {line}"));
                servers += 1;
                let port = host.ports[&addr.port()];
                format!(
                    "{indent}server {name} {}:{port} {}",
                    addr.ip(),
                    rest.join(" ")
                )
            }
            ["stats", "socket", _, rest @ ..] => {
                format!(
                    "{indent}stats socket {} {}",
                    socket.display(),
                    rest.join(" ")
                )
            }
            _ => line.to_owned(),
        };
        out.push_str(rewritten.trim_end());
        out.push('\n');
    }
    let ports = hosts[0].ports.len();
    assert_eq!(
        servers,
        ports * hosts.len(),
        "a server line per host and port"
    );
    assert_eq!(
        fronts.len(),
        ports + 1,
        "a bind line per port, and the stats page"
    );
    (out, fronts, listeners)
}

/// Every server of every backend is up, with its last health check passed (a protocol check
/// for most palindrome ports, a plain connect for the others), each with a PROXY v2 header.
fn health_checks_pass(haproxy: &Haproxy) {
    let passed = |servers: &[HashMap<String, String>]| {
        !servers.is_empty()
            && servers.iter().all(|s| {
                s["status"] == "UP" && matches!(s["check_status"].as_str(), "L4OK" | "L7OK")
            })
    };
    let mut servers = Vec::new();
    let all = eventually(|| {
        servers = haproxy.servers();
        passed(&servers)
    });
    let table: Vec<String> = servers
        .iter()
        .map(|s| {
            format!(
                "{}/{} {} {} {}",
                s["pxname"], s["svname"], s["status"], s["check_status"], s["check_desc"]
            )
        })
        .collect();
    assert!(
        all,
        "health checks do not pass:\n{}\nHAProxy's log:\n{}",
        table.join("\n"),
        haproxy.process.log()
    );
    let protocol_checks = servers.iter().filter(|s| s["check_status"] == "L7OK");
    assert_eq!(
        protocol_checks.count(),
        4 * 2,
        "the palindrome checks (\"abba\" answered \"1\") on 7002, 7003, 7004 and 7012:\n{}",
        table.join("\n")
    );
}

/// Each host accepted at least `at_least` connections on each palindrome port.
fn both_hosts_serve(hosts: &[&Host], at_least: u64) -> bool {
    hosts.iter().all(|h| {
        let metrics = h.metrics();
        PALINDROME_PORTS
            .iter()
            .all(|p| accepted(&metrics, *p) >= at_least)
    })
}

/// Clients from three addresses hold `LIMIT` connections each to a `balance source` port:
/// all served, though a host that counted HAProxy's address would refuse most of them; one
/// more from an address already at the limit is refused; the hosts list the real addresses.
fn limits_see_client_addresses(haproxy: &Haproxy, hosts: &[&Host]) {
    let front = haproxy.front(LIMITED_PORT);
    let sources = [loopback(11), loopback(12), loopback(13)];
    let mut held = Vec::new();
    for source in sources {
        for _ in 0..LIMIT {
            let mut client = Client::connect_from(source, front);
            assert_eq!(client.expect_line(), protocol::WELCOME, "from {source}");
            held.push(client);
        }
    }
    let mut over = Client::connect_from(sources[0], front);
    assert_eq!(
        over.expect_line(),
        "ERR too many connections from your address"
    );
    assert!(over.is_closed());
    let mut seen = BTreeSet::new();
    assert!(
        eventually(|| {
            seen = hosts.iter().flat_map(|h| h.peers(LIMITED_PORT)).collect();
            sources.iter().all(|s| seen.contains(s))
        }),
        "the hosts list {seen:?} on port {LIMITED_PORT}, not {sources:?}"
    );
    let refused: u64 = hosts
        .iter()
        .map(|h| refused_per_address(&h.metrics(), LIMITED_PORT))
        .sum();
    assert_eq!(refused, 1, "exactly the one over the limit");
}

/// `porthost_connections_refused` of a port for the per-address limit.
fn refused_per_address(metrics: &str, port: u16) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "porthost_connections_refused_total{{port=\"{port}\","
            )) && l.contains("reason=\"per_address_limit\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A player: its name and connection.
struct Player {
    name: &'static str,
    client: Client,
}

impl Player {
    /// Lines until one `pick` takes; the lines read are kept in `log`.
    fn until<T>(&mut self, log: &mut Vec<String>, pick: impl Fn(&str) -> Option<T>) -> T {
        loop {
            let line = self
                .client
                .line()
                .unwrap_or_else(|| panic!("{} was disconnected; it read:\n{log:#?}", self.name));
            log.push(format!("{}: {line}", self.name));
            if let Some(found) = pick(&line) {
                return found;
            }
        }
    }
}

/// Whose turn a line announces, if it does.
fn turn_of(line: &str) -> Option<String> {
    match protocol::server_line(line) {
        ServerLine::TurnOf { mover, .. } => Some(mover.to_owned()),
        _ => None,
    }
}

/// Two players from one address (`balance source` sends both to the same host, where the game
/// runs) play the word "abba" to its end through HAProxy: a miss, a hit, and the winning letter.
fn a_game_is_played(haproxy: &Haproxy) {
    let front = haproxy.front(GAME_PORT);
    let source = loopback(21);
    let mut players: Vec<Player> = ["Ann", "Bob"]
        .into_iter()
        .map(|name| {
            let mut client = Client::connect_from(source, front);
            assert_eq!(client.expect_line(), protocol::WELCOME);
            client.send_line(name);
            Player { name, client }
        })
        .collect();
    let mut log = Vec::new();
    let moves = [
        protocol::Command::Letter('z'),
        protocol::Command::Letter('a'),
        protocol::Command::Letter('b'),
    ];
    let mut last_mover = String::new();
    for command in moves {
        // Everyone is told whose turn it is; the mover then gets `/turn`.
        let movers: Vec<String> = players
            .iter_mut()
            .map(|p| p.until(&mut log, turn_of))
            .collect();
        assert_eq!(movers[0], movers[1], "{log:#?}");
        let mover = players
            .iter_mut()
            .find(|p| protocol::quoted(p.name) == movers[0])
            .unwrap_or_else(|| panic!("the turn of an unknown player: {log:#?}"));
        mover.until(&mut log, |l| (l == protocol::TURN).then_some(()));
        mover.client.send_line(&command.to_string());
        last_mover = movers[0].clone();
    }
    for player in &mut players {
        let winner = player.until(&mut log, |l| l.strip_prefix("Winner: ").map(str::to_owned));
        assert_eq!(winner, last_mover, "{log:#?}");
        player.until(&mut log, |l| (l == protocol::QUIT).then_some(()));
        assert!(player.client.is_closed(), "{log:#?}");
    }
    assert!(
        log.iter()
            .any(|l| l.ends_with("Game over, the word was abba")),
        "{log:#?}"
    );
}

/// Drains host A in HAProxy, waits for its last relayed session to end, and stops it.
fn drain_and_stop(haproxy: &Haproxy, a: &mut Host) {
    let backends: Vec<String> = haproxy
        .servers()
        .into_iter()
        .filter(|s| s["svname"] == "a")
        .map(|s| s["pxname"].clone())
        .collect();
    assert!(!backends.is_empty());
    for backend in &backends {
        let answer = haproxy.cli(&format!("set server {backend}/a state drain"));
        assert!(answer.trim().is_empty(), "{backend}: {answer}");
    }
    // HAProxy sends A nothing new now; once its sessions on A have ended, none is on the way.
    let idle = |servers: &[HashMap<String, String>]| {
        servers
            .iter()
            .filter(|s| s["svname"] == "a")
            .all(|s| s["status"] == "DRAIN" && s["scur"] == "0")
    };
    assert!(
        eventually(|| idle(&haproxy.servers())),
        "host A still has sessions: {:?}",
        haproxy.servers()
    );
    a.process.stop();
}

#[test]
fn haproxy_spreads_clients_over_two_hosts_and_drains_one_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Host::start("host A", loopback(2), dir.path());
    let b = Host::start("host B", loopback(3), dir.path());
    let haproxy = Haproxy::start(dir.path(), &[&a, &b]);
    health_checks_pass(&haproxy);

    // Short sessions on every palindrome port, through HAProxy, until the end of the test.
    let fronts: Vec<SocketAddr> = PALINDROME_PORTS.iter().map(|p| haproxy.front(*p)).collect();
    let load = Load::start(&fronts, 2);
    assert!(
        eventually(|| both_hosts_serve(&[&a, &b], 20) || !load.failures().is_empty()),
        "the load is not served by both hosts on every port:\nA:\n{}\nB:\n{}",
        a.metrics(),
        b.metrics()
    );
    assert!(load.failures().is_empty(), "{:#?}", load.failures());

    limits_see_client_addresses(&haproxy, &[&a, &b]);
    a_game_is_played(&haproxy);

    let b_before: u64 = PALINDROME_PORTS
        .iter()
        .map(|p| accepted(&b.metrics(), *p))
        .sum();
    drain_and_stop(&haproxy, &mut a);
    load.wait_for(300);
    let (served, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{failures:#?}\nHAProxy:\n{}",
        failures.len(),
        served as usize + failures.len(),
        haproxy.process.log()
    );
    let b_after: u64 = PALINDROME_PORTS
        .iter()
        .map(|p| accepted(&b.metrics(), *p))
        .sum();
    assert!(b_after >= b_before + 300, "host B served the rest");
    eprintln!("{served} requests through HAProxy, none failed");
}
