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
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tracing::{error, warn};

use super::Runner;
use super::sequential::Job;
use crate::connection::Accepted;
use crate::events::Kind;
use crate::lock::lock;
use crate::port::Port;

/// The port's workers and the queue that feeds them.
#[derive(Debug)]
pub struct ThreadPool {
    jobs: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool {
    /// Starts the port's `workers` threads. If one cannot start, those started are stopped
    /// and the port is not served: a pool smaller than configured would be a lie.
    pub fn start(port: &Arc<Port>, workers: usize) -> std::io::Result<ThreadPool> {
        let (jobs, queue) = sync_channel(workers);
        let queue = Arc::new(Mutex::new(queue));
        let log = tracing::dispatcher::get_default(Clone::clone);
        let mut threads = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (port, queue, log) = (port.clone(), queue.clone(), log.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("porthost-{}", port.port()))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&log);
                    work(&port, &queue);
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    drop(jobs);
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(e);
                }
            }
        }
        port.events.push(Some(port.port()), Kind::Thread, || {
            format!("pool of {workers} worker threads started")
        });
        Ok(ThreadPool {
            jobs: Mutex::new(Some(jobs)),
            threads: Mutex::new(threads),
        })
    }
}

/// One worker: the next connection from the queue, to its end, until the queue closes.
fn work(port: &Port, queue: &Mutex<Receiver<Job>>) {
    port.stats.threads.fetch_add(1, Ordering::Relaxed);
    loop {
        // One idle worker waits in `recv`, holding the lock; the others wait for the lock,
        // which is given back before the connection is served (its own statement: a guard in
        // a `while let` would live through the loop's body).
        let next = lock(queue).recv();
        let Ok(job) = next else { break };
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
        let Some(job) = Job::of(conn) else { return };
        let jobs = lock(&self.jobs).clone();
        // A job holds one of the port's `workers` slots, so the queue of `workers` places
        // never blocks the accept loop.
        let sent = match &jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            job.gone("the port's pool is gone; closing the connection");
        }
    }

    async fn finish(&self) {
        lock(&self.jobs).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        if joined.is_err() {
            warn!("could not wait for a pool's threads to end");
        }
    }
}
