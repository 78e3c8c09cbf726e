//! Line framing for line-based services: the analogue of Python's
//! `socketserver.StreamRequestHandler`.
//!
//! A service implements [`LineService`] (build a [`LineHandler`] per client) and wraps itself in
//! [`LineServer`]; the framing here does the rest: bounded reads, `\n` / `\r\n` splitting, lossy
//! UTF-8, the idle timeout, one write per reply, the `ERR` line for over-long input and a
//! graceful close. [`LineReader`] is the framing alone, for services that read lines their own
//! way.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::{Conn, Limits, Needs, Service, catch_unwind, close_gracefully, write_reply};

/// The first buffer is small so idle connections stay cheap; it doubles up to the line limit.
const INITIAL_BUFFER: usize = 512;

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its `\n` or `\r\n`. A last line without a terminator counts too.
    Line(&'a [u8]),
    /// The client sent more than `max_line_bytes` before a newline.
    TooLong,
    /// The client sent no complete line within the idle timeout.
    Idle,
    /// The client closed its side.
    Eof,
}

/// Reads `\n`-terminated lines with a buffer that never grows past the line limit.
///
/// Cancel-safe: bytes already read stay in the buffer when a `next_line` future is dropped, so
/// it can race other events in `select!`.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    /// Holds `buf[start..end]` unread; its length is its capacity (zero-filled once).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes after `start` are known to hold no `\n`: input that trickles in one byte
    /// at a time is scanned once, not once per read.
    scanned: usize,
    limits: Limits,
    /// When the line being read must be complete; set when waiting starts, cleared per line.
    deadline: Option<Instant>,
    /// One timer for the idle timeout, moved only when it fires before the current deadline:
    /// arming a fresh timer for every read would cost more than the read itself.
    idle_timer: Option<Pin<Box<Sleep>>>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            limits,
            deadline: None,
            idle_timer: None,
            eof: false,
        }
    }

    /// The next line, or why there is none. Read errors other than the idle timeout are
    /// returned as errors.
    pub async fn next_line(&mut self) -> std::io::Result<Frame<'_>> {
        // The longest run without a newline that can still be a valid line: the limit plus a
        // `\r` that the coming `\n` would strip.
        let max_pending = self.limits.max_line_bytes + 1;
        loop {
            let unread = &self.buf[self.start + self.scanned..self.end];
            if let Some(i) = unread.iter().position(|&b| b == b'\n') {
                let line_start = self.start;
                let newline = self.start + self.scanned + i;
                self.start = newline + 1;
                self.scanned = 0;
                self.deadline = None;
                return Ok(self.frame(line_start, newline));
            }
            self.scanned = self.end - self.start;
            if self.scanned > max_pending {
                return Ok(Frame::TooLong);
            }
            if self.eof {
                if self.scanned == 0 {
                    return Ok(Frame::Eof);
                }
                let line_start = self.start;
                self.start = self.end;
                self.scanned = 0;
                return Ok(self.frame(line_start, self.end));
            }
            self.make_room();
            if self.deadline.is_none() {
                self.deadline = self.limits.deadline();
            }
            let read = match self.deadline {
                None => self.inner.read(&mut self.buf[self.end..]).await,
                Some(deadline) => {
                    let timer = self
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    loop {
                        tokio::select! {
                            biased;
                            read = self.inner.read(&mut self.buf[self.end..]) => break read,
                            () = timer.as_mut() => {
                                if timer.deadline() >= deadline {
                                    return Ok(Frame::Idle);
                                }
                                timer.as_mut().reset(deadline);
                            }
                        }
                    }
                }
            };
            match read {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The line in `buf[start..end]`, minus a trailing `\r`, checked against the limit.
    fn frame(&self, start: usize, end: usize) -> Frame<'_> {
        let mut line = &self.buf[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > self.limits.max_line_bytes {
            Frame::TooLong
        } else {
            Frame::Line(line)
        }
    }

    /// Ensures there is free space after `end`: reuse the buffer when it is drained, move the
    /// unread tail to the front, or grow, never past the limit.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return;
        }
        let cap = self.limits.max_line_bytes + 2;
        let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER.min(cap), cap);
        self.buf.resize(grown, 0);
    }
}

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

    fn connect(&self, conn: &Conn) -> Self::Handler;

    /// What the service needs from the host; see [`Service::needs`].
    fn needs(&self) -> Needs {
        Needs::default()
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

    /// Runs once when the session ends, however it ended.
    fn finish(&mut self) {}

    /// Where pushed messages arrive, for handlers that have any.
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
        let mut handler = self.0.connect(&conn);
        // Like `socketserver`'s `try: handle() finally: finish()`: the session's end is
        // reported even when a hook panics (a game must learn that its player has gone), and
        // the panic goes on to the host, which ends this connection only.
        let result = catch_unwind(drive(&mut handler, &mut conn)).await;
        handler.finish();
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn needs(&self) -> Needs {
        self.0.needs()
    }
}

async fn drive<H: LineHandler>(handler: &mut H, conn: &mut Conn) -> std::io::Result<()> {
    let limits = conn.limits;
    let (read_half, mut write_half) = conn.stream.split();
    let mut reader = LineReader::new(read_half, limits);
    let mut reply = Vec::with_capacity(64);
    let mut flow = handler.setup(&mut reply);
    let mut linger = false;
    while flow == Flow::Continue {
        if !reply.is_empty() {
            write_reply(&mut write_half, &reply, &limits).await?;
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
            Event::Frame(frame) => match frame? {
                Frame::Line(line) => {
                    let flow = handler.handle(&String::from_utf8_lossy(line), &mut reply);
                    linger = flow == Flow::Close;
                    flow
                }
                Frame::TooLong => {
                    reply.extend_from_slice(limits.too_long_reply().as_bytes());
                    linger = true;
                    Flow::Close
                }
                Frame::Idle => {
                    reply.extend_from_slice(limits.idle_reply().as_bytes());
                    // A trickling client may send a byte just now: let the ERR line arrive.
                    linger = true;
                    Flow::Close
                }
                Frame::Eof => Flow::Close,
            },
        };
    }
    if !reply.is_empty() {
        write_reply(&mut write_half, &reply, &limits).await?;
    }
    if linger {
        close_gracefully(&mut conn.stream).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_line_bytes: usize) -> Limits {
        Limits {
            max_line_bytes,
            idle_timeout: None,
        }
    }

    async fn frames(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, &'static str>> {
        let mut reader = LineReader::new(input, limits(max));
        let mut out = Vec::new();
        loop {
            match reader.next_line().await.unwrap() {
                Frame::Line(l) => out.push(Ok(l.to_vec())),
                Frame::TooLong => {
                    out.push(Err("too long"));
                    return out;
                }
                Frame::Idle => unreachable!("no timeout set"),
                Frame::Eof => return out,
            }
        }
    }

    fn lines(items: &[&str]) -> Vec<Result<Vec<u8>, &'static str>> {
        items.iter().map(|s| Ok(s.as_bytes().to_vec())).collect()
    }

    #[tokio::test]
    async fn splits_lf_and_crlf_and_keeps_a_last_unterminated_line() {
        let got = frames(b"abba\r\nabc\n\nlast", 100).await;
        assert_eq!(got, lines(&["abba", "abc", "", "last"]));
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_limit_passes_even_with_crlf() {
        assert_eq!(frames(b"abcd\r\n", 4).await, lines(&["abcd"]));
        assert_eq!(frames(b"abcd\n", 4).await, lines(&["abcd"]));
        assert_eq!(frames(b"abcd", 4).await, lines(&["abcd"]));
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_reported_without_growing_the_buffer() {
        assert_eq!(frames(b"abcde\n", 4).await, vec![Err("too long")]);
        let huge = vec![b'x'; 1 << 20];
        let mut reader = LineReader::new(&huge[..], limits(1000));
        assert_eq!(reader.next_line().await.unwrap(), Frame::TooLong);
        assert!(reader.buf.len() <= 1002);
    }

    #[tokio::test]
    async fn many_lines_across_many_small_buffers() {
        let input: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let got = frames(&input, 8).await;
        assert_eq!(got.len(), 2000);
        assert_eq!(got[1999], Ok(b"1999".to_vec()));
    }

    #[tokio::test]
    async fn byte_by_byte_input_frames_the_same() {
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in b"ab\r\ncd\n" {
                tx.write_all(&[*b]).await.unwrap();
            }
        });
        let mut reader = LineReader::new(rx, limits(10));
        assert_eq!(reader.next_line().await.unwrap(), Frame::Line(b"ab"));
        assert_eq!(reader.next_line().await.unwrap(), Frame::Line(b"cd"));
        writer.await.unwrap();
        assert_eq!(reader.next_line().await.unwrap(), Frame::Eof);
    }

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
        };
        let size = std::mem::size_of_val(&drive(&mut Quiet, &mut conn));
        assert!(size <= 1024, "the framing's future is {size} bytes");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_follows_each_line() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                tx.write_all(b"x\n").await.unwrap();
            }
            tx
        });
        let mut reader = LineReader::new(
            rx,
            Limits {
                max_line_bytes: 100,
                idle_timeout: Some(Duration::from_secs(5)),
            },
        );
        for _ in 0..6 {
            assert_eq!(reader.next_line().await.unwrap(), Frame::Line(b"x"));
        }
        let started = Instant::now();
        assert_eq!(reader.next_line().await.unwrap(), Frame::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_line_then_silence_is_idle() {
        let (mut tx, rx) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        tx.write_all(b"half a li").await.unwrap();
        let mut reader = LineReader::new(
            rx,
            Limits {
                max_line_bytes: 100,
                idle_timeout: Some(Duration::from_secs(5)),
            },
        );
        assert_eq!(reader.next_line().await.unwrap(), Frame::Idle);
        drop(tx);
    }
}
