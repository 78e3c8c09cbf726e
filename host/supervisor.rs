//! The running host: every port of a config bound (all or nothing) and served, each accept
//! loop watched and restarted if it ever dies, reloads done the way inetd does them, and the
//! drain: stop accepting, let clients finish for the grace period, then close what is left and
//! reap every child.
//!
//! [`run`] is the whole life of a host, for a caller that has its config and its sockets (the
//! CLI, tests); [`Supervisor`] is the same in steps, for a caller that also reloads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::admin::Admin;
use crate::admin::drive::LoadCommand;
use crate::config::{AdminPlan, Config, PortEntry, PortPlan};
use crate::events::Kind;
use crate::listener::accept_loop;
use crate::models::fork_server::{ForkerCommand, ForkerHandle};
use crate::models::{self, Runner};
use crate::observed::Observed;
use crate::port::Port;
use crate::shutdown::Cause;
use crate::sockets::{self, BindError, Listening, Origin, Sockets};

/// How long closing connections may take once the grace period is over: a child gets SIGTERM,
/// then SIGKILL half a second later.
const CLOSE_TIME: Duration = Duration::from_secs(2);

/// How long a reload keeps trying to bind a port's new address while the old socket closes.
const REBIND_TIME: Duration = Duration::from_secs(1);

/// The first and the longest pause before an accept loop that died is started again.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}; nothing was bound")]
    Bind(#[from] BindError),
    #[error(
        "sockets were passed in that no port of the config claims: {}; name them after a port \
         (FileDescriptorName=7001) or bind them to a port's address",
        .0.join(", ")
    )]
    Unclaimed(Vec<String>),
    #[error("cannot start serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot start the admin endpoint ([host] admin): {0}")]
    Admin(std::io::Error),
}

/// Serves `config` on `sockets` (binding the ports no socket was passed for) until `shutdown`
/// completes, then drains: mini-redis's `server::run(listener, shutdown)`.
pub async fn run(
    config: Config,
    sockets: Sockets,
    programs: Programs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let supervisor = Supervisor::start(config, sockets, programs).await?;
    shutdown.await;
    supervisor.drain().await;
    Ok(())
}

/// The programs a host starts: its process-per-client fork server, and the load generator
/// the live page can drive its ports with.
#[derive(Debug, Clone)]
pub struct Programs {
    pub forker: ForkerCommand,
    /// `None` in a binary that offers no load generator: the page refuses load runs, saying
    /// why.
    pub load: Option<LoadCommand>,
}

impl Programs {
    /// This very binary, for both: its fork server, and its load generator if it offered one
    /// ([`crate::admin::drive::offer_load_generator`]).
    pub fn this_binary() -> std::io::Result<Programs> {
        Ok(Programs {
            forker: ForkerCommand::this_binary()?,
            load: LoadCommand::offered(),
        })
    }
}

/// The ports being served.
#[derive(Debug)]
pub struct Supervisor {
    ports: BTreeMap<u16, Served>,
    observed: Arc<Observed>,
    admin: Option<Admin>,
    load: Option<LoadCommand>,
    forker: Arc<ForkerHandle>,
    /// Sockets passed in: systemd's stay here for reloads; a test's wait for their port.
    sockets: Sockets,
    grace: Duration,
    /// Ports that a reload replaced or removed, draining their connections in the background.
    draining: TaskTracker,
}

/// What a reload does to one port.
#[derive(Debug)]
enum Step {
    /// Not in the new config: it drains.
    Remove,
    /// New: it starts on the socket bound for it.
    Add(PortPlan, Listening),
    /// The same entry: left alone, open connections and games in progress included.
    Keep,
    /// A changed entry, and how it changed: the old connections drain, new ones get the new
    /// entry.
    Change(PortPlan, String),
}

/// One port being served and how.
#[derive(Debug)]
struct Served {
    port: Arc<Port>,
    runner: Arc<dyn Runner>,
    origin: Origin,
}

impl Supervisor {
    /// Binds every port of `config` that has no passed socket (all or nothing), and serves them.
    pub async fn start(
        config: Config,
        mut sockets: Sockets,
        programs: Programs,
    ) -> Result<Supervisor, StartError> {
        let listening = config
            .ports
            .iter()
            .map(|plan| sockets.listen(plan))
            .collect::<Result<Vec<_>, _>>()?;
        let unclaimed = sockets.unclaimed();
        if !unclaimed.is_empty() {
            return Err(StartError::Unclaimed(unclaimed));
        }
        let mut supervisor = Supervisor {
            ports: BTreeMap::new(),
            observed: Arc::default(),
            admin: None,
            load: programs.load,
            forker: ForkerHandle::new(programs.forker),
            sockets,
            grace: config.shutdown_grace,
            draining: TaskTracker::new(),
        };
        let _ = supervisor.observed.forker.set(supervisor.forker.clone());
        for (plan, listening) in config.ports.into_iter().zip(listening) {
            let listener = Arc::new(sockets::into_tokio(listening.listener)?);
            supervisor.serve(plan, listener, listening.origin).await?;
        }
        if let Some(plan) = config.admin {
            let admin = Admin::start(plan, supervisor.observed.clone(), supervisor.load.clone())
                .await
                .map_err(StartError::Admin)?;
            supervisor.admin = Some(admin);
        }
        Ok(supervisor)
    }

    /// Where the admin endpoint listens, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Starts, stops or moves the admin endpoint as a reloaded config says.
    async fn reload_admin(&mut self, plan: Option<AdminPlan>) {
        if self.admin.as_ref().map(|a| &a.plan) == plan.as_ref() {
            return;
        }
        if let Some(admin) = self.admin.take() {
            info!(addr = %admin.addr, "reload: admin endpoint stopped");
            admin.stop().await;
        }
        if let Some(plan) = plan {
            match Admin::start(plan, self.observed.clone(), self.load.clone()).await {
                // At start the plan says where it is; a reload prints no plan.
                Ok(admin) => {
                    let addr = admin.addr;
                    info!(%addr, "reload: admin endpoint started: live page at http://{addr}/");
                    self.admin = Some(admin);
                }
                Err(e) => error!("reload: cannot start the admin endpoint: {e}"),
            }
        }
    }

    /// Every port served, in port order, with where its socket came from.
    pub fn ports(&self) -> impl Iterator<Item = (&PortPlan, &Origin)> {
        self.ports.values().map(|s| (&s.port.plan, &s.origin))
    }

    /// What the admin endpoint reads.
    pub fn observed(&self) -> Arc<Observed> {
        self.observed.clone()
    }

    /// The pid of the process-per-client fork server, once a connection has started it.
    pub async fn forker_pid(&self) -> Option<u32> {
        self.forker.pid().await
    }

    /// Hands over a socket for a port that a later reload adds (a test's port-0 listener).
    pub fn provide(&mut self, listener: std::net::TcpListener) {
        self.sockets.provide(listener);
    }

    async fn serve(
        &mut self,
        plan: PortPlan,
        listener: Arc<TcpListener>,
        origin: Origin,
    ) -> std::io::Result<()> {
        let number = plan.entry.port();
        let port = Port::new(plan, listener, self.observed.events.clone());
        let runner = models::runner(&port, &self.forker).await?;
        watch(port.clone(), runner.clone());
        self.observed.add(&port);
        self.ports.insert(
            number,
            Served {
                port,
                runner,
                origin,
            },
        );
        Ok(())
    }

    /// Reloads from the config file at `path`, as SIGHUP does: a file that is not usable is
    /// logged with every error in it, and nothing changes.
    pub async fn reload_from(&mut self, path: &std::path::Path) {
        match Config::load(path) {
            Ok(config) => {
                info!("SIGHUP: reloading {}", path.display());
                self.reload(config).await;
            }
            Err(e) => {
                error!(
                    "SIGHUP: {} is not usable; keeping the running configuration:\n{e}",
                    path.display()
                );
                self.observed.stats.reloaded("invalid");
            }
        }
    }

    /// Applies a new config: ports added start, ports removed drain, ports whose entry changed
    /// drain and restart on the same socket, and unchanged ports (with their open connections
    /// and any game in progress) are left alone. If a new port cannot be bound, nothing changes.
    pub async fn reload(&mut self, config: Config) {
        let steps = match self.plan_reload(config.ports) {
            Ok(steps) => steps,
            Err(e) => {
                error!("reload: {e}; keeping the running configuration");
                self.observed.stats.reloaded("failed");
                return;
            }
        };
        self.grace = config.shutdown_grace;
        self.reload_admin(config.admin).await;
        for (number, step) in steps {
            self.apply(number, step).await;
        }
        self.observed.stats.reloaded("applied");
    }

    /// What a reload to `ports` does, port by port: the removed ones first, then the new
    /// config's in port order. Binds every new port first, all or nothing, so that a reload
    /// that cannot be done changes nothing.
    fn plan_reload(&mut self, ports: Vec<PortPlan>) -> Result<Vec<(u16, Step)>, BindError> {
        let mut fresh = BTreeMap::new();
        for plan in ports
            .iter()
            .filter(|p| !self.ports.contains_key(&p.entry.port()))
        {
            fresh.insert(plan.entry.port(), self.sockets.listen(plan)?);
        }
        let next: BTreeMap<u16, PortPlan> =
            ports.into_iter().map(|p| (p.entry.port(), p)).collect();
        let mut steps: Vec<(u16, Step)> = self
            .ports
            .keys()
            .filter(|port| !next.contains_key(port))
            .map(|&port| (port, Step::Remove))
            .collect();
        for (number, plan) in next {
            let step = match fresh.remove(&number) {
                Some(listening) => Step::Add(plan, listening),
                None => {
                    let change = describe_change(&self.ports[&number].port.plan.entry, &plan.entry);
                    if change.is_empty() {
                        Step::Keep
                    } else {
                        Step::Change(plan, change)
                    }
                }
            };
            steps.push((number, step));
        }
        Ok(steps)
    }

    /// Does one step of a reload to port `number`, logging it and telling the live view.
    async fn apply(&mut self, number: u16, step: Step) {
        match step {
            Step::Remove => {
                let served = self
                    .ports
                    .remove(&number)
                    .expect("planned from the ports served");
                info!(port = number, "reload: removed; draining its connections");
                self.reload_event(number, "removed; draining its connections".to_owned());
                // Its accept loop serves what is queued, then closes the socket.
                served.port.shutdown.stop_accepting();
                self.sockets.release(number, served.port.plan.entry.addr);
                self.drain_in_background(served);
            }
            Step::Add(plan, listening) => {
                info!(port = number, service = %plan.entry.service, model = %plan.entry.model, "reload: added");
                self.reload_event(
                    number,
                    format!("added: {} under {}", plan.entry.service, plan.entry.model),
                );
                match sockets::into_tokio(listening.listener) {
                    Ok(listener) => {
                        self.start_or_log(plan, Arc::new(listener), listening.origin)
                            .await;
                    }
                    Err(e) => error!(port = number, "reload: cannot use the socket: {e}"),
                }
            }
            Step::Keep => {
                info!(port = number, "reload: unchanged");
                self.reload_event(number, "unchanged".to_owned());
            }
            Step::Change(plan, change) => {
                info!(
                    port = number,
                    "reload: {change}; old connections drain, new ones get the new entry"
                );
                self.reload_event(number, change);
                self.replace(number, plan).await;
            }
        }
    }

    /// Starts port `number`'s new entry `plan`, on the old entry's socket when it fits, and
    /// drains the old entry's connections in the background.
    async fn replace(&mut self, number: u16, plan: PortPlan) {
        let old = self
            .ports
            .remove(&number)
            .expect("planned from the ports served");
        // Taken before the old accept loop is told to stop, so that its hand-over (which
        // would serve the queue and close the socket) finds nothing to take.
        let listener = old.port.take_listener();
        old.port.shutdown.stop_accepting();
        let origin = old.origin.clone();
        // A socket on another address, or with other options, is dropped here, before the
        // new one is bound; a passed socket is made claimable again, for a later reload.
        let reusable = listener.filter(|l| match &origin {
            Origin::Passed { name, .. } if name.as_deref() == Some(&*number.to_string()) => true,
            _ => {
                old.port.plan.entry.edge.reuse_port == plan.entry.edge.reuse_port
                    && l.local_addr().ok() == Some(plan.entry.addr)
            }
        });
        if reusable.is_none() {
            self.sockets.release(number, old.port.plan.entry.addr);
        }
        self.drain_in_background(old);
        let (listener, origin) = match reusable {
            Some(listener) => (listener, origin),
            None => match self.rebind(&plan).await {
                Ok(listening) => (listening, Origin::Bound),
                Err(e) => {
                    error!("reload: {e}; the port is not served");
                    return;
                }
            },
        };
        self.start_or_log(plan, listener, origin).await;
    }

    fn reload_event(&self, port: u16, what: String) {
        self.observed
            .events
            .push(Some(port), Kind::Reload, || format!("reload: {what}"));
    }

    async fn start_or_log(&mut self, plan: PortPlan, listener: Arc<TcpListener>, origin: Origin) {
        let port = plan.entry.port();
        if let Err(e) = self.serve(plan, listener, origin).await {
            error!(port, "reload: cannot start the port: {e}");
        }
    }

    /// Binds a port's new address, retrying while the old socket of an overlapping address
    /// (`0.0.0.0` and `127.0.0.1`, say) finishes closing.
    async fn rebind(&mut self, plan: &PortPlan) -> Result<Arc<TcpListener>, BindError> {
        let deadline = tokio::time::Instant::now() + REBIND_TIME;
        loop {
            match self.sockets.listen(plan) {
                Err(e)
                    if e.source.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
                Ok(listening) => {
                    return sockets::into_tokio(listening.listener)
                        .map(Arc::new)
                        .map_err(|e| BindError::new(plan, e));
                }
            }
        }
    }

    /// Drains a port that a reload replaced or removed, in the background.
    fn drain_in_background(&self, served: Served) {
        let grace = self.grace;
        let observed = self.observed.clone();
        self.draining.spawn(async move {
            drain_ports(std::slice::from_ref(&served.port), grace, Cause::Reload).await;
            served.runner.finish().await;
            observed.drained(&served.port);
            info!(port = served.port.port(), "old connections drained");
        });
    }

    /// Stops accepting everywhere, lets connected clients finish for the grace period, then
    /// closes the rest (children get SIGTERM, then SIGKILL) and reaps every child.
    pub async fn drain(mut self) {
        // The passed sockets kept for reloads: with them gone, each port's hand-over closes
        // the last descriptor of its socket, and new clients are refused at once instead of
        // waiting unanswered in a backlog nobody will accept from.
        drop(std::mem::take(&mut self.sockets));
        let served: Vec<Served> = self.ports.into_values().collect();
        let grace = self.grace;
        // Alongside any port a reload is still draining; each drain is bounded on its own.
        self.draining.spawn(async move {
            let ports: Vec<Arc<Port>> = served.iter().map(|s| s.port.clone()).collect();
            drain_ports(&ports, grace, Cause::HostShutdown).await;
            for s in &served {
                s.runner.finish().await;
            }
        });
        self.draining.close();
        self.draining.wait().await;
        self.forker.shutdown().await;
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
    }
}

/// Runs the port's accept loop, and starts it again (with a growing pause) if it ends while
/// the port is still configured: a panic there would otherwise leave the port bound and
/// silent, its clients queued in the backlog for ever.
fn watch(port: Arc<Port>, runner: Arc<dyn Runner>) {
    port.tracker.clone().spawn(async move {
        let (mut backoff, max) = RESTART_BACKOFF;
        loop {
            let ended = tokio::spawn(accept_loop(port.clone(), runner.clone())).await;
            if port.shutdown.is_done_accepting() {
                return;
            }
            let reason = match ended {
                Ok(()) => "it returned while the port is still configured".to_owned(),
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            };
            error!(
                port = port.port(),
                "the accept loop ended ({reason}); restarting it on the same socket in {backoff:?}"
            );
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = port.shutdown.done_accepting() => return,
            }
            backoff = (backoff * 2).min(max);
        }
    });
}

/// The text of a panic's payload, when it has one.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast::<&'static str>().map_or_else(
            |_| "a panic without a message".to_owned(),
            |s| (*s).to_owned(),
        ),
    }
}

/// What differs between two entries of one port, for the reload log; empty when nothing does.
fn describe_change(old: &PortEntry, new: &PortEntry) -> String {
    let mut changes = Vec::new();
    if old.service != new.service {
        changes.push(format!("service {} -> {}", old.service, new.service));
    }
    if old.model != new.model {
        changes.push(format!("model {} -> {}", old.model, new.model));
    }
    if old.addr != new.addr {
        changes.push(format!("bind {} -> {}", old.addr.ip(), new.addr.ip()));
    }
    if let (Some(old), Some(new)) = (old.workers, new.workers)
        && old != new
    {
        changes.push(format!("workers {old} -> {new}"));
    }
    if old.options != new.options || old.base_dir != new.base_dir {
        changes.push("options".to_owned());
    }
    if old.limits != new.limits
        || (old.max_connections != new.max_connections && old.workers == new.workers)
        || old.max_connections_per_ip != new.max_connections_per_ip
        || old.edge.rate != new.edge.rate
    {
        changes.push("limits".to_owned());
    }
    if old.edge.access != new.edge.access {
        changes.push("access".to_owned());
    }
    if old.edge.trusted_proxies != new.edge.trusted_proxies {
        changes.push("proxy protocol".to_owned());
    }
    if old.edge.reuse_port != new.edge.reuse_port {
        changes.push("reuse_port".to_owned());
    }
    if changes.is_empty() {
        String::new()
    } else {
        format!("changed ({})", changes.join(", "))
    }
}

/// Drains ports together: stop accepting, wait up to `grace` for their connections, then
/// close the rest and wait for that too.
async fn drain_ports(ports: &[Arc<Port>], grace: Duration, why: Cause) {
    for port in ports {
        port.shutdown.stop_accepting();
        port.tracker.close();
    }
    let all_done = || async {
        for port in ports {
            port.tracker.wait().await;
        }
    };
    if tokio::time::timeout(grace, all_done()).await.is_ok() {
        return;
    }
    info!("grace period of {grace:?} is over; closing the connections still open");
    for port in ports {
        port.close_connections(why);
    }
    let _ = tokio::time::timeout(CLOSE_TIME, all_done()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;

    /// Captures what the host logs, for checking it.
    #[derive(Clone, Default)]
    struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn ask(addr: SocketAddr, line: &str) -> String {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).unwrap();
        answer
    }

    /// On a current-thread runtime, so that the log subscriber set here sees the accept loop.
    #[tokio::test]
    async fn an_accept_loop_that_dies_is_logged_and_restarted_on_the_same_socket() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let text = format!(
            "[ports.{}]\nservice = \"palindrome-v3\"\nmodel = \"async\"\n",
            addr.port()
        );
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        let mut sockets = Sockets::default();
        sockets.provide(listener);
        let supervisor = Supervisor::start(config, sockets, Programs::this_binary().unwrap())
            .await
            .unwrap();
        let port = supervisor.ports.values().next().unwrap().port.clone();
        assert_eq!(
            tokio::task::spawn_blocking(move || ask(addr, "abba"))
                .await
                .unwrap(),
            "1\n"
        );

        // The loop is waiting for its next client; it panics when it takes its next turn.
        port.fail_next_accept
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            tokio::task::spawn_blocking(move || ask(addr, "abc"))
                .await
                .unwrap(),
            "\n",
            "the client that came just then is served"
        );
        let answer = tokio::task::spawn_blocking(move || ask(addr, "abba"))
            .await
            .unwrap();
        assert_eq!(answer, "1\n", "the port serves again after the restart");
        let text = log.text();
        let line = text
            .lines()
            .find(|l| l.contains("the accept loop ended"))
            .unwrap_or_else(|| panic!("no restart logged:\n{text}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains(&format!("port={}", addr.port())), "{line}");
        assert!(
            line.contains(
                "the accept loop ended (it panicked: the accept loop was told to fail (test)); \
                 restarting it on the same socket in 100ms"
            ),
            "{line}"
        );
        supervisor.drain().await;
    }
}
