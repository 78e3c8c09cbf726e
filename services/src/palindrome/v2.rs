//! Palindrome server, version 2: file-like objects, like the lecture's `conn.makefile`. A
//! buffered reader and a buffered writer over the two halves of the stream, `read_until` a
//! newline and `write` + `flush` the answer.
//!
//! Written twice, side by side: blocking, as the lecture writes it (`rfile.readline()`,
//! `wfile.write(...)`; the form `sequential`, `thread-per-client` and `process-per-client`
//! run), and async (the form `async` runs). [`check`] is the part they share: what a line read
//! means.

use std::io::{BufRead, Read, Write};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::conn::until;
use crate::{
    BlockingConn, BlockingService, Conn, DeadlineReader, Limits, Meter, Options, Registration,
    Service, close_gracefully, close_gracefully_blocking, prepare_blocking,
};

#[derive(Debug)]
struct PalindromeV2 {
    strict: bool,
    work: super::Work,
}

/// How a session ended, to decide how to close.
enum End {
    /// The client closed: nothing more to say.
    Eof,
    /// The client sent an empty line, possibly with more input after it: closing over that
    /// input unread would reset the connection and could destroy replies not yet sent.
    Done,
    /// We end it with an error line and must let that line arrive before closing.
    Refuse(String),
}

/// What one `read_until` of a line means: the answer to send (and when the line was framed,
/// counted in `meter`), or how the session ends. `line` loses its terminator.
fn check(
    line: &mut Vec<u8>,
    read: std::io::Result<usize>,
    limits: &Limits,
    strict: bool,
    meter: &Meter,
) -> std::io::Result<Result<(&'static [u8], std::time::Instant), End>> {
    let n = match read {
        Ok(0) => return Ok(Err(End::Eof)),
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Ok(Err(End::Refuse(limits.idle_reply())));
        }
        Err(e) => return Err(e),
    };
    let complete = line.last() == Some(&b'\n');
    if complete {
        line.pop();
    }
    // A last line cut by EOF is a line too, with or without its `\r`.
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > limits.max_line_bytes || (!complete && n as u64 == budget(limits)) {
        return Ok(Err(End::Refuse(limits.too_long_reply())));
    }
    let since = meter.lines(1);
    if line.is_empty() {
        return Ok(Err(End::Done));
    }
    Ok(Ok((
        super::verdict(&String::from_utf8_lossy(line), strict),
        since,
    )))
}

/// At most the limit plus "\r\n" per line: `take` keeps a line from growing past that.
fn budget(limits: &Limits) -> u64 {
    limits.max_line_bytes as u64 + 2
}

/// The blocking form: `rfile = conn.makefile("rb")`, `wfile = conn.makefile("wb")`, then
/// `line = rfile.readline()` and `wfile.write(answer)`, `wfile.flush()`.
impl BlockingService for PalindromeV2 {
    fn serve_blocking(&self, conn: BlockingConn) -> std::io::Result<()> {
        prepare_blocking(&conn)?;
        let limits = conn.limits;
        let mut rfile = std::io::BufReader::with_capacity(
            4096,
            DeadlineReader::new(&conn.stream, conn.meter.clone()),
        );
        let mut wfile = std::io::BufWriter::with_capacity(256, &conn.stream);
        let mut line = Vec::new();
        let end = loop {
            line.clear();
            // The whole line is due within the idle timeout, however many reads it takes.
            rfile.get_mut().set_deadline(limits.blocking_deadline());
            let read = (&mut rfile)
                .take(budget(&limits))
                .read_until(b'\n', &mut line);
            match check(&mut line, read, &limits, self.strict, &conn.meter)? {
                Ok((answer, since)) => {
                    self.work.blocking(1);
                    wfile.write_all(answer)?;
                    wfile.flush()?;
                    conn.meter.replied(answer.len(), Some(since));
                }
                Err(end) => break end,
            }
        };
        match end {
            End::Eof => {}
            End::Done => close_gracefully_blocking(&conn.stream),
            End::Refuse(message) => {
                wfile.write_all(message.as_bytes())?;
                wfile.flush()?;
                close_gracefully_blocking(&conn.stream);
            }
        }
        Ok(())
    }
}

/// The async form: the same session over tokio's buffered halves.
#[async_trait]
impl Service for PalindromeV2 {
    async fn serve(&self, mut conn: Conn) -> std::io::Result<()> {
        let limits = conn.limits;
        let (read_half, write_half) = conn.stream.split();
        let mut rfile = BufReader::with_capacity(4096, read_half);
        let mut wfile = BufWriter::with_capacity(256, write_half);
        let mut line = Vec::new();
        let end = loop {
            line.clear();
            let mut bounded = (&mut rfile).take(budget(&limits));
            let read = until(limits.deadline(), bounded.read_until(b'\n', &mut line)).await;
            if let Ok(n) = &read {
                conn.meter.received(*n);
            }
            let (answer, since) = match check(&mut line, read, &limits, self.strict, &conn.meter)? {
                Ok(answer) => answer,
                Err(end) => break end,
            };
            self.work.wait(1).await;
            until(limits.deadline(), async {
                wfile.write_all(answer).await?;
                wfile.flush().await
            })
            .await?;
            conn.meter.replied(answer.len(), Some(since));
        };
        match end {
            End::Eof => {}
            End::Done => close_gracefully(&mut conn.stream).await,
            End::Refuse(message) => {
                until(limits.deadline(), async {
                    wfile.write_all(message.as_bytes()).await?;
                    wfile.flush().await
                })
                .await?;
                close_gracefully(&mut conn.stream).await;
            }
        }
        Ok(())
    }

    fn blocking(&self) -> Option<&dyn BlockingService> {
        Some(self)
    }
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let (strict, work, ()) = super::strict_and(options, |_| ())?;
    Ok(Arc::new(PalindromeV2 { strict, work }))
}

porthost_services::register!(Registration {
    name: "palindrome-v2",
    options: &[super::STRICT, super::BUSY_US, super::SLEEP_MS],
    summary: "palindrome checker over buffered reader/writer (lecture v2, makefile)",
    build,
});
