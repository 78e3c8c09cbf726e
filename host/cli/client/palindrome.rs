//! `porthost client palindrome HOST:PORT`: the lecture's palindrome client. Reads lines from
//! stdin until an empty line or EOF (Ctrl-D, which ends the prompt's line first), sends each,
//! and prints the server's verdict. Messages quote at most the first 80 characters of a line.
//!
//! While it waits for the user, it also watches the socket: a server that closes (a reload, a
//! drain, an idle timeout) is reported with its last line when it happens, not blamed on the
//! next line typed. A first reply that is slow means a busy port, where the connection waits
//! to be accepted: the client says so and waits on.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::excerpt;

/// Replies are one short line; anything longer is not a palindrome server talking.
const MAX_REPLY: u64 = 4096;

/// How long the first reply may take before the client says the connection waits to be
/// accepted: a palindrome server answers at once once it has accepted.
const ACCEPT_WAIT: Duration = Duration::from_secs(5);

pub fn run(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut replies = BufReader::new(stream.try_clone()?);
    let mut requests = stream;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    // Its own handle on stdin, whose buffer this client can see: a line already buffered is
    // read without waiting on the socket.
    let mut input = BufReader::new(std::fs::File::from(
        stdin
            .as_fd()
            .try_clone_to_owned()
            .context("standard input")?,
    ));
    let mut line = Vec::new();
    let mut reply = Vec::new();
    let mut answered = false;
    loop {
        if interactive {
            print!("line (empty to quit)> ");
            std::io::stdout().flush()?;
        }
        if input.buffer().is_empty() && !wait_for_input(input.get_ref(), &requests)? {
            // The server spoke first: its last words before it closes.
            reply.clear();
            let n = (&mut replies)
                .take(MAX_REPLY)
                .read_until(b'\n', &mut reply)?;
            if interactive {
                println!();
            }
            if n == 0 {
                bail!("{addr} closed the connection");
            }
            bail!(
                "the server closed the connection: {}",
                excerpt(String::from_utf8_lossy(&reply).trim_end_matches(['\n', '\r']))
            );
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
        if !answered {
            answered = true;
            if !wait_readable(&requests, ACCEPT_WAIT)? {
                eprintln!(
                    "connected to {addr}; waiting for the server to accept you (the port is busy)"
                );
            }
        }
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

/// Waits until the user's input or the server has something; true for the input. Input wins
/// a tie: the server's line is read after it.
fn wait_for_input(input: &impl AsFd, server: &TcpStream) -> anyhow::Result<bool> {
    loop {
        let mut fds = [
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
            PollFd::new(server.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for input"),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            return Ok(true);
        }
        if ready(&fds[1]) {
            return Ok(false);
        }
    }
}

/// Whether the server has something to read (or has closed) within `wait`.
fn wait_readable(server: &TcpStream, wait: Duration) -> anyhow::Result<bool> {
    let mut fds = [PollFd::new(server.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e).context("waiting for the reply"),
    }
}
