//! The word-guess game: players take turns guessing the letters of a hidden word, or the whole
//! word, and score points for what they reveal. Many games run at once on one port: clients
//! name themselves in a lobby, and every `players` of them start a game (a room) of their own.
//!
//! - `game`: one game as a pure state machine (no I/O, channels or clocks).
//! - `protocol`: command and name parsing, and the text of every message.
//! - `hall`: the lobby and the rooms of one port behind one mutex, and the per-client queues.
//! - `words`: the built-in word list.
//! - this file: the options, and the [`LineHandler`] that connects a session to the hall.
//!
//! Each client has one bounded queue of outbound messages, written by its own session. Other
//! sessions only `try_send` to it, so a client that stops reading cannot stall anyone: when its
//! queue is full it is dropped from its game, like a player who left. Turn timeouts run on the
//! mover's own session timer. No task is spawned, so the service runs the same under every
//! concurrency model that can share state.
//!
//! # Protocol
//!
//! UTF-8 text lines ending in `\n`. Lines starting with `/` are commands; every other line
//! from the server is a message to show as it is, and none starts with `/`. Names and guessed
//! words from clients are shown quoted and escaped like Rust string literals (`"Ann"`,
//! `"a\"b"`, control characters as `\u{1b}`); letters and the hidden word (letters only, in
//! lowercase) are shown bare.
//!
//! The client sends its name first, then only `/letter X` (one letter) or `/word WORD`, the
//! argument after one space. The server sends the commands `/turn` (your move) and `/quit`
//! (game over, the connection closes), and these messages (`Ann`, `Bob`: names; `N`, `M`:
//! numbers; `x`: a letter):
//!
//! ```text
//! Welcome to word-guess! Send your name.                on connect
//! Name rejected: it is empty; send another name         a bad name; also: "it is longer than
//!                                                       32 characters", "it starts with '/'",
//!                                                       "\"Ann\" is taken"
//! "Ann" joined (N/M)                                    to the lobby: N waiting of M needed
//! Waiting for 1 more player                             follows when N < M ("2 more players")
//! "Ann" left (N/M)                                      left the lobby, then a Waiting line
//! Game starts: "Ann", "Bob"                             players in turn order
//! Word: ab*a                                            the word, hidden letters as *
//! Turn: "Ann"                                           to all before each move; the mover
//! /turn                                                 then gets this line
//! "Ann": letter x                                       a move, then one outcome line:
//! "Ann": word "abba"
//! Hit: "Ann" scores N (total M) and moves again
//! Miss: no x in the word
//! Miss: x is already revealed
//! Wrong: "Ann" drops to 0 points
//! Win: "Ann" scores N + bonus M (total T)
//! "Ann" ran out of time                                 a turn timeout
//! "Ann" left the game                                   a disconnect (or a full queue)
//! Error: not your turn, waiting for "Bob"               private; other reasons below
//! Game over, the word was abba                          the results block after a win
//! Results:
//! "Ann": 2                                              one line per player still in the
//!                                                       game, in turn order
//! "Bob": 6
//! Winner: "Bob"
//! /quit
//! ```
//!
//! A move is announced as its line, its outcome line and a `Word:` line, then either a `Turn:`
//! line (and `/turn` to the mover) or, after a win, the results block. The game start is its
//! line, a `Word:` line and a `Turn:` line; a timeout or a departure of the mover is followed
//! by a `Turn:` line. Private errors are `Error: ` and a reason: "only commands are accepted:
//! /letter X or /word WORD", "unknown command \"/x\", the commands are /letter X and /word
//! WORD", "missing argument, send /letter X", "extra argument, send /letter X with one space
//! before it", "\"ab\" is not exactly one letter", "not your turn, waiting for \"Bob\"", "the
//! game has not started, waiting for 1 more player"; the mover then gets `/turn` again.

mod game;
mod hall;
mod protocol;
#[cfg(test)]
mod tests;
mod words;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lines::{Flow, Inbox, LineHandler, LineServer, LineService};
use crate::{Needs, Options, Registration, Service};
use game::{PlayerId, Word};
use hall::Hall;

/// Messages a client may have waiting before it counts as stuck and is dropped. Generous, since
/// a whole move is one message.
const QUEUE: usize = 256;
const MAX_PLAYERS: usize = 16;
/// A word list file larger than this is refused rather than read into memory.
const MAX_WORDS_FILE_BYTES: u64 = 16 << 20;

/// The `options` table as written in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    #[serde(default = "default_players")]
    players: i64,
    words: Option<Vec<String>>,
    words_file: Option<PathBuf>,
    turn_timeout_secs: Option<i64>,
}

fn default_players() -> i64 {
    2
}

/// The options, checked: a game cannot start with a bad word list, so it is refused at build.
#[derive(Debug)]
struct Settings {
    players: usize,
    words: Vec<Word>,
    turn_timeout: Option<Duration>,
}

impl Settings {
    fn new(raw: RawOptions, base_dir: &Path) -> Result<Settings, String> {
        let players = usize::try_from(raw.players)
            .ok()
            .filter(|n| (1..=MAX_PLAYERS).contains(n))
            .ok_or_else(|| format!("players must be 1 to {MAX_PLAYERS}, got {}", raw.players))?;
        let words = match (raw.words, raw.words_file) {
            (Some(_), Some(_)) => {
                return Err("give either words or words_file, not both".to_owned());
            }
            (Some(list), None) => list
                .iter()
                .map(|w| Word::new(w).map_err(|e| format!("words: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            (None, Some(path)) => read_words(&base_dir.join(path))?,
            (None, None) => words::BUILT_IN
                .iter()
                .map(|w| Word::new(w))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if words.is_empty() {
            return Err("the word list is empty: give at least one word".to_owned());
        }
        let turn_timeout = raw
            .turn_timeout_secs
            .map(|secs| {
                u64::try_from(secs)
                    .ok()
                    .filter(|&secs| secs >= 1)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        format!(
                            "turn_timeout_secs must be at least 1 (leave it out for no limit), got {secs}"
                        )
                    })
            })
            .transpose()?;
        Ok(Settings {
            players,
            words,
            turn_timeout,
        })
    }
}

/// One word a line; blank lines are skipped and spaces around a word ignored.
fn read_words(path: &Path) -> Result<Vec<Word>, String> {
    let context = format!("words_file {:?}", path.display().to_string());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_WORDS_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| format!("{context}: cannot read it: {e}"))?;
    if text.len() as u64 > MAX_WORDS_FILE_BYTES {
        return Err(format!(
            "{context}: larger than {MAX_WORDS_FILE_BYTES} bytes"
        ));
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            Word::new(line.trim()).map_err(|e| format!("{context} line {}: {e}", i + 1))
        })
        .collect()
}

#[derive(Debug)]
struct WordGuess {
    hall: Arc<Mutex<Hall>>,
    players: usize,
}

impl LineService for WordGuess {
    type Handler = Handler;

    /// Players share their game's state, and a game needs all its players connected at once.
    fn needs(&self) -> Needs {
        Needs {
            shared_state: true,
            clients_at_once: self.players,
        }
    }

    /// Players wait on their socket and on each other at once: the async form, under every
    /// model (see the module doc).
    fn pushes(&self) -> bool {
        true
    }

    fn connect(&self, _peer: std::net::SocketAddr) -> Handler {
        let (outbox, inbox) = mpsc::channel(QUEUE);
        Handler {
            hall: Arc::clone(&self.hall),
            outbox: Some(outbox),
            inbox,
            id: None,
        }
    }
}

/// One client's session. Until the client has a name it is answered through `reply`; from
/// then on everything it gets, private errors included, goes through its queue, so the order
/// of its messages is the order the hall sent them in.
#[derive(Debug)]
struct Handler {
    hall: Arc<Mutex<Hall>>,
    /// Keeps the queue open until the hall holds its sender. After that the hall's sender is the
    /// only one, and dropping it (game over, or a full queue) closes the connection once the
    /// queue is written.
    outbox: Option<mpsc::Sender<Arc<str>>>,
    inbox: Inbox,
    /// Set once the name is accepted.
    id: Option<PlayerId>,
}

impl Handler {
    /// A panic in one session must not take every other game on the port down with it, so a
    /// poisoned lock is used as it is.
    fn hall(&self) -> MutexGuard<'_, Hall> {
        self.hall.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LineHandler for Handler {
    fn setup(&mut self, reply: &mut Vec<u8>) -> Flow {
        reply.extend_from_slice(protocol::welcome().as_bytes());
        Flow::Continue
    }

    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow {
        if let Some(id) = self.id {
            self.hall().line(id, line);
        } else if let Some(outbox) = &self.outbox {
            let joined = self.hall().join(line, outbox);
            match joined {
                Ok(id) => {
                    self.id = Some(id);
                    self.outbox = None;
                }
                Err(e) => reply.extend_from_slice(protocol::name_rejected(&e).as_bytes()),
            }
        }
        Flow::Continue
    }

    fn finish(&mut self) {
        if let Some(id) = self.id {
            self.hall().leave(id);
        }
    }

    fn inbox(&mut self) -> Option<&mut Inbox> {
        Some(&mut self.inbox)
    }

    fn timer(&mut self) -> Option<Instant> {
        let id = self.id?;
        self.hall().deadline(id)
    }

    fn on_timer(&mut self, _reply: &mut Vec<u8>) -> Flow {
        if let Some(id) = self.id {
            self.hall().expire(id, Instant::now());
        }
        Flow::Continue
    }
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let settings = Settings::new(options.parse()?, options.base_dir())?;
    let players = settings.players;
    let hall = Arc::new(Mutex::new(Hall::new(settings)));
    Ok(Arc::new(LineServer(WordGuess { hall, players })))
}

inventory::submit! {
    Registration {
        name: "word-guess",
        summary: "multiplayer word guessing: letters or the whole word, turns, scores, many games per port",
        build,
    }
}
