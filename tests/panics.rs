//! A panic in service code ends its own connection and nothing else, under every model: the
//! client sees a close (never a hang), others are served, and the host logs it. The panicking
//! service is registered here, in the test binary only.

use std::sync::Arc;

use porthost::services::lines::{Flow, LineHandler, LineServer, LineService};
use porthost::services::{Options, Registration, Service};

use crate::support::{Client, MODELS, TestHost, entry, eventually};

/// Answers `ok` to every line, and panics on the line `panic`.
#[derive(Debug)]
struct Panicky;

#[derive(Debug)]
struct Handler;

impl LineService for Panicky {
    type Handler = Handler;

    fn connect(&self, _peer: std::net::SocketAddr) -> Handler {
        Handler
    }
}

impl LineHandler for Handler {
    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow {
        assert_ne!(line, "panic", "asked to panic");
        reply.extend_from_slice(b"ok\n");
        Flow::Continue
    }
}

fn build(_options: &Options) -> Result<Arc<dyn Service>, String> {
    Ok(Arc::new(LineServer(Panicky)))
}

inventory::submit! {
    Registration { name: "test-panics", summary: "panics on the line `panic` (tests only)", options: &[], build }
}

#[test]
fn a_panicking_connection_closes_and_the_port_goes_on_under_every_model() {
    let entries: Vec<_> = MODELS.iter().map(|m| entry("test-panics", m, "")).collect();
    let host = TestHost::start("", &entries);
    for (i, model) in MODELS.iter().enumerate() {
        // Connected before the panic, on the models that serve more than one client at once.
        let mut bystander = (*model != "sequential").then(|| {
            let mut client = Client::connect(host.addr(i));
            assert_eq!(client.ask("hello"), "ok", "{model}");
            client
        });
        let mut victim = Client::connect(host.addr(i));
        if *model == "sequential" {
            assert_eq!(victim.ask("hello"), "ok", "{model}");
        }
        victim.send(b"panic\n");
        assert!(
            victim.is_closed(),
            "{model}: the panicking connection is closed"
        );
        if let Some(client) = &mut bystander {
            assert_eq!(client.ask("still there?"), "ok", "{model}: the bystander");
        }
        drop(bystander);
        assert_eq!(
            Client::connect(host.addr(i)).ask("next"),
            "ok",
            "{model}: the port goes on accepting"
        );
    }
    // The panic is logged with the connection's port and peer; a child's exit code says so.
    let log = host.log();
    for port in &host.ports {
        assert!(
            log.lines().any(|l| l.contains("panicked at")
                && l.contains(&format!("port={port}"))
                && l.contains("peer=127.0.0.1:")),
            "no panic logged for port {port}:\n{log}"
        );
    }
    assert!(
        eventually(|| host.log().contains("child exited with code 101")),
        "{}",
        host.log()
    );
}
