//! The text of the protocol, without sockets, and its one definition: the server renders every
//! message and parses client lines here, and the bundled client (`porthost client word-guess`)
//! and the bench's bots parse server lines and render their commands with the same items, so
//! the three cannot drift apart. The formats are documented in the module above.
//!
//! What clients use is `pub`; what only the server renders is `pub(crate)`.

use std::fmt;
use std::time::Duration;

pub use super::game::fold;
use super::game::{Outcome, Player, Word};

/// The server's first line on every connection.
pub const WELCOME: &str = "Welcome to word-guess! Send your name.";
/// The welcome without its request, for a client that sent the name already.
pub const GREETING: &str = "Welcome to word-guess!";
/// The server's command that gives a client the turn.
pub const TURN: &str = "/turn";
/// The server's last line before it closes the connection: the game is over.
pub const QUIT: &str = "/quit";
/// The client's command for guessing one letter: `/letter X`.
pub const LETTER: &str = "/letter";
/// The client's command for guessing the whole word: `/word WORD`.
pub const WORD: &str = "/word";
/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

const NAME_REJECTED: &str = "Name rejected: ";
const ERROR: &str = "Error: ";
const ALPHABET: &str = "Alphabet: ";
const TURN_OF: &str = "Turn: ";
const SAID_LETTER: &str = ": letter ";
const SAID_WORD: &str = ": word ";

/// A move, as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Letter(char),
    Word(String),
}

impl fmt::Display for Command {
    /// The line a client sends, without its `\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Letter(c) => write!(f, "{LETTER} {c}"),
            Command::Word(w) => write!(f, "{WORD} {w}"),
        }
    }
}

/// Which command a usage hint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Letter,
    Word,
}

impl Kind {
    fn usage(self) -> String {
        match self {
            Kind::Letter => format!("{LETTER} X"),
            Kind::Word => format!("{WORD} WORD"),
        }
    }
}

/// A line the game cannot take (the lecture's `ClientError`); answered privately, the game
/// goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    NotACommand,
    /// The command as sent, slash included.
    Unknown(String),
    MissingArgument(Kind),
    ExtraArgument(Kind),
    NotOneLetter(String),
    NotAWord(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (letter, word) = (Kind::Letter.usage(), Kind::Word.usage());
        match self {
            ClientError::NotACommand => {
                write!(f, "only commands are accepted: {letter} or {word}")
            }
            ClientError::Unknown(command) => write!(
                f,
                "unknown command {command:?}, the commands are {letter} and {word}"
            ),
            ClientError::MissingArgument(kind) => {
                write!(f, "missing argument, send {}", kind.usage())
            }
            ClientError::ExtraArgument(kind) => write!(
                f,
                "extra argument, send {} with one space before it",
                kind.usage()
            ),
            ClientError::NotOneLetter(arg) => write!(f, "{arg:?} is not a letter"),
            ClientError::NotAWord(arg) => write!(f, "{arg:?} is not a word: letters only"),
        }
    }
}

/// Parses a line from a player: `/letter X` or `/word WORD`, the argument after one space.
pub fn parse(line: &str) -> Result<Command, ClientError> {
    if !line.starts_with('/') {
        return Err(ClientError::NotACommand);
    }
    let (command, arg) = match line.split_once(' ') {
        Some((command, arg)) => (command, Some(arg)),
        None => (line, None),
    };
    match command {
        LETTER => check_letter(argument(arg, Kind::Letter)?).map(Command::Letter),
        WORD => check_word(argument(arg, Kind::Word)?).map(|w| Command::Word(w.to_owned())),
        _ => Err(ClientError::Unknown(command.to_owned())),
    }
}

/// The single argument: present, and with no whitespace around or inside it.
fn argument(arg: Option<&str>, kind: Kind) -> Result<&str, ClientError> {
    match arg {
        None => Err(ClientError::MissingArgument(kind)),
        Some(arg) if arg.trim().is_empty() => Err(ClientError::MissingArgument(kind)),
        Some(arg) if arg.contains(char::is_whitespace) => Err(ClientError::ExtraArgument(kind)),
        Some(arg) => Ok(arg),
    }
}

/// A letter guess is exactly one letter (one `char`, so a letter with a combining accent is
/// two and refused).
pub fn check_letter(arg: &str) -> Result<char, ClientError> {
    let mut chars = arg.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_alphabetic() => Ok(c),
        _ => Err(ClientError::NotOneLetter(arg.to_owned())),
    }
}

/// A word guess is letters only, like every hidden word: anything else could never be right.
pub fn check_word(arg: &str) -> Result<&str, ClientError> {
    if !arg.is_empty() && arg.chars().all(char::is_alphabetic) {
        Ok(arg)
    } else {
        Err(ClientError::NotAWord(arg.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    Slash,
    Taken(String),
}

/// The name in a first line, trimmed, if it has an allowed form. Whether it is taken is the
/// lobby's business.
pub fn check_name(line: &str) -> Result<&str, NameError> {
    let name = line.trim();
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.chars().count() > MAX_NAME_CHARS {
        Err(NameError::TooLong)
    } else if name.starts_with('/') {
        Err(NameError::Slash)
    } else {
        Ok(name)
    }
}

/// Names and guesses come from clients, so they are shown as quoted literals: no message can
/// start with `/`, and quotes, backslashes and control characters are escaped. A client finds
/// its own name in a message by quoting it the same way.
pub fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// The writing system of a letter, so that players know which keyboard layout the hidden word
/// needs: Latin `o` and Cyrillic `о` look the same and are different letters. Unicode's Script
/// property (`unicode-script`), so every script a word list may hold has its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Script(unicode_script::Script);

impl Script {
    /// A letter's script; one of no script of its own (Common, such as digits, or Inherited,
    /// combining marks) is [`Script::is_known`] false, since it fits any keyboard.
    pub fn of(letter: char) -> Script {
        use unicode_script::{Script as Ucd, UnicodeScript};
        match letter.script() {
            Ucd::Common | Ucd::Inherited => Script(Ucd::Unknown),
            script => Script(script),
        }
    }

    /// Whether the letter belongs to a writing system of its own.
    pub fn is_known(self) -> bool {
        self.0 != unicode_script::Script::Unknown
    }

    /// Unicode's name of the script (`Latin`, `Old_Italic`), or `other`.
    pub fn name(self) -> &'static str {
        if self.is_known() {
            self.0.full_name()
        } else {
            "other"
        }
    }

    fn named(name: &str) -> Option<Script> {
        match name {
            "other" => Some(Script(unicode_script::Script::Unknown)),
            _ => unicode_script::Script::from_full_name(name)
                .filter(|s| *s != unicode_script::Script::Unknown)
                .map(Script),
        }
    }
}

/// The scripts of a text's letters, in order of first appearance.
pub fn scripts(text: impl IntoIterator<Item = char>) -> Vec<Script> {
    let mut found = Vec::new();
    for script in text.into_iter().map(Script::of) {
        if !found.contains(&script) {
            found.push(script);
        }
    }
    found
}

/// Scripts as a message names them: `Latin`, `Latin and Cyrillic`, `Latin, Greek and Cyrillic`.
pub fn script_names(scripts: &[Script]) -> String {
    let names: Vec<&str> = scripts.iter().map(|s| s.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// `1 letter`, `4 letters`.
pub fn letters(n: usize) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} letter{plural}")
}

/// Letters as a list: `a, z`.
pub fn letter_list(letters: &[char]) -> String {
    let letters: Vec<String> = letters.iter().map(char::to_string).collect();
    letters.join(", ")
}

/// Why a letter is refused when it was tried before in this game; the server sends it as an
/// `Error:` line, and the client says the same before sending.
pub fn already_tried(letter: char, tried: &[char]) -> String {
    format!(
        "the letter {} was already tried (tried: {})",
        fold(letter),
        letter_list(tried)
    )
}

/// A line from the server, as a client reads it. Every line that is not a command is also a
/// message to show as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// [`TURN`]: your move.
    YourTurn,
    /// [`QUIT`]: the game is over and the server closes the connection.
    Quit,
    /// A line starting with `/` that is not a command of this protocol (the lecture's
    /// `ServerError`).
    UnknownCommand(&'a str),
    /// [`WELCOME`]: the first line on every connection.
    Welcome,
    /// The name was refused: send another.
    NameRejected,
    /// At the start of a game: the hidden word's scripts and its length in letters.
    Alphabet {
        scripts: Vec<Script>,
        letters: usize,
    },
    /// Whose move it is now (a quoted name) and the turn's time limit, if turns are timed.
    TurnOf {
        mover: &'a str,
        limit_secs: Option<u64>,
    },
    /// Someone guessed a letter (whatever came of it): the mover as a quoted name.
    Letter { mover: &'a str, letter: char },
    /// A private error: the reason.
    Error(&'a str),
    /// Any other message.
    Message,
}

/// Reads one server line (without its `\n`).
pub fn server_line(line: &str) -> ServerLine<'_> {
    match line {
        TURN => return ServerLine::YourTurn,
        QUIT => return ServerLine::Quit,
        WELCOME => return ServerLine::Welcome,
        command if command.starts_with('/') => return ServerLine::UnknownCommand(command),
        _ => {}
    }
    if line.starts_with(NAME_REJECTED) {
        ServerLine::NameRejected
    } else if let Some(reason) = line.strip_prefix(ERROR) {
        ServerLine::Error(reason)
    } else if let Some(alphabet) = line.strip_prefix(ALPHABET).and_then(parse_alphabet) {
        alphabet
    } else if let Some(turn) = line.strip_prefix(TURN_OF).and_then(parse_turn) {
        turn
    } else if let Some(letter) = parse_letter(line) {
        letter
    } else {
        ServerLine::Message
    }
}

/// `Latin and Cyrillic, 6 letters`.
fn parse_alphabet(text: &str) -> Option<ServerLine<'_>> {
    let (names, count) = text.rsplit_once(", ")?;
    let letters = count
        .strip_suffix(" letters")
        .or_else(|| count.strip_suffix(" letter"))?
        .parse()
        .ok()?;
    let names = names.replacen(" and ", ", ", 1);
    let scripts = names
        .split(", ")
        .map(Script::named)
        .collect::<Option<Vec<_>>>()?;
    Some(ServerLine::Alphabet { scripts, letters })
}

/// `"Ann"` or `"Ann" (30 s)`.
fn parse_turn(text: &str) -> Option<ServerLine<'_>> {
    let (mover, rest) = split_quoted(text)?;
    let limit_secs = match rest {
        "" => None,
        _ => Some(rest.strip_prefix(" (")?.strip_suffix(" s)")?.parse().ok()?),
    };
    Some(ServerLine::TurnOf { mover, limit_secs })
}

/// `"Ann": letter x`.
fn parse_letter(line: &str) -> Option<ServerLine<'_>> {
    let (mover, rest) = split_quoted(line)?;
    let letter = check_letter(rest.strip_prefix(SAID_LETTER)?).ok()?;
    Some(ServerLine::Letter { mover, letter })
}

/// A quoted name at the start of `text` (escapes honoured), and what follows it.
fn split_quoted(text: &str) -> Option<(&str, &str)> {
    let mut chars = text.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return Some(text.split_at(i + 1)),
            _ => {}
        }
    }
    None
}

pub(crate) fn welcome() -> String {
    format!("{WELCOME}\n")
}

pub(crate) fn name_rejected(error: &NameError) -> String {
    let reason = match error {
        NameError::Empty => "it is empty".to_owned(),
        NameError::TooLong => format!("it is longer than {MAX_NAME_CHARS} characters"),
        NameError::Slash => "it starts with '/'".to_owned(),
        NameError::Taken(name) => format!("{} is taken", quoted(name)),
    };
    format!("{NAME_REJECTED}{reason}; send another name\n")
}

/// An arrival in the lobby, with the count after it, and how many are still awaited.
pub(crate) fn joined(name: &str, waiting: usize, players: usize) -> String {
    format!(
        "{} joined ({waiting}/{players})\n{}",
        quoted(name),
        still_waiting(waiting, players)
    )
}

/// A departure from the lobby, with the count after it.
pub(crate) fn left_lobby(name: &str, waiting: usize, players: usize) -> String {
    format!(
        "{} left ({waiting}/{players})\n{}",
        quoted(name),
        still_waiting(waiting, players)
    )
}

fn still_waiting(waiting: usize, players: usize) -> String {
    match players - waiting {
        0 => String::new(),
        missing => format!("Waiting for {}\n", more_players(missing)),
    }
}

fn more_players(missing: usize) -> String {
    let plural = if missing == 1 { "" } else { "s" };
    format!("{missing} more player{plural}")
}

pub(crate) fn error(reason: &str) -> String {
    format!("{ERROR}{reason}\n")
}

pub(crate) fn not_started(missing: usize) -> String {
    format!(
        "the game has not started, waiting for {}",
        more_players(missing)
    )
}

pub(crate) fn not_your_turn(mover: &str) -> String {
    format!("not your turn, waiting for {}", quoted(mover))
}

pub(crate) fn game_over() -> &'static str {
    "the game is over"
}

/// The start of a game: the players in turn order, the word's scripts and length, the word.
pub(crate) fn game_starts(players: &[Player], word: &Word, masked: &str) -> String {
    let names: Vec<String> = players.iter().map(|p| quoted(&p.name)).collect();
    format!(
        "Game starts: {}\n{}{}",
        names.join(", "),
        alphabet(word),
        word_state(masked)
    )
}

/// `Alphabet: Latin, 4 letters`; several scripts as `Latin and Cyrillic` or
/// `Latin, Greek and Cyrillic`.
pub(crate) fn alphabet(word: &Word) -> String {
    let scripts = scripts(word.letters().iter().copied());
    format!(
        "{ALPHABET}{}, {}\n",
        script_names(&scripts),
        letters(word.len())
    )
}

pub(crate) fn word_state(masked: &str) -> String {
    format!("Word: {masked}\n")
}

/// Whose move it is, with the time limit when turns are timed.
pub(crate) fn turn(mover: &str, limit: Option<Duration>) -> String {
    match limit {
        Some(limit) => format!("{TURN_OF}{} ({} s)\n", quoted(mover), limit.as_secs()),
        None => format!("{TURN_OF}{}\n", quoted(mover)),
    }
}

/// The announcement of a move: who did what, then what came of it. `mover` is the mover after
/// the move, with its new score.
pub(crate) fn moved(mover: &Player, command: &Command, outcome: Outcome) -> String {
    let name = quoted(&mover.name);
    let total = mover.score;
    let (said, what) = match command {
        Command::Letter(c) => (
            format!("{name}{SAID_LETTER}{}\n", fold(*c)),
            fold(*c).to_string(),
        ),
        Command::Word(w) => (format!("{name}{SAID_WORD}{}\n", quoted(w)), quoted(w)),
    };
    let came = match outcome {
        Outcome::Hit { points } => {
            format!("Hit: {name} scores {points} (total {total}) and moves again\n")
        }
        Outcome::Absent => format!("Miss: no {what} in the word\n"),
        Outcome::WrongWord => format!("Wrong: {name} drops to 0 points\n"),
        Outcome::Won { points, bonus } => {
            format!("Win: {name} scores {points} + bonus {bonus} (total {total})\n")
        }
    };
    said + &came
}

pub(crate) fn timed_out(name: &str) -> String {
    format!("{} ran out of time\n", quoted(name))
}

pub(crate) fn left_game(name: &str) -> String {
    format!("{} left the game\n", quoted(name))
}

/// The end of a won game: the word, every remaining player's score in join order, the winner,
/// then [`QUIT`].
pub(crate) fn results(word: &Word, players: &[Player], winner: &Player) -> String {
    let mut text = format!("Game over, the word was {word}\nResults:\n");
    for player in players {
        text += &format!("{}: {}\n", quoted(&player.name), player.score);
    }
    text + &format!("Winner: {}\n{QUIT}\n", quoted(&winner.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::word_guess::game::PlayerId;

    #[test]
    fn parses_the_two_commands() {
        assert_eq!(parse("/letter a"), Ok(Command::Letter('a')));
        assert_eq!(parse("/letter Ї"), Ok(Command::Letter('Ї')));
        assert_eq!(parse("/word abba"), Ok(Command::Word("abba".into())));
        assert_eq!(parse("/word Їжак"), Ok(Command::Word("Їжак".into())));
    }

    #[test]
    fn commands_render_as_they_parse() {
        for command in [Command::Letter('ї'), Command::Word("Abba".into())] {
            assert_eq!(parse(&command.to_string()), Ok(command));
        }
        assert_eq!(Command::Letter('a').to_string(), "/letter a");
        assert_eq!(Command::Word("abba".into()).to_string(), "/word abba");
    }

    #[test]
    fn anything_but_a_command_is_an_error() {
        let unknown = |c: &str| Err(ClientError::Unknown(c.into()));
        assert_eq!(parse("a"), Err(ClientError::NotACommand));
        assert_eq!(parse(""), Err(ClientError::NotACommand));
        assert_eq!(parse(" /letter a"), Err(ClientError::NotACommand));
        assert_eq!(parse("/guess a"), unknown("/guess"));
        assert_eq!(parse("/turn"), unknown("/turn"));
        assert_eq!(parse("/Letter a"), unknown("/Letter"));
        assert_eq!(parse("/"), unknown("/"));
    }

    #[test]
    fn arguments_are_exactly_one_after_one_space() {
        for missing in ["/letter", "/letter ", "/letter   ", "/word", "/word "] {
            assert!(
                matches!(parse(missing), Err(ClientError::MissingArgument(_))),
                "{missing:?}"
            );
        }
        for extra in [
            "/letter a b",
            "/word ab ba",
            "/letter  a",
            "/word abba ",
            "/word a\tb",
        ] {
            assert!(
                matches!(parse(extra), Err(ClientError::ExtraArgument(_))),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn a_letter_is_exactly_one_alphabetic_char() {
        let not_one = |arg: &str| Err(ClientError::NotOneLetter(arg.into()));
        assert_eq!(parse("/letter ab"), not_one("ab"));
        assert_eq!(parse("/letter 1"), not_one("1"));
        assert_eq!(parse("/letter *"), not_one("*"));
        assert_eq!(
            parse("/letter е\u{301}"),
            not_one("е\u{301}"),
            "a combining accent"
        );
        assert_eq!(
            check_letter(""),
            Err(ClientError::NotOneLetter(String::new()))
        );
    }

    #[test]
    fn a_word_is_letters_only() {
        let not_a_word = |arg: &str| Err(ClientError::NotAWord(arg.into()));
        assert_eq!(parse("/word !!"), not_a_word("!!"));
        assert_eq!(parse("/word ab1a"), not_a_word("ab1a"));
        assert_eq!(parse("/word м'ята"), not_a_word("м'ята"));
        assert_eq!(
            check_word("ab ba"),
            Err(ClientError::NotAWord("ab ba".into()))
        );
        assert_eq!(check_word(""), Err(ClientError::NotAWord(String::new())));
        assert_eq!(parse("/word a"), Ok(Command::Word("a".into())));
    }

    #[test]
    fn errors_say_what_was_wrong_and_never_start_with_a_slash() {
        let errors = [
            parse("hi").unwrap_err(),
            parse("/x").unwrap_err(),
            parse("/letter").unwrap_err(),
            parse("/word").unwrap_err(),
            parse("/letter a b").unwrap_err(),
            parse("/letter ab").unwrap_err(),
            parse("/word !!").unwrap_err(),
        ];
        let texts: Vec<String> = errors.iter().map(|e| error(&e.to_string())).collect();
        assert_eq!(
            texts,
            [
                "Error: only commands are accepted: /letter X or /word WORD\n",
                "Error: unknown command \"/x\", the commands are /letter X and /word WORD\n",
                "Error: missing argument, send /letter X\n",
                "Error: missing argument, send /word WORD\n",
                "Error: extra argument, send /letter X with one space before it\n",
                "Error: \"ab\" is not a letter\n",
                "Error: \"!!\" is not a word: letters only\n",
            ]
        );
        assert_eq!(
            error(&already_tried('A', &['a', 'z'])),
            "Error: the letter a was already tried (tried: a, z)\n"
        );
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(check_name("  Ann \t"), Ok("Ann"));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("   "), Err(NameError::Empty));
        assert_eq!(check_name("/ann"), Err(NameError::Slash));
        assert_eq!(check_name(" /ann"), Err(NameError::Slash));
        let longest = "ї".repeat(MAX_NAME_CHARS);
        assert_eq!(check_name(&longest), Ok(longest.as_str()));
        assert_eq!(check_name(&(longest + "ї")), Err(NameError::TooLong));
    }

    #[test]
    fn user_text_is_quoted_so_no_line_starts_with_a_slash() {
        assert_eq!(
            joined("Ann", 1, 2),
            "\"Ann\" joined (1/2)\nWaiting for 1 more player\n"
        );
        assert_eq!(joined("Bob", 2, 2), "\"Bob\" joined (2/2)\n");
        assert_eq!(
            left_lobby("a\"b", 0, 3),
            "\"a\\\"b\" left (0/3)\nWaiting for 3 more players\n"
        );
        assert_eq!(turn("\u{1b}[2J", None), "Turn: \"\\u{1b}[2J\"\n");
        assert_eq!(
            name_rejected(&NameError::Taken("Ann".into())),
            "Name rejected: \"Ann\" is taken; send another name\n"
        );
    }

    #[test]
    fn a_timed_turn_says_its_limit() {
        assert_eq!(
            turn("Ann", Some(Duration::from_secs(30))),
            "Turn: \"Ann\" (30 s)\n"
        );
        assert_eq!(turn("Ann", None), "Turn: \"Ann\"\n");
    }

    #[test]
    fn a_game_starts_with_its_players_alphabet_and_word() {
        let players = [
            Player::new(PlayerId(1), "Ann"),
            Player::new(PlayerId(2), "Bob"),
        ];
        assert_eq!(
            game_starts(&players, &Word::new("abba").unwrap(), "****"),
            "Game starts: \"Ann\", \"Bob\"\nAlphabet: Latin, 4 letters\nWord: ****\n"
        );
        let alphabet_of = |word: &str| alphabet(&Word::new(word).unwrap());
        assert_eq!(alphabet_of("Їжак"), "Alphabet: Cyrillic, 4 letters\n");
        assert_eq!(alphabet_of("я"), "Alphabet: Cyrillic, 1 letter\n");
        assert_eq!(
            alphabet_of("abаб"),
            "Alphabet: Latin and Cyrillic, 4 letters\n",
            "a Latin a and a Cyrillic а"
        );
        assert_eq!(
            alphabet_of("aβж"),
            "Alphabet: Latin, Greek and Cyrillic, 3 letters\n"
        );
    }

    #[test]
    fn scripts_tell_look_alike_letters_apart() {
        assert_eq!(Script::of('o'), Script::of('a'));
        assert_eq!(Script::of('о'), Script::of('я'));
        assert_ne!(Script::of('o'), Script::of('о'), "Latin o, Cyrillic о");
        for (letter, name) in [
            ('ο', "Greek"),
            ('é', "Latin"),
            ('ß', "Latin"),
            ('ґ', "Cyrillic"),
            ('Ї', "Cyrillic"),
            ('ա', "Armenian"),
            ('א', "Hebrew"),
            ('ب', "Arabic"),
            ('क', "Devanagari"),
            ('ก', "Thai"),
            ('ა', "Georgian"),
            ('한', "Hangul"),
            ('ひ', "Hiragana"),
            ('カ', "Katakana"),
            ('一', "Han"),
            ('ᚠ', "Runic"),
            ('𐌰', "Gothic"),
            ('7', "other"),
            ('\u{301}', "other"),
        ] {
            let script = Script::of(letter);
            assert_eq!(script.name(), name, "{letter}");
            assert_eq!(Script::named(name), Some(script), "{name}");
        }
        assert_eq!(Script::named("Klingon"), None);
        assert_eq!(
            scripts("абba".chars()),
            [Script::of('а'), Script::of('b')],
            "in order of appearance"
        );
    }

    #[test]
    fn moves_and_results_render_as_documented() {
        let mut ann = Player::new(PlayerId(1), "Ann");
        ann.score = 2;
        let a = Command::Letter('A');
        assert_eq!(
            moved(&ann, &a, Outcome::Hit { points: 2 }),
            "\"Ann\": letter a\nHit: \"Ann\" scores 2 (total 2) and moves again\n"
        );
        assert_eq!(
            moved(&ann, &a, Outcome::Absent),
            "\"Ann\": letter a\nMiss: no a in the word\n"
        );
        let mut bob = Player::new(PlayerId(2), "Bob");
        let guess = Command::Word("ABBA".into());
        assert_eq!(
            moved(&bob, &guess, Outcome::WrongWord),
            "\"Bob\": word \"ABBA\"\nWrong: \"Bob\" drops to 0 points\n"
        );
        bob.score = 6;
        let won = Outcome::Won {
            points: 2,
            bonus: 4,
        };
        assert_eq!(
            moved(&bob, &guess, won),
            "\"Bob\": word \"ABBA\"\nWin: \"Bob\" scores 2 + bonus 4 (total 6)\n"
        );
        let word = Word::new("abba").unwrap();
        assert_eq!(
            results(&word, &[ann, bob.clone()], &bob),
            "Game over, the word was abba\nResults:\n\"Ann\": 2\n\"Bob\": 6\nWinner: \"Bob\"\n/quit\n"
        );
    }

    /// The protocol as `mod.rs` documents it, read from its `//!` lines with the line breaks
    /// and the table's column gaps folded into single spaces.
    fn documented() -> String {
        include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What the server sends, rendered by the functions it uses, appears in the module's
    /// protocol documentation word for word, so the two cannot drift apart.
    #[test]
    fn the_documented_protocol_is_what_the_server_sends() {
        let doc = documented();
        let folded = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let abba = Word::new("abba").unwrap();
        let mut ann = Player::new(PlayerId(1), "Ann");
        ann.score = 2;
        let mut bob = Player::new(PlayerId(2), "Bob");
        bob.score = 6;
        let hit = Outcome::Hit { points: 2 };
        let won = Outcome::Won {
            points: 2,
            bonus: 4,
        };
        let letter = Command::Letter('x');
        let rendered = [
            welcome(),
            name_rejected(&NameError::Empty),
            joined("Ann", 1, 2),
            left_lobby("Ann", 1, 2),
            game_starts(&[ann.clone(), bob.clone()], &abba, "ab*a"),
            turn("Ann", None),
            turn("Ann", Some(Duration::from_secs(30))),
            format!("{TURN}\n"),
            moved(&ann, &letter, hit),
            moved(&ann, &letter, Outcome::Absent),
            moved(&ann, &Command::Word("abba".into()), Outcome::WrongWord),
            moved(&ann, &letter, won),
            timed_out("Ann"),
            left_game("Ann"),
            error(&not_your_turn("Bob")),
            results(&abba, &[ann, bob.clone()], &bob),
        ];
        for line in rendered.iter().flat_map(|text| text.lines()) {
            // The documentation names counts and scores N, M and T where they vary.
            let varies = [" joined (", " left (", "Hit: ", "Win: "];
            let shown = if varies.iter().any(|v| line.contains(v)) {
                let mut names = ["N", "M", "T"].into_iter();
                let mut shown = String::new();
                let mut in_number = false;
                for c in line.chars() {
                    match (c.is_ascii_digit(), in_number) {
                        (true, false) => shown += names.next().unwrap(),
                        (true, true) => {}
                        (false, _) => shown.push(c),
                    }
                    in_number = c.is_ascii_digit();
                }
                shown
            } else {
                line.to_owned()
            };
            assert!(doc.contains(&folded(&shown)), "{shown:?} is not documented");
        }
        let reasons = [
            ClientError::NotACommand.to_string(),
            ClientError::Unknown("/x".into()).to_string(),
            ClientError::MissingArgument(Kind::Letter).to_string(),
            ClientError::ExtraArgument(Kind::Letter).to_string(),
            ClientError::NotOneLetter("ab".into()).to_string(),
            ClientError::NotAWord("a1".into()).to_string(),
            already_tried('x', &['x', 'y']),
            not_your_turn("Bob"),
            not_started(1),
        ];
        for reason in reasons {
            assert!(
                doc.contains(&folded(&format!("{reason:?}"))),
                "the reason {reason:?} is not documented"
            );
        }
    }

    /// Every line the server renders reads back as what it means, so a client built on
    /// [`server_line`] understands exactly what the server says.
    #[test]
    fn clients_read_what_the_server_renders() {
        let line = |text: &str| text.lines().next().unwrap().to_owned();
        assert_eq!(server_line(&line(&welcome())), ServerLine::Welcome);
        assert_eq!(server_line(TURN), ServerLine::YourTurn);
        assert_eq!(server_line(QUIT), ServerLine::Quit);
        assert_eq!(server_line("/win"), ServerLine::UnknownCommand("/win"));
        assert_eq!(
            server_line(&line(&name_rejected(&NameError::Empty))),
            ServerLine::NameRejected
        );
        let refused = line(&error(&already_tried('a', &['a'])));
        assert_eq!(
            server_line(&refused),
            ServerLine::Error("the letter a was already tried (tried: a)")
        );
        for (word, scripts, letters) in [
            ("abba", vec![Script::of('a')], 4),
            ("ї", vec![Script::of('я')], 1),
            (
                "aβж",
                vec![Script::of('a'), Script::of('ω'), Script::of('я')],
                3,
            ),
        ] {
            let text = line(&alphabet(&Word::new(word).unwrap()));
            assert_eq!(
                server_line(&text),
                ServerLine::Alphabet { scripts, letters },
                "{text}"
            );
        }
        let name = "a\": letter b \\\"";
        let quoted_name = quoted(name);
        let turn_line = line(&turn(name, Some(Duration::from_secs(30))));
        assert_eq!(
            server_line(&turn_line),
            ServerLine::TurnOf {
                mover: &quoted_name,
                limit_secs: Some(30)
            }
        );
        assert_eq!(
            server_line(&line(&turn("Ann", None))),
            ServerLine::TurnOf {
                mover: "\"Ann\"",
                limit_secs: None
            }
        );
        let player = Player::new(PlayerId(1), name);
        let said = moved(&player, &Command::Letter('Ї'), Outcome::Absent);
        let said = said.lines().next().unwrap();
        assert_eq!(
            server_line(said),
            ServerLine::Letter {
                mover: &quoted_name,
                letter: 'ї'
            }
        );
        let said = moved(&player, &Command::Word("x".into()), Outcome::WrongWord);
        assert_eq!(
            server_line(said.lines().next().unwrap()),
            ServerLine::Message
        );
        for message in [
            line(&joined(name, 1, 2)),
            line(&word_state("a**a")),
            line(&timed_out(name)),
            "Turn: nobody".to_owned(),
            "Alphabet: Klingon, 4 letters".to_owned(),
            "Miss: no x in the word".to_owned(),
        ] {
            assert_eq!(server_line(&message), ServerLine::Message, "{message}");
        }
    }
}
