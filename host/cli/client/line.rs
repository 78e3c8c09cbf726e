//! `porthost client line HOST:PORT`: a generic line client, to try any line service (a newly
//! added one, say) without `nc`. The bytes typed (or piped) are sent as they are, whatever
//! their encoding; every line the server sends is printed as it arrives, also while the user
//! types. At a terminal it shows a prompt and marks an empty reply, which would be invisible.
//! When the server closes, the client exits at once, its last line shown: lines typed after
//! that would otherwise reach the shell. At the end of the input the client half-closes and
//! prints what the server still sends until it closes.
//!
//! One thread waits on both the socket and stdin with `poll`, so neither can keep the other
//! waiting: a thread blocked reading stdin cannot notice that the server has gone.

use std::io::{IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Longest line shown from the server; a longer one is shown in pieces of this size.
const MAX_SHOWN: usize = 64 * 1024;

/// How long the client waits, once its input has ended, for the server to finish.
const FINISH: Duration = Duration::from_secs(5);

/// What the client shows at a terminal before what the user types.
const PROMPT: &str = "> ";

/// How an empty line from the server is shown at a terminal.
const EMPTY: &str = "(empty line)";

/// Back to the start of the line, and clear it (the prompt), before a server line.
const CLEAR_LINE: &str = "\r\x1b[K";

pub fn run(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    talk(addr, &stream, stdin.as_fd(), interactive)
}

/// Moves bytes between `input` and the server until the server closes, or until it has had
/// [`FINISH`] to do so after the input ended.
fn talk(
    addr: &str,
    stream: &TcpStream,
    input: BorrowedFd<'_>,
    interactive: bool,
) -> anyhow::Result<()> {
    let mut screen = Screen {
        interactive,
        partial: Vec::new(),
    };
    let mut input_open = true;
    let mut finish_by: Option<Instant> = None;
    let mut buf = vec![0u8; MAX_SHOWN];
    screen.prompt();
    loop {
        let timeout = match finish_by {
            None => PollTimeout::NONE,
            Some(by) => {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!(
                        "{addr} did not close the connection within {} s of the end of input",
                        FINISH.as_secs()
                    );
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the server and the input"),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let server_ready = ready(&fds[0]);
        let input_ready = input_open && ready(&fds[1]);
        if server_ready {
            let n = (&*stream)
                .read(&mut buf)
                .with_context(|| format!("reading from {addr}"))?;
            if n == 0 {
                screen.closed();
                return Ok(());
            }
            screen.server_bytes(&buf[..n]);
        }
        if input_ready {
            let n = nix::unistd::read(input, &mut buf).context("reading standard input")?;
            let sent = n > 0 && (&*stream).write_all(&buf[..n]).is_ok();
            if n > 0 && buf[n - 1] == b'\n' {
                screen.prompt();
            }
            if !sent {
                // The end of input (or a server that stopped reading): let the server answer
                // what it has and close; its last lines are still shown.
                input_open = false;
                if n == 0 && interactive {
                    // Ctrl-D at the prompt: end its line.
                    porthost::logging::print("\n");
                }
                let _ = stream.shutdown(Shutdown::Write);
                finish_by = Some(Instant::now() + FINISH);
            }
        }
    }
}

/// Draws the server's lines, and at a terminal the prompt below them.
struct Screen {
    interactive: bool,
    /// A server line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Screen {
    fn prompt(&self) {
        if self.interactive {
            porthost::logging::print(PROMPT);
        }
    }

    fn server_bytes(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut text = String::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            text += &self.shown(&line);
        }
        if self.partial.len() >= MAX_SHOWN {
            let line = std::mem::take(&mut self.partial);
            text += &self.shown(&line);
        }
        if !text.is_empty() {
            if self.interactive {
                text = format!("{CLEAR_LINE}{text}{PROMPT}");
            }
            porthost::logging::print(&text);
        }
    }

    /// One line as printed, with its newline.
    fn shown(&self, line: &[u8]) -> String {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() && self.interactive {
            format!("{EMPTY}\n")
        } else {
            format!("{text}\n")
        }
    }

    /// The server closed: what it sent last without a newline, then the note.
    fn closed(&mut self) {
        let mut text = String::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            text += &self.shown(&line);
        }
        if self.interactive {
            text = format!("{CLEAR_LINE}{text}(the server closed the connection)\n");
        }
        porthost::logging::print(&text);
    }
}
