//! What tests and fuzz targets of a reader need (enabled by the `testing` feature): a stream
//! that hands its bytes out in arbitrary pieces, as a socket does, and the framing a line
//! reader must find, written the obvious way to check it against.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// A stream whose bytes arrive in pieces: a read (or a peek, for the host's PROXY header
/// reader) that finds nothing left of the last piece makes the next one arrive, so each read
/// returns one piece, or less when the buffer has less room, like a socket receiving them as
/// separate segments. Never pending, unless [`stalled`](Pieces::stalled), so a reader that
/// wants more than there is sees the end of the stream.
#[derive(Debug, Default)]
pub struct Pieces {
    /// What has arrived and not been taken by a read.
    arrived: VecDeque<u8>,
    pending: VecDeque<Vec<u8>>,
    /// Bytes taken by reads; peeks leave them.
    taken: usize,
    /// Once all have arrived: pending forever instead of the end of the stream.
    stall: bool,
}

impl Pieces {
    pub fn new<P: AsRef<[u8]>>(pieces: impl IntoIterator<Item = P>) -> Pieces {
        Pieces {
            pending: pieces.into_iter().map(|p| p.as_ref().to_vec()).collect(),
            ..Pieces::default()
        }
    }

    /// Once every piece has arrived, reads and peeks wait forever instead of finding the end
    /// of the stream: a client that stops sending but stays connected.
    pub fn stalled(self) -> Pieces {
        Pieces {
            stall: true,
            ..self
        }
    }

    /// How many bytes reads have taken.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Every byte not taken yet, arrived or not, as the next reader would get it.
    pub fn rest(self) -> Vec<u8> {
        let mut rest: Vec<u8> = self.arrived.into();
        rest.extend(self.pending.into_iter().flatten());
        rest
    }

    /// Fills `buf` with what has arrived (the next piece, if nothing is left of the last),
    /// taking it or leaving it to be read again; the count copied, or `Pending` when stalled.
    pub fn poll_fill(&mut self, buf: &mut ReadBuf<'_>, take: bool) -> Poll<usize> {
        if self.arrived.is_empty() {
            match self.pending.pop_front() {
                Some(piece) => self.arrived.extend(piece),
                None if self.stall => return Poll::Pending,
                None => {}
            }
        }
        let n = buf.remaining().min(self.arrived.len());
        let (a, b) = self.arrived.as_slices();
        let from_a = n.min(a.len());
        buf.put_slice(&a[..from_a]);
        buf.put_slice(&b[..n - from_a]);
        if take {
            self.arrived.drain(..n);
            self.taken += n;
        }
        Poll::Ready(n)
    }
}

impl AsyncRead for Pieces {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_fill(buf, true).map(|_| Ok(()))
    }
}

/// `data` cut as a fuzzer's bytes say: each byte of `lengths` is a piece of that many bytes
/// plus one, and what is left after them is the last piece. No piece is empty.
pub fn cut(data: &[u8], lengths: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    for &length in lengths {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((usize::from(length) + 1).min(rest.len()));
        out.push(piece.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

/// The lines of a stream, or where a line was too long.
pub type Frames = Vec<Result<Vec<u8>, &'static str>>;

/// What the line framing must find in `data` under a limit of `max` bytes, written the obvious
/// way: each line without its `\n` and one `\r`, a last line without a newline included, up to
/// the first line over `max`, which ends it as `Err("too long")`.
pub fn obvious_frames(data: &[u8], max: usize) -> Frames {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max {
            out.push(Err("too long"));
            break;
        }
        out.push(Ok(line.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pieces: &mut Pieces, room: usize) -> Vec<u8> {
        let mut storage = vec![0; room];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(pieces.poll_fill(&mut buf, true).is_ready());
        buf.filled().to_vec()
    }

    #[test]
    fn each_read_gets_one_piece_or_what_fits() {
        let mut pieces = Pieces::new([&b"abc"[..], b"de"]);
        assert_eq!(read(&mut pieces, 2), b"ab");
        assert_eq!(read(&mut pieces, 8), b"c");
        assert_eq!(read(&mut pieces, 8), b"de");
        assert_eq!(read(&mut pieces, 8), b"");
        assert_eq!(pieces.taken(), 5);
    }

    #[test]
    fn a_peek_leaves_the_bytes_and_brings_no_new_piece() {
        let mut pieces = Pieces::new([&b"ab"[..], b"c"]);
        let mut storage = [0; 8];
        let mut buf = ReadBuf::new(&mut storage);
        assert_eq!(pieces.poll_fill(&mut buf, false), Poll::Ready(2));
        let mut buf = ReadBuf::new(&mut storage);
        assert_eq!(pieces.poll_fill(&mut buf, false), Poll::Ready(2));
        assert_eq!(pieces.taken(), 0);
        assert_eq!(pieces.rest(), b"abc");
    }

    #[test]
    fn a_stalled_stream_waits_after_its_last_piece() {
        let mut pieces = Pieces::new([b"a"]).stalled();
        assert_eq!(read(&mut pieces, 8), b"a");
        let mut storage = [0; 8];
        let mut buf = ReadBuf::new(&mut storage);
        assert_eq!(pieces.poll_fill(&mut buf, true), Poll::Pending);
    }

    #[test]
    fn cut_follows_the_lengths_and_keeps_the_rest() {
        assert_eq!(cut(b"abcdef", &[0, 2]), [&b"a"[..], b"bcd", b"ef"]);
        assert_eq!(cut(b"ab", &[5, 5]), [b"ab"]);
        assert!(cut(b"", &[1]).is_empty());
    }

    #[test]
    fn the_obvious_frames_strip_one_cr_and_stop_at_a_long_line() {
        assert_eq!(
            obvious_frames(b"a\r\r\nbb\nccc\nd", 2),
            [Ok(b"a\r".to_vec()), Ok(b"bb".to_vec()), Err("too long")]
        );
        assert_eq!(obvious_frames(b"x", 1), [Ok(b"x".to_vec())]);
    }
}
