//! Reading lines, async and blocking, side by side: the same framing ([`super::buffer`]) and the
//! same idle rule (a line must be complete within the idle timeout counted from when waiting
//! for it began, so a client that trickles a byte now and then is idle too). They differ only
//! in how they wait: a tokio read raced against one timer, or a blocking `read(2)` bounded by
//! the socket's receive timeout.

use std::net::TcpStream;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, Sleep};

use super::buffer::{Found, LineBuffer};
use crate::{DeadlineReader, Limits, Meter};

/// What a line reader found.
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

impl LineBuffer {
    /// The frame for what [`LineBuffer::find`] found.
    fn frame(&self, found: Found) -> Frame<'_> {
        match found {
            Found::Line(range) => Frame::Line(self.get(range)),
            Found::TooLong => Frame::TooLong,
            Found::Eof => Frame::Eof,
        }
    }
}

/// Reads `\n`-terminated lines from an async stream, with a buffer that never grows past the
/// line limit.
///
/// Cancel-safe: bytes already read stay in the buffer when a `next_line` future is dropped, so
/// it can race other events in `select!`.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buffer: LineBuffer,
    limits: Limits,
    /// When the line being read must be complete; set when waiting starts, cleared per line.
    deadline: Option<Instant>,
    /// One timer for the idle timeout, moved only when it fires before the current deadline:
    /// arming a fresh timer for every read would cost more than the read itself.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// Counts the bytes read.
    meter: Meter,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, limits: Limits, meter: Meter) -> Self {
        LineReader {
            inner,
            buffer: LineBuffer::new(limits.max_line_bytes),
            limits,
            deadline: None,
            idle_timer: None,
            meter,
        }
    }

    /// The next line, or why there is none. Read errors other than the idle timeout are
    /// returned as errors.
    pub async fn next_line(&mut self) -> std::io::Result<Frame<'_>> {
        loop {
            if let Some(found) = self.buffer.find() {
                if matches!(found, Found::Line(_)) {
                    self.deadline = None;
                }
                return Ok(self.buffer.frame(found));
            }
            if self.deadline.is_none() {
                self.deadline = self.limits.deadline();
            }
            let space = self.buffer.space();
            let read = match self.deadline {
                None => self.inner.read(space).await,
                Some(deadline) => {
                    let timer = self
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    loop {
                        tokio::select! {
                            biased;
                            read = self.inner.read(&mut *space) => break read,
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
                Ok(n) => {
                    self.meter.received(n);
                    self.buffer.filled(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads lines from a blocking socket, like [`LineReader`] does from an async one.
#[derive(Debug)]
pub struct BlockingLineReader<'a> {
    inner: DeadlineReader<'a>,
    buffer: LineBuffer,
    limits: Limits,
    /// When the line being read must be complete; set when waiting starts, cleared per line.
    deadline: Option<std::time::Instant>,
}

impl<'a> BlockingLineReader<'a> {
    pub fn new(stream: &'a TcpStream, limits: Limits, meter: Meter) -> Self {
        BlockingLineReader {
            inner: DeadlineReader::new(stream, meter),
            buffer: LineBuffer::new(limits.max_line_bytes),
            limits,
            deadline: None,
        }
    }

    /// The next line, or why there is none.
    pub fn next_line(&mut self) -> std::io::Result<Frame<'_>> {
        Ok(self
            .next_line_until(None)?
            .expect("without an instant to wait for, a frame comes"))
    }

    /// The next line, or why there is none; `None` when `at` comes first (a handler's timer).
    pub fn next_line_until(
        &mut self,
        at: Option<std::time::Instant>,
    ) -> std::io::Result<Option<Frame<'_>>> {
        loop {
            if let Some(found) = self.buffer.find() {
                if matches!(found, Found::Line(_)) {
                    self.deadline = None;
                }
                return Ok(Some(self.buffer.frame(found)));
            }
            if self.deadline.is_none() {
                self.deadline = self.limits.blocking_deadline();
            }
            let wake = match (self.deadline, at) {
                (Some(d), Some(a)) => Some(d.min(a)),
                (d, a) => d.or(a),
            };
            self.inner.set_deadline(wake);
            match std::io::Read::read(&mut self.inner, self.buffer.space()) {
                Ok(n) => self.buffer.filled(n),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let now = std::time::Instant::now();
                    if self.deadline.is_some_and(|d| now >= d) {
                        return Ok(Some(Frame::Idle));
                    }
                    if at.is_some_and(|a| now >= a) {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
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

    /// Lines of up to 100 bytes, idle after `idle`.
    fn idle_after(idle: Duration) -> Limits {
        Limits {
            max_line_bytes: 100,
            idle_timeout: Some(idle),
        }
    }

    async fn frames(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, &'static str>> {
        let mut reader = LineReader::new(input, limits(max), Meter::default());
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
        let mut reader = LineReader::new(&huge[..], limits(1000), Meter::default());
        assert_eq!(reader.next_line().await.unwrap(), Frame::TooLong);
        assert!(reader.buffer.capacity() <= 1002);
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
        let mut reader = LineReader::new(rx, limits(10), Meter::default());
        assert_eq!(reader.next_line().await.unwrap(), Frame::Line(b"ab"));
        assert_eq!(reader.next_line().await.unwrap(), Frame::Line(b"cd"));
        writer.await.unwrap();
        assert_eq!(reader.next_line().await.unwrap(), Frame::Eof);
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
        let mut reader = LineReader::new(rx, idle_after(Duration::from_secs(5)), Meter::default());
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
        let mut reader = LineReader::new(rx, idle_after(Duration::from_secs(5)), Meter::default());
        assert_eq!(reader.next_line().await.unwrap(), Frame::Idle);
        drop(tx);
    }

    /// A connected pair of blocking sockets: ours to read, the peer to write.
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, peer)
    }

    #[test]
    fn blocking_lines_and_a_slow_trickle_that_is_idle() {
        use std::io::Write;
        let (ours, mut peer) = socket_pair();
        let idle = Duration::from_millis(300);
        let mut reader = BlockingLineReader::new(&ours, idle_after(idle), Meter::default());
        peer.write_all(b"ab\r\ncd\n").unwrap();
        assert_eq!(reader.next_line().unwrap(), Frame::Line(b"ab"));
        assert_eq!(reader.next_line().unwrap(), Frame::Line(b"cd"));
        // A byte every 100 ms never finishes the line: idle counts from when waiting began.
        let trickle = std::thread::spawn(move || {
            for _ in 0..10 {
                if peer.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = std::time::Instant::now();
        assert_eq!(reader.next_line().unwrap(), Frame::Idle);
        assert!(started.elapsed() >= idle);
        trickle.join().unwrap();
    }

    #[test]
    fn a_blocking_reader_returns_at_a_handlers_instant() {
        let (ours, _peer) = socket_pair();
        let mut reader =
            BlockingLineReader::new(&ours, idle_after(Duration::from_secs(30)), Meter::default());
        let at = std::time::Instant::now() + Duration::from_millis(50);
        assert_eq!(reader.next_line_until(Some(at)).unwrap(), None);
        assert!(std::time::Instant::now() >= at);
    }
}
