//! The baselines: minimal hand-written servers for the palindrome protocol, one for each model,
//! with no host machinery (no limits, no config, no spans), so the bench shows what the host
//! itself costs. They answer with the same `verdict` as the services, so the work per line is
//! identical, and listen with the host's backlog, so a queue is the same length in front of
//! either.
//!
//! | baseline | the twin of | how it serves |
//! |---|---|---|
//! | `baseline-sequential` | `sequential` | accept, serve with blocking I/O, accept the next |
//! | `baseline-threads` | `thread-per-client` (and `process-per-client` sessions) | a thread per connection, blocking I/O |
//! | `baseline-fork` | `process-per-client` churn | a `fork()` per connection from a single-threaded server, blocking I/O in the child |
//! | `baseline-async` | `async` | a tokio task per connection |

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use porthost::config::Model;
use porthost_services::palindrome::verdict;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Sequential,
    Threads,
    Fork,
    Async,
}

impl Kind {
    /// The argument of `porthost bench --serve-baseline`.
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Sequential => "sequential",
            Kind::Threads => "threads",
            Kind::Fork => "fork",
            Kind::Async => "async",
        }
    }

    /// The baseline a model is shown next to: for process-per-client, the hand-written forking
    /// server (the targets also hold its sessions against `baseline-threads`).
    pub fn twin_of(model: Model) -> Kind {
        match model {
            Model::Sequential => Kind::Sequential,
            Model::ThreadPerClient => Kind::Threads,
            Model::ProcessPerClient => Kind::Fork,
            Model::Async => Kind::Async,
        }
    }

    pub fn subject(self) -> &'static str {
        match self {
            Kind::Sequential => "baseline-sequential",
            Kind::Threads => "baseline-threads",
            Kind::Fork => "baseline-fork",
            Kind::Async => "baseline-async",
        }
    }
}

/// `porthost bench --serve-baseline KIND`: serves on an ephemeral loopback port, prints the
/// address on stdout, and runs until killed.
pub fn main(kind: Kind) -> anyhow::Result<()> {
    let listener = porthost::sockets::bind(([127, 0, 0, 1], 0).into())?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    match kind {
        Kind::Sequential => sequential(listener),
        Kind::Threads => threads(listener),
        Kind::Fork => fork::serve(listener),
        Kind::Async => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(tasks(listener))
        }
    }
}

/// One connection, blocking reads and writes: a line in, a verdict out, until an empty line
/// or the end of the stream.
fn serve(stream: TcpStream) -> std::io::Result<()> {
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

/// One connection at a time: the next client is accepted when the current one leaves.
fn sequential(listener: TcpListener) -> anyhow::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        // A client that breaks its connection ends only its own session.
        let _ = serve(stream);
    }
    Ok(())
}

/// One thread per connection, blocking reads and writes.
fn threads(listener: TcpListener) -> anyhow::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        std::thread::spawn(move || serve(stream));
    }
    Ok(())
}

/// One tokio task per connection on the multi-threaded runtime.
async fn tasks(listener: TcpListener) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(reader);
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

/// The classic forking server, as the lecture's `ForkingTCPServer` and every C textbook write
/// it: accept, `fork()`, the child serves the connection with blocking I/O and exits, the
/// parent closes its copy and reaps the children that have ended.
mod fork {
    // `fork()` is `unsafe`: in a process with several threads, the child gets only the calling
    // one, and locks the others held stay locked. This server never starts a thread (`porthost
    // bench --serve-baseline fork` comes here before any runtime or pool is built), which is
    // what makes the fork sound.
    #![allow(unsafe_code)]

    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
        for stream in listener.incoming() {
            let stream = stream?;
            stream.set_nodelay(true)?;
            // SAFETY: this process has a single thread (see the module's comment).
            match unsafe { fork() }? {
                ForkResult::Child => {
                    // The child never returns to the loop, so closing the listener's number
                    // here cannot close it twice.
                    let _ = nix::unistd::close(listener.as_raw_fd());
                    let code = i32::from(super::serve(stream).is_err());
                    // SAFETY: `_exit` ends the process at once, without the parent's exit
                    // handlers; nothing runs after it.
                    unsafe { nix::libc::_exit(code) }
                }
                ForkResult::Parent { .. } => {
                    drop(stream);
                    // Reap every child that has ended, without waiting for the others.
                    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        if status == WaitStatus::StillAlive {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
