//! `thread-per-client`: a new OS thread per connection, like the lecture's
//! `ThreadingTCPServer`. The thread serves its connection with blocking `read(2)` and
//! `write(2)` and ends with it; with N clients connected the host has N more threads.

use async_trait::async_trait;
use tracing::warn;

use super::Runner;
use crate::connection::{self, Accepted};
use crate::events::Kind;
use crate::port::Port;

/// Counts a thread among its port's serving threads while it lives, and tells the live view.
#[derive(Debug)]
pub(super) struct ThreadCount<'a> {
    port: &'a Port,
    serves: String,
}

impl<'a> ThreadCount<'a> {
    /// `serves` says what for, in the feed: a client's address, or the port's connections.
    pub(super) fn new(port: &'a Port, serves: String) -> Self {
        port.stats
            .threads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        port.events.push(Some(port.port()), Kind::Thread, || {
            format!("thread started for {serves}")
        });
        ThreadCount { port, serves }
    }
}

impl Drop for ThreadCount<'_> {
    fn drop(&mut self) {
        self.port
            .stats
            .threads
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let serves = &self.serves;
        self.port
            .events
            .push(Some(self.port.port()), Kind::Thread, || {
                format!("thread for {serves} ended")
            });
    }
}

#[derive(Debug)]
pub struct ThreadPerClient;

#[async_trait]
impl Runner for ThreadPerClient {
    async fn dispatch(&self, conn: Accepted) {
        let port = conn.port().clone();
        let peer = conn.peer;
        let (conn, admission, span) = match conn.into_blocking() {
            Ok(parts) => parts,
            Err(e) => return warn!("cannot move the connection to a thread: {e}"),
        };
        let log = tracing::dispatcher::get_default(Clone::clone);
        let token = port.tracker.token();
        let serving = port.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("porthost-{}", port.port()))
            .spawn(move || {
                let _token = token;
                let _counted = ThreadCount::new(&serving, peer.to_string());
                let _log = tracing::dispatcher::set_default(&log);
                let _span = span.enter();
                match crate::exec::of(&*serving.plan.service) {
                    Some(exec) => connection::serve_program_blocking(exec, conn, &admission),
                    None => connection::serve_blocking(&*serving.plan.service, conn),
                };
                drop(admission);
            });
        if let Err(e) = spawned {
            warn!(
                port = port.port(),
                "cannot start a thread for {peer}: {e}; closing it"
            );
        }
    }
}
