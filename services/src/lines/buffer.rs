//! The framing state both line readers share: a buffer that never grows past the line limit,
//! and where the next line in it is. No I/O and no clocks here; [`super::reader`] does the
//! reading, blocking or async.

/// The first buffer is small so idle connections stay cheap; it doubles up to the line limit.
const INITIAL_BUFFER: usize = 512;

/// What the buffered bytes hold next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// A line at this range of the buffer, its `\n` (and one `\r`) left out.
    Line(std::ops::Range<usize>),
    /// More than the limit before a newline.
    TooLong,
    /// The client closed and everything before has been framed.
    Eof,
}

/// Holds `buf[start..end]` unread; its length is its capacity (zero-filled once).
#[derive(Debug)]
pub(crate) struct LineBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes after `start` are known to hold no `\n`: input that trickles in one byte
    /// at a time is scanned once, not once per read.
    scanned: usize,
    max_line_bytes: usize,
    eof: bool,
}

impl LineBuffer {
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            max_line_bytes,
            eof: false,
        }
    }

    /// The next frame in what has been read, or `None` when more input is needed.
    pub(crate) fn find(&mut self) -> Option<Found> {
        // The longest run without a newline that can still be a valid line: the limit plus a
        // `\r` that the coming `\n` would strip.
        let max_pending = self.max_line_bytes + 1;
        let unread = &self.buf[self.start + self.scanned..self.end];
        if let Some(i) = unread.iter().position(|&b| b == b'\n') {
            let line_start = self.start;
            let newline = self.start + self.scanned + i;
            self.start = newline + 1;
            self.scanned = 0;
            return Some(self.line(line_start, newline));
        }
        self.scanned = self.end - self.start;
        if self.scanned > max_pending {
            return Some(Found::TooLong);
        }
        if self.eof {
            if self.scanned == 0 {
                return Some(Found::Eof);
            }
            let line_start = self.start;
            self.start = self.end;
            self.scanned = 0;
            return Some(self.line(line_start, self.end));
        }
        None
    }

    /// The bytes of a line [`LineBuffer::find`] found.
    pub(crate) fn get(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Free space after what is buffered, to read into: the buffer is reused when drained,
    /// its unread tail moved to the front, or it grows, never past the limit.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let cap = self.max_line_bytes + 2;
                let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER.min(cap), cap);
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records a read of `n` bytes into [`LineBuffer::space`]; 0 is the end of the stream.
    pub(crate) fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        } else {
            self.end += n;
        }
    }

    /// The line in `buf[start..end]`, minus a trailing `\r`, checked against the limit.
    fn line(&self, start: usize, mut end: usize) -> Found {
        if end > start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        if end - start > self.max_line_bytes {
            Found::TooLong
        } else {
            Found::Line(start..end)
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }
}
