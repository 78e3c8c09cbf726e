//! One game as a pure state machine: the players in join order, the word, which letters are
//! revealed and tried, the scores and whose turn it is. No I/O, channels or clocks: every move
//! returns what happened and the room turns that into messages.

use std::fmt;

/// Identifies one client for its whole connection; handed out by the hall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlayerId(pub u64);

/// The form letters are compared and shown in: the lowercase letter, one char for one char so
/// positions in a word never shift (`Ї` becomes `ї`; `İ`, whose lowercase is two chars, `i`).
pub fn fold(letter: char) -> char {
    letter.to_lowercase().next().unwrap_or(letter)
}

/// A word to guess: at least one letter and letters only, stored folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word(Vec<char>);

impl Word {
    /// Checks one entry of the word list; the error names the entry and says what is allowed.
    pub fn new(text: &str) -> Result<Word, String> {
        if text.is_empty() {
            return Err("a word is empty: words need at least one letter".to_owned());
        }
        if !text.chars().all(char::is_alphabetic) {
            return Err(format!(
                "word {text:?} has a character that is not a letter: words are letters only"
            ));
        }
        Ok(Word(text.chars().map(fold).collect()))
    }

    #[allow(
        clippy::len_without_is_empty,
        reason = "a word has at least one letter, so it is never empty"
    )]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The letters, folded, in order.
    pub fn letters(&self) -> &[char] {
        &self.0
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|c| write!(f, "{c}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Player {
    pub id: PlayerId,
    pub name: String,
    pub score: usize,
}

impl Player {
    pub fn new(id: PlayerId, name: &str) -> Player {
        Player {
            id,
            name: name.to_owned(),
            score: 0,
        }
    }
}

/// What a valid move did. Only [`Outcome::Hit`] keeps the turn; a win ends the game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The letter was hidden this many times: all revealed, one point each.
    Hit { points: usize },
    /// The letter is not in the word.
    Absent,
    /// The word guess was wrong: the mover's score dropped to 0.
    WrongWord,
    /// The mover revealed the last letter: `points` for the letters that were hidden plus a
    /// `bonus` of one point per letter of the word.
    Won { points: usize, bonus: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveError {
    /// The player does not hold the turn (or is not in this game).
    NotYourTurn,
    /// Someone has won or everyone has left.
    Over,
    /// The letter (folded) was tried before in this game, by anyone: it is not a guess, so it
    /// is refused and the mover keeps the turn. The lecture's rules are silent here; this rule
    /// is the server's so that every client, `nc` included, meets it.
    AlreadyTried(char),
}

/// A player who left, and whether the turn passed because of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub player: Player,
    pub had_turn: bool,
}

#[derive(Debug)]
pub struct Game {
    word: Word,
    revealed: Vec<bool>,
    /// Every letter guessed so far, folded, in the order guessed.
    tried: Vec<char>,
    /// The turn order: join order, minus those who left.
    players: Vec<Player>,
    /// Index into `players` of the mover, while the game is not over.
    turn: usize,
    winner: Option<PlayerId>,
}

impl Game {
    /// A game whose first mover is the first player.
    pub fn new(word: Word, players: Vec<Player>) -> Game {
        Game {
            revealed: vec![false; word.len()],
            tried: Vec::new(),
            word,
            players,
            turn: 0,
            winner: None,
        }
    }

    pub fn players(&self) -> &[Player] {
        &self.players
    }

    pub fn player(&self, id: PlayerId) -> Option<&Player> {
        self.players.iter().find(|p| p.id == id)
    }

    /// Who moves now; `None` once the game is over.
    pub fn mover(&self) -> Option<&Player> {
        if self.is_over() {
            None
        } else {
            self.players.get(self.turn)
        }
    }

    pub fn winner(&self) -> Option<&Player> {
        self.winner.and_then(|id| self.player(id))
    }

    /// Over when someone has won or no player is left.
    pub fn is_over(&self) -> bool {
        self.winner.is_some() || self.players.is_empty()
    }

    pub fn solution(&self) -> &Word {
        &self.word
    }

    /// The letters guessed so far, folded, in the order guessed.
    pub fn tried(&self) -> &[char] {
        &self.tried
    }

    /// The word with every hidden letter shown as `*`.
    pub fn masked(&self) -> String {
        self.word
            .0
            .iter()
            .zip(&self.revealed)
            .map(|(&c, &shown)| if shown { c } else { '*' })
            .collect()
    }

    /// Guesses one letter, compared case-insensitively. A letter already tried is refused.
    pub fn letter(&mut self, player: PlayerId, letter: char) -> Result<Outcome, MoveError> {
        let mover = self.mover_index(player)?;
        let letter = fold(letter);
        if self.tried.contains(&letter) {
            return Err(MoveError::AlreadyTried(letter));
        }
        self.tried.push(letter);
        let mut points = 0;
        for (&c, shown) in self.word.0.iter().zip(&mut self.revealed) {
            if c == letter && !*shown {
                *shown = true;
                points += 1;
            }
        }
        if points > 0 {
            self.players[mover].score += points;
            if self.revealed.iter().all(|&shown| shown) {
                return Ok(self.win(mover, points));
            }
            return Ok(Outcome::Hit { points });
        }
        // Every revealed letter was tried, so a letter that reveals nothing is not in the word.
        self.pass_turn();
        Ok(Outcome::Absent)
    }

    /// Guesses the whole word, compared case-insensitively letter by letter.
    pub fn word(&mut self, player: PlayerId, guess: &str) -> Result<Outcome, MoveError> {
        let mover = self.mover_index(player)?;
        if !guess.chars().map(fold).eq(self.word.0.iter().copied()) {
            self.players[mover].score = 0;
            self.pass_turn();
            return Ok(Outcome::WrongWord);
        }
        let points = self.revealed.iter().filter(|&&shown| !shown).count();
        self.revealed.fill(true);
        self.players[mover].score += points;
        Ok(self.win(mover, points))
    }

    /// Removes a player; if they held the turn, it passes to the next one in order.
    pub fn leave(&mut self, player: PlayerId) -> Option<Departure> {
        let index = self.players.iter().position(|p| p.id == player)?;
        let had_turn = !self.is_over() && index == self.turn;
        let player = self.players.remove(index);
        if index < self.turn {
            self.turn -= 1;
        }
        if self.turn >= self.players.len() {
            self.turn = 0;
        }
        Some(Departure { player, had_turn })
    }

    /// Gives the turn to the next player in join order (a miss, a wrong word, a timeout).
    pub fn pass_turn(&mut self) {
        if !self.players.is_empty() {
            self.turn = (self.turn + 1) % self.players.len();
        }
    }

    fn mover_index(&self, player: PlayerId) -> Result<usize, MoveError> {
        match self.mover() {
            None => Err(MoveError::Over),
            Some(mover) if mover.id == player => Ok(self.turn),
            Some(_) => Err(MoveError::NotYourTurn),
        }
    }

    fn win(&mut self, mover: usize, points: usize) -> Outcome {
        let bonus = self.word.len();
        self.players[mover].score += bonus;
        self.winner = Some(self.players[mover].id);
        Outcome::Won { points, bonus }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANN: PlayerId = PlayerId(1);
    const BOB: PlayerId = PlayerId(2);
    const CID: PlayerId = PlayerId(3);

    fn game(word: &str, ids: &[PlayerId]) -> Game {
        let players = ids
            .iter()
            .map(|&id| Player::new(id, &format!("p{}", id.0)))
            .collect();
        Game::new(Word::new(word).unwrap(), players)
    }

    fn score(game: &Game, id: PlayerId) -> usize {
        game.player(id).unwrap().score
    }

    fn mover(game: &Game) -> Option<PlayerId> {
        game.mover().map(|p| p.id)
    }

    #[test]
    fn the_abba_game_from_the_issue() {
        let mut g = game("abba", &[ANN, BOB]);
        assert_eq!(g.masked(), "****");
        assert_eq!(mover(&g), Some(ANN));
        assert_eq!(g.letter(ANN, 'a'), Ok(Outcome::Hit { points: 2 }));
        assert_eq!(g.masked(), "a**a");
        assert_eq!(score(&g, ANN), 2);
        assert_eq!(mover(&g), Some(ANN), "a hit moves again");
        assert_eq!(g.letter(ANN, 'z'), Ok(Outcome::Absent));
        assert_eq!(mover(&g), Some(BOB));
        assert_eq!(
            g.word(BOB, "abba"),
            Ok(Outcome::Won {
                points: 2,
                bonus: 4
            })
        );
        assert_eq!(score(&g, BOB), 6);
        assert_eq!(score(&g, ANN), 2);
        assert_eq!(g.winner().map(|p| p.id), Some(BOB));
        assert_eq!(g.masked(), "abba");
        assert!(g.is_over());
        assert_eq!(mover(&g), None);
        assert_eq!(g.letter(ANN, 'b'), Err(MoveError::Over));
    }

    #[test]
    fn a_wrong_word_resets_the_mover_to_zero_and_passes() {
        let mut g = game("abba", &[ANN, BOB]);
        g.letter(ANN, 'b').unwrap();
        assert_eq!(score(&g, ANN), 2);
        assert_eq!(g.word(ANN, "abbc"), Ok(Outcome::WrongWord));
        assert_eq!(score(&g, ANN), 0);
        assert_eq!(mover(&g), Some(BOB));
        assert_eq!(g.masked(), "*bb*", "a wrong word reveals nothing");
        assert_eq!(g.word(BOB, "abb"), Ok(Outcome::WrongWord), "too short");
        assert_eq!(g.word(ANN, "abbaa"), Ok(Outcome::WrongWord), "too long");
    }

    #[test]
    fn a_letter_already_tried_is_refused_and_the_turn_stays() {
        let mut g = game("abba", &[ANN, BOB]);
        g.letter(ANN, 'a').unwrap();
        assert_eq!(
            g.letter(ANN, 'a'),
            Err(MoveError::AlreadyTried('a')),
            "revealed"
        );
        assert_eq!(score(&g, ANN), 2);
        assert_eq!(mover(&g), Some(ANN));
        g.letter(ANN, 'z').unwrap();
        assert_eq!(mover(&g), Some(BOB));
        assert_eq!(
            g.letter(BOB, 'Z'),
            Err(MoveError::AlreadyTried('z')),
            "a miss, in any case"
        );
        assert_eq!(g.letter(BOB, 'A'), Err(MoveError::AlreadyTried('a')));
        assert_eq!(mover(&g), Some(BOB));
        assert_eq!(g.tried(), ['a', 'z']);
        assert_eq!(
            g.letter(ANN, 'q'),
            Err(MoveError::NotYourTurn),
            "the turn comes first"
        );
        assert_eq!(g.word(BOB, "abbz"), Ok(Outcome::WrongWord));
        assert_eq!(g.tried(), ['a', 'z'], "a word guess tries no letter");
    }

    #[test]
    fn revealing_the_last_letter_wins_with_the_bonus() {
        let mut g = game("abba", &[ANN, BOB]);
        g.letter(ANN, 'a').unwrap();
        assert_eq!(
            g.letter(ANN, 'b'),
            Ok(Outcome::Won {
                points: 2,
                bonus: 4
            })
        );
        assert_eq!(score(&g, ANN), 8);
        assert_eq!(g.winner().map(|p| p.id), Some(ANN));
    }

    #[test]
    fn a_right_word_scores_only_the_hidden_letters() {
        let mut g = game("кобзар", &[ANN]);
        g.letter(ANN, 'о').unwrap();
        g.letter(ANN, 'р').unwrap();
        assert_eq!(score(&g, ANN), 2);
        assert_eq!(
            g.word(ANN, "кобзар"),
            Ok(Outcome::Won {
                points: 4,
                bonus: 6
            })
        );
        assert_eq!(score(&g, ANN), 12);
    }

    #[test]
    fn letters_and_words_compare_unicode_case_insensitively() {
        let mut g = game("Їжак", &[ANN, BOB]);
        assert_eq!(g.solution().to_string(), "їжак", "shown in lowercase");
        assert_eq!(g.letter(ANN, 'Ї'), Ok(Outcome::Hit { points: 1 }));
        assert_eq!(g.masked(), "ї***");
        assert_eq!(g.letter(ANN, 'ї'), Err(MoveError::AlreadyTried('ї')));
        assert_eq!(g.word(ANN, "їжаченя"), Ok(Outcome::WrongWord));
        assert_eq!(
            g.word(BOB, "ЇЖАК"),
            Ok(Outcome::Won {
                points: 3,
                bonus: 4
            })
        );
    }

    #[test]
    fn only_the_mover_may_move() {
        let mut g = game("abba", &[ANN, BOB]);
        assert_eq!(g.letter(BOB, 'a'), Err(MoveError::NotYourTurn));
        assert_eq!(g.word(BOB, "abba"), Err(MoveError::NotYourTurn));
        assert_eq!(
            g.letter(CID, 'a'),
            Err(MoveError::NotYourTurn),
            "a stranger"
        );
        assert_eq!(g.masked(), "****");
        assert_eq!(mover(&g), Some(ANN));
    }

    #[test]
    fn turns_go_round_in_join_order() {
        let mut g = game("abba", &[ANN, BOB, CID]);
        g.letter(ANN, 'x').unwrap();
        g.letter(BOB, 'y').unwrap();
        assert_eq!(mover(&g), Some(CID));
        g.pass_turn();
        assert_eq!(mover(&g), Some(ANN));
    }

    #[test]
    fn leaving_on_your_turn_passes_it_to_the_next() {
        let mut g = game("abba", &[ANN, BOB, CID]);
        g.letter(ANN, 'x').unwrap();
        let left = g.leave(BOB).unwrap();
        assert_eq!((left.player.id, left.had_turn), (BOB, true));
        assert_eq!(mover(&g), Some(CID));
        let left = g.leave(CID).unwrap();
        assert!(left.had_turn);
        assert_eq!(
            mover(&g),
            Some(ANN),
            "the last in order passes to the first"
        );
    }

    #[test]
    fn leaving_out_of_turn_keeps_the_mover() {
        let mut g = game("abba", &[ANN, BOB, CID]);
        g.letter(ANN, 'x').unwrap();
        assert!(!g.leave(ANN).unwrap().had_turn);
        assert_eq!(mover(&g), Some(BOB));
        assert!(!g.leave(CID).unwrap().had_turn);
        assert_eq!(mover(&g), Some(BOB));
        assert_eq!(g.leave(CID), None, "already gone");
    }

    #[test]
    fn the_game_goes_on_with_whoever_remains_and_ends_with_the_last() {
        let mut g = game("abba", &[ANN, BOB]);
        g.leave(ANN).unwrap();
        assert!(!g.is_over());
        assert_eq!(g.letter(BOB, 'a'), Ok(Outcome::Hit { points: 2 }));
        assert_eq!(g.letter(BOB, 'q'), Ok(Outcome::Absent));
        assert_eq!(mover(&g), Some(BOB), "alone, the turn comes back");
        g.leave(BOB).unwrap();
        assert!(g.is_over());
        assert_eq!(g.winner(), None);
        assert_eq!(mover(&g), None);
        assert_eq!(g.letter(BOB, 'b'), Err(MoveError::Over));
    }

    #[test]
    fn words_are_letters_only() {
        assert!(Word::new("abba").is_ok());
        assert!(Word::new("ґанок").is_ok());
        let bad = Word::new("ab1").unwrap_err();
        assert!(bad.contains("\"ab1\""), "{bad}");
        assert!(Word::new("м'ята").is_err());
        assert!(Word::new("two words").is_err());
        assert!(Word::new("").is_err());
    }

    #[test]
    fn fold_keeps_one_char_per_char() {
        assert_eq!(fold('Ї'), 'ї');
        assert_eq!(fold('ї'), 'ї');
        assert_eq!(fold('A'), 'a');
        assert_eq!(fold('İ'), 'i');
        assert_eq!(Word::new("İİ").unwrap().len(), 2);
    }

    /// Any sequence of moves, out-of-turn moves, leaves and timeouts, checked move by move
    /// against the rules: scores change only as the rules say (so never underflow), the revealed
    /// letters always match the word, the turn always belongs to a player still in the game, and
    /// a won game has one winner who got the bonus.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Action {
            Letter(usize, char),
            /// The right word (in any case), or a wrong one.
            Word(usize, bool, bool),
            Leave(usize),
            Timeout,
        }

        /// Letters in both cases, so folding is exercised: `Ї`/`ї` and `A`/`a` are one letter.
        const ALPHABET: [char; 8] = ['a', 'A', 'b', 'c', 'ї', 'Ї', 'ж', 'z'];

        fn action() -> impl Strategy<Value = Action> {
            prop_oneof![
                6 => (0usize..6, prop::sample::select(ALPHABET.to_vec()))
                    .prop_map(|(p, c)| Action::Letter(p, c)),
                2 => (0usize..6, any::<bool>(), any::<bool>())
                    .prop_map(|(p, right, upper)| Action::Word(p, right, upper)),
                1 => (0usize..6).prop_map(Action::Leave),
                1 => Just(Action::Timeout),
            ]
        }

        fn word() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 1..8)
                .prop_map(|letters| letters.into_iter().collect())
        }

        fn scores(game: &Game) -> Vec<(PlayerId, usize)> {
            game.players().iter().map(|p| (p.id, p.score)).collect()
        }

        fn check_state(game: &Game, word: &[char]) -> Result<(), TestCaseError> {
            let masked: Vec<char> = game.masked().chars().collect();
            prop_assert_eq!(masked.len(), word.len());
            for (&shown, &letter) in masked.iter().zip(word) {
                prop_assert!(
                    shown == '*' || shown == letter,
                    "{masked:?} against {word:?}"
                );
            }
            match game.mover() {
                Some(mover) => {
                    prop_assert!(!game.is_over());
                    prop_assert!(game.players().iter().any(|p| p.id == mover.id));
                }
                None => prop_assert!(game.is_over()),
            }
            if let Some(winner) = game.winner() {
                prop_assert!(!masked.contains(&'*'), "a winner with letters still hidden");
                prop_assert!(winner.score >= word.len(), "the winner lacks the bonus");
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_move_follows_the_rules(
                text in word(),
                players in 1usize..6,
                actions in prop::collection::vec(action(), 0..60),
            ) {
                // Actions may name players 0..6: those past `players` were never in the game.
                let ids: Vec<PlayerId> = (0..players as u64).map(PlayerId).collect();
                let mut g = game(&text, &ids);
                let folded: Vec<char> = text.chars().map(fold).collect();
                let mut wins = 0;
                let mut tried: Vec<char> = Vec::new();
                check_state(&g, &folded)?;
                for action in actions {
                    let before = scores(&g);
                    let mover = g.mover().map(|p| p.id);
                    let hidden = g.masked().chars().filter(|&c| c == '*').count();
                    let score_of = |g: &Game, id| g.player(id).map(|p| p.score);
                    let old_score = |id| before.iter().find(|(p, _)| *p == id).map(|(_, s)| *s);
                    match action {
                        Action::Letter(i, _) | Action::Word(i, _, _) => {
                            let id = PlayerId(i as u64);
                            let outcome = letter_or_word(&mut g, id, &action, &text);
                            if let (Action::Letter(_, letter), Ok(_)) = (&action, &outcome) {
                                prop_assert!(!tried.contains(&fold(*letter)), "a letter was tried twice");
                                tried.push(fold(*letter));
                            }
                            prop_assert_eq!(g.tried(), tried.as_slice());
                            match (mover, outcome) {
                                (None, result) => prop_assert_eq!(result, Err(MoveError::Over)),
                                (Some(m), result) if m != id => {
                                    prop_assert_eq!(result, Err(MoveError::NotYourTurn));
                                    prop_assert_eq!(scores(&g), before.clone());
                                }
                                (Some(_), Err(MoveError::AlreadyTried(refused))) => {
                                    let Action::Letter(_, letter) = action else {
                                        return Err(TestCaseError::fail("a word guess was refused as tried"));
                                    };
                                    prop_assert_eq!(refused, fold(letter));
                                    prop_assert!(tried.contains(&refused));
                                    prop_assert_eq!(scores(&g), before.clone());
                                    prop_assert_eq!(g.mover().map(|p| p.id), mover, "the turn stays");
                                }
                                (Some(_), Ok(Outcome::Hit { points })) => {
                                    prop_assert!(points > 0);
                                    prop_assert_eq!(score_of(&g, id), old_score(id).map(|s| s + points));
                                    prop_assert_eq!(g.mover().map(|p| p.id), Some(id), "a hit keeps the turn");
                                    let now_hidden = g.masked().chars().filter(|&c| c == '*').count();
                                    prop_assert_eq!(hidden - now_hidden, points);
                                }
                                (Some(_), Ok(Outcome::Won { points, bonus })) => {
                                    prop_assert_eq!(points, hidden);
                                    prop_assert_eq!(bonus, folded.len());
                                    prop_assert_eq!(score_of(&g, id), old_score(id).map(|s| s + points + bonus));
                                    prop_assert_eq!(g.winner().map(|p| p.id), Some(id));
                                    wins += 1;
                                }
                                (Some(_), Ok(Outcome::WrongWord)) => {
                                    prop_assert_eq!(score_of(&g, id), Some(0));
                                    prop_assert_eq!(g.mover().map(|p| p.id), next(&before, id));
                                }
                                (Some(_), Ok(Outcome::Absent)) => {
                                    prop_assert_eq!(scores(&g), before.clone());
                                    prop_assert_eq!(g.mover().map(|p| p.id), next(&before, id));
                                }
                                (Some(_), Err(e)) => prop_assert!(false, "the mover's move failed: {e:?}"),
                            }
                        }
                        Action::Leave(i) => {
                            let id = PlayerId(i as u64);
                            let order: Vec<PlayerId> = before.iter().map(|(p, _)| *p).collect();
                            let departure = g.leave(id);
                            prop_assert_eq!(departure.is_some(), order.contains(&id));
                            prop_assert!(g.player(id).is_none());
                            if let Some(d) = departure {
                                prop_assert_eq!(d.had_turn, mover == Some(id));
                            }
                            // The turn stays with the mover, or passes to whoever came next.
                            let expected = mover.and_then(|m| {
                                if m != id {
                                    return Some(m);
                                }
                                let at = order.iter().position(|&p| p == m)?;
                                order.iter().cycle().skip(at + 1).take(order.len()).find(|&&p| p != id).copied()
                            });
                            if !g.is_over() {
                                prop_assert_eq!(g.mover().map(|p| p.id), expected);
                            }
                        }
                        Action::Timeout => {
                            if let Some(m) = mover {
                                g.pass_turn();
                                prop_assert_eq!(g.mover().map(|p| p.id), next(&before, m));
                            }
                            prop_assert_eq!(scores(&g), before.clone());
                        }
                    }
                    check_state(&g, &folded)?;
                }
                prop_assert!(wins <= 1, "a game has one winner at most");
            }
        }

        /// Who comes after `id` in the turn order `players` (`id` again when alone).
        fn next(players: &[(PlayerId, usize)], id: PlayerId) -> Option<PlayerId> {
            let at = players.iter().position(|(p, _)| *p == id)?;
            Some(players[(at + 1) % players.len()].0)
        }

        fn letter_or_word(
            g: &mut Game,
            id: PlayerId,
            action: &Action,
            text: &str,
        ) -> Result<Outcome, MoveError> {
            match action {
                Action::Letter(_, letter) => g.letter(id, *letter),
                Action::Word(_, true, upper) if *upper => g.word(id, &text.to_uppercase()),
                Action::Word(_, true, _) => g.word(id, text),
                _ => g.word(id, "zzzzzzzzzz"),
            }
        }
    }
}
