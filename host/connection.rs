//! One accepted client on its way to its service, and the one place a service is called.
//!
//! Every model ends up in [`serve`] (a process-per-client child too), so this is where a
//! connection's end is logged, where the host's "close now" reaches it, and where a panic in
//! service code is caught: it ends that connection and nothing else.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use porthost_services::{Conn, Service, catch_unwind, close_gracefully};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, error};

use crate::port::{Admission, Port, Refusal};

/// A client the accept loop has admitted, handed to the port's runner.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Held until the connection ends, wherever it is served.
    pub admission: Admission,
    /// The connection's span: port, service, model and peer on every line it logs.
    pub span: Span,
}

impl Accepted {
    pub fn port(&self) -> &Arc<Port> {
        self.admission.port()
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// The session ran to its end (the client left or the service closed it).
    Done,
    /// An I/O error ended it (a reset, say).
    Failed(std::io::Error),
    /// The host closed it: the grace period of a drain was over.
    Closed,
    /// Service code panicked; the panic was caught and logged.
    Panicked,
}

/// Runs the service on one connection to its end, or until `close` says the host is closing
/// connections (a process-per-client child has none: the host signals it instead).
pub async fn serve(service: &dyn Service, conn: Conn, close: Option<&CancellationToken>) -> End {
    debug!("connected");
    let end = match close {
        None => outcome(catch_unwind(service.serve(conn)).await),
        Some(close) => {
            // A token of the connection's own: the port's token would be polled on every
            // wakeup of every connection, all of them taking one lock.
            let close = close.child_token();
            tokio::select! {
                biased;
                result = catch_unwind(service.serve(conn)) => outcome(result),
                () = close.cancelled() => End::Closed,
            }
        }
    };
    log_end(&end);
    end
}

fn outcome(result: Result<std::io::Result<()>, Box<dyn Any + Send>>) -> End {
    match result {
        Ok(Ok(())) => End::Done,
        Ok(Err(e)) => End::Failed(e),
        Err(_) => End::Panicked,
    }
}

/// Logs how a connection ended, inside its span.
pub fn log_end(end: &End) {
    match end {
        End::Done => debug!("disconnected"),
        End::Failed(e) => debug!("connection ended: {e}"),
        End::Closed => debug!("closed by the host"),
        // The panic hook has logged the message and where it happened.
        End::Panicked => {
            error!("the service panicked; this connection is closed, the port goes on")
        }
    }
}

/// Tells a client why it is not served, then closes without destroying that line.
pub async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(refusal.reply())).await;
    close_gracefully(&mut stream).await;
}
