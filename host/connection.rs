//! One accepted client on its way to its service, and the one place a service is called.
//!
//! Every model ends up here: `async` in [`serve`], the others in [`serve_blocking`], on the
//! thread or in the process that owns the connection. This is where a connection's end is
//! logged, where the host's "close now" reaches it, and where a panic in service code is
//! caught: it ends that connection and nothing else.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use porthost_services::{BlockingConn, Conn, Service, catch_unwind, close_gracefully};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{Span, debug, error, warn};

use crate::exec::Exec;
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

    /// The connection as a service's async form gets it, and what stays with the host: one
    /// descriptor, the service's (a drain ends it through its task, see [`serve`]), except for
    /// an `exec` program, whose end must reach what it leaves behind holding the socket.
    pub fn into_conn(self) -> (Conn, Admission, Span) {
        let limits = self.port().plan.entry.limits;
        if crate::exec::of(&*self.port().plan.service).is_some() {
            keep_closer(&self.admission, &self.stream, &self.span);
        }
        let conn = Conn {
            stream: self.stream,
            peer: self.peer,
            limits,
            meter: self.admission.meter(),
        };
        (conn, self.admission, self.span)
    }

    /// The connection with its socket moved to the reactor of another runtime (an
    /// `event-loop` port's), to be served by a task there.
    pub fn move_to(self, runtime: &tokio::runtime::Handle) -> std::io::Result<Accepted> {
        let stream = self.stream.into_std()?;
        let stream = {
            let _inside = runtime.enter();
            TcpStream::from_std(stream)?
        };
        Ok(Accepted { stream, ..self })
    }

    /// The connection as a blocking socket, for a thread or a process of its own; the port
    /// keeps a second handle on it to wake it when it closes its connections.
    pub fn into_blocking(self) -> std::io::Result<(BlockingConn, Admission, Span)> {
        let limits = self.port().plan.entry.limits;
        let Accepted {
            stream,
            peer,
            admission,
            span,
        } = self;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        keep_closer(&admission, &stream, &span);
        let conn = BlockingConn {
            stream,
            peer,
            limits,
            meter: admission.meter(),
        };
        Ok((conn, admission, span))
    }
}

/// A connection's span: port, service, model and peer on every line it logs.
pub fn span(port: &Port, peer: SocketAddr) -> Span {
    let entry = &port.plan.entry;
    tracing::info_span!(
        "conn",
        port = port.port(),
        service = %entry.service,
        model = %entry.model,
        %peer
    )
}

/// Gives the port a second handle on the connection's socket, for closing it at the end of a
/// drain wherever it is served.
pub fn keep_closer(admission: &Admission, socket: &impl std::os::fd::AsFd, span: &Span) {
    match socket.as_fd().try_clone_to_owned() {
        Ok(closer) => admission.set_closer(std::net::TcpStream::from(closer)),
        // Out of descriptors: served all the same, only a drain cannot cut it short.
        Err(e) => warn!(parent: span, "cannot keep a handle to close the connection: {e}"),
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

/// Runs the service's async form on one connection to its end, or until the port (if any)
/// closes its connections: then the client is told why, and the service's future dropped.
pub async fn serve(service: &dyn Service, conn: Conn, port: Option<&Port>) -> End {
    log_start();
    let end = serve_async(service, conn, port).await;
    log_end(&end);
    end
}

#[allow(unsafe_code)]
async fn serve_async(service: &dyn Service, conn: Conn, port: Option<&Port>) -> End {
    let Some(port) = port else {
        return outcome(catch_unwind(service.serve(conn)).await);
    };
    let close = port.shutdown.closed_token();
    let socket = std::os::fd::AsRawFd::as_raw_fd(&conn.stream);
    let mut serving = std::pin::pin!(catch_unwind(service.serve(conn)));
    tokio::select! {
        biased;
        result = &mut serving => outcome(result),
        () = close.cancelled() => {
            // SAFETY: the socket is the service future's (see `Service::serve`), and that
            // future, `serving`, lives until this function returns: the number is still this
            // connection's socket.
            let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
            crate::port::tell_and_shut(&socket2::SockRef::from(&socket), port.cut_off_reply());
            End::Closed
        }
    }
}

/// Runs the service on one connection with blocking I/O on the calling thread: its blocking
/// form, or, for a service that has only the async form, that form on a runtime of this
/// thread's own. The host closes such a connection by shutting its socket down.
pub fn serve_blocking(service: &dyn Service, conn: BlockingConn) -> End {
    log_start();
    let end = serve_blocking_unlogged(service, conn);
    log_end(&end);
    end
}

/// [`serve_blocking`] without the lines at its start and end, for a caller that logs them only
/// when it must (a forked child, which sets up no logging it does not use).
pub fn serve_blocking_unlogged(service: &dyn Service, conn: BlockingConn) -> End {
    match service.blocking() {
        Some(blocking) => {
            match std::panic::catch_unwind(AssertUnwindSafe(|| blocking.serve_blocking(conn))) {
                Ok(result) => outcome(Ok(result)),
                Err(panic) => outcome(Err(panic)),
            }
        }
        None => serve_async_here(service, conn),
    }
}

/// The async form on a current-thread runtime built for this connection.
fn serve_async_here(service: &dyn Service, conn: BlockingConn) -> End {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return End::Failed(e),
    };
    runtime.block_on(async {
        let BlockingConn {
            stream,
            peer,
            limits,
            meter,
        } = conn;
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(e) => return End::Failed(e),
        };
        serve_async(
            service,
            Conn {
                stream,
                peer,
                limits,
                meter,
            },
            None,
        )
        .await
    })
}

/// Runs an `exec` port's program on one connection (see [`crate::exec::run`]): the socket is
/// the program's, and the port's drain reaches it as signals.
pub async fn serve_program(
    exec: &Exec,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    admission: &Admission,
) -> End {
    log_start();
    let run = crate::exec::run::run(&exec.program, stream, peer, Some(admission));
    let end = outcome(catch_unwind(run).await);
    log_end(&end);
    end
}

/// [`serve_program`] on the calling thread (the connection's, or a sequential port's), which
/// waits for the program, through a runtime of its own for the program's stderr and signals.
pub fn serve_program_blocking(exec: &Exec, conn: BlockingConn, admission: &Admission) -> End {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve_program(exec, conn.stream, conn.peer, admission)),
        Err(e) => End::Failed(e),
    }
}

fn outcome(result: Result<std::io::Result<()>, Box<dyn Any + Send>>) -> End {
    match result {
        Ok(Ok(())) => End::Done,
        Ok(Err(e)) => End::Failed(e),
        Err(_) => End::Panicked,
    }
}

/// Logs that a connection starts, inside its span.
pub fn log_start() {
    debug!("connected");
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
