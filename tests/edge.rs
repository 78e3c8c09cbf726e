//! Who may connect, and who a client is: `allow`/`deny` with IPv4 and IPv6, the rate of new
//! connections per address, and PROXY headers (v1 and v2) from trusted and untrusted sources,
//! valid, truncated or slow. Every refusal happens before any service code runs, and the
//! address a trusted proxy names is the one limits, rules, logs and the service see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::sync::Arc;

use porthost::services::lines::{Flow, LineHandler, LineServer, LineService};
use porthost::services::{Options, Registration, Service};

use crate::support::{Client, PATIENCE, TestHost, entry, eventually};

/// Answers every line with the client's address as the service sees it (tests only).
#[derive(Debug)]
struct EchoPeer;

#[derive(Debug)]
struct PeerHandler(SocketAddr);

impl LineService for EchoPeer {
    type Handler = PeerHandler;

    fn connect(&self, peer: SocketAddr) -> PeerHandler {
        PeerHandler(peer)
    }
}

impl LineHandler for PeerHandler {
    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow {
        if line.is_empty() {
            return Flow::Close;
        }
        reply.extend_from_slice(format!("{}\n", self.0).as_bytes());
        Flow::Continue
    }
}

fn build(_options: &Options) -> Result<Arc<dyn Service>, String> {
    Ok(Arc::new(LineServer(EchoPeer)))
}

inventory::submit! {
    Registration { name: "test-peer", summary: "answers with the client's address (tests only)", options: &[], build }
}

const DENIED: &str = "ERR access denied";

/// Whether a client from `source` is served or turned away with `ERR access denied`.
fn served_from(source: [u8; 4], addr: SocketAddr) -> bool {
    let mut client = Client::connect_from(source.into(), addr);
    client.send(b"abba\n");
    match client.line().as_deref() {
        Some("1") => true,
        Some(DENIED) => {
            assert!(client.is_closed());
            false
        }
        other => panic!("{source:?}: {other:?}"),
    }
}

#[test]
fn the_most_specific_rule_wins_across_host_and_port() {
    let host = TestHost::start(
        "deny = [\"127.0.0.0/8\"]",
        &[
            entry(
                "palindrome-v3",
                "async",
                "allow = [\"127.0.0.2\", \"127.0.3.0/24\"]\ndeny = [\"127.0.3.7\"]",
            ),
            entry("palindrome-v3", "thread-per-client", ""),
        ],
    );
    // Port 0: the host denies 127/8, the port allows narrower networks, and denies one
    // address inside them.
    assert!(served_from([127, 0, 0, 2], host.addr(0)));
    assert!(served_from([127, 0, 3, 1], host.addr(0)));
    assert!(!served_from([127, 0, 3, 7], host.addr(0)));
    assert!(!served_from([127, 0, 0, 1], host.addr(0)));
    // Port 1 has only the host's rule.
    assert!(!served_from([127, 0, 0, 2], host.addr(1)));
    // Refusals are counted per reason and logged.
    assert!(
        host.log().contains("refused: access denied"),
        "{}",
        host.log()
    );
}

#[test]
fn with_allow_everything_unmatched_is_denied_and_with_only_deny_it_is_allowed() {
    let host = TestHost::start(
        "",
        &[
            entry("palindrome-v3", "sequential", "allow = [\"127.0.0.5\"]"),
            entry(
                "palindrome-v3",
                "process-per-client",
                "deny = [\"127.0.0.5\"]",
            ),
        ],
    );
    assert!(served_from([127, 0, 0, 5], host.addr(0)));
    assert!(!served_from([127, 0, 0, 6], host.addr(0)));
    assert!(!served_from([127, 0, 0, 5], host.addr(1)));
    assert!(served_from([127, 0, 0, 6], host.addr(1)));
}

#[test]
fn a_refused_client_leaves_a_prefork_worker_free_for_the_next() {
    // One worker: if turning a client away cost it its place at the socket, nobody would
    // accept again.
    let host = TestHost::start(
        "",
        &[entry(
            "palindrome-v3",
            "prefork",
            "workers = 1\ndeny = [\"127.0.0.2\"]",
        )],
    );
    for _ in 0..3 {
        assert!(!served_from([127, 0, 0, 2], host.addr(0)));
        assert!(served_from([127, 0, 0, 1], host.addr(0)));
    }
}

#[test]
fn ipv6_rules_and_ipv4_clients_of_a_dual_stack_port() {
    let host = TestHost::start(
        "",
        &[
            entry("palindrome-v3", "async", "bind = \"::1\"\ndeny = [\"::1\"]"),
            // `::` takes IPv4 clients as `::ffff:127.0.0.1`, checked as IPv4 addresses.
            entry(
                "palindrome-v3",
                "async",
                "bind = \"::\"\nallow = [\"127.0.0.1\", \"::1\"]",
            ),
        ],
    );
    let v6 = |i: usize| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, host.ports[i]));
    let mut denied = Client::connect(v6(0));
    denied.send(b"abba\n");
    assert_eq!(denied.line().as_deref(), Some(DENIED));
    assert_eq!(Client::connect(v6(1)).ask("abba"), "1");
    assert!(served_from([127, 0, 0, 1], host.addr(1)));
    assert!(!served_from([127, 0, 0, 2], host.addr(1)));
}

#[test]
fn new_connections_above_the_rate_are_refused_and_the_burst_comes_back() {
    let host = TestHost::start(
        "",
        &[entry(
            "palindrome-v3",
            "async",
            // A token every 4 s: the four connections below must only come within 4 s of
            // each other for the fourth to find the bucket empty, however slow the machine.
            "max_connection_rate_per_ip = { per_second = 0.25, burst = 3 }",
        )],
    );
    let ask = |source: [u8; 4]| {
        let mut client = Client::connect_from(source.into(), host.addr(0));
        client.send(b"abba\n");
        client.line()
    };
    for _ in 0..3 {
        assert_eq!(ask([127, 0, 0, 1]).as_deref(), Some("1"));
    }
    assert_eq!(
        ask([127, 0, 0, 1]).as_deref(),
        Some("ERR too many new connections from your address; try again later")
    );
    // Another address has its own bucket; this one refills within 4 s.
    assert_eq!(ask([127, 0, 0, 2]).as_deref(), Some("1"));
    assert!(eventually(|| ask([127, 0, 0, 1]).as_deref() == Some("1")));
}

/// A PROXY v2 header for a TCP over IPv4 client.
fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&s.ip().octets());
    header.extend_from_slice(&d.ip().octets());
    header.extend_from_slice(&s.port().to_be_bytes());
    header.extend_from_slice(&d.port().to_be_bytes());
    header
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// Connects from `via` (a proxy, trusted or not), sends `header` and a line, and returns all
/// the port sent before it closed.
fn through(via: [u8; 4], addr: SocketAddr, header: &[u8], line: &str) -> String {
    let mut client = Client::connect_from(via.into(), addr);
    client.send(header);
    client.send(format!("{line}\n\n").as_bytes());
    let mut all = String::new();
    while let Some(l) = client.line() {
        all += &l;
        all += "\n";
    }
    all
}

const PROXIED: &str = "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n";

#[test]
fn a_trusted_proxys_header_names_the_client_for_limits_rules_logs_and_the_service() {
    let extra = format!("{PROXIED}max_connections_per_ip = 1\ndeny = [\"10.9.0.0/16\"]");
    let host = TestHost::start(
        "",
        &[
            entry("palindrome-v3", "thread-per-client", &extra),
            entry("palindrome-v1", "process-per-client", &extra),
            // The host reads the header and hands the client to an idle worker.
            entry("palindrome-v2", "prefork", &extra),
            entry("test-peer", "async", PROXIED),
            entry("test-peer", "process-per-client", PROXIED),
            entry("test-peer", "prefork", PROXIED),
        ],
    );
    // The service's `peer` is the client the header names.
    for i in 3..6 {
        let addr = host.addr(i);
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        assert_eq!(
            through([127, 0, 0, 1], addr, &v1(client, addr), "who"),
            "10.1.2.3:5555\n"
        );
        assert_eq!(
            through(
                [127, 0, 0, 1],
                addr,
                &v2("10.7.7.7:42".parse().unwrap(), addr),
                "who"
            ),
            "10.7.7.7:42\n"
        );
    }
    for i in 0..3 {
        let addr = host.addr(i);
        // Each client from an address of its own: the limit is one connection per address.
        let client = |n: u8, port: u16| SocketAddr::from(([10, 1, 2, n], port));
        assert_eq!(
            through([127, 0, 0, 1], addr, &v1(client(1, 5555), addr), "abba"),
            "1\n"
        );
        assert_eq!(
            through([127, 0, 0, 1], addr, &v2(client(2, 5555), addr), "abc"),
            "\n"
        );
        // Per-address limits count the client's address, not the proxy's.
        let mut held = Client::connect_from([127, 0, 0, 1].into(), addr);
        held.send(&v2(client(3, 6000), addr));
        assert_eq!(held.ask("abba"), "1");
        assert_eq!(
            through([127, 0, 0, 1], addr, &v1(client(3, 6001), addr), "abba"),
            "ERR too many connections from your address\n"
        );
        // Logged with the client's address.
        assert!(host.log().contains("peer=10.1.2.3:6001"), "{}", host.log());
        assert_eq!(
            through(
                [127, 0, 0, 1],
                addr,
                &v1("10.4.4.4:6001".parse().unwrap(), addr),
                "abba"
            ),
            "1\n",
            "another client through the same proxy"
        );
        // Access rules see the client too.
        assert_eq!(
            through(
                [127, 0, 0, 1],
                addr,
                &v2("10.9.1.1:7".parse().unwrap(), addr),
                "abba"
            ),
            format!("{DENIED}\n")
        );
    }
}

#[test]
fn a_client_handed_to_a_prefork_port_waits_for_the_worker_that_replaces_a_recycled_one() {
    // One worker, replaced after each client: the second client, handed over while the first
    // is served, must go to the new worker, not to the one that is exiting.
    let host = TestHost::start(
        "",
        &[entry(
            "palindrome-v3",
            "prefork",
            &format!("{PROXIED}workers = 1\nmax_connections_per_worker = 1"),
        )],
    );
    let addr = host.addr(0);
    for round in 0..3 {
        let mut first = Client::connect_from([127, 0, 0, 1].into(), addr);
        first.send(&v1(SocketAddr::from(([10, 0, 0, 1], 1000 + round)), addr));
        assert_eq!(first.ask("abba"), "1");
        let mut second = Client::connect_from([127, 0, 0, 1].into(), addr);
        second.send(&v1(SocketAddr::from(([10, 0, 0, 2], 1000 + round)), addr));
        second.send(b"abba\n");
        first.send(b"\n");
        assert!(first.is_closed());
        assert_eq!(second.line().as_deref(), Some("1"), "round {round}");
        second.send(b"\n");
        assert!(second.is_closed());
    }
}

/// Whether the port closed the connection without a word (and without serving the line).
fn closed_silently(mut stream: TcpStream) -> bool {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn untrusted_sources_and_bad_or_slow_headers_are_closed_and_counted() {
    let host = TestHost::start(
        "admin = \"127.0.0.1:0\"",
        &[entry("palindrome-v3", "async", PROXIED)],
    );
    let addr = host.addr(0);
    let connect = |via: [u8; 4]| Client::connect_from(via.into(), addr).stream;

    // A valid header from a source that is not a trusted proxy. The port may close it before
    // the writes arrive, so a write may fail: only the silent close matters.
    let mut stream = connect([127, 0, 0, 2]);
    let _ = stream.write_all(&v1("10.1.2.3:5555".parse().unwrap(), addr));
    let _ = stream.write_all(b"abba\n");
    assert!(closed_silently(stream), "untrusted source");

    // No header at all: never guessed.
    let mut stream = connect([127, 0, 0, 1]);
    stream.write_all(b"abba\n").unwrap();
    assert!(closed_silently(stream), "no header");

    // A header cut short by the close.
    let mut stream = connect([127, 0, 0, 1]);
    stream.write_all(b"PROXY TCP4 10.1.2").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_silently(stream), "truncated header");

    // Half a v2 header, then nothing: closed when its time is up.
    let mut stream = connect([127, 0, 0, 1]);
    stream
        .write_all(&v2("10.1.2.3:1".parse().unwrap(), addr)[..20])
        .unwrap();
    assert!(closed_silently(stream), "slow header");

    let admin = host.admin_addr().unwrap();
    let metrics = porthost_cli::status::http_get(admin, "/metrics", None)
        .unwrap()
        .1;
    let labels = format!(
        "port=\"{}\",service=\"palindrome-v3\",model=\"async\"",
        host.ports[0]
    );
    for (reason, n) in [("untrusted_proxy", 1), ("bad_proxy_header", 3)] {
        let want =
            format!("porthost_connections_refused_total{{{labels},reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&want), "{want} in:\n{metrics}");
    }
    // The port still serves a proper client.
    let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
    assert_eq!(
        through([127, 0, 0, 1], addr, &v2(client, addr), "abba"),
        "1\n"
    );
}
