//! The word-guess game: players take turns guessing the letters of a hidden word, or the whole
//! word, and score points for what they reveal. Many games run at once on one port: clients
//! name themselves in a lobby, and every `players` of them start a game (a room) of their own.
//!
//! - [`game`]: one game as a pure state machine (no I/O, channels or clocks); public so that
//!   the fuzz target `word_guess` can drive it with any moves of any players.
//! - `protocol`: every string of the protocol, defined once: the server's messages and its
//!   parsing of client lines, and, public, what clients need (the bundled client and the
//!   bench's bots use it): commands, the reading of server lines, the form checks.
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
//! lowercase) are shown bare. Every string below is defined once, in [`protocol`], which the
//! bundled client and the bench's bots use too.
//!
//! The client sends its name first, then only `/letter X` (one letter) or `/word WORD` (letters
//! only), the argument after one space. The server sends the commands `/turn` (your move) and
//! `/quit` (game over, the connection closes), and these messages (`Ann`, `Bob`: names; `N`,
//! `M`, `T`: numbers; `x`: a letter):
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
//! Alphabet: Latin, 4 letters                            the word's script(s) and length; also
//!                                                       "Latin and Cyrillic", "1 letter"
//! Word: ab*a                                            the word, hidden letters as *
//! Turn: "Ann"                                           to all before each move; when turns
//!                                                       are timed, with the limit:
//!                                                       Turn: "Ann" (30 s)
//! /turn                                                 then to the mover alone
//! "Ann": letter x                                       a move, then one outcome line:
//! "Ann": word "abba"
//! Hit: "Ann" scores N (total M) and moves again
//! Miss: no x in the word
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
//! line, an `Alphabet:` line, a `Word:` line and a `Turn:` line; a timeout or a departure of
//! the mover is followed by a `Turn:` line. Private errors are `Error: ` and a reason: "only
//! commands are accepted: /letter X or /word WORD", "unknown command \"/x\", the commands are
//! /letter X and /word WORD", "missing argument, send /letter X", "extra argument, send /letter
//! X with one space before it", "\"ab\" is not a letter", "\"a1\" is not a word:
//! letters only", "the letter x was already tried (tried: x, y)", "not your turn, waiting for
//! \"Bob\"", "the game has not started, waiting for 1 more player"; the mover then gets
//! `/turn` again.
//!
//! # Whose rule is it
//!
//! A rule that `nc` players meet too is the server's; the bundled client only saves its user
//! from slips. The server refuses, with the turn kept:
//! - a line that is not a move: not `/letter` with one letter or `/word` with letters only
//!   (nothing else could ever be right);
//! - a letter already tried in this game, by anyone. The lecture's rules are silent on it; as a
//!   move it would tell nobody anything and only pass the turn, so it is no move at all.
//!
//! The server plays, as the lecture's rules say, a letter that is not in the word (a miss) and
//! a wrong word of any length (the score drops to 0). The client refuses those before sending
//! when they cannot be meant: a letter or word of another alphabet than the one announced
//! (Latin `o` on a Cyrillic word), or a word of another length. It also shows the letters
//! tried, and refuses a tried letter itself with the server's own reason, without a round trip.

pub mod game;
mod hall;
pub mod protocol;
#[cfg(test)]
mod tests;
mod words;

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lines::{Flow, Inbox, LineHandler, LineServer, LineService};
use crate::{Needs, OptionDoc, Options, Registration, Service, Stat};
use game::{PlayerId, Word};
use hall::Hall;

/// Messages a client may have waiting before it counts as stuck and is dropped. Generous, since
/// a whole move is one message.
const QUEUE: usize = 256;
const MAX_PLAYERS: i64 = 16;
const DEFAULT_PLAYERS: usize = 2;
/// A day: a turn longer than that is a player who has gone.
const MAX_TURN_TIMEOUT_SECS: i64 = 86_400;
/// A word list file larger than this is refused rather than read into memory.
const MAX_WORDS_FILE_BYTES: u64 = 16 << 20;
/// Bad words reported from one list; the rest are counted.
const MAX_BAD_WORDS_SHOWN: usize = 5;

/// The keys of the `options` table.
const OPTIONS: [&str; 4] = ["players", "words", "words_file", "turn_timeout_secs"];

/// The options, checked: a game cannot start with a bad word list, so it is refused at build.
#[derive(Debug)]
struct Settings {
    players: usize,
    words: Vec<Word>,
    turn_timeout: Option<Duration>,
}

impl Settings {
    /// Checks every option and reports every problem, not only the first, joined with "; ".
    /// The table is read by hand rather than by serde, which stops at the first error.
    fn new(table: &toml::Table, base_dir: &Path) -> Result<Settings, String> {
        let mut errors = Vec::new();
        for key in table.keys().filter(|k| !OPTIONS.contains(&k.as_str())) {
            let expected: Vec<String> = OPTIONS.iter().map(|k| format!("`{k}`")).collect();
            errors.push(format!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ));
        }
        let players = match table.get("players") {
            None => Some(DEFAULT_PLAYERS),
            Some(value) => whole_number(value, 1..=MAX_PLAYERS)
                .map(|n| n as usize)
                .map_err(|got| {
                    errors.push(format!(
                        "players must be a whole number from 1 to {MAX_PLAYERS}, not {got}"
                    ))
                })
                .ok(),
        };
        let turn_timeout = match table.get("turn_timeout_secs") {
            None => Some(None),
            Some(value) => whole_number(value, 1..=MAX_TURN_TIMEOUT_SECS)
                .map(|secs| Some(Duration::from_secs(secs as u64)))
                .map_err(|got| {
                    errors.push(format!(
                        "turn_timeout_secs must be a whole number of seconds from 1 to \
                         {MAX_TURN_TIMEOUT_SECS}, not {got}"
                    ))
                })
                .ok(),
        };
        let words = word_list(table, base_dir)
            .map_err(|e| errors.extend(e))
            .ok();
        match (players, words, turn_timeout) {
            (Some(players), Some(words), Some(turn_timeout)) if errors.is_empty() => Ok(Settings {
                players,
                words,
                turn_timeout,
            }),
            _ => Err(errors.join("; ")),
        }
    }
}

/// An integer in `range`, or how the value reads in a message.
fn whole_number(value: &toml::Value, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    match value {
        toml::Value::Integer(n) if range.contains(n) => Ok(*n),
        other => Err(describe(other)),
    }
}

/// A TOML value as a message names it: `0`, `the string "2"`, `a list`.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// The words from `words` or `words_file`, or the built-in list; every bad word is an error.
fn word_list(table: &toml::Table, base_dir: &Path) -> Result<Vec<Word>, Vec<String>> {
    let words = match (table.get("words"), table.get("words_file")) {
        (Some(_), Some(_)) => {
            return Err(vec!["give either words or words_file, not both".to_owned()]);
        }
        (Some(toml::Value::Array(list)), None) => {
            let entries = list.iter().map(|entry| match entry {
                toml::Value::String(text) => Word::new(text),
                other => Err(format!(
                    "{} is not a word: words are strings",
                    describe(other)
                )),
            });
            checked_words(entries, |e| format!("words: {e}"))?
        }
        (Some(other), None) => {
            return Err(vec![format!(
                "words must be a list of strings, not {}",
                describe(other)
            )]);
        }
        (None, Some(toml::Value::String(path))) => read_words(&base_dir.join(path))?,
        (None, Some(other)) => {
            return Err(vec![format!(
                "words_file must be a path (a string), not {}",
                describe(other)
            )]);
        }
        (None, None) => checked_words(words::BUILT_IN.iter().map(|w| Word::new(w)), |e| e)?,
    };
    if words.is_empty() {
        return Err(vec![
            "the word list is empty: give at least one word".to_owned(),
        ]);
    }
    Ok(words)
}

/// The words, or an error for each bad one (the first few, then how many more).
fn checked_words(
    entries: impl Iterator<Item = Result<Word, String>>,
    context: impl Fn(String) -> String,
) -> Result<Vec<Word>, Vec<String>> {
    let mut words = Vec::new();
    let mut errors = Vec::new();
    let mut more = 0;
    for entry in entries {
        match entry {
            Ok(word) => words.push(word),
            Err(e) if errors.len() < MAX_BAD_WORDS_SHOWN => errors.push(context(e)),
            Err(_) => more += 1,
        }
    }
    if more > 0 {
        errors.push(context(format!("and {more} more bad words")));
    }
    if errors.is_empty() {
        Ok(words)
    } else {
        Err(errors)
    }
}

/// One word a line; blank lines are skipped and spaces around a word ignored.
fn read_words(path: &Path) -> Result<Vec<Word>, Vec<String>> {
    let context = format!("words_file {:?}", path.display().to_string());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_WORDS_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| vec![format!("{context}: cannot read it: {e}")])?;
    if text.len() as u64 > MAX_WORDS_FILE_BYTES {
        return Err(vec![format!(
            "{context}: larger than {MAX_WORDS_FILE_BYTES} bytes"
        )]);
    }
    let entries = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Word::new(line.trim()).map_err(|e| format!("line {}: {e}", i + 1)));
    checked_words(entries, |e| format!("{context} {e}"))
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
            alone_with: Some("options = { players = 1 }"),
        }
    }

    /// Players wait on their socket and on each other at once: the async form, under every
    /// model (see the module doc).
    fn pushes(&self) -> bool {
        true
    }

    fn stats(&self) -> Vec<Stat> {
        let stats = self
            .hall
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats();
        vec![
            Stat {
                name: "players",
                help: "Players named and connected, in the lobby or in a game.",
                counter: false,
                value: stats.players,
            },
            Stat {
                name: "games_waiting",
                help: "Games waiting in the lobby for players (0 or 1).",
                counter: false,
                value: stats.waiting,
            },
            Stat {
                name: "games_playing",
                help: "Games in progress.",
                counter: false,
                value: stats.playing,
            },
            Stat {
                name: "games_started",
                help: "Games started.",
                counter: true,
                value: stats.started,
            },
            Stat {
                name: "games_finished",
                help: "Games over: won, or left by every player.",
                counter: true,
                value: stats.finished,
            },
        ]
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
    let settings = Settings::new(&options.parse()?, options.base_dir())?;
    let players = settings.players;
    let hall = Arc::new(Mutex::new(Hall::new(settings)));
    Ok(Arc::new(LineServer(WordGuess { hall, players })))
}

porthost_services::register!(Registration {
    name: "word-guess",
    summary: "multiplayer word guessing: letters or the whole word, turns, scores, many games per port",
    options: &[
        OptionDoc {
            name: "players",
            default: "2",
            meaning: "players per game, 1 to 16; a game starts when that many have joined",
        },
        OptionDoc {
            name: "words",
            default: "60 built-in Ukrainian and English words",
            meaning: "the words to guess, e.g. [\"socket\", \"сервер\"]",
        },
        OptionDoc {
            name: "words_file",
            default: "none",
            meaning: "a file of words, one a line, relative to the config file (instead of words)",
        },
        OptionDoc {
            name: "turn_timeout_secs",
            default: "no limit",
            meaning: "seconds a player has for a move before the turn passes, 1 to 86400",
        },
    ],
    build,
});
