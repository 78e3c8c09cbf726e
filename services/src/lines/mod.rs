//! Line framing for line-based services: the analogue of Python's
//! `socketserver.StreamRequestHandler`.
//!
//! A service implements [`LineService`] (build a [`LineHandler`] per client) and wraps itself in
//! [`LineServer`]; the framing here does the rest: bounded reads, `\n` / `\r\n` splitting, lossy
//! UTF-8, the idle timeout, one write per reply, the `ERR` line for over-long input and a
//! graceful close. [`LineServer`] offers both forms of a service: [`drive`] runs a handler on
//! an async socket, [`drive_blocking`] on a blocking one, with the same rules, so the models
//! that give a connection a thread or a process of its own serve it with plain blocking
//! `read(2)` and `write(2)`, like the lecture's servers. [`LineReader`] and
//! [`BlockingLineReader`] are the framing alone, for services that read lines their own way.
//!
//! - [`buffer`](self::buffer): the framing state both readers share.
//! - [`reader`](self::reader): the two readers, side by side.

mod buffer;
mod reader;

pub use reader::{BlockingLineReader, Frame, LineReader};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    BlockingConn, BlockingService, Conn, Needs, Service, catch_unwind, close_gracefully,
    close_gracefully_blocking, prepare_blocking, write_reply, write_reply_blocking,
};

/// Whether the session goes on after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is pending, then close the connection gracefully.
    Close,
}

/// Messages pushed to a client from elsewhere (other clients of a game, say). Each is written
/// as it is, so it carries its own `\n`. When every sender is gone the connection closes.
pub type Inbox = mpsc::Receiver<Arc<str>>;

/// A line-based service: builds one [`LineHandler`] per client.
pub trait LineService: Send + Sync + 'static {
    type Handler: LineHandler;

    /// A handler for the client at `peer`.
    fn connect(&self, peer: SocketAddr) -> Self::Handler;

    /// What the service needs from the host; see [`Service::needs`].
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Whether its handlers get messages pushed from elsewhere ([`LineHandler::inbox`]). Such a
    /// session waits on its socket and on the others at once, which takes the async form: the
    /// service then offers only that, and the host runs it under every model.
    fn pushes(&self) -> bool {
        false
    }

    /// Figures the service keeps about itself; see [`Service::stats`].
    fn stats(&self) -> Vec<crate::Stat> {
        Vec::new()
    }
}

/// One client's session, driven line by line by [`LineServer`], like `StreamRequestHandler`'s
/// `setup` / `handle` / `finish`. Whatever a hook appends to `reply` is written in one write
/// after it returns.
pub trait LineHandler: Send {
    /// Runs before the first line is read.
    fn setup(&mut self, reply: &mut Vec<u8>) -> Flow {
        let _ = reply;
        Flow::Continue
    }

    /// Handles one line (lossily decoded from UTF-8, terminator removed).
    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow;

    /// How long to wait after the line just handled before its reply goes out (a slow
    /// backend, say). Each form waits its own way: the blocking one sleeps, the async one sets a
    /// timer and leaves the thread to other connections meanwhile.
    fn delay(&mut self) -> Duration {
        Duration::ZERO
    }

    /// Runs once when the session ends, however it ended.
    fn finish(&mut self) {}

    /// Where pushed messages arrive, for handlers that have any (their service says so in
    /// [`LineService::pushes`]).
    fn inbox(&mut self) -> Option<&mut Inbox> {
        None
    }

    /// When [`LineHandler::on_timer`] should run if nothing else happens first (a turn that
    /// times out, say). Asked again before every wait, so it may move.
    fn timer(&mut self) -> Option<Instant> {
        None
    }

    /// Runs when the instant [`LineHandler::timer`] gave has passed.
    fn on_timer(&mut self, reply: &mut Vec<u8>) -> Flow {
        let _ = reply;
        Flow::Continue
    }
}

/// Adapts a [`LineService`] into a [`Service`] by doing the framing, limits and writes.
#[derive(Debug)]
pub struct LineServer<S>(pub S);

enum Event<'a> {
    Frame(std::io::Result<Frame<'a>>),
    Pushed(Option<Arc<str>>),
    Timer,
}

async fn pushed(inbox: Option<&mut Inbox>) -> Option<Arc<str>> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

async fn timer(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl<S: LineService> Service for LineServer<S> {
    async fn serve(&self, mut conn: Conn) -> std::io::Result<()> {
        let mut handler = self.0.connect(conn.peer);
        // Like `socketserver`'s `try: handle() finally: finish()`: the session's end is
        // reported even when a hook panics (a game must learn that its player has gone), and
        // the panic goes on to the host, which ends this connection only.
        let result = catch_unwind(drive(&mut handler, &mut conn)).await;
        handler.finish();
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn blocking(&self) -> Option<&dyn BlockingService> {
        (!self.0.pushes()).then_some(self)
    }

    fn needs(&self) -> Needs {
        self.0.needs()
    }

    fn stats(&self) -> Vec<crate::Stat> {
        self.0.stats()
    }
}

impl<S: LineService> BlockingService for LineServer<S> {
    fn serve_blocking(&self, conn: BlockingConn) -> std::io::Result<()> {
        let mut handler = self.0.connect(conn.peer);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive_blocking(&mut handler, &conn)
        }));
        handler.finish();
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Runs a session on an async socket: the handler's hooks, one write per reply, and the
/// pushed messages and timers of handlers that have them.
pub async fn drive<H: LineHandler>(handler: &mut H, conn: &mut Conn) -> std::io::Result<()> {
    let limits = conn.limits;
    let meter = conn.meter.clone();
    let (read_half, mut write_half) = conn.stream.split();
    let mut reader = LineReader::new(read_half, limits, meter.clone());
    let mut reply = Vec::with_capacity(64);
    // When the line the pending reply answers was framed.
    let mut since = None;
    let mut flow = handler.setup(&mut reply);
    let mut linger = false;
    while flow == Flow::Continue {
        if !reply.is_empty() {
            write_reply(&mut write_half, &reply, &limits).await?;
            meter.replied(reply.len(), since.take());
            reply.clear();
        }
        let at = handler.timer();
        let event = match (handler.inbox(), at) {
            // The plain request/reply path: no select, no timers beyond the idle one.
            (None, None) => Event::Frame(reader.next_line().await),
            (inbox, at) => tokio::select! {
                biased;
                message = pushed(inbox) => Event::Pushed(message),
                () = timer(at) => Event::Timer,
                frame = reader.next_line() => Event::Frame(frame),
            },
        };
        flow = match event {
            Event::Pushed(Some(message)) => {
                reply.extend_from_slice(message.as_bytes());
                Flow::Continue
            }
            Event::Pushed(None) => {
                linger = true;
                Flow::Close
            }
            Event::Timer => handler.on_timer(&mut reply),
            Event::Frame(frame) => {
                let frame = frame?;
                let line = matches!(frame, Frame::Line(_));
                if line {
                    since.get_or_insert(meter.lines(1));
                }
                let flow = answer(handler, frame, &mut reply, &mut linger, &limits);
                if line {
                    let delay = handler.delay();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                flow
            }
        };
    }
    if !reply.is_empty() {
        write_reply(&mut write_half, &reply, &limits).await?;
        meter.replied(reply.len(), since);
    }
    if linger {
        close_gracefully(&mut conn.stream).await;
    }
    Ok(())
}

/// Runs a session on a blocking socket: the same as [`drive`], where a read blocks in
/// `read(2)` until a line, the idle timeout or the handler's timer, and a reply is one
/// `write(2)`. Handlers with pushed messages take the async form ([`LineService::pushes`]).
pub fn drive_blocking<H: LineHandler>(handler: &mut H, conn: &BlockingConn) -> std::io::Result<()> {
    if handler.inbox().is_some() {
        return Err(std::io::Error::other(
            "this handler gets pushed messages, which only the async form can wait for; its \
             LineService must say so in `pushes`",
        ));
    }
    prepare_blocking(conn)?;
    let limits = conn.limits;
    let meter = &conn.meter;
    let mut reader = BlockingLineReader::new(&conn.stream, limits, meter.clone());
    let mut reply = Vec::with_capacity(64);
    let mut since = None;
    let mut flow = handler.setup(&mut reply);
    let mut linger = false;
    while flow == Flow::Continue {
        if !reply.is_empty() {
            write_reply_blocking(&conn.stream, &reply)?;
            meter.replied(reply.len(), since.take());
            reply.clear();
        }
        let at = handler.timer().map(Instant::into_std);
        flow = match reader.next_line_until(at)? {
            None => handler.on_timer(&mut reply),
            Some(frame) => {
                let line = matches!(frame, Frame::Line(_));
                if line {
                    since.get_or_insert(meter.lines(1));
                }
                let flow = answer(handler, frame, &mut reply, &mut linger, &limits);
                if line {
                    let delay = handler.delay();
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                }
                flow
            }
        };
    }
    if !reply.is_empty() {
        write_reply_blocking(&conn.stream, &reply)?;
        meter.replied(reply.len(), since);
    }
    if linger {
        close_gracefully_blocking(&conn.stream);
    }
    Ok(())
}

/// What a frame means for the session, the same for both forms; `linger` is set when the
/// session ends with input perhaps still coming, so the close must not reset replies away.
fn answer<H: LineHandler>(
    handler: &mut H,
    frame: Frame<'_>,
    reply: &mut Vec<u8>,
    linger: &mut bool,
    limits: &crate::Limits,
) -> Flow {
    match frame {
        Frame::Line(line) => {
            let flow = handler.handle(&String::from_utf8_lossy(line), reply);
            *linger = flow == Flow::Close;
            flow
        }
        Frame::TooLong => {
            reply.extend_from_slice(limits.too_long_reply().as_bytes());
            *linger = true;
            Flow::Close
        }
        Frame::Idle => {
            reply.extend_from_slice(limits.idle_reply().as_bytes());
            // A trickling client may send a byte just now: let the ERR line arrive.
            *linger = true;
            Flow::Close
        }
        Frame::Eof => Flow::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    /// An idle connection costs the host its future, so nothing large may live in it across an
    /// await (a stack buffer in `close_gracefully` once made it 4.4 KiB instead of 0.5).
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        struct Quiet;
        impl LineHandler for Quiet {
            fn handle(&mut self, _line: &str, _reply: &mut Vec<u8>) -> Flow {
                Flow::Continue
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let mut conn = Conn {
            stream,
            peer,
            limits: Limits::default(),
            meter: crate::Meter::default(),
        };
        let size = std::mem::size_of_val(&drive(&mut Quiet, &mut conn));
        assert!(size <= 1024, "the framing's future is {size} bytes");
        drop(client);
    }
}
