//! `thread-per-client`: a new OS thread per connection, like the lecture's
//! `ThreadingTCPServer`. The handler is async, so each thread drives it on a runtime of its own
//! (current-thread: no extra workers); with N clients connected the host has N more threads.

use std::sync::Arc;

use porthost_services::Conn;
use tokio::net::TcpStream;
use tracing::{Instrument, Span, warn};

use crate::listener::{Admission, PortCtx};

/// The handler's state lives in its future, on the heap; a thread needs little stack of its own.
const STACK_SIZE: usize = 256 * 1024;

pub(crate) fn spawn(ctx: &Arc<PortCtx>, conn: Conn, admission: Admission, span: Span) {
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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(
                    async {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                let conn = Conn {
                                    stream,
                                    peer,
                                    limits,
                                };
                                super::serve_conn(&*ctx.plan.service, conn, &ctx.close).await;
                            }
                            Err(e) => warn!("cannot register the connection: {e}"),
                        }
                    }
                    .instrument(span),
                ),
                Err(e) => warn!(parent: &span, "cannot start the connection's runtime: {e}"),
            }
            ctx.ended(admission);
        });
    if let Err(e) = spawned {
        warn!(
            port = ctx.port(),
            "cannot start a thread for {peer}: {e}; closing it"
        );
    }
}
