//! `sequential`: the accept loop serves each connection itself, so the next client is accepted
//! only when the current one has left, like the lecture's `socketserver.TCPServer`. Waiting
//! clients sit in the listen backlog.

use async_trait::async_trait;
use tracing::Instrument;

use super::Runner;
use crate::connection::{self, Accepted};

#[derive(Debug)]
pub struct Sequential;

#[async_trait]
impl Runner for Sequential {
    async fn dispatch(&self, conn: Accepted) {
        let port = conn.port().clone();
        let (conn, admission, span) = super::split(conn);
        connection::serve(&*port.plan.service, conn, Some(&port.close))
            .instrument(span)
            .await;
        drop(admission);
    }
}
