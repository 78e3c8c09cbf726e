//! `thread-pool`: `workers` threads started with the port, each serving one connection at a
//! time with blocking I/O, then the next: the prethreaded server of Stevens' UNP (ch. 30),
//! Apache's worker MPM without its growth. The thread count never moves, so a thousand clients
//! cost `workers` stacks, and client `workers + 1` waits until one leaves.
//!
//! One acceptor and a bounded queue, not every thread blocking in `accept(2)`: the port's
//! accept loop ([`crate::listener`]) stays the one place that admits a client (its slot,
//! `allow`/`deny`, its rates, its PROXY header, the drain's hand-over of the backlog), the same
//! for every model, and no worker sits in a call that a drain would have to break. The port
//! has `workers` slots, so at most `workers` connections are admitted at once: each finds an
//! idle worker, the queue (of `workers` places) never fills, and the clients beyond wait in the
//! listen backlog, where the live page counts them, as under `sequential`, the pool of one.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tracing::error;

use super::Runner;
use super::port_threads::{self, PortThreads, Queue};
use crate::connection::Accepted;
use crate::events::Kind;
use crate::port::Port;

/// The port's workers and the queue that feeds them.
#[derive(Debug)]
pub struct ThreadPool {
    workers: PortThreads,
}

impl ThreadPool {
    /// Starts the port's `workers` threads. If one cannot start, those started are stopped
    /// and the port is not served: a pool smaller than configured would be a lie.
    pub fn start(port: &Arc<Port>, workers: usize) -> std::io::Result<ThreadPool> {
        let pool = PortThreads::start(port, workers, work)?;
        port.events.push(Some(port.port()), Kind::Thread, || {
            format!("pool of {workers} worker threads started")
        });
        Ok(ThreadPool { workers: pool })
    }
}

/// One worker: the next connection from the queue, to its end, until the queue closes.
fn work(port: &Port, queue: &Queue) {
    port.stats.threads.fetch_add(1, Ordering::Relaxed);
    while let Some(job) = port_threads::next(queue) {
        port.stats.busy.fetch_add(1, Ordering::Relaxed);
        // The service's panics are caught where it is called; this keeps the pool whole if
        // anything else on the way panics.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job.serve(&*port.plan.service))).is_err() {
            error!(
                port = port.port(),
                "a worker's connection panicked outside its service; the worker goes on"
            );
        }
        port.stats.busy.fetch_sub(1, Ordering::Relaxed);
    }
    port.stats.threads.fetch_sub(1, Ordering::Relaxed);
}

#[async_trait]
impl Runner for ThreadPool {
    async fn dispatch(&self, conn: Accepted) {
        self.workers
            .dispatch(conn, "the port's pool is gone; closing the connection");
    }

    async fn finish(&self) {
        self.workers.finish().await;
    }
}
