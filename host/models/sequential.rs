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

/// A connection handed to the serving thread, with what it holds until it ends.
#[derive(Debug)]
struct Job {
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

/// The serving thread: each connection to its end, then the next.
fn serve_all(service: &dyn porthost_services::Service, queue: Receiver<Job>) {
    for job in queue {
        let _span = job.span.enter();
        // An `exec` port's one program at a time: the serving loop waits for it.
        match crate::exec::of(service) {
            Some(exec) => connection::serve_program_blocking(exec, job.conn, &job.admission),
            None => connection::serve_blocking(service, job.conn),
        };
        drop(job.admission);
    }
}

#[async_trait]
impl Runner for Sequential {
    async fn dispatch(&self, conn: Accepted) {
        let token = conn.port().tracker.token();
        let (conn, admission, span) = match conn.into_blocking() {
            Ok(parts) => parts,
            Err(e) => return warn!("cannot hand the connection to the port's thread: {e}"),
        };
        let jobs = lock(&self.jobs).clone();
        let job = Job {
            conn,
            admission,
            span,
            _token: token,
        };
        // The slot the job holds keeps the accept loop from handing over another before this
        // one has ended, so the channel never blocks.
        let sent = match &jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            warn!(parent: &job.span, "the port's thread is gone; closing the connection");
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
