//! `async`: one tokio task per connection on the host's shared multi-threaded runtime. The
//! thread count stays flat however many clients connect; an idle client costs a task and its
//! buffers, a few KiB.

use async_trait::async_trait;
use tracing::Instrument;

use super::Runner;
use crate::connection::{self, Accepted};

#[derive(Debug)]
pub struct AsyncTasks;

#[async_trait]
impl Runner for AsyncTasks {
    async fn dispatch(&self, conn: Accepted) {
        let port = conn.port().clone();
        port.tracker.spawn(task(conn));
    }
}

/// A connection's task: its service's async form, or its `exec` program, to the end. Polled
/// on the runtime whose reactor `conn`'s socket is registered with; `event-loop` runs it too.
pub(super) fn task(conn: Accepted) -> impl Future<Output = ()> + Send + 'static {
    let port = conn.port().clone();
    let (conn, admission, span) = conn.into_conn();
    async move {
        match crate::exec::of(&*port.plan.service) {
            // A program on a task: the task waits for it.
            Some(exec) => match conn.stream.into_std() {
                Ok(stream) => {
                    connection::serve_program(exec, stream, conn.peer, &admission).await;
                }
                Err(e) => tracing::warn!("cannot hand the socket to the program: {e}"),
            },
            None => {
                connection::serve(&*port.plan.service, conn, Some(&port)).await;
            }
        }
        drop(admission);
    }
    .instrument(span)
}
