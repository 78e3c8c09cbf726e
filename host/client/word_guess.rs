//! `porthost client word-guess HOST:PORT [--name NAME]`: the lecture's `WordGuessClient`.
//!
//! It prints every server message as it arrives, also while waiting for the user, and asks for a
//! move on `/turn`: one character is sent as `/letter`, more as `/word`. It works the same at a
//! terminal and with piped stdin: input lines are used in order as they are needed, and the end
//! of stdin matters only when a move (or a name) is needed and none is left.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Longest line the client accepts from the server (a results block line is short; this only
/// bounds a misbehaving server).
const MAX_SERVER_LINE: u64 = 64 * 1024;

/// A line from the server, as the protocol defines it.
#[derive(Debug, PartialEq, Eq)]
enum ServerLine<'a> {
    Turn,
    Quit,
    /// A message to print; `rejected` when it refuses our name.
    Message {
        text: &'a str,
        rejected: bool,
    },
    /// A command we do not know: the lecture's `ServerError`.
    Unknown(&'a str),
}

fn parse(line: &str) -> ServerLine<'_> {
    match line {
        "/turn" => ServerLine::Turn,
        "/quit" => ServerLine::Quit,
        command if command.starts_with('/') => ServerLine::Unknown(command),
        text => ServerLine::Message {
            text,
            rejected: text.starts_with("Name rejected:"),
        },
    }
}

/// The command for what the user typed: one character is a letter, more is a word.
fn command_for(input: &str) -> Option<String> {
    let input = input.trim();
    match input.chars().count() {
        0 => None,
        1 => Some(format!("/letter {input}\n")),
        _ => Some(format!("/word {input}\n")),
    }
}

/// What the client is waiting for from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Name,
    Move,
}

pub fn run(addr: &str, name: Option<String>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(play(addr, name))
}

async fn play(addr: &str, name: Option<String>) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (read_half, mut write_half) = stream.into_split();
    let mut server = BufReader::new(read_half).take(MAX_SERVER_LINE);
    let interactive = std::io::stdin().is_terminal();
    let mut input = stdin_lines();
    let mut queued: VecDeque<String> = VecDeque::new();
    let mut stdin_open = true;
    let mut need = match name {
        Some(name) => {
            write_half.write_all(format!("{name}\n").as_bytes()).await?;
            Need::Nothing
        }
        None => {
            prompt(interactive, "Your name: ")?;
            Need::Name
        }
    };
    let mut line = Vec::new();
    loop {
        // Answer what is needed as soon as input for it is there.
        if need != Need::Nothing {
            if let Some(typed) = queued.pop_front() {
                let command = match need {
                    Need::Name => Some(format!("{}\n", typed.trim())),
                    _ => command_for(&typed),
                };
                match command {
                    Some(command) => {
                        write_half
                            .write_all(command.as_bytes())
                            .await
                            .with_context(|| format!("{addr} closed the connection"))?;
                        need = Need::Nothing;
                    }
                    None => prompt(interactive, "Type a letter or a word: ")?,
                }
                continue;
            }
            if !stdin_open {
                bail!(
                    "standard input ended, but the game needs your {}",
                    match need {
                        Need::Name => "name",
                        _ => "move",
                    }
                );
            }
        }
        tokio::select! {
            // Cancel-safe: bytes of a partial line stay in `line` until the rest arrives.
            read = server.read_until(b'\n', &mut line) => {
                if read? == 0 {
                    if server.limit() == 0 {
                        bail!("{addr} sent a line longer than {MAX_SERVER_LINE} bytes");
                    }
                    bail!("{addr} closed the connection before the game ended");
                }
                if line.last() != Some(&b'\n') {
                    continue;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                server.set_limit(MAX_SERVER_LINE);
                match parse(text.trim_end_matches(['\n', '\r'])) {
                    ServerLine::Turn => {
                        need = Need::Move;
                        prompt(interactive, "Your move (a letter or a word): ")?;
                    }
                    ServerLine::Quit => return Ok(()),
                    ServerLine::Message { text, rejected } => {
                        println!("{text}");
                        if rejected {
                            need = Need::Name;
                            prompt(interactive, "Your name: ")?;
                        }
                    }
                    ServerLine::Unknown(command) => {
                        bail!("{addr} sent {command:?}, which is neither a message nor a known command");
                    }
                }
            }
            typed = input.recv(), if stdin_open => match typed {
                Some(typed) => queued.push_back(typed),
                None => stdin_open = false,
            },
        }
    }
}

fn prompt(interactive: bool, text: &str) -> std::io::Result<()> {
    if interactive {
        print!("{text}");
    }
    std::io::stdout().flush()
}

/// Reads stdin on a thread of its own (blocking reads cannot be cancelled), so server messages
/// keep printing while the user types.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines() {
        assert_eq!(parse("/turn"), ServerLine::Turn);
        assert_eq!(parse("/quit"), ServerLine::Quit);
        assert_eq!(parse("/win"), ServerLine::Unknown("/win"));
        assert_eq!(
            parse("Word: a**a"),
            ServerLine::Message {
                text: "Word: a**a",
                rejected: false
            }
        );
        assert!(matches!(
            parse("Name rejected: \"Ann\" is taken; send another name"),
            ServerLine::Message { rejected: true, .. }
        ));
    }

    #[test]
    fn one_character_is_a_letter_more_is_a_word() {
        assert_eq!(command_for("a\n").as_deref(), Some("/letter a\n"));
        assert_eq!(command_for(" ї ").as_deref(), Some("/letter ї\n"));
        assert_eq!(command_for("abba").as_deref(), Some("/word abba\n"));
        assert_eq!(command_for("  "), None);
    }
}
