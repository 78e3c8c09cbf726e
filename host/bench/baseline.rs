//! The baselines: a minimal hand-written async server and a minimal hand-written
//! thread-per-connection server for the palindrome protocol, with no host machinery (no limits,
//! no config, no spans), so the bench shows what the host itself costs. They answer with the
//! same `verdict` as the services, so the work per line is identical.

use std::io::{BufRead, BufReader, Write};

use porthost_services::palindrome::verdict;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Threads,
    Async,
}

impl Kind {
    /// The argument of `porthost bench --serve-baseline`.
    pub fn arg(self) -> &'static str {
        match self {
            Kind::Threads => "threads",
            Kind::Async => "async",
        }
    }

    pub fn subject(self) -> &'static str {
        match self {
            Kind::Threads => "baseline-threads",
            Kind::Async => "baseline-async",
        }
    }
}

/// `porthost bench --serve-baseline KIND`: serves on an ephemeral loopback port, prints the address on
/// stdout, and runs until killed.
pub fn main(kind: Kind) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    match kind {
        Kind::Threads => threads(listener),
        Kind::Async => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(tasks(listener))
        }
    }
}

/// One thread per connection, blocking reads and writes.
fn threads(listener: std::net::TcpListener) -> anyhow::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        std::thread::spawn(move || -> std::io::Result<()> {
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
        });
    }
    Ok(())
}

/// One tokio task per connection on the multi-threaded runtime.
async fn tasks(listener: std::net::TcpListener) -> anyhow::Result<()> {
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
