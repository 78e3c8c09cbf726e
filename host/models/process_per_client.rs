//! `process-per-client`: a new OS process per connection, running the same service code, like
//! the lecture's `ForkingTCPServer`.
//!
//! The host never forks itself (it is multi-threaded; see [`super::fork_server`]). It starts one
//! helper, the fork server (`porthost forker`), and hands it the port's listening socket: the
//! helper accepts, admits, forks a child that serves the connection and exits, and reports,
//! as `ForkingTCPServer` does. Where something must happen before the fork (a PROXY header
//! read, an `exec` program's stderr pipe, a single-session port's one client), the host
//! accepts instead and hands each socket over. With N clients connected there are N
//! children under the fork server. A child that crashes, panics or is killed ends only its own
//! connection: the fork server reaps it and reports how it ended, and the host logs that.
//!
//! Here: [`ProcessPerClient`], the port's runner (a `prefork` port's too). The fork server, its
//! children and workers, and the host's side of it are in [`super::fork_server`].

use std::os::fd::OwnedFd;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::{Instrument, info, warn};

use super::Runner;
use super::fork_server::ForkerHandle;
use super::fork_server::handle::Child;
use super::fork_server::wire::{ChildSpec, PoolSpec};
use crate::config::Model;
use crate::connection::Accepted;
use crate::gate::Rules;
use crate::port::Port;

/// The runner of a process-per-client port: its id at the fork server, where its service was
/// built once and every child inherits it. A `prefork` port's runner too: the same fork
/// server, which keeps the port's workers instead of forking per connection.
#[derive(Debug)]
pub struct ProcessPerClient {
    forker: Arc<ForkerHandle>,
    port_id: u64,
    /// Whether the fork server accepts the port's clients itself (see the module's doc).
    forker_accepts: bool,
    /// Whether it is a prefork port, whose workers accept.
    pool: bool,
}

impl ProcessPerClient {
    pub async fn register(
        port: &Arc<Port>,
        forker: &Arc<ForkerHandle>,
    ) -> std::io::Result<ProcessPerClient> {
        let plan = &port.plan;
        let e = &plan.entry;
        let spec = ChildSpec {
            port: e.port(),
            service: e.service.clone(),
            options: e.options.clone(),
            base_dir: e.base_dir.clone(),
            limits: e.limits,
            pool: (e.model == Model::Prefork).then(|| PoolSpec {
                workers: e.workers.unwrap_or_else(Model::default_workers),
                recycle_after: e.max_connections_per_worker,
            }),
        };
        let forker_accepts = e.edge.trusted_proxies.is_none() && !plan.service.single_session();
        let pool = spec.pool.is_some();
        Ok(ProcessPerClient {
            pool,
            forker: forker.clone(),
            port_id: forker.register(spec, port).await?,
            forker_accepts,
        })
    }
}

#[async_trait]
impl Runner for ProcessPerClient {
    /// Hands the listening socket to the fork server, which accepts until the port stops;
    /// then has it serve the clients already queued and close its copy, and closes the host's.
    async fn accept(&self, port: &Arc<Port>) -> bool {
        if !self.forker_accepts {
            return false;
        }
        let Some(socket) = port
            .listener()
            .and_then(|l| std::os::fd::AsFd::as_fd(&*l).try_clone_to_owned().ok())
        else {
            return false;
        };
        let rules = Rules::of(&port.plan.entry);
        let listened = self
            .forker
            .listen(self.port_id, port.clone(), socket, rules);
        let mut unlistened = match listened.await {
            Ok(unlistened) => unlistened,
            Err(e) => {
                warn!(
                    port = port.port(),
                    "the fork server cannot accept the port's clients ({e}); the host accepts them"
                );
                return false;
            }
        };
        tokio::select! {
            () = port.shutdown.done_accepting() => {}
            _ = &mut unlistened => {
                warn!(port = port.port(), "the fork server stopped accepting the port's clients; the host accepts them");
                return false;
            }
        }
        self.forker.unlisten(self.port_id).await;
        let _ = unlistened.await;
        // A prefork port's workers take no client once told to stop: the host's loop accepts
        // what is queued and hands it to them, as for a port of any model that drains.
        if self.pool {
            return false;
        }
        if port.take_listener().is_some() {
            info!(
                port = port.port(),
                "stopped accepting; its queued clients are served and its socket closed (unless \
                 systemd holds it)"
            );
        }
        true
    }

    /// Hands the connection to a child process and tracks it until the child has been reaped.
    async fn dispatch(&self, conn: Accepted) {
        let Accepted {
            stream,
            peer,
            admission,
            span,
        } = conn;
        // The host keeps a handle too: to tell the client why, should a drain cut it off.
        crate::connection::keep_closer(&admission, &stream, &span);
        let fd = match stream.into_std() {
            Ok(stream) => OwnedFd::from(stream),
            Err(e) => {
                warn!(parent: &span, "cannot hand the connection over: {e}");
                return;
            }
        };
        // An `exec` port's program writes its stderr into a pipe the host reads and logs
        // (blocking, as a program expects its stderr; `ConnChild::watch` makes the host's end
        // non-blocking).
        let program = crate::exec::of(&*admission.port().plan.service).is_some();
        let (stderr, stderr_end) = if program {
            match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok((read, write)) => (Some(read), Some(write)),
                Err(e) => {
                    warn!(parent: &span, "cannot make a pipe for the program's stderr: {e}");
                    return;
                }
            }
        } else {
            (None, None)
        };
        let child = match self
            .forker
            .start(self.port_id, fd, stderr_end, peer, &admission)
            .instrument(span.clone())
            .await
        {
            Ok(child) => child,
            Err(e) => {
                warn!(parent: &span, "cannot start a process for the connection: {e}");
                return;
            }
        };
        let kind = if program {
            Child::Program
        } else {
            Child::Handed
        };
        child.watch(admission, kind, stderr, span);
    }

    async fn finish(&self) {
        self.forker.forget(self.port_id).await;
    }
}
