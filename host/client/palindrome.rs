//! `porthost client palindrome HOST:PORT`: the lecture's palindrome client. Reads lines from
//! stdin until an empty line or EOF (Ctrl-D, which ends the prompt's line first), sends each,
//! and prints the server's verdict. Messages quote at most the first 80 characters of a line.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};

use super::excerpt;

/// Replies are one short line; anything longer is not a palindrome server talking.
const MAX_REPLY: u64 = 4096;

pub fn run(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut replies = BufReader::new(stream.try_clone()?);
    let mut requests = stream;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        if interactive {
            print!("line (empty to quit)> ");
            std::io::stdout().flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            // Ctrl-D echoes no newline: end the prompt's line so the shell's starts on its own.
            if interactive {
                println!();
            }
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            break;
        }
        requests
            .write_all(format!("{text}\n").as_bytes())
            .with_context(|| format!("{addr} closed the connection"))?;
        reply.clear();
        let n = (&mut replies)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut reply)?;
        if n == 0 || reply.last() != Some(&b'\n') {
            bail!("{addr} closed the connection");
        }
        match String::from_utf8_lossy(&reply).trim_end_matches(['\n', '\r']) {
            "1" => println!("{} is a palindrome", excerpt(text)),
            "" => println!("{} is not a palindrome", excerpt(text)),
            error if error.starts_with("ERR") => {
                bail!("{addr} refused {}: {}", excerpt(text), excerpt(error))
            }
            other => bail!(
                "{addr} sent {}, which is not a palindrome verdict",
                excerpt(other)
            ),
        }
    }
    // An empty line ends the session politely, as the lecture's client does.
    let _ = requests.write_all(b"\n");
    Ok(())
}
