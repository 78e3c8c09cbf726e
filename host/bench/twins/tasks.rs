//! What the two async twins share: an accept loop that spawns a tokio task per connection, a
//! line in, a verdict out. `twin-async` runs it on tokio's multi-threaded runtime and
//! `twin-event-loop` on a current-thread one, and that is all that differs between them.
//! Included by each (`#[path]`), so each stays one small program.

use std::io::Write;

use porthost_services::palindrome::verdict;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// porthost's backlog (`porthost::sockets::BACKLOG`).
const BACKLOG: u32 = 4096;

/// Binds an ephemeral loopback port, prints its address on stdout, where the bench reads it,
/// and serves every connection in a task of its own until killed.
pub async fn serve_all() -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let listener = socket.listen(BACKLOG)?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(serve(stream));
    }
}

/// One connection: a line in, a verdict out, until an empty line or the end of the stream.
async fn serve(stream: TcpStream) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    while reader.read_line(&mut line).await? > 0 {
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            break;
        }
        writer.write_all(verdict(text, false)).await?;
        line.clear();
    }
    Ok(())
}
