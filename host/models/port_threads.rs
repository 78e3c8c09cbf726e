//! The threads a port starts with and the queue that hands them its connections: what
//! `sequential` (one thread) and `thread-pool` (`workers` threads) share. The two differ only
//! in what each thread does around the connections it takes from the queue (how it is counted,
//! what it tells the live view), so that is all they pass in.
//!
//! The queue has as many places as there are threads, and the port as many slots: every job
//! the accept loop sends finds a place, so sending never blocks the accept loop, and the
//! clients beyond wait in the listen backlog.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use porthost_services::{BlockingConn, Service};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Span, warn};

use crate::connection::{self, Accepted};
use crate::lock::lock;
use crate::port::{Admission, Port};

/// The queue's receiving end, shared by the threads: an idle one waits in `recv` holding the
/// lock, the others wait for the lock.
pub(super) type Queue = Mutex<Receiver<Job>>;

/// A port's serving threads and the way connections reach them.
#[derive(Debug)]
pub(super) struct PortThreads {
    /// `None` once the port has finished: the threads' `recv` then ends.
    jobs: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A connection handed to a serving thread, with what it holds until it ends.
#[derive(Debug)]
pub(super) struct Job {
    conn: BlockingConn,
    admission: Admission,
    span: Span,
    /// Lets a drain wait for the connection.
    _token: TaskTrackerToken,
}

impl PortThreads {
    /// Starts `count` threads, each running `body` with the port and the queue. If one cannot
    /// start, those started are stopped and the port is not served: a port with fewer threads
    /// than configured would be a lie.
    pub(super) fn start<F>(port: &Arc<Port>, count: usize, body: F) -> std::io::Result<PortThreads>
    where
        F: Fn(&Port, &Queue) + Clone + Send + 'static,
    {
        let (jobs, queue) = sync_channel(count);
        let queue = Arc::new(Mutex::new(queue));
        let log = tracing::dispatcher::get_default(Clone::clone);
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let (port, queue, log, body) = (port.clone(), queue.clone(), log.clone(), body.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("porthost-{}", port.port()))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&log);
                    body(&port, &queue);
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
        Ok(PortThreads {
            jobs: Mutex::new(Some(jobs)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues an admitted connection for the threads; `gone` says why it is closed instead,
    /// when they have ended.
    pub(super) fn dispatch(&self, conn: Accepted, gone: &str) {
        let Some(job) = Job::of(conn) else { return };
        let jobs = lock(&self.jobs).clone();
        // The job holds one of the port's slots, as many as the queue has places, so the
        // send never blocks.
        let sent = match &jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            warn!(parent: &job.span, "{gone}");
        }
    }

    /// Closes the queue and waits for the threads to end.
    pub(super) async fn finish(&self) {
        lock(&self.jobs).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        if joined.is_err() {
            warn!("could not wait for a port's threads to end");
        }
    }
}

/// The next job from the queue, or `None` once the port has finished. The lock is given back
/// before the job is served.
pub(super) fn next(queue: &Queue) -> Option<Job> {
    lock(queue).recv().ok()
}

impl Job {
    /// The connection as a job for a serving thread; `None`, logged, if its socket cannot be
    /// made blocking.
    fn of(conn: Accepted) -> Option<Job> {
        let token = conn.port().tracker.token();
        match conn.into_blocking() {
            Ok((conn, admission, span)) => Some(Job {
                conn,
                admission,
                span,
                _token: token,
            }),
            Err(e) => {
                warn!("cannot hand the connection to a serving thread: {e}");
                None
            }
        }
    }

    /// Serves the connection to its end on the calling thread. An `exec` port's program is
    /// waited for.
    pub(super) fn serve(self, service: &dyn Service) {
        let _span = self.span.enter();
        match crate::exec::of(service) {
            Some(exec) => connection::serve_program_blocking(exec, self.conn, &self.admission),
            None => connection::serve_blocking(service, self.conn),
        };
        drop(self.admission);
    }
}
