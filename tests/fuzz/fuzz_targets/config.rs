//! The config loader (`Config::parse_bytes`, what `porthost check` and `porthost run` read a
//! file with), from any bytes.
//!
//! - No panic.
//! - A file refused gets at least one error, and every error points at a place in the file:
//!   a line it has (the one after its last newline included) and a column on that line or
//!   just past its end.
//! - A file accepted starts a host. Binding the file's own addresses would make the answer
//!   depend on this machine (a port in use, an address it does not have, a privileged port),
//!   which no check of the text can know; so each port is given a listener bound to port 0 on
//!   loopback, as systemd would pass one, the admin endpoint (if any) port 0 on loopback, and
//!   the grace period 0. The rest of the start is the real one: every service built, every
//!   model's runner started, the admin endpoint serving; then the host drains.
//!
//! Run: `cargo +nightly fuzz run config --fuzz-dir tests/fuzz`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use porthost::config::{Config, ConfigErrors};
use porthost::models::fork_server::ForkerCommand;
use porthost::sockets::Sockets;
use porthost::supervisor::{Programs, Supervisor};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Where the file is said to be: relative `words_file` paths resolve next to it, where nothing is.
fn path() -> PathBuf {
    std::env::temp_dir()
        .join("porthost-fuzz-config")
        .join("services.toml")
}

/// Starts `config` on port-0 loopback listeners, then drains it.
fn start(mut config: Config) {
    let mut sockets = Sockets::default();
    for plan in &mut config.ports {
        let listener = porthost::sockets::bind(([127, 0, 0, 1], 0).into()).expect("bind port 0");
        plan.entry.addr = listener.local_addr().expect("bound");
        sockets.provide(listener);
    }
    if let Some(admin) = &mut config.admin {
        admin.addr = ([127, 0, 0, 1], 0).into();
    }
    config.shutdown_grace = Duration::ZERO;
    let ports = config.ports.len();
    let programs = Programs {
        // Started only when a process-per-client port accepts a client, which none does here.
        forker: ForkerCommand {
            program: "/bin/false".into(),
            args: Vec::new(),
            env: Vec::new(),
            stderr: None,
        },
        // No load runs here: the page would refuse one.
        load: None,
    };
    runtime().block_on(async {
        let supervisor = Supervisor::start(config, sockets, programs)
            .await
            .unwrap_or_else(|e| panic!("an accepted config did not start: {e}"));
        assert_eq!(supervisor.ports().count(), ports, "every port served");
        supervisor.drain().await;
    });
}

fuzz_target!(|bytes: &[u8]| {
    let errors = match Config::parse_bytes(bytes, &path()) {
        Ok(config) => return start(config),
        Err(ConfigErrors(errors)) => errors,
    };
    assert!(!errors.is_empty(), "refused without a reason");
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    for error in errors {
        let line = lines.get(error.line.wrapping_sub(1));
        assert!(
            line.is_some_and(|l| (1..=l.chars().count() + 1).contains(&error.column)),
            "{error} is not a place in the file of {} lines",
            lines.len()
        );
    }
});
