//! Palindrome server, version 1: byte level, like the lecture's `conn.recv(1024)` /
//! `conn.sendall(...)`. Raw reads into a fixed buffer and its own framing: a line may arrive in
//! many reads and many lines in one read. The answers to the lines of one read go out in one
//! write. Option `once` reproduces the lecture's lifetime: the port closes after one client.
//!
//! The session is written twice, side by side: blocking, as the lecture writes it (the form
//! `sequential`, `thread-per-client` and `process-per-client` run), and async (the form
//! `async` runs). The framing ([`Framer`]) is the same; only the waiting differs.

use std::sync::Arc;

use std::io::Read;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::conn::until;
use crate::{
    BlockingConn, BlockingService, Conn, DeadlineReader, Limits, OptionDoc, Options, Registration,
    Service, close_gracefully, close_gracefully_blocking, prepare_blocking, write_reply,
    write_reply_blocking,
};

/// The lecture's `recv` size.
const CHUNK: usize = 1024;

#[derive(Debug)]
struct PalindromeV1 {
    strict: bool,
    once: bool,
    work: super::Work,
}

/// What [`Framer::feed`] decided for the session.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Continue,
    /// An empty line: the client is done.
    Done,
    /// A line over the limit.
    TooLong,
}

/// The framing state between reads: the unfinished line, never longer than the limit plus one
/// byte (a `\r` the next read may end with `\n`).
#[derive(Debug)]
struct Framer {
    partial: Vec<u8>,
    max: usize,
    strict: bool,
    /// Lines framed so far, for the meter.
    lines: u64,
    /// Lines answered since the last [`Framer::answered`], for the work each costs.
    answered: u32,
}

impl Framer {
    /// Frames one read's bytes, appending the answers to `replies`.
    fn feed(&mut self, mut bytes: &[u8], replies: &mut Vec<u8>) -> Outcome {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&bytes[..i], &bytes[i + 1..]);
            bytes = rest;
            let outcome = if self.partial.is_empty() {
                self.answer(head, replies)
            } else if self.partial.len() + head.len() > self.max + 1 {
                Outcome::TooLong
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                let outcome = self.answer(&line, replies);
                line.clear();
                self.partial = line;
                outcome
            };
            if outcome != Outcome::Continue {
                return outcome;
            }
        }
        if self.partial.len() + bytes.len() > self.max + 1 {
            return Outcome::TooLong;
        }
        self.partial.extend_from_slice(bytes);
        Outcome::Continue
    }

    /// The client closed: an unterminated last line still gets its answer.
    fn finish(&mut self, replies: &mut Vec<u8>) -> Outcome {
        if self.partial.is_empty() {
            return Outcome::Done;
        }
        let line = std::mem::take(&mut self.partial);
        match self.answer(&line, replies) {
            Outcome::Continue => Outcome::Done,
            other => other,
        }
    }

    fn answer(&mut self, line: &[u8], replies: &mut Vec<u8>) -> Outcome {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max {
            return Outcome::TooLong;
        }
        self.lines += 1;
        if line.is_empty() {
            return Outcome::Done;
        }
        replies.extend_from_slice(super::verdict(&String::from_utf8_lossy(line), self.strict));
        self.answered += 1;
        Outcome::Continue
    }

    /// The lines answered since the last call.
    fn answered(&mut self) -> u32 {
        std::mem::take(&mut self.answered)
    }

    /// Counts the lines framed since the last call, and says when that was.
    fn count(&mut self, meter: &crate::Meter) -> Option<std::time::Instant> {
        (self.lines > 0).then(|| meter.lines(std::mem::take(&mut self.lines)))
    }
}

impl PalindromeV1 {
    fn framer(&self, limits: &Limits) -> Framer {
        Framer {
            partial: Vec::new(),
            max: limits.max_line_bytes,
            strict: self.strict,
            lines: 0,
            answered: 0,
        }
    }
}

/// The blocking form: `data = conn.recv(1024)`, answer, `conn.sendall(answers)`.
impl BlockingService for PalindromeV1 {
    fn serve_blocking(&self, conn: BlockingConn) -> std::io::Result<()> {
        prepare_blocking(&conn)?;
        let limits = conn.limits;
        let mut framer = self.framer(&limits);
        let mut chunk = [0u8; CHUNK];
        let mut replies = Vec::with_capacity(64);
        // Each `recv` waits at most until the line being read is due: from the last complete
        // line, so a client that trickles bytes is idle too.
        let mut conn_reader = DeadlineReader::new(&conn.stream, conn.meter.clone());
        loop {
            if conn_reader.deadline().is_none() {
                conn_reader.set_deadline(limits.blocking_deadline());
            }
            let outcome = match conn_reader.read(&mut chunk) {
                Ok(0) => framer.finish(&mut replies),
                Ok(n) => {
                    if chunk[..n].contains(&b'\n') {
                        conn_reader.set_deadline(None);
                    }
                    framer.feed(&chunk[..n], &mut replies)
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    write_reply_blocking(&conn.stream, limits.idle_reply().as_bytes())?;
                    close_gracefully_blocking(&conn.stream);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.work.blocking(framer.answered());
            let since = framer.count(&conn.meter);
            if outcome == Outcome::TooLong {
                replies.extend_from_slice(limits.too_long_reply().as_bytes());
            }
            if !replies.is_empty() {
                write_reply_blocking(&conn.stream, &replies)?;
                conn.meter.replied(replies.len(), since);
                replies.clear();
            }
            if outcome != Outcome::Continue {
                // See the async form on why the close lingers.
                close_gracefully_blocking(&conn.stream);
                return Ok(());
            }
        }
    }
}

/// The async form: the same session, each read raced against the line's deadline.
#[async_trait]
impl Service for PalindromeV1 {
    async fn serve(&self, mut conn: Conn) -> std::io::Result<()> {
        let limits: Limits = conn.limits;
        let mut framer = self.framer(&limits);
        let mut chunk = [0u8; CHUNK];
        let mut replies = Vec::with_capacity(64);
        // The deadline for the line being read: it runs from the last complete line.
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() {
                deadline = limits.deadline();
            }
            let outcome = match until(deadline, conn.stream.read(&mut chunk)).await {
                Ok(0) => framer.finish(&mut replies),
                Ok(n) => {
                    conn.meter.received(n);
                    if chunk[..n].contains(&b'\n') {
                        deadline = None;
                    }
                    framer.feed(&chunk[..n], &mut replies)
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    write_reply(&mut conn.stream, limits.idle_reply().as_bytes(), &limits).await?;
                    close_gracefully(&mut conn.stream).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.work.wait(framer.answered()).await;
            let since = framer.count(&conn.meter);
            if outcome == Outcome::TooLong {
                replies.extend_from_slice(limits.too_long_reply().as_bytes());
            }
            if !replies.is_empty() {
                write_reply(&mut conn.stream, &replies, &limits).await?;
                conn.meter.replied(replies.len(), since);
                replies.clear();
            }
            match outcome {
                Outcome::Continue => {}
                // An empty line may have more input behind it, and a line too long surely has:
                // closing over unread input would reset the connection and could destroy
                // replies not yet sent. (At end of stream this costs one shutdown.)
                Outcome::Done | Outcome::TooLong => {
                    close_gracefully(&mut conn.stream).await;
                    break;
                }
            }
        }
        Ok(())
    }

    fn blocking(&self) -> Option<&dyn BlockingService> {
        Some(self)
    }

    fn single_session(&self) -> bool {
        self.once
    }
}

/// Stop accepting on this port after the first client has left.
const ONCE: OptionDoc = OptionDoc {
    name: "once",
    default: "false",
    meaning: "stop accepting after the first client has left, like the lecture's v1",
};

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let (strict, work, once) = super::strict_and(options, |r| r.bool(ONCE.name, false))?;
    Ok(Arc::new(PalindromeV1 { strict, once, work }))
}

porthost_services::register!(Registration {
    name: "palindrome-v1",
    summary: "palindrome checker at byte level with its own framing (lecture v1, recv/sendall)",
    options: &[super::STRICT, ONCE, super::BUSY_US, super::SLEEP_MS],
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    fn framer(max: usize) -> Framer {
        Framer {
            partial: Vec::new(),
            max,
            strict: false,
            lines: 0,
            answered: 0,
        }
    }

    #[test]
    fn a_line_split_over_many_reads() {
        let mut f = framer(100);
        let mut out = Vec::new();
        for b in b"aba\r\nab" {
            assert_eq!(f.feed(&[*b], &mut out), Outcome::Continue);
        }
        assert_eq!(f.feed(b"c\n", &mut out), Outcome::Continue);
        assert_eq!(out, b"1\n\n");
    }

    #[test]
    fn many_lines_in_one_read_and_an_empty_line_ends() {
        let mut f = framer(100);
        let mut out = Vec::new();
        assert_eq!(f.feed(b"abba\nabc\n\nignored\n", &mut out), Outcome::Done);
        assert_eq!(out, b"1\n\n");
        assert_eq!(f.answered(), 2, "the empty line is not answered");
        assert_eq!(f.answered(), 0);
    }

    #[test]
    fn the_partial_line_never_outgrows_the_limit() {
        let mut f = framer(4);
        let mut out = Vec::new();
        assert_eq!(f.feed(b"abcd\r", &mut out), Outcome::Continue);
        assert_eq!(f.feed(b"\n", &mut out), Outcome::Continue);
        assert_eq!(f.feed(b"abc", &mut out), Outcome::Continue);
        assert_eq!(f.feed(b"de\n", &mut out), Outcome::TooLong);
        let mut f = framer(4);
        assert_eq!(f.feed(b"abcdef", &mut out), Outcome::TooLong);
        assert!(f.partial.capacity() <= 8);
    }

    #[test]
    fn an_unterminated_last_line_is_answered() {
        let mut f = framer(100);
        let mut out = Vec::new();
        assert_eq!(f.feed(b"abba", &mut out), Outcome::Continue);
        assert_eq!(f.finish(&mut out), Outcome::Done);
        assert_eq!(out, b"1\n");
    }
}
