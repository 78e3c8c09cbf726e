//! `porthost client word-guess HOST:PORT [--name NAME]`: the lecture's `WordGuessClient`.
//!
//! The game logic is a pure state machine, [`Session`]: a server line, a user line, the end of
//! input or a timeout goes in; a [`Step`] comes out (lines to print, lines to send, the prompt
//! to show, whether to stop). [`Screen`] turns steps into text, and [`play`] only moves bytes
//! between the socket, the user's input and the output. The rules:
//!
//! - The first server line must be the game's welcome. A palindrome server answers the name
//!   with `1`: the client says the server does not speak the game and exits non-zero. Silence
//!   is a busy port (a sequential one serving someone else, or a full one): the connection
//!   waits in the listen backlog, so after [`WELCOME_WAIT`] the client says it is waiting to be
//!   accepted, and waits on.
//! - Input is used only when the game asks for it: the name, and a move after `/turn`. At a
//!   terminal ([`Input::Typed`]) a line typed when nothing is asked for is discarded with a
//!   note, never sent later, since by then the game has moved on. A line still being typed
//!   when a question comes was typed before it: the client reads a terminal key by key
//!   ([`typing`]), so it drops that line with the same note instead of gluing it to the
//!   answer. Piped input ([`Input::Script`]) is a script: its lines answer the questions in
//!   order.
//! - A move is checked before it is sent: one letter, or a word of the announced length, made
//!   of letters of the announced alphabet; `/letter x` and `/word xyz` typed out work too. A
//!   letter already tried is refused with the server's own reason (the server refuses it as
//!   well, for `nc` players: see "Whose rule is it" in the service's docs). Otherwise the client
//!   explains and asks again. The prompt shows the letters tried so far.
//! - Server messages print on lines of their own: a prompt on screen (and what is typed after
//!   it) is cleared first and drawn again after them. Ctrl-D (or Ctrl-C) at a terminal leaves
//!   the game, ending the prompt's line first.
//!
//! Every protocol string comes from the service's [`protocol`] module.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use porthost_services::word_guess::protocol::{
    self, Command, Script, ServerLine, fold, letter_list, letters, script_names,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::excerpt;
use super::typing::{Edit, LineEditor, RawTerminal};

/// Longest line the client accepts from the server (a results block line is short; this only
/// bounds a misbehaving server).
const MAX_SERVER_LINE: u64 = 64 * 1024;
/// Longest input line kept; the rest of a longer line is dropped (no move is that long).
const MAX_INPUT_LINE: u64 = 64 * 1024;
/// How long the welcome may take before the client says it waits: a game server welcomes at
/// once when it accepts, so silence means the connection is still queued.
pub const WELCOME_WAIT: Duration = Duration::from_secs(5);

/// Where the user's lines come from, which decides what a line nobody asked for means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A person at a terminal: a line typed when nothing is asked for is discarded with a note.
    Typed,
    /// A script (piped stdin): its lines answer the game's questions in order.
    Script,
}

/// What the game is waiting for from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Name,
    Move,
}

/// The hidden word's make-up, from the server's `Alphabet:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Puzzle {
    scripts: Vec<Script>,
    letters: usize,
}

/// How the client stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The game is over, or the user left: exit 0.
    Done,
    /// Exit non-zero with this message.
    Failed(String),
}

/// What one event leads to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Lines to print, in order: server messages and the client's own notes.
    pub print: Vec<String>,
    /// Lines to send to the server, without their `\n`.
    pub send: Vec<String>,
    /// The prompt to have on screen after this step (only at a terminal).
    pub prompt: Option<String>,
    /// Whether this step asks a question that was not asked before it: a line being typed
    /// was typed for no question and is dropped (see [`Session::dropped`]).
    pub asks: bool,
    pub end: Option<End>,
}

/// One client's view of its game.
#[derive(Debug)]
pub struct Session {
    /// The server's address, for messages.
    server: String,
    input: Input,
    welcomed: bool,
    /// Whether the user was told that the connection waits to be accepted.
    told_waiting: bool,
    /// Whether the name went out with the connection (given on the command line).
    name_given: bool,
    asking: Option<Ask>,
    /// Whether the last step had a prompt on screen.
    prompted: bool,
    /// Lines of a script not used yet.
    script: VecDeque<String>,
    input_ended: bool,
    puzzle: Option<Puzzle>,
    /// The letters tried in this game, by anyone, folded, in order.
    tried: Vec<char>,
}

impl Session {
    /// A session on a fresh connection to `server`. A name given up front is sent at once,
    /// before the welcome, so a server that answers it with anything else is caught at its
    /// first line.
    pub fn new(server: &str, input: Input, name: Option<&str>) -> (Session, Step) {
        let session = Session {
            server: server.to_owned(),
            input,
            welcomed: false,
            told_waiting: false,
            name_given: name.is_some(),
            asking: None,
            prompted: false,
            script: VecDeque::new(),
            input_ended: false,
            puzzle: None,
            tried: Vec::new(),
        };
        let mut step = Step::default();
        if let Some(name) = name {
            step.send.push(name.trim().to_owned());
        }
        (session, step)
    }

    /// Whether the welcome is still to come and the user not yet told about the wait, so
    /// [`WELCOME_WAIT`] matters.
    pub fn awaiting_welcome(&self) -> bool {
        !self.welcomed && !self.told_waiting
    }

    /// A line from the server, without its `\n`.
    pub fn server_line(&mut self, line: &str) -> Step {
        let mut step = Step::default();
        if !self.welcomed {
            if line != protocol::WELCOME {
                return fail(format!(
                    "{} does not speak word-guess: its first line was {}, not the game's welcome",
                    self.server,
                    excerpt(line)
                ));
            }
            self.welcomed = true;
            if self.name_given {
                // The name went out already: "Send your name." would ask for it again.
                step.print.push(protocol::GREETING.to_owned());
            } else {
                step.print.push(line.to_owned());
                self.asking = Some(Ask::Name);
            }
            return self.then_answer(step);
        }
        match protocol::server_line(line) {
            ServerLine::YourTurn => self.asking = Some(Ask::Move),
            ServerLine::Quit => step.end = Some(End::Done),
            ServerLine::UnknownCommand(command) => {
                return fail(format!(
                    "{} sent {}, which is neither a message nor a command of the game",
                    self.server,
                    excerpt(command)
                ));
            }
            other => {
                step.print.push(line.to_owned());
                match other {
                    ServerLine::NameRejected => self.asking = Some(Ask::Name),
                    ServerLine::Alphabet { scripts, letters } => {
                        self.puzzle = Some(Puzzle { scripts, letters });
                    }
                    // The turn moved on (ours ran out of time): a move typed now is too late.
                    ServerLine::TurnOf { .. } if self.asking == Some(Ask::Move) => {
                        self.asking = None;
                    }
                    ServerLine::Letter { letter, .. } if !self.tried.contains(&fold(letter)) => {
                        self.tried.push(fold(letter));
                    }
                    _ => {}
                }
            }
        }
        self.then_answer(step)
    }

    /// A line the user typed (or the script gave), without its `\n`.
    pub fn user_line(&mut self, line: &str) -> Step {
        let mut step = Step::default();
        match (self.input, self.asking) {
            (Input::Script, _) => {
                self.script.push_back(line.to_owned());
                return self.then_answer(step);
            }
            (Input::Typed, Some(ask)) => self.answer(ask, line, &mut step),
            (Input::Typed, None) if line.trim().is_empty() => {}
            (Input::Typed, None) => step.print.push(Session::dropped(line)),
        }
        self.finish(step)
    }

    /// The note for a line typed when nothing was asked for: it is not sent, then or later.
    /// A line still being typed when a question comes was typed before it, and is dropped
    /// with the same note.
    pub fn dropped(line: &str) -> String {
        format!("Not your turn yet: {} was not sent.", excerpt(line.trim()))
    }

    /// The user's input ended. Ctrl-D at a terminal leaves the game; a script that ends fails
    /// only once the game needs a line it no longer has.
    pub fn input_ended(&mut self) -> Step {
        self.input_ended = true;
        let mut step = Step::default();
        match self.input {
            Input::Typed => {
                if self.welcomed {
                    step.print.push("You left the game.".to_owned());
                }
                step.end = Some(End::Done);
                self.finish(step)
            }
            Input::Script => self.then_answer(step),
        }
    }

    /// The server closed the connection (without `/quit`).
    pub fn server_closed(&mut self) -> Step {
        if self.welcomed {
            fail(format!(
                "{} closed the connection before the game ended",
                self.server
            ))
        } else {
            fail(format!(
                "{} closed the connection without the game's welcome: it does not speak word-guess",
                self.server
            ))
        }
    }

    /// [`WELCOME_WAIT`] passed since the connection was made: connected but not welcomed is
    /// queued, so the user hears why nothing happens, and the client waits on.
    pub fn welcome_timed_out(&mut self) -> Step {
        let mut step = Step::default();
        if !self.welcomed && !self.told_waiting {
            self.told_waiting = true;
            step.print.push(format!(
                "Connected to {}; waiting for the server to accept you (the port is busy).",
                self.server
            ));
        }
        self.finish(step)
    }

    /// Lets a script answer what is now asked, then completes the step.
    fn then_answer(&mut self, mut step: Step) -> Step {
        if self.input == Input::Script {
            while let Some(ask) = self.asking {
                match self.script.pop_front() {
                    Some(line) => self.answer(ask, &line, &mut step),
                    None if self.input_ended => {
                        let needed = match ask {
                            Ask::Name => "name",
                            Ask::Move => "move",
                        };
                        // What this step has to say (why the last lines were refused, say)
                        // is still said.
                        step.end = fail(format!(
                            "standard input ended, but the game needs your {needed}"
                        ))
                        .end;
                        return step;
                    }
                    None => break,
                }
            }
        }
        self.finish(step)
    }

    /// Answers what is asked with one line: sends it, or says why not and keeps asking.
    fn answer(&mut self, ask: Ask, line: &str, step: &mut Step) {
        match ask {
            // The server trims names and says what is wrong with one: it decides.
            Ask::Name => {
                step.send.push(line.trim().to_owned());
                self.asking = None;
            }
            Ask::Move => match self.check_move(line) {
                Ok(command) => {
                    step.send.push(command.to_string());
                    self.asking = None;
                }
                Err(reason) => step.print.push(reason),
            },
        }
    }

    /// The command for a typed move, or why it is not sent. One letter is a letter guess, more
    /// is a word guess, and a line starting with `/` is a command typed out.
    fn check_move(&self, line: &str) -> Result<Command, String> {
        let text = line.trim();
        let command = if text.is_empty() {
            return Err("Type one letter, or the whole word.".to_owned());
        } else if text.starts_with('/') {
            protocol::parse(text)
        } else if text.chars().count() == 1 {
            protocol::check_letter(text).map(Command::Letter)
        } else {
            protocol::check_word(text).map(|word| Command::Word(word.to_owned()))
        };
        let command = command.map_err(|e| sentence(&e.to_string()))?;
        match &command {
            Command::Letter(letter) => {
                self.check_alphabet(&letter.to_string())?;
                if self.tried.contains(&fold(*letter)) {
                    return Err(sentence(&protocol::already_tried(*letter, &self.tried)));
                }
            }
            Command::Word(word) => {
                let n = word.chars().count();
                if let Some(puzzle) = self.puzzle.as_ref().filter(|p| p.letters != n) {
                    return Err(format!(
                        "{} has {}, but the word has {}.",
                        excerpt(word),
                        letters(n),
                        puzzle.letters
                    ));
                }
                self.check_alphabet(word)?;
            }
        }
        Ok(command)
    }

    /// Refuses letters of another script than the word's: Latin `o` on a Cyrillic word is a
    /// slip of the keyboard layout, not a guess.
    fn check_alphabet(&self, guess: &str) -> Result<(), String> {
        let Some(puzzle) = &self.puzzle else {
            return Ok(());
        };
        if puzzle.scripts.iter().any(|s| !s.is_known()) {
            return Ok(());
        }
        let Some(stray) = guess
            .chars()
            .map(Script::of)
            .find(|script| !puzzle.scripts.contains(script))
        else {
            return Ok(());
        };
        let what = if guess.chars().count() == 1 {
            format!("is a {} letter", stray.name())
        } else {
            format!("has {} letters", stray.name())
        };
        Err(format!(
            "{} {what}, but the word is {}: check the keyboard layout.",
            excerpt(guess),
            script_names(&puzzle.scripts)
        ))
    }

    /// The step when nothing happened in the game (a key edited the line being typed): the
    /// prompt stays.
    pub fn unchanged(&mut self) -> Step {
        self.finish(Step::default())
    }

    /// What to ask the user now, at a terminal.
    pub fn prompt(&self) -> Option<String> {
        if self.input != Input::Typed {
            return None;
        }
        match self.asking? {
            Ask::Name => Some("Your name: ".to_owned()),
            Ask::Move => {
                let word = match &self.puzzle {
                    Some(puzzle) => format!("the {}-letter word", puzzle.letters),
                    None => "the word".to_owned(),
                };
                let tried = match self.tried.as_slice() {
                    [] => String::new(),
                    tried => format!("; tried: {}", letter_list(tried)),
                };
                Some(format!("Your move (a letter or {word}{tried}): "))
            }
        }
    }

    /// Completes a step with the prompt that belongs after it.
    fn finish(&mut self, mut step: Step) -> Step {
        step.prompt = match step.end {
            Some(_) => None,
            None => self.prompt(),
        };
        step.asks = step.prompt.is_some() && !self.prompted;
        self.prompted = step.prompt.is_some();
        step
    }
}

fn fail(message: String) -> Step {
    Step {
        end: Some(End::Failed(message)),
        ..Step::default()
    }
}

/// The server's reasons start in lowercase, to follow `Error: `; as notes of their own they
/// start with a capital and end with a full stop.
fn sentence(reason: &str) -> String {
    let mut chars = reason.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// Draws steps as text. A prompt stays on its line until something else is printed; then, at
/// a terminal, the line is cleared and the prompt drawn again below the new lines, so no
/// message lands on the prompt's line (elsewhere the prompt's line is ended instead). When the
/// client echoes the keys itself ([`typing`]), the line being typed is drawn after the prompt
/// (or alone, out of turn) and moves down with it. When the client stops, a prompt on screen
/// has its line ended: Ctrl-D echoes no newline.
#[derive(Debug)]
pub struct Screen {
    terminal: bool,
    /// Whether the client echoes what is typed (else the terminal does).
    echo: bool,
    /// What is on the current line (a prompt, and what is typed after it), if anything.
    shown: Option<String>,
}

/// Back to the start of the line, and clear it.
const CLEAR_LINE: &str = "\r\x1b[K";

impl Screen {
    /// `terminal`: whether the output is a terminal, which can clear a line.
    pub fn new(terminal: bool) -> Screen {
        Screen {
            terminal,
            echo: false,
            shown: None,
        }
    }

    /// A screen at a terminal whose echo is off: the screen shows what is typed.
    pub fn echoing() -> Screen {
        Screen {
            echo: true,
            ..Screen::new(true)
        }
    }

    /// The user ended a line: the text that moves to a new one (with the terminal's own echo
    /// it has moved already), after which the prompt is no longer on the current line.
    pub fn entered(&mut self) -> &'static str {
        self.shown = None;
        if self.echo { "\n" } else { "" }
    }

    /// The text that shows `step`, with `typed` the line being typed (empty unless the client
    /// echoes).
    pub fn draw(&mut self, step: &Step, typed: &str) -> String {
        let mut text = String::new();
        let line = match (&step.prompt, step.end.is_some()) {
            (_, true) => None,
            (Some(prompt), false) => Some(format!("{prompt}{typed}")),
            (None, false) => Some(typed.to_owned()).filter(|t| !t.is_empty()),
        };
        if step.print.is_empty() && line == self.shown && step.end.is_none() {
            return text;
        }
        if self.shown.take().is_some() {
            text += if step.end.is_some() || !self.terminal {
                "\n"
            } else {
                CLEAR_LINE
            };
        }
        for printed in &step.print {
            text += printed;
            text += "\n";
        }
        if let Some(line) = line {
            text += &line;
            self.shown = Some(line);
        }
        text
    }
}

/// The `porthost client word-guess` command: stdin is typed input when it is a terminal and a
/// script otherwise. When stdout is the terminal too, the client reads key by key and echoes
/// the line itself ([`typing`]); the terminal's settings are put back when it ends.
pub fn run(addr: &str, name: Option<String>) -> anyhow::Result<()> {
    let input = if std::io::stdin().is_terminal() {
        Input::Typed
    } else {
        Input::Script
    };
    let terminal = std::io::stdout().is_terminal();
    let raw = match (input, terminal) {
        (Input::Typed, true) => Some(
            RawTerminal::enter(std::io::stdin())
                .context("cannot switch the terminal's line editing off")?,
        ),
        _ => None,
    };
    let reading = match raw {
        Some(_) => Reading::Keys,
        None => Reading::Lines,
    };
    let result = play(
        addr,
        name.as_deref(),
        input,
        reading,
        std::io::stdin(),
        std::io::stdout(),
        terminal,
    );
    drop(raw);
    result
}

/// How the user's input arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Whole lines: from a pipe, or from a terminal doing its own line editing and echo.
    Lines,
    /// Key by key from a terminal whose line editing and echo are off: the client edits the
    /// line ([`LineEditor`]) and draws it ([`Screen::echoing`]).
    Keys,
}

/// Plays one game at `addr`: the user's input comes from `user` as `reading` says, the game
/// goes to `out` (`terminal`: whether it is one). [`run`] passes stdin and stdout; tests pass
/// pipes.
pub fn play(
    addr: &str,
    name: Option<&str>,
    input: Input,
    reading: Reading,
    user: impl Read + Send + 'static,
    out: impl Write,
    terminal: bool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (user, screen) = match reading {
        Reading::Lines => (User::Lines(user_lines(user)), Screen::new(terminal)),
        Reading::Keys => (
            User::Keys {
                bytes: user_keys(user),
                pending: VecDeque::new(),
                editor: LineEditor::new(MAX_INPUT_LINE as usize),
            },
            Screen::echoing(),
        ),
    };
    runtime.block_on(play_async(addr, name, input, user, out, screen))
}

async fn play_async(
    addr: &str,
    name: Option<&str>,
    input: Input,
    mut user: User,
    mut out: impl Write,
    mut screen: Screen,
) -> anyhow::Result<()> {
    // While the client holds the terminal, Ctrl-C (or SIGTERM) must end the game through the
    // client's own exit, which gives the terminal its settings back: from the connect on.
    let mut stops = match user {
        User::Keys { .. } => Some((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )),
        User::Lines(_) => None,
    };
    let stream = tokio::select! {
        stream = TcpStream::connect(addr) => {
            stream.with_context(|| format!("cannot connect to {addr}"))?
        }
        () = stopped(&mut stops) => return Ok(()),
    };
    stream.set_nodelay(true)?;
    let (read_half, mut write_half) = stream.into_split();
    let mut server = BufReader::new(read_half).take(MAX_SERVER_LINE);
    let (mut session, mut step) = Session::new(addr, input, name);
    let welcome_by = Instant::now() + WELCOME_WAIT;
    let mut user_open = true;
    let mut line = Vec::new();
    loop {
        if step.asks && !user.typed().is_empty() {
            step.print.push(Session::dropped(&user.take_typed()));
        }
        out.write_all(screen.draw(&step, user.typed()).as_bytes())?;
        out.flush()?;
        for command in &step.send {
            write_half
                .write_all(format!("{command}\n").as_bytes())
                .await
                .with_context(|| format!("{addr} closed the connection"))?;
        }
        match step.end {
            Some(End::Done) => return Ok(()),
            Some(End::Failed(message)) => return Err(anyhow!(message)),
            None => {}
        }
        step = tokio::select! {
            // Cancel-safe: bytes of a partial line stay in `line` until the rest arrives.
            read = server.read_until(b'\n', &mut line) => {
                if read? == 0 {
                    if server.limit() == 0 {
                        bail!("{addr} sent a line longer than {MAX_SERVER_LINE} bytes");
                    }
                    session.server_closed()
                } else if line.last() != Some(&b'\n') {
                    Step::default()
                } else {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    server.set_limit(MAX_SERVER_LINE);
                    session.server_line(text.trim_end_matches(['\n', '\r']))
                }
            }
            edit = user.next(), if user_open => match edit {
                Edit::Changed => session.unchanged(),
                Edit::Line(typed) => {
                    out.write_all(screen.entered().as_bytes())?;
                    session.user_line(&typed)
                }
                Edit::End => {
                    user_open = false;
                    session.input_ended()
                }
            },
            () = stopped(&mut stops) => session.input_ended(),
            () = tokio::time::sleep_until(welcome_by), if session.awaiting_welcome() => {
                session.welcome_timed_out()
            }
        };
    }
}

/// Ctrl-C or SIGTERM, when they are the client's to handle; never otherwise.
async fn stopped(stops: &mut Option<(Signal, Signal)>) {
    match stops {
        Some((interrupt, terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        None => std::future::pending().await,
    }
}

/// The user's input, read on a thread of its own (blocking reads cannot be cancelled), so
/// server messages keep printing while the user types.
enum User {
    /// Whole lines, each cut at [`MAX_INPUT_LINE`] bytes.
    Lines(mpsc::Receiver<String>),
    /// Bytes as typed, and the line they edit.
    Keys {
        bytes: mpsc::Receiver<Vec<u8>>,
        /// Bytes received and not yet given to the editor.
        pending: VecDeque<u8>,
        editor: LineEditor,
    },
}

impl User {
    /// The next edit of the line being typed (a whole line, when lines are read). Cancel-safe:
    /// its only await is a channel's receive, and each byte is edited when its edit returns.
    async fn next(&mut self) -> Edit {
        match self {
            User::Lines(lines) => match lines.recv().await {
                Some(line) => Edit::Line(line),
                None => Edit::End,
            },
            User::Keys {
                bytes,
                pending,
                editor,
            } => loop {
                while let Some(byte) = pending.pop_front() {
                    if let Some(edit) = editor.key(byte) {
                        return edit;
                    }
                }
                match bytes.recv().await {
                    Some(chunk) => pending.extend(chunk),
                    None => return Edit::End,
                }
            },
        }
    }

    /// The line being typed (none when the terminal edits it).
    fn typed(&self) -> &str {
        match self {
            User::Lines(_) => "",
            User::Keys { editor, .. } => editor.text(),
        }
    }

    /// Takes the line being typed away.
    fn take_typed(&mut self) -> String {
        match self {
            User::Lines(_) => String::new(),
            User::Keys { editor, .. } => editor.take(),
        }
    }
}

/// Reads bytes as they come, for a terminal read key by key; the channel closes at the end of
/// input.
fn user_keys(mut input: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines on a thread of its own. A line is cut at [`MAX_INPUT_LINE`] bytes; the channel
/// closes at the end of input.
fn user_lines(input: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut input = std::io::BufReader::new(input);
        loop {
            let mut line = Vec::new();
            let Ok(n) = (&mut input)
                .take(MAX_INPUT_LINE)
                .read_until(b'\n', &mut line)
            else {
                break;
            };
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') && n as u64 == MAX_INPUT_LINE {
                skip_line(&mut input);
            }
            let text = String::from_utf8_lossy(&line);
            if tx
                .blocking_send(text.trim_end_matches(['\n', '\r']).to_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Reads and drops the rest of the current line.
fn skip_line(input: &mut impl BufRead) {
    loop {
        let (done, used) = match input.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        input.consume(used);
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "127.0.0.1:7021";

    /// The lines a game of `abba` starts with, for the first of two players.
    const START: [&str; 6] = [
        "\"Ann\" joined (1/2)",
        "Waiting for 1 more player",
        "\"Bob\" joined (2/2)",
        "Game starts: \"Ann\", \"Bob\"",
        "Alphabet: Latin, 4 letters",
        "Word: ****",
    ];

    /// A session named Ann, welcomed, in a started game of `abba` where it is Bob's turn.
    fn in_game(input: Input) -> Session {
        let (mut session, step) = Session::new(SERVER, input, Some("Ann"));
        assert_eq!(step.send, ["Ann"], "the name goes out with the connection");
        session.server_line(protocol::WELCOME);
        for line in START {
            session.server_line(line);
        }
        session.server_line("Turn: \"Bob\"");
        session
    }

    /// Gives the session the turn and returns the step (with its prompt).
    fn my_turn(session: &mut Session) -> Step {
        session.server_line("Turn: \"Ann\"");
        session.server_line(protocol::TURN)
    }

    fn failed(step: &Step) -> &str {
        match &step.end {
            Some(End::Failed(message)) => message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_server_that_does_not_welcome_is_not_the_game() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, Some("Bob"));
        let step = session.server_line("1");
        assert_eq!(
            failed(&step),
            "127.0.0.1:7021 does not speak word-guess: its first line was \"1\", not the game's \
             welcome"
        );
        assert!(step.print.is_empty() && step.send.is_empty());

        let (mut session, _) = Session::new(SERVER, Input::Typed, None);
        let long = "x".repeat(5000);
        let message = failed(&session.server_line(&long)).to_owned();
        assert!(
            message.contains(&format!("\"{}…\" (5000 characters)", "x".repeat(80))),
            "{message}"
        );

        let (mut session, _) = Session::new(SERVER, Input::Script, None);
        assert!(failed(&session.server_closed()).contains("without the game's welcome"));
    }

    #[test]
    fn a_late_welcome_is_a_queued_connection_waited_for() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, None);
        assert!(session.awaiting_welcome());
        let step = session.welcome_timed_out();
        assert_eq!(
            step.print,
            [
                "Connected to 127.0.0.1:7021; waiting for the server to accept you (the port is busy)."
            ]
        );
        assert_eq!(step.end, None, "it waits on");
        assert!(!session.awaiting_welcome(), "said once");
        assert_eq!(
            session.server_line(protocol::WELCOME).prompt.as_deref(),
            Some("Your name: ")
        );
        let (mut session, _) = Session::new(SERVER, Input::Script, None);
        assert!(failed(&session.server_closed()).contains("without the game's welcome"));
    }

    #[test]
    fn after_the_welcome_its_timeout_does_nothing() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, Some("Ann"));
        session.server_line(protocol::WELCOME);
        assert!(!session.awaiting_welcome());
        assert_eq!(session.welcome_timed_out(), Step::default());
    }

    #[test]
    fn a_name_given_up_front_is_not_asked_for() {
        let (mut session, step) = Session::new(SERVER, Input::Typed, Some("Ann"));
        assert_eq!(step.send, ["Ann"]);
        let step = session.server_line(protocol::WELCOME);
        assert_eq!(step.print, [protocol::GREETING]);
        assert_eq!(step.prompt, None);
    }

    #[test]
    fn the_name_is_asked_for_after_the_welcome_and_again_when_rejected() {
        let (mut session, step) = Session::new(SERVER, Input::Typed, None);
        assert_eq!(step, Step::default(), "no prompt before the welcome");
        let step = session.server_line(protocol::WELCOME);
        assert_eq!(step.print, [protocol::WELCOME]);
        assert_eq!(step.prompt.as_deref(), Some("Your name: "));
        let step = session.user_line("  Ann ");
        assert_eq!((step.send, step.prompt), (vec!["Ann".to_owned()], None));
        let rejected = "Name rejected: \"Ann\" is taken; send another name";
        let step = session.server_line(rejected);
        assert_eq!(step.print, [rejected]);
        assert_eq!(step.prompt.as_deref(), Some("Your name: "));
    }

    #[test]
    fn a_line_typed_out_of_turn_is_discarded_never_sent_later() {
        let mut session = in_game(Input::Typed);
        let step = session.user_line("x");
        assert_eq!(step.print, ["Not your turn yet: \"x\" was not sent."]);
        assert!(step.send.is_empty());
        assert_eq!(session.user_line("   "), Step::default(), "a bare Enter");
        let step = my_turn(&mut session);
        assert!(step.send.is_empty(), "nothing typed earlier is played");
        assert_eq!(
            step.prompt.as_deref(),
            Some("Your move (a letter or the 4-letter word): ")
        );
        assert_eq!(session.user_line("b").send, ["/letter b"]);
    }

    /// A step that asks anew tells the client to drop what is being typed: it was typed
    /// before the question (`xy` in the other player's turn is not the start of the move).
    #[test]
    fn a_question_asked_anew_is_marked_and_a_repeated_one_is_not() {
        let mut session = in_game(Input::Typed);
        assert!(!session.unchanged().asks, "nothing asked in Bob's turn");
        let step = my_turn(&mut session);
        assert!(step.asks, "{step:?}");
        assert!(!session.unchanged().asks, "asked already");
        assert!(
            !session.user_line("ab").asks,
            "refused: the same question again"
        );
        assert!(!session.server_line("\"Bob\" left the game").asks);
        session.user_line("z");
        session.server_line("\"Ann\": letter z");
        session.server_line("Miss: no z in the word");
        session.server_line("Turn: \"Bob\"");
        assert!(my_turn(&mut session).asks, "the next turn asks anew");
        assert_eq!(
            Session::dropped(" xy"),
            "Not your turn yet: \"xy\" was not sent."
        );
    }

    #[test]
    fn before_the_game_starts_input_is_out_of_turn_too() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, Some("Ann"));
        let step = session.user_line("a");
        assert_eq!(step.print, ["Not your turn yet: \"a\" was not sent."]);
        session.server_line(protocol::WELCOME);
        let step = session.user_line("abba");
        assert_eq!(step.print, ["Not your turn yet: \"abba\" was not sent."]);
    }

    #[test]
    fn a_script_answers_in_order_whenever_its_lines_came() {
        let (mut session, _) = Session::new(SERVER, Input::Script, None);
        for line in ["Ann", "ab", "a", "abba"] {
            assert_eq!(
                session.user_line(line),
                Step::default(),
                "nothing asked yet"
            );
        }
        assert_eq!(session.server_line(protocol::WELCOME).send, ["Ann"]);
        for line in START {
            assert!(session.server_line(line).send.is_empty());
        }
        session.server_line("Turn: \"Ann\"");
        let step = session.server_line(protocol::TURN);
        assert_eq!(
            step.print,
            ["\"ab\" has 2 letters, but the word has 4."],
            "a bad line is explained and the next one used"
        );
        assert_eq!(step.send, ["/letter a"]);
        assert_eq!(step.prompt, None, "no prompts for a script");
        session.server_line("\"Ann\": letter a");
        session.server_line("Turn: \"Ann\"");
        assert_eq!(session.server_line(protocol::TURN).send, ["/word abba"]);
    }

    #[test]
    fn a_script_that_ends_fails_only_when_a_line_is_needed() {
        let mut session = in_game(Input::Script);
        assert_eq!(session.input_ended(), Step::default());
        let step = my_turn(&mut session);
        assert_eq!(
            failed(&step),
            "standard input ended, but the game needs your move"
        );
        let (mut session, _) = Session::new(SERVER, Input::Script, None);
        session.input_ended();
        assert_eq!(
            failed(&session.server_line(protocol::WELCOME)),
            "standard input ended, but the game needs your name"
        );
    }

    #[test]
    fn a_script_that_ends_on_refused_moves_still_says_why_they_were_refused() {
        // The script is read ahead; its lines are used when the turn comes.
        let mut session = in_game(Input::Script);
        session.user_line("ab");
        session.input_ended();
        let step = my_turn(&mut session);
        assert!(
            step.print
                .ends_with(&["\"ab\" has 2 letters, but the word has 4.".to_owned()]),
            "{step:?}"
        );
        assert_eq!(
            failed(&step),
            "standard input ended, but the game needs your move"
        );
    }

    #[test]
    fn ctrl_d_at_a_terminal_leaves_the_game() {
        let mut session = in_game(Input::Typed);
        my_turn(&mut session);
        let step = session.input_ended();
        assert_eq!(step.print, ["You left the game."]);
        assert_eq!((step.end, step.prompt), (Some(End::Done), None));
    }

    /// Every rule a move is checked by before it is sent; each refusal says why and asks again.
    #[test]
    fn moves_are_checked_before_they_are_sent() {
        let mut session = in_game(Input::Typed);
        my_turn(&mut session);
        for (typed, reason) in [
            ("", "Type one letter, or the whole word."),
            ("ab", "\"ab\" has 2 letters, but the word has 4."),
            ("abbaa", "\"abbaa\" has 5 letters, but the word has 4."),
            ("!!", "\"!!\" is not a word: letters only."),
            ("ab1a", "\"ab1a\" is not a word: letters only."),
            ("ab a", "\"ab a\" is not a word: letters only."),
            ("1", "\"1\" is not a letter."),
            (
                "о",
                "\"о\" is a Cyrillic letter, but the word is Latin: check the keyboard layout.",
            ),
            (
                "аbba",
                "\"аbba\" has Cyrillic letters, but the word is Latin: check the keyboard layout.",
            ),
            ("/letter ab", "\"ab\" is not a letter."),
            ("/letter", "Missing argument, send /letter X."),
            ("/word ab", "\"ab\" has 2 letters, but the word has 4."),
            (
                "/guess a",
                "Unknown command \"/guess\", the commands are /letter X and /word WORD.",
            ),
        ] {
            let step = session.user_line(typed);
            assert_eq!(step.print, [reason], "{typed:?}");
            assert!(step.send.is_empty(), "{typed:?}");
            assert_eq!(
                step.prompt.as_deref(),
                Some("Your move (a letter or the 4-letter word): "),
                "asked again after {typed:?}"
            );
        }
    }

    #[test]
    fn letters_words_and_typed_out_commands_are_sent() {
        for (typed, sent) in [
            ("a", "/letter a"),
            (" B ", "/letter B"),
            ("abba", "/word abba"),
            ("ABBA", "/word ABBA"),
            ("/letter a", "/letter a"),
            ("/word abba", "/word abba"),
        ] {
            let mut session = in_game(Input::Typed);
            my_turn(&mut session);
            let step = session.user_line(typed);
            assert_eq!(step.send, [sent], "{typed:?}");
            assert!(step.print.is_empty());
            assert_eq!(step.prompt, None, "the move is made");
            let step = session.user_line("z");
            assert!(step.send.is_empty(), "one move per turn");
        }
    }

    #[test]
    fn letters_tried_by_anyone_are_shown_and_refused() {
        let mut session = in_game(Input::Typed);
        for line in [
            "\"Bob\": letter z",
            "Miss: no z in the word",
            "Word: ****",
            "Turn: \"Ann\"",
        ] {
            session.server_line(line);
        }
        let step = session.server_line(protocol::TURN);
        assert_eq!(
            step.prompt.as_deref(),
            Some("Your move (a letter or the 4-letter word; tried: z): ")
        );
        let step = session.user_line("Z");
        assert_eq!(
            step.print,
            ["The letter z was already tried (tried: z)."],
            "the server's own reason"
        );
        assert!(step.send.is_empty());
        assert_eq!(session.user_line("a").send, ["/letter a"]);
        session.server_line("\"Ann\": letter a");
        session.server_line("Hit: \"Ann\" scores 2 (total 2) and moves again");
        session.server_line("Word: a**a");
        let step = my_turn(&mut session);
        assert_eq!(
            step.prompt.as_deref(),
            Some("Your move (a letter or the 4-letter word; tried: z, a): ")
        );
        let step = session.user_line("A");
        assert_eq!(
            step.print,
            ["The letter a was already tried (tried: z, a)."]
        );
    }

    #[test]
    fn a_word_of_two_alphabets_takes_letters_of_both() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, Some("Ann"));
        session.server_line(protocol::WELCOME);
        session.server_line("Alphabet: Latin and Cyrillic, 2 letters");
        session.server_line(protocol::TURN);
        assert_eq!(session.user_line("bб").send, ["/word bб"]);
        session.server_line(protocol::TURN);
        let step = session.user_line("ω");
        assert_eq!(
            step.print,
            [
                "\"ω\" is a Greek letter, but the word is Latin and Cyrillic: check the keyboard \
                 layout."
            ]
        );
    }

    #[test]
    fn without_an_alphabet_line_only_the_form_is_checked() {
        let (mut session, _) = Session::new(SERVER, Input::Typed, Some("Ann"));
        session.server_line(protocol::WELCOME);
        let step = session.server_line(protocol::TURN);
        assert_eq!(
            step.prompt.as_deref(),
            Some("Your move (a letter or the word): ")
        );
        assert_eq!(session.user_line("ab").send, ["/word ab"]);
    }

    #[test]
    fn a_turn_that_times_out_takes_the_prompt_away() {
        let mut session = in_game(Input::Typed);
        my_turn(&mut session);
        assert_eq!(
            session
                .server_line("\"Ann\" ran out of time")
                .prompt
                .as_deref(),
            Some("Your move (a letter or the 4-letter word): "),
            "still asked until the turn passes"
        );
        let step = session.server_line("Turn: \"Bob\" (30 s)");
        assert_eq!(step.print, ["Turn: \"Bob\" (30 s)"]);
        assert_eq!(step.prompt, None);
        let step = session.user_line("b");
        assert_eq!(step.print, ["Not your turn yet: \"b\" was not sent."]);
        assert!(step.send.is_empty());
    }

    #[test]
    fn messages_are_printed_as_sent_and_commands_obeyed() {
        let mut session = in_game(Input::Typed);
        let step = session.server_line("Error: not your turn, waiting for \"Bob\"");
        assert_eq!(step.print, ["Error: not your turn, waiting for \"Bob\""]);
        let step = session.server_line("Winner: \"Bob\"");
        assert_eq!(step.print, ["Winner: \"Bob\""]);
        let step = session.server_line(protocol::QUIT);
        assert_eq!((step.print.len(), step.end), (0, Some(End::Done)));
        let mut session = in_game(Input::Typed);
        assert_eq!(
            failed(&session.server_line("/win")),
            "127.0.0.1:7021 sent \"/win\", which is neither a message nor a command of the game"
        );
        let mut session = in_game(Input::Typed);
        assert_eq!(
            failed(&session.server_closed()),
            "127.0.0.1:7021 closed the connection before the game ended"
        );
    }

    fn prompted(prompt: &str) -> Step {
        Step {
            prompt: Some(prompt.to_owned()),
            ..Step::default()
        }
    }

    fn printed(lines: &[&str], prompt: Option<&str>) -> Step {
        Step {
            print: lines.iter().map(|l| l.to_string()).collect(),
            prompt: prompt.map(str::to_owned),
            ..Step::default()
        }
    }

    #[test]
    fn messages_never_land_on_the_prompt_line() {
        let mut screen = Screen::new(true);
        assert_eq!(screen.draw(&prompted("Your move: "), ""), "Your move: ");
        assert_eq!(
            screen.draw(&prompted("Your move: "), ""),
            "",
            "already shown"
        );
        assert_eq!(
            screen.draw(
                &printed(&["\"Bob\" left the game"], Some("Your move: ")),
                ""
            ),
            "\r\x1b[K\"Bob\" left the game\nYour move: ",
            "the prompt's line is cleared, the message printed, the prompt drawn again"
        );
        assert_eq!(
            screen.draw(&printed(&["Turn: \"Bob\""], None), ""),
            "\r\x1b[KTurn: \"Bob\"\n",
            "a prompt that is no longer asked goes"
        );
        assert_eq!(screen.draw(&prompted("Your move: "), ""), "Your move: ");
        assert_eq!(screen.entered(), "", "the terminal's echo ended the line");
        assert_eq!(
            screen.draw(&printed(&["Error: x"], Some("Your move: ")), ""),
            "Error: x\nYour move: ",
            "after Enter the terminal is on a new line already"
        );
    }

    /// When the client echoes, what is typed is drawn after the prompt, or alone out of turn,
    /// and moves below each message with it.
    #[test]
    fn the_line_being_typed_is_drawn_again_below_messages() {
        let mut screen = Screen::echoing();
        assert_eq!(screen.draw(&Step::default(), "x"), "x", "typed out of turn");
        assert_eq!(
            screen.draw(&printed(&["Turn: \"Bob\""], None), "xy"),
            "\r\x1b[KTurn: \"Bob\"\nxy"
        );
        assert_eq!(screen.draw(&Step::default(), ""), "\r\x1b[K", "erased");
        assert_eq!(screen.draw(&prompted("Your move: "), "a"), "Your move: a");
        assert_eq!(
            screen.draw(&prompted("Your move: "), "ab"),
            "\r\x1b[KYour move: ab"
        );
        assert_eq!(
            screen.draw(
                &printed(&["\"Bob\" left the game"], Some("Your move: ")),
                "ab"
            ),
            "\r\x1b[K\"Bob\" left the game\nYour move: ab"
        );
        assert_eq!(screen.entered(), "\n", "the client ends the line it echoed");
        assert_eq!(screen.draw(&printed(&["Error: x"], None), ""), "Error: x\n");
    }

    #[test]
    fn off_a_terminal_the_prompts_line_is_ended_instead() {
        let mut screen = Screen::new(false);
        screen.draw(&prompted("Your name: "), "");
        assert_eq!(
            screen.draw(&printed(&["hello"], None), ""),
            "\nhello\n",
            "no escape codes into a file"
        );
    }

    #[test]
    fn stopping_at_a_prompt_ends_its_line() {
        for terminal in [true, false] {
            let mut screen = Screen::new(terminal);
            screen.draw(&prompted("Your move: "), "");
            let left = Step {
                print: vec!["You left the game.".to_owned()],
                end: Some(End::Done),
                ..Step::default()
            };
            assert_eq!(screen.draw(&left, ""), "\nYou left the game.\n");
            screen.draw(&prompted("Your name: "), "");
            let failed = fail("x".to_owned());
            assert_eq!(
                screen.draw(&failed, ""),
                "\n",
                "before the error goes to stderr"
            );
        }
        let mut screen = Screen::new(true);
        assert_eq!(
            screen.draw(&fail("x".to_owned()), ""),
            "",
            "no prompt, no newline"
        );
    }

    #[test]
    fn long_input_lines_are_cut_and_the_rest_dropped() {
        let mut text = vec![b'a'; MAX_INPUT_LINE as usize + 10];
        text.extend_from_slice(b"\nnext\nlast");
        let mut lines = user_lines(std::io::Cursor::new(text));
        let first = lines.blocking_recv().unwrap();
        assert_eq!(first.len(), MAX_INPUT_LINE as usize);
        assert_eq!(lines.blocking_recv().as_deref(), Some("next"));
        assert_eq!(lines.blocking_recv().as_deref(), Some("last"));
        assert_eq!(lines.blocking_recv(), None);
    }
}
