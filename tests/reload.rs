//! SIGHUP re-reads the config: an invalid file changes nothing; otherwise ports are added,
//! removed, or drained and restarted, and unchanged ports keep their connections.

use crate::support::{Client, TestHost, children_of, entry, eventually, port_entry, zombies_of};

const GRACE: &str = "[host]\nshutdown_grace_secs = 2\n";

#[test]
fn an_invalid_config_keeps_everything_as_it_was() {
    let host = TestHost::start("", &[entry("palindrome-v3", "async", "")]);
    let mut client = Client::connect(host.addr(0));
    assert_eq!(client.ask("abba"), "1");
    host.reload(
        "[ports.1]\nservice = \"palindrome-v3\"\nmodle = \"async\"\n",
        Vec::new(),
    );
    assert!(
        eventually(|| host.log().contains("keeping the running configuration")),
        "{}",
        host.log()
    );
    assert!(
        host.log().contains("unknown field `modle`"),
        "{}",
        host.log()
    );
    assert_eq!(client.ask("abc"), "");
    assert_eq!(Client::connect(host.addr(0)).ask("abba"), "1");
}

#[test]
fn ports_are_added_removed_changed_or_left_alone() {
    let host = TestHost::start(
        "",
        &[
            entry("palindrome-v3", "async", ""),
            entry("palindrome-v2", "thread-per-client", ""),
            entry("palindrome-v1", "process-per-client", ""),
            // Each worker replaced after one client, by one forked while the port accepts.
            entry(
                "palindrome-v3",
                "prefork",
                "workers = 2\nmax_connections_per_worker = 1",
            ),
        ],
    );
    let (kept, changed, removed) = (host.ports[0], host.ports[1], host.ports[2]);
    let removed_prefork = host.ports[3];
    let added_socket = porthost::sockets::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let added = added_socket.local_addr().unwrap().port();
    let mut on_kept = Client::connect(host.addr(0));
    let mut on_changed = Client::connect(host.addr(1));
    let mut on_removed = Client::connect(host.addr(2));
    assert_eq!(Client::connect(host.addr(3)).ask("abba"), "1");
    let mut on_prefork = Client::connect(host.addr(3));
    for client in [
        &mut on_kept,
        &mut on_changed,
        &mut on_removed,
        &mut on_prefork,
    ] {
        assert_eq!(client.ask("Abba"), "1");
    }

    host.reload(
        &format!(
            "{GRACE}{}{}{}",
            port_entry(kept, &entry("palindrome-v3", "async", "")),
            port_entry(
                changed,
                &entry("palindrome-v3", "async", "options = { strict = true }")
            ),
            port_entry(added, &entry("palindrome-v1", "sequential", "")),
        ),
        vec![added_socket],
    );
    let log_has = |needle: &str| eventually(|| host.log().contains(needle));
    assert!(
        log_has(&format!("port={kept}")) && log_has("reload: unchanged"),
        "{}",
        host.log()
    );
    assert!(
        log_has(
            "reload: changed (service palindrome-v2 -> palindrome-v3, model thread-per-client -> async, options, limits)"
        ),
        "{}",
        host.log()
    );
    assert!(
        log_has("reload: removed; draining its connections"),
        "{}",
        host.log()
    );
    assert!(log_has("reload: added"), "{}", host.log());

    // Connections open before the reload go on with the entry they started under.
    assert_eq!(on_kept.ask("Abba"), "1");
    assert_eq!(
        on_changed.ask("Abba"),
        "1",
        "the old entry (not strict) still serves it"
    );
    assert_eq!(
        on_removed.ask("Abba"),
        "1",
        "a removed port drains its clients"
    );
    assert_eq!(on_prefork.ask("Abba"), "1", "a removed prefork port too");
    // New connections see the new config.
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        Client::connect(addr(changed)).ask("Abba"),
        "",
        "the new entry is strict"
    );
    assert_eq!(Client::connect(addr(added)).ask("abba"), "1");
    // A removed port's socket is closed while its old clients are still served: in the host,
    // and in every prefork worker.
    for port in [removed, removed_prefork] {
        assert!(
            eventually(|| std::net::TcpStream::connect(addr(port)).is_err()),
            "port {port} still takes clients"
        );
    }
    assert_eq!(
        on_prefork.ask("Abba"),
        "1",
        "the socket closed only once the busy worker's client was cut off"
    );
    // After the grace period the drained ports' old clients are told why and closed; the kept
    // one is not.
    for client in [&mut on_removed, &mut on_changed, &mut on_prefork] {
        assert_eq!(
            client.line().as_deref(),
            Some("ERR server is restarting, closing")
        );
        assert!(client.is_closed());
    }
    assert_eq!(on_kept.ask("abc"), "");
}

#[test]
fn a_port_whose_address_changes_is_rebound() {
    let host = TestHost::start("", &[entry("palindrome-v3", "async", "")]);
    let port = host.ports[0];
    host.reload(
        &port_entry(port, &entry("palindrome-v3", "async", "bind = \"0.0.0.0\"")),
        Vec::new(),
    );
    assert!(
        eventually(|| host.log().contains("changed (bind 127.0.0.1 -> 0.0.0.0)")),
        "{}",
        host.log()
    );
    // Clients caught in the old socket's backlog while it closes are reset; later ones are
    // served on the new address.
    assert!(eventually(|| Client::try_ask(host.addr(0), "abba")
        .as_deref()
        == Some("1")));
    assert!(!host.log().contains("not served"), "{}", host.log());
}

#[test]
fn a_new_size_of_pool_starts_a_new_pool_and_drains_the_old() {
    for model in ["thread-pool", "prefork"] {
        a_new_size_of(model);
    }
}

fn a_new_size_of(model: &str) {
    let pool = |workers| entry("palindrome-v3", model, workers);
    let host = TestHost::start("shutdown_grace_secs = 2", &[pool("workers = 2")]);
    let port = host.ports[0];
    // Both workers of the old pool busy.
    let mut old: Vec<Client> = (0..2).map(|_| Client::connect(host.addr(0))).collect();
    for client in &mut old {
        assert_eq!(client.ask("abba"), "1", "{model}");
    }
    host.reload(
        &format!("{GRACE}{}", port_entry(port, &pool("workers = 3"))),
        Vec::new(),
    );
    assert!(
        eventually(|| host.log().contains("reload: changed (workers 2 -> 3)")),
        "{model}: {}",
        host.log()
    );
    // Three new clients at once: the new pool's three workers, while the old pool's two still
    // serve their clients.
    let mut new: Vec<Client> = (0..3).map(|_| Client::connect(host.addr(0))).collect();
    for client in &mut new {
        assert_eq!(client.ask("abba"), "1", "{model}");
    }
    for client in &mut old {
        assert_eq!(
            client.ask("abc"),
            "",
            "{model}: an old client lost its session"
        );
        client.send(b"\n");
        assert!(client.is_closed(), "{model}");
    }
    assert!(
        eventually(|| host.log().contains("old connections drained")),
        "{model}: {}",
        host.log()
    );
    assert_eq!(new[2].ask("abba"), "1", "{model}");
    if model == "prefork" {
        // The old pool's workers end with it; the new pool's three stay.
        let forker = host.forker().expect("a prefork port");
        assert!(
            eventually(|| children_of(forker).len() == 3 && zombies_of(forker) == 0),
            "children {:?}, zombies {}",
            children_of(forker),
            zombies_of(forker)
        );
    }
}
