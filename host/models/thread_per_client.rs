//! `thread-per-client`: a new OS thread per connection, like the lecture's
//! `ThreadingTCPServer`. The handler is async, so each thread drives it on a runtime of its own
//! (current-thread: no extra workers); with N clients connected the host has N more threads.

use std::sync::Arc;

use porthost_services::Conn;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tracing::{Instrument, Span, warn};

use crate::listener::{Admission, PortCtx};

/// The handler's state lives in its future, on the heap; a thread needs little stack of its own.
const STACK_SIZE: usize = 256 * 1024;

/// A connection's runtime, which the accept loop builds before accepting the connection: it
/// needs descriptors of its own (an epoll instance and its wakers), and a connection accepted
/// when none are left could only be dropped. Built first, running out is the accept loop's to
/// back off from while the client waits in the backlog.
#[derive(Debug)]
pub(crate) struct ConnRuntime(Option<Runtime>);

impl ConnRuntime {
    pub(crate) fn build() -> std::io::Result<ConnRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(ConnRuntime(Some(runtime)))
    }
}

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

pub(crate) fn spawn(
    ctx: &Arc<PortCtx>,
    conn: Conn,
    admission: Admission,
    span: Span,
    mut runtime: ConnRuntime,
) {
    let Conn {
        stream,
        peer,
        limits,
    } = conn;
    // Leave the host's reactor: the connection's own runtime will register it again.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            warn!(parent: &span, "cannot move the connection to a thread: {e}");
            return;
        }
    };
    let thread_ctx = ctx.clone();
    let token = ctx.tracker.token();
    let spawned = std::thread::Builder::new()
        .name(format!("porthost-{}", ctx.port()))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let _token = token;
            let ctx = thread_ctx;
            let runtime = runtime.0.take().expect("built by the accept loop");
            runtime.block_on(
                async {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            let conn = Conn {
                                stream,
                                peer,
                                limits,
                            };
                            super::serve_conn(&*ctx.plan.service, conn, Some(&ctx.close)).await;
                        }
                        Err(e) => warn!("cannot register the connection: {e}"),
                    }
                }
                .instrument(span),
            );
            ctx.ended(admission);
        });
    if let Err(e) = spawned {
        warn!(
            port = ctx.port(),
            "cannot start a thread for {peer}: {e}; closing it"
        );
    }
}
