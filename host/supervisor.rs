//! The running host: binds every port of a config (all or nothing), runs an accept loop per
//! port, reloads a changed config the way inetd does, and drains: stop accepting, let clients
//! finish for the grace period, then close what is left and reap every child.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::config::{Config, PortEntry, PortPlan};
use crate::listener::{PortCtx, accept_loop};
use crate::models::Model;
use crate::models::process_per_client::{Forker, wire::ChildSpec};

/// Pending connections the kernel queues per port; above `max_connections` clients wait here.
const BACKLOG: u32 = 4096;

/// How long closing connections may take once the grace period is over: a child gets SIGTERM,
/// then SIGKILL half a second later.
const CLOSE_TIME: Duration = Duration::from_secs(2);

/// How long a reload keeps trying to bind a port's new address while the old socket closes.
const REBIND_TIME: Duration = Duration::from_secs(1);

/// A port whose listener is bound but not yet served.
#[derive(Debug)]
pub struct Bound {
    pub plan: PortPlan,
    pub listener: TcpListener,
}

/// Why a port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr} for [ports.{port}] ({service}, line {line}): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub port: u16,
    pub service: String,
    pub line: usize,
    pub source: std::io::Error,
}

impl BindError {
    fn new(plan: &PortPlan, source: std::io::Error) -> Self {
        BindError {
            addr: plan.entry.addr,
            port: plan.entry.port(),
            service: plan.entry.service.clone(),
            line: plan.line,
            source,
        }
    }
}

/// Binds every port, or none: on the first failure the listeners bound so far are closed.
pub fn bind_all(plans: &[PortPlan]) -> Result<Vec<Bound>, BindError> {
    plans
        .iter()
        .map(|plan| {
            let listener = bind(plan.entry.addr).map_err(|e| BindError::new(plan, e))?;
            Ok(Bound {
                plan: plan.clone(),
                listener,
            })
        })
        .collect()
}

/// A listening socket with `SO_REUSEADDR`, so a restarted host can bind while old
/// connections sit in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The ports being served.
#[derive(Debug)]
pub struct Host {
    ports: BTreeMap<u16, Arc<PortCtx>>,
    forker: Arc<Forker>,
    grace: Duration,
    /// Ports that a reload replaced or removed, draining their connections in the background.
    draining: TaskTracker,
}

impl Host {
    /// Starts serving bound ports; `grace` is how long a drain lets clients finish.
    pub async fn start(bound: Vec<Bound>, grace: Duration) -> std::io::Result<Host> {
        let mut host = Host {
            ports: BTreeMap::new(),
            forker: Forker::new(),
            grace,
            draining: TaskTracker::new(),
        };
        for Bound { plan, listener } in bound {
            host.serve(plan, Arc::new(listener)).await?;
        }
        Ok(host)
    }

    async fn serve(&mut self, plan: PortPlan, listener: Arc<TcpListener>) -> std::io::Result<()> {
        let port = plan.entry.port();
        let forker = match plan.entry.model {
            Model::ProcessPerClient => {
                let spec = child_spec(&plan.entry);
                Some((self.forker.clone(), self.forker.register(spec).await?))
            }
            _ => None,
        };
        let ctx = Arc::new(PortCtx::new(plan, listener, forker));
        // The accept loop is tracked with the connections, so draining waits for both.
        ctx.tracker.spawn(accept_loop(ctx.clone()));
        self.ports.insert(port, ctx);
        Ok(())
    }

    /// Applies a new config: ports added start, ports removed drain, ports whose entry changed
    /// drain and restart on the same socket, and unchanged ports (with their open connections
    /// and any game in progress) are left alone. If a new port cannot be bound, nothing changes.
    pub async fn reload(&mut self, config: Config) {
        let mut fresh = BTreeMap::new();
        for plan in config
            .ports
            .iter()
            .filter(|p| !self.ports.contains_key(&p.entry.port()))
        {
            match bind(plan.entry.addr) {
                Ok(listener) => {
                    fresh.insert(plan.entry.port(), listener);
                }
                Err(e) => {
                    error!(
                        "reload: {}; keeping the running configuration",
                        BindError::new(plan, e)
                    );
                    return;
                }
            }
        }
        self.grace = config.shutdown_grace;
        let next: BTreeMap<u16, PortPlan> = config
            .ports
            .into_iter()
            .map(|p| (p.entry.port(), p))
            .collect();
        let removed: Vec<u16> = self
            .ports
            .keys()
            .filter(|port| !next.contains_key(port))
            .copied()
            .collect();
        for port in removed {
            let ctx = self.ports.remove(&port).expect("listed above");
            info!(port, "reload: removed; draining its connections");
            ctx.take_listener();
            self.retire(ctx);
        }
        for (port, plan) in next {
            if let Some(listener) = fresh.remove(&port) {
                info!(port, service = %plan.entry.service, model = %plan.entry.model, "reload: added");
                self.start_or_log(plan, Arc::new(listener)).await;
                continue;
            }
            let old = &self.ports[&port];
            let change = describe_change(&old.plan.entry, &plan.entry);
            if change.is_empty() {
                info!(port, "reload: unchanged");
                continue;
            }
            let old = self.ports.remove(&port).expect("present");
            info!(
                port,
                "reload: {change}; old connections drain, new ones get the new entry"
            );
            // A socket on another address is dropped here, before the new address is bound.
            let reusable = old
                .take_listener()
                .filter(|l| l.local_addr().ok() == Some(plan.entry.addr));
            self.retire(old);
            let listener = match reusable {
                Some(listener) => listener,
                None => match rebind(plan.entry.addr).await {
                    Ok(listener) => Arc::new(listener),
                    Err(e) => {
                        error!(
                            "reload: {}; the port is not served",
                            BindError::new(&plan, e)
                        );
                        continue;
                    }
                },
            };
            self.start_or_log(plan, listener).await;
        }
    }

    async fn start_or_log(&mut self, plan: PortPlan, listener: Arc<TcpListener>) {
        let port = plan.entry.port();
        if let Err(e) = self.serve(plan, listener).await {
            error!(port, "reload: cannot start the port: {e}");
        }
    }

    /// Stops a port accepting and drains its connections in the background.
    fn retire(&self, ctx: Arc<PortCtx>) {
        let grace = self.grace;
        self.draining.spawn(async move {
            drain_ports(std::slice::from_ref(&ctx), grace).await;
            if let Some((forker, port_id)) = &ctx.forker {
                forker.forget(*port_id).await;
            }
            info!(port = ctx.port(), "old connections drained");
        });
    }

    /// Stops accepting everywhere, lets connected clients finish for the grace period, then
    /// closes the rest (children get SIGTERM, then SIGKILL) and reaps every child.
    pub async fn drain(self) {
        let ports: Vec<Arc<PortCtx>> = self.ports.into_values().collect();
        let grace = self.grace;
        // Alongside any port a reload is still draining; each drain is bounded on its own.
        self.draining
            .spawn(async move { drain_ports(&ports, grace).await });
        self.draining.close();
        self.draining.wait().await;
        self.forker.shutdown().await;
    }
}

fn child_spec(entry: &PortEntry) -> ChildSpec {
    ChildSpec {
        port: entry.port(),
        service: entry.service.clone(),
        options: entry.options.clone(),
        base_dir: entry.base_dir.clone(),
        max_line_bytes: entry.limits.max_line_bytes,
        idle_timeout_secs: entry.limits.idle_timeout.map_or(0, |d| d.as_secs()),
    }
}

/// Binds a port's new address, retrying while the old socket of an overlapping address
/// (`0.0.0.0` and `127.0.0.1`, say) finishes closing.
async fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_TIME;
    loop {
        match bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
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
    if old.options != new.options || old.base_dir != new.base_dir {
        changes.push("options".to_owned());
    }
    if old.limits != new.limits
        || old.max_connections != new.max_connections
        || old.max_connections_per_ip != new.max_connections_per_ip
    {
        changes.push("limits".to_owned());
    }
    if changes.is_empty() {
        String::new()
    } else {
        format!("changed ({})", changes.join(", "))
    }
}

/// Drains ports together: stop accepting, wait up to `grace` for their connections, then
/// close the rest and wait for that too.
async fn drain_ports(ports: &[Arc<PortCtx>], grace: Duration) {
    for port in ports {
        port.stop.cancel();
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
        port.close.cancel();
    }
    let _ = tokio::time::timeout(CLOSE_TIME, all_done()).await;
}
