//! `event-loop`: one thread running one single-threaded tokio runtime, every connection a task
//! on it: the model of nginx's workers, Node and Python's asyncio. One thread serves ten
//! thousand idle clients for a few KiB each; and since nothing else runs while a handler
//! computes, one slow handler (`busy_us`) stalls every client of the port, where a wait done
//! as a timer (`sleep_ms`) stalls none.
//!
//! The accept loop stays on the host's runtime, like every port's; an admitted connection's
//! socket moves to the loop's reactor and its task is spawned there.

use std::sync::Mutex;
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Runner;
use super::thread_per_client::ThreadCount;
use crate::connection::Accepted;
use crate::lock::lock;
use crate::port::Port;

/// The port's loop: its thread, and the way tasks reach it.
#[derive(Debug)]
pub struct EventLoop {
    runtime: Handle,
    /// Cancelled once the port has drained: the thread leaves the loop and ends.
    stop: CancellationToken,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EventLoop {
    /// Starts the port's loop thread.
    pub fn start(port: &std::sync::Arc<Port>) -> std::io::Result<EventLoop> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let (serving, stopped) = (port.clone(), stop.clone());
        let log = tracing::dispatcher::get_default(Clone::clone);
        let thread = std::thread::Builder::new()
            .name(format!("porthost-{}", port.port()))
            .spawn(move || {
                let _counted = ThreadCount::new(&serving, "the port's event loop".to_owned());
                let _log = tracing::dispatcher::set_default(&log);
                // Tasks run only while the loop's thread is in `block_on`: until the port has
                // drained, which is when `finish` stops it.
                runtime.block_on(stopped.cancelled());
            })?;
        Ok(EventLoop {
            runtime: handle,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }
}

#[async_trait]
impl Runner for EventLoop {
    async fn dispatch(&self, conn: Accepted) {
        let port = conn.port().clone();
        let conn = match conn.move_to(&self.runtime) {
            Ok(conn) => conn,
            Err(e) => return warn!("cannot move the connection to the port's loop: {e}"),
        };
        self.runtime
            .spawn(port.tracker.track_future(super::async_tasks::task(conn)));
    }

    async fn finish(&self) {
        self.stop.cancel();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
