//! Serving services inside a test process, the way `porthost run` would, on loopback
//! listeners bound to port 0: what the host's own tests use, and what a service author's tests
//! can use (the `uppercase` example's do). Enabled by the `testing` feature.
//!
//! ```text
//! let host = TestHost::start("", &[entry("palindrome-v3", "thread-per-client", "")]);
//! // talk to host.addr(0) ...
//! ```
//!
//! A test binary that serves `process-per-client` ports must contain
//! [`forker_entry_point!`](crate::forker_entry_point): the host starts that binary again as its
//! fork server, so that the children run the services this binary registers.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::runtime::Runtime;

use crate::admin::drive::LoadCommand;
use crate::config::Config;
use crate::lock::lock;
use crate::models::fork_server::{self, ForkerCommand};
use crate::sockets::Sockets;
use crate::supervisor::{Programs, Supervisor};

/// Set in the environment of a test binary started as a fork server.
const FORKER_ENV: &str = "PORTHOST_TEST_FORKER";

/// The name of the test that [`forker_entry_point!`](crate::forker_entry_point) defines.
const FORKER_TEST: &str = "forker_entry_point";

/// Defines the (ignored) test through which the host starts this test binary as its fork
/// server. Put it once at the top level of the test crate.
#[macro_export]
macro_rules! forker_entry_point {
    () => {
        /// Not a test: the host under test starts this binary again, running only this, as its
        /// process-per-client fork server (see `porthost::testing`). Run any other way it fails,
        /// since it has nothing to check.
        #[test]
        #[ignore = "the fork server's entry point, started by the host under test"]
        fn forker_entry_point() {
            $crate::testing::run_forker_if_asked();
            panic!(
                "not a test: the entry point through which a host under test starts this \
                 binary as its fork server"
            );
        }
    };
}

/// Runs the fork server and exits, when this process was started as one; returns otherwise.
pub fn run_forker_if_asked() {
    if std::env::var_os(FORKER_ENV).is_none() {
        return;
    }
    crate::logging::init(crate::logging::Format::from_env());
    let code = match fork_server::main() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("the fork server failed: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// The fork server a host in this test binary uses: this binary, running only
/// `forker_entry_point`, logging to `log`.
pub fn forker_command(log: &Path) -> ForkerCommand {
    ForkerCommand {
        program: std::env::current_exe().expect("the test binary's path"),
        args: [FORKER_TEST, "--exact", "--ignored", "--nocapture", "-q"]
            .map(Into::into)
            .to_vec(),
        env: vec![(FORKER_ENV.into(), "1".into())],
        stderr: Some(log.to_path_buf()),
    }
}

/// One `[ports.N]` entry: the service, the model and any extra lines.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub service: &'a str,
    pub model: &'a str,
    pub extra: &'a str,
}

pub fn entry<'a>(service: &'a str, model: &'a str, extra: &'a str) -> Entry<'a> {
    Entry {
        service,
        model,
        extra,
    }
}

/// A host served in this process on its own runtime, with its log captured. Dropping it
/// drains it.
#[derive(Debug)]
pub struct TestHost {
    runtime: Option<Runtime>,
    supervisor: Mutex<Option<Supervisor>>,
    pub ports: Vec<u16>,
    /// Where the config file is (relative `words_file` paths resolve here).
    pub dir: PathBuf,
    log: Log,
}

impl TestHost {
    /// Serves `entries` on ports bound to port 0 of the entry's address (its `bind = "..."`
    /// line, else 127.0.0.1), with `host_table` as the `[host]` lines (`shutdown_grace_secs =
    /// 2` unless it says otherwise). Panics if the config is invalid.
    pub fn start(host_table: &str, entries: &[Entry<'_>]) -> TestHost {
        TestHost::try_start(host_table, entries).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestHost::start`], returning why the host did not start.
    pub fn try_start(host_table: &str, entries: &[Entry<'_>]) -> Result<TestHost, String> {
        TestHost::try_start_with(host_table, entries, None)
    }

    /// Like [`TestHost::start`], with `load` as the load generator the live page starts (a
    /// `porthost` binary: the test binary itself has none).
    pub fn start_with_load(host_table: &str, entries: &[Entry<'_>], load: &Path) -> TestHost {
        let load = LoadCommand {
            program: load.to_path_buf(),
            args: vec!["bench".to_owned()],
        };
        TestHost::try_start_with(host_table, entries, Some(load)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_with(
        host_table: &str,
        entries: &[Entry<'_>],
        load: Option<LoadCommand>,
    ) -> Result<TestHost, String> {
        let listeners: Vec<std::net::TcpListener> = entries
            .iter()
            .map(|e| {
                let ip = bind_line(e.extra).unwrap_or([127, 0, 0, 1].into());
                crate::sockets::bind((ip, 0).into()).expect("bind port 0")
            })
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect();
        let text = config_text(host_table, &listeners, entries);
        let dir = scratch_dir();
        let path = dir.join("services.toml");
        std::fs::write(&path, &text).expect("write the config");
        let config = Config::parse(&text, &path).map_err(|e| e.to_string())?;
        let log = Log::default();
        let runtime = runtime(&log);
        let mut sockets = Sockets::default();
        for listener in listeners {
            sockets.provide(listener);
        }
        let programs = Programs {
            forker: forker_command(&dir.join("forker.log")),
            load,
        };
        // Threads the host starts (a sequential port's) log where the thread starting them does.
        let supervisor = tracing::dispatcher::with_default(&log.dispatch, || {
            runtime.block_on(Supervisor::start(config, sockets, programs))
        })
        .map_err(|e| e.to_string())?;
        Ok(TestHost {
            runtime: Some(runtime),
            supervisor: Mutex::new(Some(supervisor)),
            ports,
            dir,
            log,
        })
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[index]))
    }

    /// How many clients wait in the accept queue of the port at `index`: connected by the
    /// kernel, not yet accepted by the host. `None` once the port no longer listens.
    pub fn waiting(&self, index: usize) -> Option<u64> {
        let supervisor = self.supervisor();
        let port = self.ports[index];
        supervisor
            .as_ref()?
            .observed()
            .ports()
            .into_iter()
            .find(|p| p.port() == port)?
            .waiting()
    }

    /// Everything the host and its fork server logged so far.
    pub fn log(&self) -> String {
        let forker = std::fs::read_to_string(self.dir.join("forker.log")).unwrap_or_default();
        self.log.text() + &forker
    }

    /// Reloads the host with new config text, as SIGHUP does; `provide` are listeners (bound
    /// to port 0) for ports the new config adds. An invalid config is logged and changes
    /// nothing, as in the real host.
    pub fn reload(&self, text: &str, provide: Vec<std::net::TcpListener>) {
        let path = self.dir.join("services.toml");
        std::fs::write(&path, text).expect("write the config");
        let mut supervisor = self.supervisor();
        let supervisor = supervisor.as_mut().expect("not drained");
        for listener in provide {
            supervisor.provide(listener);
        }
        let runtime = self.runtime();
        tracing::dispatcher::with_default(&self.log.dispatch, || {
            runtime.block_on(supervisor.reload_from(&path))
        });
    }

    /// Where the admin endpoint listens, when `[host] admin` turns it on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.supervisor().as_ref()?.admin_addr()
    }

    /// The pid of the fork server, once a process-per-client connection has started it.
    pub fn forker(&self) -> Option<u32> {
        let supervisor = self.supervisor();
        self.runtime().block_on(supervisor.as_ref()?.forker_pid())
    }

    /// Drains the host as SIGTERM does; returns when it has.
    pub fn drain(&self) {
        if let Some(supervisor) = self.supervisor().take() {
            let runtime = self.runtime();
            tracing::dispatcher::with_default(&self.log.dispatch, || {
                runtime.block_on(supervisor.drain())
            });
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("present until drop")
    }

    fn supervisor(&self) -> MutexGuard<'_, Option<Supervisor>> {
        lock(&self.supervisor)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.drain();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address of an entry's `bind = "..."` line, if it has one.
fn bind_line(extra: &str) -> Option<std::net::IpAddr> {
    extra
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bind"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .find_map(|value| value.trim().trim_matches('"').parse().ok())
}

/// A config serving `entries` on `listeners` (one each, in order) with `host_table` as its
/// `[host]` table, and a grace period of 2 s unless it says otherwise: tests drain quickly.
pub fn config_text(
    host_table: &str,
    listeners: &[std::net::TcpListener],
    entries: &[Entry<'_>],
) -> String {
    let grace = if host_table.contains("shutdown_grace_secs") {
        ""
    } else {
        "shutdown_grace_secs = 2\n"
    };
    let mut text = format!("[host]\n{grace}{host_table}\n");
    for (listener, e) in listeners.iter().zip(entries) {
        let port = listener.local_addr().expect("bound").port();
        text.push_str(&port_entry(port, e));
    }
    text
}

/// A `[ports.N]` table.
pub fn port_entry(port: u16, e: &Entry<'_>) -> String {
    format!(
        "[ports.{port}]\nservice = \"{}\"\nmodel = \"{}\"\n{}\n",
        e.service, e.model, e.extra
    )
}

/// A fresh directory for one host's config and fork-server log.
fn scratch_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "porthost-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A runtime whose threads log to `log`, and with panics logged (the test's own panics still
/// reach the test harness: the hook only adds a log line).
fn runtime(log: &Log) -> Runtime {
    crate::logging::install_test_panic_hook();
    let dispatch = log.dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&dispatch);
            THREAD_LOG.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| {
            THREAD_LOG
                .with(|slot| slot.borrow_mut().take())
                .map_or((), drop)
        })
        .build()
        .expect("a runtime")
}

thread_local! {
    /// Keeps a runtime thread's log dispatcher in place for the thread's life.
    static THREAD_LOG: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

/// A captured log: a `tracing` dispatcher writing into memory.
#[derive(Clone)]
struct Log {
    text: Arc<Mutex<Vec<u8>>>,
    dispatch: tracing::Dispatch,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").finish_non_exhaustive()
    }
}

impl Default for Log {
    fn default() -> Self {
        let text = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(text.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        Log {
            text,
            dispatch: tracing::Dispatch::new(subscriber),
        }
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.text)).into_owned()
    }
}

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
