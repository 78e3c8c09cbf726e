//! The four concurrency models, each one implementation of [`Runner`]: who serves a
//! connection once the accept loop ([`crate::listener`]) has admitted it.
//!
//! | model                | who serves the connection                     | file                    |
//! |----------------------|-----------------------------------------------|-------------------------|
//! | `sequential`         | the accept loop itself, one client at a time  | [`sequential`]          |
//! | `thread-per-client`  | a new OS thread per connection                | [`thread_per_client`]   |
//! | `process-per-client` | a new OS process per connection               | [`process_per_client`]  |
//! | `async`              | a tokio task on the shared runtime            | [`async_tasks`]         |
//!
//! The supervisor builds one runner per port ([`runner`]); the listener only calls
//! [`Runner::prepare`] and [`Runner::dispatch`], and the runner hands the connection to
//! [`crate::connection::serve`], which calls the service.

pub mod async_tasks;
pub mod process_per_client;
pub mod sequential;
pub mod thread_per_client;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Model;
use crate::connection::Accepted;
use crate::port::Port;
use process_per_client::ForkerHandle;

/// How one port's connections are served.
#[async_trait]
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// Gets ready for the next connection before it is accepted. An error makes the accept
    /// loop back off while the client waits in the listen backlog, instead of accepting a
    /// connection that could only be dropped.
    fn prepare(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// Serves an admitted connection: hands it to whoever serves it and returns, or (for
    /// `sequential`) serves it and returns when it has ended. A failure ends only this
    /// connection: it is logged here and the admission is dropped.
    async fn dispatch(&self, conn: Accepted);

    /// Called once the port has stopped and its connections have drained.
    async fn finish(&self) {}
}

/// The runner for a port's model. Process-per-client ports register with the forker here.
pub async fn runner(
    port: &Arc<Port>,
    forker: &Arc<ForkerHandle>,
) -> std::io::Result<Arc<dyn Runner>> {
    Ok(match port.plan.entry.model {
        Model::Sequential => Arc::new(sequential::Sequential),
        Model::ThreadPerClient => Arc::new(thread_per_client::ThreadPerClient::default()),
        Model::ProcessPerClient => {
            Arc::new(process_per_client::ProcessPerClient::register(&port.plan, forker).await?)
        }
        Model::Async => Arc::new(async_tasks::AsyncTasks),
    })
}

/// The connection as a service sees it, and what stays with the host: the admission and the
/// span.
fn split(
    conn: Accepted,
) -> (
    porthost_services::Conn,
    crate::port::Admission,
    tracing::Span,
) {
    let limits = conn.port().plan.entry.limits;
    let Accepted {
        stream,
        peer,
        admission,
        span,
    } = conn;
    (
        porthost_services::Conn {
            stream,
            peer,
            limits,
        },
        admission,
        span,
    )
}
