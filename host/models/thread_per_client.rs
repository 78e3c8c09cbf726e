//! `thread-per-client`: a new OS thread per connection, like the lecture's
//! `ThreadingTCPServer`. The handler is async, so each thread drives it on a runtime of its own
//! (current-thread: no extra workers); with N clients connected the host has N more threads.

use std::sync::Mutex;

use async_trait::async_trait;
use porthost_services::Conn;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tracing::{Instrument, warn};

use super::Runner;
use crate::connection::{self, Accepted};

/// The handler's state lives in its future, on the heap; a thread needs little stack of its own.
const STACK_SIZE: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct ThreadPerClient {
    /// The next connection's runtime, built before it is accepted.
    next: Mutex<Option<ConnRuntime>>,
}

/// A connection's runtime, built before the connection is accepted: it needs descriptors of
/// its own (an epoll instance and its wakers), and a connection accepted when none are left
/// could only be dropped. Built first, running out is the accept loop's to back off from while
/// the client waits in the backlog.
#[derive(Debug)]
struct ConnRuntime(Option<Runtime>);

impl Drop for ConnRuntime {
    /// One never handed to a thread is dropped on the host's runtime (the accept loop ended,
    /// the thread could not start), where the usual blocking shutdown would panic; it has no
    /// tasks to wait for anyway.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl ThreadPerClient {
    fn take_runtime(&self) -> Option<ConnRuntime> {
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl Runner for ThreadPerClient {
    fn prepare(&self) -> std::io::Result<()> {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            *next = Some(ConnRuntime(Some(runtime)));
        }
        Ok(())
    }

    async fn dispatch(&self, conn: Accepted) {
        let Some(mut runtime) = self.take_runtime() else {
            warn!(parent: &conn.span, "no runtime was prepared for the connection; closing it");
            return;
        };
        let port = conn.port().clone();
        let (
            Conn {
                stream,
                peer,
                limits,
            },
            admission,
            span,
        ) = super::split(conn);
        // Leave the host's reactor: the connection's own runtime will register it again.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                warn!(parent: &span, "cannot move the connection to a thread: {e}");
                return;
            }
        };
        let log = tracing::dispatcher::get_default(Clone::clone);
        let thread_port = port.clone();
        let token = port.tracker.token();
        let spawned = std::thread::Builder::new()
            .name(format!("porthost-{}", port.port()))
            .stack_size(STACK_SIZE)
            .spawn(move || {
                let _token = token;
                let _admission = admission;
                let _log = tracing::dispatcher::set_default(&log);
                let runtime = runtime.0.take().expect("built in prepare");
                runtime.block_on(
                    async {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                let conn = Conn {
                                    stream,
                                    peer,
                                    limits,
                                };
                                let service = &*thread_port.plan.service;
                                connection::serve(service, conn, Some(&thread_port.close)).await;
                            }
                            Err(e) => warn!("cannot register the connection: {e}"),
                        }
                    }
                    .instrument(span),
                );
            });
        if let Err(e) = spawned {
            warn!(
                port = port.port(),
                "cannot start a thread for {peer}: {e}; closing it"
            );
        }
    }
}
