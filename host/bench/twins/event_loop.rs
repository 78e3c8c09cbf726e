//! `twin-event-loop`, the twin of event-loop: one thread, one current-thread tokio runtime,
//! a task per connection, as an asyncio server is written. `porthost bench` starts it; it
//! prints its address and serves until killed.

use std::io::Write;

use porthost_services::palindrome::verdict;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// porthost's backlog (`porthost::sockets::BACKLOG`).
const BACKLOG: i32 = 4096;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
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
            std::io::Result::Ok(())
        });
    }
}
