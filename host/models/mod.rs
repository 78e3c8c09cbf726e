//! The concurrency models, each one implementation of [`Runner`]: who serves a connection
//! once the accept loop ([`crate::listener`]) has admitted it.
//!
//! | model                | who serves the connection                          | file                    |
//! |----------------------|----------------------------------------------------|-------------------------|
//! | `sequential`         | the port's one thread, one client at a time        | [`sequential`]          |
//! | `thread-per-client`  | a new OS thread per connection                     | [`thread_per_client`]   |
//! | `process-per-client` | a new OS process per connection                    | [`process_per_client`]  |
//! | `async`              | a tokio task on the shared runtime                 | [`async_tasks`]         |
//! | `thread-pool`        | one of `workers` threads started with the port     | [`thread_pool`]         |
//! | `event-loop`         | a task on the port's one single-threaded runtime   | [`event_loop`]          |
//! | `prefork`            | one of `workers` processes forked at start         | [`prefork`]             |
//!
//! The supervisor builds one runner per port ([`runner`]); the listener only calls
//! [`Runner::dispatch`], and the runner hands the connection to [`crate::connection`], which
//! calls the service. `sequential`, `thread-per-client`, `process-per-client` and
//! `thread-pool` serve it with blocking I/O on the thread or in the process that owns it, as
//! the lecture's `socketserver` servers do; `async` serves it on the host's runtime, and
//! `event-loop` on a runtime of the port's own. `sequential` and `thread-pool` are one thread
//! and `workers` threads fed by the same queue (`port_threads.rs`).
//! `process-per-client` and `prefork` both run in the single-threaded fork server
//! ([`fork_server`]), which the host starts once: it forks a child per connection for the one
//! and keeps a pool of workers for the other.

pub mod async_tasks;
pub mod event_loop;
pub mod fork_server;
mod port_threads;
pub mod prefork;
pub mod process_per_client;
pub mod sequential;
pub mod thread_per_client;
pub mod thread_pool;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Model;
use crate::connection::Accepted;
use crate::port::Port;
use fork_server::ForkerHandle;

/// How one port's connections are served.
#[async_trait]
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// Hands an admitted connection to whoever serves it, and returns. A failure ends only
    /// this connection: it is logged here and the admission is dropped.
    async fn dispatch(&self, conn: Accepted);

    /// Accepts the port's clients somewhere other than the host's accept loop (the fork
    /// server of a `process-per-client` port) until the port stops, and returns `true`; or
    /// returns `false` at once, or when that cannot go on, and the host's loop accepts.
    async fn accept(&self, _port: &Arc<Port>) -> bool {
        false
    }

    /// Called once the port has stopped and its connections have drained.
    async fn finish(&self) {}
}

/// The runner for a port's model. Process-per-client ports register with the forker here.
pub async fn runner(
    port: &Arc<Port>,
    forker: &Arc<ForkerHandle>,
) -> std::io::Result<Arc<dyn Runner>> {
    Ok(match port.plan.entry.model {
        Model::Sequential => Arc::new(sequential::Sequential::start(port)?),
        Model::ThreadPerClient => Arc::new(thread_per_client::ThreadPerClient),
        // The fork server keeps a prefork port's workers.
        Model::ProcessPerClient | Model::Prefork => {
            Arc::new(process_per_client::ProcessPerClient::register(port, forker).await?)
        }
        Model::Async => Arc::new(async_tasks::AsyncTasks),
        Model::ThreadPool => {
            let workers = port
                .plan
                .entry
                .workers
                .unwrap_or_else(Model::default_workers);
            Arc::new(thread_pool::ThreadPool::start(port, workers)?)
        }
        Model::EventLoop => Arc::new(event_loop::EventLoop::start(port)?),
    })
}
