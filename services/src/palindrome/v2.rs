//! Palindrome server, version 2: file-like objects, like the lecture's `conn.makefile`. A
//! buffered reader and a buffered writer over the two halves of the stream, `read_until` a
//! newline and `write` + `flush` the answer.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::conn::until;
use crate::{Conn, Options, Registration, Service, close_gracefully};

#[derive(Debug)]
struct PalindromeV2 {
    strict: bool,
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

#[async_trait]
impl Service for PalindromeV2 {
    async fn serve(&self, mut conn: Conn) -> std::io::Result<()> {
        let limits = conn.limits;
        let max = limits.max_line_bytes;
        let (read_half, write_half) = conn.stream.split();
        let mut rfile = BufReader::with_capacity(4096, read_half);
        let mut wfile = BufWriter::with_capacity(256, write_half);
        let mut line = Vec::new();
        let end = loop {
            line.clear();
            // At most the limit plus "\r\n": `take` keeps `line` from growing past that.
            let budget = max as u64 + 2;
            let mut bounded = (&mut rfile).take(budget);
            let n = match until(limits.deadline(), bounded.read_until(b'\n', &mut line)).await {
                Ok(0) => break End::Eof,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    break End::Refuse(limits.idle_reply());
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
            if line.len() > max || (!complete && n as u64 == budget) {
                break End::Refuse(limits.too_long_reply());
            }
            if line.is_empty() {
                break End::Done;
            }
            let answer = super::verdict(&String::from_utf8_lossy(&line), self.strict);
            until(limits.deadline(), async {
                wfile.write_all(answer).await?;
                wfile.flush().await
            })
            .await?;
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
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let super::Options { strict } = options.parse()?;
    Ok(Arc::new(PalindromeV2 { strict }))
}

inventory::submit! {
    Registration {
        name: "palindrome-v2",
        summary: "palindrome checker over buffered reader/writer (lecture v2, makefile)",
        build,
    }
}
