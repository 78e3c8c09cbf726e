//! The word-guess protocol parser (`protocol::parse`) and the game's state machine
//! (`word_guess::game::Game`), driven by arbitrary lines and moves of up to six players, the
//! way the hall drives a room: a line that parses is played, one that does not changes nothing.
//!
//! Next to the game runs a model written from the rules in the README and the protocol docs: a
//! letter in the word reveals every hidden occurrence, a point each, and keeps the turn; a miss
//! passes it; a letter tried before is refused and the turn kept; a wrong word drops the score
//! to 0 and passes the turn; revealing the last letter wins a bonus of one point per letter; a
//! player who leaves with the turn passes it on. After every step the game and the model must
//! agree on the outcome, the scores, the mover, the letters tried, the mask and the winner.
//!
//! Run: `cargo +nightly fuzz run word_guess --fuzz-dir tests/fuzz`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use porthost_services::word_guess::game::{Game, MoveError, Outcome, Player, PlayerId, Word, fold};
use porthost_services::word_guess::protocol::{self, Command};

#[derive(Debug, Arbitrary)]
enum Step {
    /// A line as a client sends it.
    Line(u8, String),
    Letter(u8, char),
    Guess(u8, String),
    /// The solution, in the case each flag picks: the winning move, which random words rarely are.
    Solve(u8, Vec<bool>),
    /// The player's turn timed out.
    Timeout,
    Leave(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    word: String,
    players: u8,
    steps: Vec<Step>,
}

/// The rules, kept by hand.
struct Model {
    word: Vec<char>,
    revealed: Vec<bool>,
    tried: Vec<char>,
    /// (id, score) in turn order.
    players: Vec<(PlayerId, usize)>,
    turn: usize,
    winner: Option<PlayerId>,
}

impl Model {
    fn over(&self) -> bool {
        self.winner.is_some() || self.players.is_empty()
    }

    fn mover(&self, id: PlayerId) -> Result<usize, MoveError> {
        if self.over() {
            Err(MoveError::Over)
        } else if self.players[self.turn].0 != id {
            Err(MoveError::NotYourTurn)
        } else {
            Ok(self.turn)
        }
    }

    fn pass(&mut self) {
        if !self.players.is_empty() {
            self.turn = (self.turn + 1) % self.players.len();
        }
    }

    fn reveal(&mut self, mover: usize, points: usize) -> Outcome {
        self.players[mover].1 += points;
        if self.revealed.iter().all(|&r| r) {
            let bonus = self.word.len();
            self.players[mover].1 += bonus;
            self.winner = Some(self.players[mover].0);
            Outcome::Won { points, bonus }
        } else {
            Outcome::Hit { points }
        }
    }

    fn letter(&mut self, id: PlayerId, letter: char) -> Result<Outcome, MoveError> {
        let mover = self.mover(id)?;
        let letter = fold(letter);
        if self.tried.contains(&letter) {
            return Err(MoveError::AlreadyTried(letter));
        }
        self.tried.push(letter);
        let mut points = 0;
        for (i, &c) in self.word.iter().enumerate() {
            if c == letter && !self.revealed[i] {
                self.revealed[i] = true;
                points += 1;
            }
        }
        if points == 0 {
            self.pass();
            return Ok(Outcome::Absent);
        }
        Ok(self.reveal(mover, points))
    }

    fn guess(&mut self, id: PlayerId, guess: &str) -> Result<Outcome, MoveError> {
        let mover = self.mover(id)?;
        let folded: Vec<char> = guess.chars().map(fold).collect();
        if folded != self.word {
            self.players[mover].1 = 0;
            self.pass();
            return Ok(Outcome::WrongWord);
        }
        let points = self.revealed.iter().filter(|&&r| !r).count();
        self.revealed.fill(true);
        Ok(self.reveal(mover, points))
    }

    fn leave(&mut self, id: PlayerId) {
        let Some(index) = self.players.iter().position(|p| p.0 == id) else {
            return;
        };
        self.players.remove(index);
        if index < self.turn {
            self.turn -= 1;
        }
        if self.turn >= self.players.len() {
            self.turn = 0;
        }
    }

    fn check(&self, game: &Game) {
        let players: Vec<(PlayerId, usize)> =
            game.players().iter().map(|p| (p.id, p.score)).collect();
        assert_eq!(players, self.players, "scores in turn order");
        assert_eq!(game.tried(), &self.tried[..], "letters tried");
        assert_eq!(game.is_over(), self.over());
        let mover = (!self.over()).then(|| self.players[self.turn].0);
        assert_eq!(game.mover().map(|p| p.id), mover, "the mover");
        // A winner who has left is no longer named, though the game stays over.
        let winner = self
            .winner
            .filter(|w| self.players.iter().any(|p| p.0 == *w));
        assert_eq!(game.winner().map(|p| p.id), winner, "the winner");
        let masked: String = self
            .word
            .iter()
            .zip(&self.revealed)
            .map(|(&c, &r)| if r { c } else { '*' })
            .collect();
        assert_eq!(game.masked(), masked);
        if let Some(winner) = game.winner() {
            assert!(winner.score >= self.word.len(), "a winner has the bonus");
        }
    }
}

fuzz_target!(|input: Input| {
    let Ok(word) = Word::new(&input.word) else {
        assert!(input.word.is_empty() || !input.word.chars().all(char::is_alphabetic));
        return;
    };
    let count = 1 + usize::from(input.players % 6);
    let ids: Vec<PlayerId> = (0..count as u64).map(PlayerId).collect();
    let players = ids.iter().map(|&id| Player::new(id, "p")).collect();
    let mut model = Model {
        word: input.word.chars().map(fold).collect(),
        revealed: vec![false; word.len()],
        tried: Vec::new(),
        players: ids.iter().map(|&id| (id, 0)).collect(),
        turn: 0,
        winner: None,
    };
    let solution: Vec<char> = word.letters().to_vec();
    let mut game = Game::new(word, players);
    let who = |n: u8| ids[usize::from(n) % count];
    for step in input.steps {
        let (got, want) = match step {
            Step::Line(n, line) => match protocol::parse(&line) {
                Ok(Command::Letter(c)) => (game.letter(who(n), c), model.letter(who(n), c)),
                Ok(Command::Word(w)) => {
                    assert!(!w.is_empty() && w.chars().all(char::is_alphabetic));
                    (game.word(who(n), &w), model.guess(who(n), &w))
                }
                Err(_) => {
                    model.check(&game);
                    continue;
                }
            },
            Step::Letter(n, c) => (game.letter(who(n), c), model.letter(who(n), c)),
            Step::Guess(n, w) => (game.word(who(n), &w), model.guess(who(n), &w)),
            Step::Solve(n, upper) => {
                let w: String = solution
                    .iter()
                    .zip(upper.iter().chain(std::iter::repeat(&false)))
                    .flat_map(|(&c, &up)| {
                        let mut s = String::new();
                        if up {
                            s.extend(c.to_uppercase());
                        } else {
                            s.push(c);
                        }
                        s.chars().collect::<Vec<_>>()
                    })
                    .collect();
                (game.word(who(n), &w), model.guess(who(n), &w))
            }
            Step::Timeout => {
                if !game.is_over() {
                    game.pass_turn();
                    model.pass();
                }
                model.check(&game);
                continue;
            }
            Step::Leave(n) => {
                let id = who(n);
                let had_turn =
                    !model.over() && model.players.get(model.turn).map(|p| p.0) == Some(id);
                let departure = game.leave(id);
                let present = model.players.iter().any(|p| p.0 == id);
                assert_eq!(
                    departure.as_ref().map(|d| d.had_turn),
                    present.then_some(had_turn)
                );
                model.leave(id);
                model.check(&game);
                continue;
            }
        };
        assert_eq!(got, want);
        model.check(&game);
    }
});
