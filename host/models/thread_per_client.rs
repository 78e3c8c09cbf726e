//! `thread-per-client`: a new OS thread per connection, like the lecture's
//! `ThreadingTCPServer`. The thread serves its connection with blocking `read(2)` and
//! `write(2)` and ends with it; with N clients connected the host has N more threads.

use async_trait::async_trait;
use tracing::warn;

use super::Runner;
use crate::connection::{self, Accepted};

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
        let service = port.plan.service.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("porthost-{}", port.port()))
            .spawn(move || {
                let _token = token;
                let _admission = admission;
                let _log = tracing::dispatcher::set_default(&log);
                let _span = span.enter();
                connection::serve_blocking(&*service, conn);
            });
        if let Err(e) = spawned {
            warn!(
                port = port.port(),
                "cannot start a thread for {peer}: {e}; closing it"
            );
        }
    }
}
