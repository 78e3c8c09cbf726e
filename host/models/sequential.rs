//! `sequential`: one thread serves the port's connections one after another, like the
//! lecture's `socketserver.TCPServer`. The accept loop takes the port's single slot before it
//! accepts, so the next client is accepted only when the current one has left; waiting clients
//! sit in the listen backlog.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use async_trait::async_trait;
use porthost_services::BlockingConn;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Span, warn};

use super::Runner;
use super::thread_per_client::ThreadCount;
use crate::connection::{self, Accepted};
use crate::lock::lock;
use crate::port::{Admission, Port};

/// The port's serving thread and the way connections reach it.
#[derive(Debug)]
pub struct Sequential {
    jobs: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A connection handed to a serving thread (the port's one, or one of its pool), with what it
/// holds until it ends.
#[derive(Debug)]
pub(super) struct Job {
    conn: BlockingConn,
    admission: Admission,
    span: Span,
    /// Lets a drain wait for the connection.
    _token: TaskTrackerToken,
}

impl Sequential {
    /// Starts the port's serving thread.
    pub fn start(port: &std::sync::Arc<Port>) -> std::io::Result<Sequential> {
        // One at a time: the accept loop never has more than one connection to hand over.
        let (jobs, queue) = sync_channel(1);
        let serving = port.clone();
        let log = tracing::dispatcher::get_default(Clone::clone);
        let thread = std::thread::Builder::new()
            .name(format!("porthost-{}", port.port()))
            .spawn(move || {
                let _counted = ThreadCount::new(&serving, "the port's clients".to_owned());
                let _log = tracing::dispatcher::set_default(&log);
                serve_all(&*serving.plan.service, queue);
            })?;
        Ok(Sequential {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Job {
    /// The connection as a job for a serving thread; `None`, logged, if its socket cannot be
    /// made blocking.
    pub(super) fn of(conn: Accepted) -> Option<Job> {
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
    pub(super) fn serve(self, service: &dyn porthost_services::Service) {
        let _span = self.span.enter();
        match crate::exec::of(service) {
            Some(exec) => connection::serve_program_blocking(exec, self.conn, &self.admission),
            None => connection::serve_blocking(service, self.conn),
        };
        drop(self.admission);
    }

    /// Closes a connection that no thread can take, saying why.
    pub(super) fn gone(self, why: &str) {
        warn!(parent: &self.span, "{why}");
    }
}

/// The serving thread: each connection to its end, then the next.
fn serve_all(service: &dyn porthost_services::Service, queue: Receiver<Job>) {
    for job in queue {
        job.serve(service);
    }
}

#[async_trait]
impl Runner for Sequential {
    async fn dispatch(&self, conn: Accepted) {
        let Some(job) = Job::of(conn) else { return };
        let jobs = lock(&self.jobs).clone();
        // The slot the job holds keeps the accept loop from handing over another before this
        // one has ended, so the channel never blocks.
        let sent = match &jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            job.gone("the port's thread is gone; closing the connection");
        }
    }

    async fn finish(&self) {
        lock(&self.jobs).take();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
