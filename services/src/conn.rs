//! What a service is handed for each client: the connection and the port's limits.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// One accepted client.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub limits: Limits,
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
