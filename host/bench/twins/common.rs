//! What the blocking twins share: the listening socket and one connection served with blocking
//! reads and writes. Included by each twin (`#[path]`), so each stays one small program.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use porthost_services::palindrome::verdict;
use socket2::{Domain, Protocol, Socket, Type};

/// porthost's backlog (`porthost::sockets::BACKLOG`), so a queue is as long in front of a twin
/// as in front of the host.
const BACKLOG: i32 = 4096;

/// Binds an ephemeral loopback port and prints its address on stdout, where the bench reads it.
pub fn listen() -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(BACKLOG)?;
    let listener: TcpListener = socket.into();
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    Ok(listener)
}

/// One connection: a line in, a verdict out, until an empty line or the end of the stream.
pub fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            break;
        }
        writer.write_all(verdict(text, false))?;
        line.clear();
    }
    Ok(())
}
