//! The text side of the protocol, without sockets: parsing client lines into commands and
//! names, and rendering every server message. The formats are documented in the module above.

use std::fmt;

use super::game::{Outcome, Player, Word, fold};

/// The line that gives a client the turn.
pub const TURN: &str = "/turn\n";
/// The last line a client gets before the server closes the connection.
pub const QUIT: &str = "/quit\n";
/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Letter(char),
    Word(String),
}

/// A line the game cannot take (the lecture's `ClientError`); answered privately, the game
/// goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    NotACommand,
    Unknown(String),
    MissingArgument(&'static str),
    ExtraArgument(&'static str),
    NotOneLetter(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotACommand => {
                write!(
                    f,
                    "only commands are accepted: {LETTER_USAGE} or {WORD_USAGE}"
                )
            }
            ClientError::Unknown(name) => write!(
                f,
                "unknown command {:?}, the commands are {LETTER_USAGE} and {WORD_USAGE}",
                format!("/{name}")
            ),
            ClientError::MissingArgument(usage) => write!(f, "missing argument, send {usage}"),
            ClientError::ExtraArgument(usage) => {
                write!(f, "extra argument, send {usage} with one space before it")
            }
            ClientError::NotOneLetter(arg) => write!(f, "{arg:?} is not exactly one letter"),
        }
    }
}

const LETTER_USAGE: &str = "/letter X";
const WORD_USAGE: &str = "/word WORD";

/// Parses a line from a player: `/letter X` or `/word WORD`, the argument after one space.
pub fn parse(line: &str) -> Result<Command, ClientError> {
    let body = line.strip_prefix('/').ok_or(ClientError::NotACommand)?;
    let (name, arg) = match body.split_once(' ') {
        Some((name, arg)) => (name, Some(arg)),
        None => (body, None),
    };
    match name {
        "letter" => {
            let arg = argument(arg, LETTER_USAGE)?;
            let mut chars = arg.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_alphabetic() => Ok(Command::Letter(c)),
                _ => Err(ClientError::NotOneLetter(arg.to_owned())),
            }
        }
        "word" => Ok(Command::Word(argument(arg, WORD_USAGE)?.to_owned())),
        _ => Err(ClientError::Unknown(name.to_owned())),
    }
}

/// The single argument: present, and with no whitespace around or inside it.
fn argument<'a>(arg: Option<&'a str>, usage: &'static str) -> Result<&'a str, ClientError> {
    match arg {
        None => Err(ClientError::MissingArgument(usage)),
        Some(arg) if arg.trim().is_empty() => Err(ClientError::MissingArgument(usage)),
        Some(arg) if arg.contains(char::is_whitespace) => Err(ClientError::ExtraArgument(usage)),
        Some(arg) => Ok(arg),
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
/// start with `/`, and quotes, backslashes and control characters are escaped.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

pub fn welcome() -> &'static str {
    "Welcome to word-guess! Send your name.\n"
}

pub fn name_rejected(error: &NameError) -> String {
    let reason = match error {
        NameError::Empty => "it is empty".to_owned(),
        NameError::TooLong => format!("it is longer than {MAX_NAME_CHARS} characters"),
        NameError::Slash => "it starts with '/'".to_owned(),
        NameError::Taken(name) => format!("{} is taken", quoted(name)),
    };
    format!("Name rejected: {reason}; send another name\n")
}

/// An arrival in the lobby, with the count after it, and how many are still awaited.
pub fn joined(name: &str, waiting: usize, players: usize) -> String {
    format!(
        "{} joined ({waiting}/{players})\n{}",
        quoted(name),
        still_waiting(waiting, players)
    )
}

/// A departure from the lobby, with the count after it.
pub fn left_lobby(name: &str, waiting: usize, players: usize) -> String {
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

pub fn error(reason: &str) -> String {
    format!("Error: {reason}\n")
}

pub fn not_started(missing: usize) -> String {
    format!(
        "the game has not started, waiting for {}",
        more_players(missing)
    )
}

pub fn not_your_turn(mover: &str) -> String {
    format!("not your turn, waiting for {}", quoted(mover))
}

pub fn game_over() -> &'static str {
    "the game is over"
}

pub fn game_starts(players: &[Player], masked: &str) -> String {
    let names: Vec<String> = players.iter().map(|p| quoted(&p.name)).collect();
    format!("Game starts: {}\n{}", names.join(", "), word_state(masked))
}

pub fn word_state(masked: &str) -> String {
    format!("Word: {masked}\n")
}

pub fn turn(mover: &str) -> String {
    format!("Turn: {}\n", quoted(mover))
}

/// The announcement of a move: who did what, then what came of it. `mover` is the mover after
/// the move, with its new score.
pub fn moved(mover: &Player, command: &Command, outcome: Outcome) -> String {
    let name = quoted(&mover.name);
    let total = mover.score;
    let (said, what) = match command {
        Command::Letter(c) => (
            format!("{name}: letter {}\n", fold(*c)),
            fold(*c).to_string(),
        ),
        Command::Word(w) => (format!("{name}: word {}\n", quoted(w)), quoted(w)),
    };
    let came = match outcome {
        Outcome::Hit { points } => {
            format!("Hit: {name} scores {points} (total {total}) and moves again\n")
        }
        Outcome::Absent => format!("Miss: no {what} in the word\n"),
        Outcome::Repeated => format!("Miss: {what} is already revealed\n"),
        Outcome::WrongWord => format!("Wrong: {name} drops to 0 points\n"),
        Outcome::Won { points, bonus } => {
            format!("Win: {name} scores {points} + bonus {bonus} (total {total})\n")
        }
    };
    said + &came
}

pub fn timed_out(name: &str) -> String {
    format!("{} ran out of time\n", quoted(name))
}

pub fn left_game(name: &str) -> String {
    format!("{} left the game\n", quoted(name))
}

/// The end of a won game: the word, every remaining player's score in join order, the winner,
/// then [`QUIT`].
pub fn results(word: &Word, players: &[Player], winner: &Player) -> String {
    let mut text = format!("Game over, the word was {word}\nResults:\n");
    for player in players {
        text += &format!("{}: {}\n", quoted(&player.name), player.score);
    }
    text + &format!("Winner: {}\n", quoted(&winner.name)) + QUIT
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
    fn anything_but_a_command_is_an_error() {
        assert_eq!(parse("a"), Err(ClientError::NotACommand));
        assert_eq!(parse(""), Err(ClientError::NotACommand));
        assert_eq!(parse(" /letter a"), Err(ClientError::NotACommand));
        assert_eq!(parse("/guess a"), Err(ClientError::Unknown("guess".into())));
        assert_eq!(parse("/turn"), Err(ClientError::Unknown("turn".into())));
        assert_eq!(
            parse("/Letter a"),
            Err(ClientError::Unknown("Letter".into()))
        );
        assert_eq!(parse("/"), Err(ClientError::Unknown(String::new())));
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
    }

    #[test]
    fn errors_say_what_was_wrong_and_never_start_with_a_slash() {
        let errors = [
            parse("hi").unwrap_err(),
            parse("/x").unwrap_err(),
            parse("/letter").unwrap_err(),
            parse("/letter a b").unwrap_err(),
            parse("/letter ab").unwrap_err(),
        ];
        let texts: Vec<String> = errors.iter().map(|e| error(&e.to_string())).collect();
        assert_eq!(
            texts,
            [
                "Error: only commands are accepted: /letter X or /word WORD\n",
                "Error: unknown command \"/x\", the commands are /letter X and /word WORD\n",
                "Error: missing argument, send /letter X\n",
                "Error: extra argument, send /letter X with one space before it\n",
                "Error: \"ab\" is not exactly one letter\n",
            ]
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
        assert_eq!(turn("\u{1b}[2J"), "Turn: \"\\u{1b}[2J\"\n");
        assert_eq!(
            name_rejected(&NameError::Taken("Ann".into())),
            "Name rejected: \"Ann\" is taken; send another name\n"
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
        assert_eq!(
            moved(&ann, &a, Outcome::Repeated),
            "\"Ann\": letter a\nMiss: a is already revealed\n"
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
}
