//! `porthost client line HOST:PORT`: a generic line client, to try any line service (a newly
//! added one, say) without `nc`. Each line typed (or piped) is sent; every line the server
//! sends is printed as it arrives, also while the user types. At the end of the input the
//! client half-closes and prints what the server still sends until it closes.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// Longest line shown from the server; a longer one is cut (the rest still arrives).
const MAX_SHOWN: u64 = 64 * 1024;

/// How long the client waits, once its input has ended, for the server to finish.
const FINISH: Duration = Duration::from_secs(5);

pub fn run(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let interactive = std::io::stdin().is_terminal();
    let replies = stream.try_clone()?;
    let printer = std::thread::spawn(move || print_replies(replies, interactive));
    let mut requests = &stream;
    let mut line = String::new();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            if interactive {
                // Ctrl-D at the prompt: end its line.
                crate::logging::print("\n");
            }
            break;
        }
        if !line.ends_with('\n') {
            line.push('\n');
        }
        if requests.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    // No more requests: let the server answer what it has and close.
    let _ = stream.shutdown(Shutdown::Write);
    stream.set_read_timeout(Some(FINISH))?;
    printer
        .join()
        .map_err(|_| anyhow::anyhow!("the reply printer failed"))?
        .with_context(|| format!("reading from {addr}"))
}

/// Prints each line the server sends until it closes.
fn print_replies(stream: TcpStream, interactive: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_SHOWN).read_until(b'\n', &mut line)?;
        if n == 0 {
            if interactive {
                crate::logging::print("(the server closed the connection)\n");
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        crate::logging::print(&format!("{text}\n"));
    }
}
