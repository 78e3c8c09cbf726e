//! What a service is handed for each client: the connection and the port's limits, in the two
//! forms a service can be written in. [`Conn`] is a tokio socket for the async form;
//! [`BlockingConn`] is a `std::net` socket for the blocking form, which the models that give a
//! connection a thread or a process of its own run, like the lecture's `socketserver` servers.
//! Each has its helpers here, side by side: a deadline on reads, a bounded write, a graceful
//! close.

use std::any::Any;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::Meter;

/// One accepted client, for a service's async form.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub limits: Limits,
    /// Where the service counts what it serves (the framing helpers do it for it).
    pub meter: Meter,
}

/// One accepted client, for a service's blocking form: a blocking `std::net` socket whose
/// writes already give up after the idle timeout (`SO_SNDTIMEO`), so a client that stopped
/// reading cannot pin the connection for ever.
#[derive(Debug)]
pub struct BlockingConn {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub limits: Limits,
    /// Where the service counts what it serves (the framing helpers do it for it).
    pub meter: Meter,
}

/// The per-port limits every service must honour; the host enforces the rest (connection
/// counts) before the service sees the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Longest line a client may send, terminator excluded. Buffers never grow past it.
    pub max_line_bytes: usize,
    /// Close a client that sends nothing (or only part of a line) for this long; `None` never.
    /// Also bounds how long a reply may wait for a client that stopped reading.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

impl Limits {
    /// The deadline for the client's next line, counted from now. A timeout too far away to
    /// be an instant is no timeout (the config bounds it far below that anyway).
    pub fn deadline(&self) -> Option<Instant> {
        self.idle_timeout
            .and_then(|idle| Instant::now().checked_add(idle))
    }

    /// [`Limits::deadline`] for blocking code, which keeps time with `std`.
    pub fn blocking_deadline(&self) -> Option<std::time::Instant> {
        self.idle_timeout
            .and_then(|idle| std::time::Instant::now().checked_add(idle))
    }

    /// The reply to a line longer than [`Limits::max_line_bytes`].
    pub fn too_long_reply(&self) -> String {
        format!("ERR line longer than {} bytes\n", self.max_line_bytes)
    }

    /// The reply sent before closing an idle client.
    pub fn idle_reply(&self) -> String {
        let secs = self.idle_timeout.map_or(0, |d| d.as_secs());
        format!("ERR idle for {secs} s, closing\n")
    }
}

/// Waits for `io` until `deadline`, if there is one. A missed deadline is an
/// [`std::io::ErrorKind::TimedOut`] error.
pub async fn until<T>(
    deadline: Option<Instant>,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match deadline {
        None => io.await,
        Some(deadline) => timeout_at(deadline, io)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
    }
}

/// Writes `bytes` in one go, giving up after the idle timeout so that a client that stopped
/// reading cannot pin the connection forever.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limits: &Limits,
) -> std::io::Result<()> {
    // A reply almost always fits in the socket buffer at once; only the rest, if any, needs
    // the clock and a timer.
    let written = std::future::poll_fn(|cx| match Pin::new(&mut *writer).poll_write(cx, bytes) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => Poll::Ready(Ok(0)),
    })
    .await?;
    if written == bytes.len() {
        return Ok(());
    }
    until(limits.deadline(), writer.write_all(&bytes[written..])).await
}

/// How long [`close_gracefully`] keeps discarding input before it gives up.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection so that replies already written still arrive.
///
/// Closing a socket that has unread input makes the kernel answer with a reset, which can
/// destroy the last reply (an `ERR` line, say) before the client reads it. So: send FIN, then
/// read and discard until the client closes too, for at most [`LINGER`].
pub async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    // On the heap: an array here would sit in every connection's future all its life.
    let mut sink = vec![0u8; 4096];
    let _ = timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Polls `future`, catching a panic in any poll of it: what `std::panic::catch_unwind` is for
/// a closure. The future is dropped (and with it whatever it owned) when it panics.
pub async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// Reads from a blocking socket, each read waiting at most until a deadline.
///
/// The deadline is the socket's `SO_RCVTIMEO`, changed only when it must be: a session that
/// reads a whole line per read, the usual case, sets it once, so a request costs a `read(2)`
/// and a `write(2)` and nothing else. A read that reaches the deadline is a
/// [`std::io::ErrorKind::TimedOut`] error.
#[derive(Debug)]
pub struct DeadlineReader<'a> {
    stream: &'a std::net::TcpStream,
    deadline: Option<std::time::Instant>,
    /// The `SO_RCVTIMEO` now set; `None` waits for ever.
    timeout: Option<Duration>,
    /// Counts the bytes read.
    meter: Meter,
}

/// How much later than its deadline a read may give up, rather than changing the socket's
/// timeout for every read: the deadline of a fresh line is a few microseconds short of the
/// timeout already set for the line before.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

impl<'a> DeadlineReader<'a> {
    /// A reader of `stream`, whose read timeout it now owns, counting what it reads.
    pub fn new(stream: &'a std::net::TcpStream, meter: Meter) -> Self {
        DeadlineReader {
            stream,
            deadline: None,
            timeout: stream.read_timeout().unwrap_or(None),
            meter,
        }
    }

    /// Reads from now on give up at `deadline`; `None` waits for ever.
    pub fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    /// Sets `SO_RCVTIMEO` for a read that must end at the deadline, unless what is set already
    /// ends it within [`DEADLINE_SLACK`] after it.
    fn arm(&mut self) -> std::io::Result<()> {
        let wanted = match self.deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                Some(left)
            }
        };
        let fits = match (self.timeout, wanted) {
            (None, None) => true,
            (Some(set), Some(left)) => set >= left && set - left <= DEADLINE_SLACK,
            _ => false,
        };
        if !fits {
            self.stream.set_read_timeout(wanted)?;
            self.timeout = wanted;
        }
        Ok(())
    }
}

impl std::io::Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.arm()?;
            let mut stream = self.stream;
            match stream.read(buf) {
                // The socket timeout fired: at the deadline, or a little early after slack.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self
                        .deadline
                        .is_some_and(|d| std::time::Instant::now() >= d)
                    {
                        return Err(ErrorKind::TimedOut.into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Ok(n) => {
                    self.meter.received(n);
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Gets a blocking connection ready to serve: replies give up after the idle timeout.
pub fn prepare_blocking(conn: &BlockingConn) -> std::io::Result<()> {
    conn.stream.set_nonblocking(false)?;
    conn.stream.set_write_timeout(conn.limits.idle_timeout)
}

/// Writes `bytes` in one `write(2)` when it fits in the socket buffer, as it almost always
/// does. A write that times out (`SO_SNDTIMEO`, the idle timeout) is an error.
pub fn write_reply_blocking(stream: &std::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut stream = stream;
    stream.write_all(bytes).map_err(|e| {
        if e.kind() == ErrorKind::WouldBlock {
            ErrorKind::TimedOut.into()
        } else {
            e
        }
    })
}

/// [`close_gracefully`] for a blocking socket: FIN, then discard input until the client
/// closes too, for at most [`LINGER`], so that replies already written are not reset away.
pub fn close_gracefully_blocking(stream: &std::net::TcpStream) {
    use std::io::Read;
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + LINGER;
    // What a closing client still sends is discarded, not counted.
    let mut reader = DeadlineReader::new(stream, Meter::default());
    reader.set_deadline(Some(deadline));
    let mut sink = [0u8; 4096];
    while let Ok(n) = reader.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_panic_in_a_poll_is_caught_and_the_future_dropped() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let result = catch_unwind(async move {
            let _flag = flag;
            tokio::task::yield_now().await;
            panic!("in the second poll");
        })
        .await;
        assert!(result.is_err());
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(catch_unwind(async { 7 }).await.unwrap(), 7);
    }
}
