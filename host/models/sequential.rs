//! `sequential`: one thread serves the port's connections one after another, like the
//! lecture's `socketserver.TCPServer`. The accept loop takes the port's single slot before it
//! accepts, so the next client is accepted only when the current one has left; waiting clients
//! sit in the listen backlog.

use std::sync::Arc;

use async_trait::async_trait;

use super::Runner;
use super::port_threads::{self, PortThreads};
use super::thread_per_client::ThreadCount;
use crate::connection::Accepted;
use crate::port::Port;

/// The port's serving thread and the way connections reach it.
#[derive(Debug)]
pub struct Sequential {
    thread: PortThreads,
}

impl Sequential {
    /// Starts the port's serving thread.
    pub fn start(port: &Arc<Port>) -> std::io::Result<Sequential> {
        let thread = PortThreads::start(port, 1, |port, queue| {
            let _counted = ThreadCount::new(port, "the port's clients".to_owned());
            while let Some(job) = port_threads::next(queue) {
                job.serve(&*port.plan.service);
            }
        })?;
        Ok(Sequential { thread })
    }
}

#[async_trait]
impl Runner for Sequential {
    async fn dispatch(&self, conn: Accepted) {
        self.thread
            .dispatch(conn, "the port's thread is gone; closing the connection");
    }

    async fn finish(&self) {
        self.thread.finish().await;
    }
}
