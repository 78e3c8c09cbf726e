//! The shared state of one port: the lobby and the games in progress (rooms), like the chat
//! server's shared state in tokio's `examples/chat.rs`. One [`Hall`] sits behind a
//! `std::sync::Mutex`; every method runs to completion under the lock without awaiting, and
//! talks to clients only by `try_send` on their bounded queues, so no client can block another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::Settings;
use super::game::{Game, MoveError, Player, PlayerId};
use super::protocol::{self, NameError, TURN};

/// The outbound queues of one group of clients (the lobby or a room).
#[derive(Debug, Default)]
struct Outboxes {
    queues: HashMap<PlayerId, Sender<Arc<str>>>,
    /// Clients whose queue was full: their sender is already dropped (so their connection
    /// closes once the queue is written), their leave is still to be handled by the owner.
    overflowed: Vec<PlayerId>,
}

impl Outboxes {
    fn send(&mut self, to: PlayerId, text: &str) {
        if let Some(queue) = self.queues.get(&to)
            && let Err(TrySendError::Full(_)) = queue.try_send(text.into())
        {
            self.queues.remove(&to);
            self.overflowed.push(to);
        }
    }

    fn broadcast(&mut self, text: &str) {
        self.broadcast_except(text, None);
    }

    fn broadcast_except(&mut self, text: &str, skip: Option<PlayerId>) {
        let message: Arc<str> = text.into();
        let overflowed = &mut self.overflowed;
        // A closed queue means that session is ending; its `finish` does the leaving.
        self.queues.retain(|&id, queue| {
            if Some(id) == skip {
                return true;
            }
            match queue.try_send(message.clone()) {
                Err(TrySendError::Full(_)) => {
                    overflowed.push(id);
                    false
                }
                _ => true,
            }
        });
    }
}

/// Named clients waiting for a game, in arrival order.
#[derive(Debug, Default)]
struct Lobby {
    waiting: Vec<Player>,
    outboxes: Outboxes,
}

/// One game in progress and the queues of its players.
#[derive(Debug)]
struct Room {
    game: Game,
    outboxes: Outboxes,
    turn_timeout: Option<Duration>,
    /// When the current mover loses the turn, if turns are timed.
    deadline: Option<Instant>,
}

impl Room {
    /// Starts the game; `text` (the last arrival) goes first in the same message.
    fn start(&mut self, text: String) {
        let start = protocol::game_starts(
            self.game.players(),
            self.game.solution(),
            &self.game.masked(),
        );
        self.announce(text + &start);
    }

    /// Sends `text` to everyone, followed by the results if the game is won, or else by whose
    /// turn it is. The mover's copy ends with `/turn`: one message, so one write, since a
    /// client that gets a message in two writes may wait for a delayed ACK in between.
    fn announce(&mut self, mut text: String) {
        let limit = self.turn_timeout;
        let mover = self
            .game
            .mover()
            .map(|p| (p.id, protocol::turn(&p.name, limit)));
        if let Some(winner) = self.game.winner() {
            text += &protocol::results(self.game.solution(), self.game.players(), winner);
        } else if let Some((_, turn)) = &mover {
            text += turn;
        }
        match mover {
            Some((id, _)) => {
                self.outboxes.broadcast_except(&text, Some(id));
                self.outboxes.send(id, &format!("{text}{TURN}\n"));
                self.deadline = self
                    .turn_timeout
                    .and_then(|t| Instant::now().checked_add(t));
            }
            None => self.outboxes.broadcast(&text),
        }
    }

    fn play(&mut self, id: PlayerId, line: &str) {
        let command = match protocol::parse(line) {
            Ok(command) => command,
            Err(e) => return self.reject(id, &e.to_string()),
        };
        let outcome = match &command {
            protocol::Command::Letter(c) => self.game.letter(id, *c),
            protocol::Command::Word(w) => self.game.word(id, w),
        };
        match outcome {
            Ok(outcome) => {
                if let Some(mover) = self.game.player(id) {
                    let text = protocol::moved(mover, &command, outcome);
                    self.announce(text + &protocol::word_state(&self.game.masked()));
                }
            }
            Err(MoveError::NotYourTurn) => {
                let mover = self
                    .game
                    .mover()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                self.reject(id, &protocol::not_your_turn(&mover));
            }
            Err(MoveError::Over) => self.reject(id, protocol::game_over()),
            Err(MoveError::AlreadyTried(letter)) => {
                let reason = protocol::already_tried(letter, self.game.tried());
                self.reject(id, &reason);
            }
        }
    }

    /// A private error; the mover is given the turn again, since it still has it.
    fn reject(&mut self, id: PlayerId, reason: &str) {
        let mut text = protocol::error(reason);
        if self.game.mover().is_some_and(|p| p.id == id) {
            text += TURN;
            text += "\n";
        }
        self.outboxes.send(id, &text);
    }

    fn expire(&mut self, id: PlayerId, now: Instant) {
        let due = self.deadline.is_some_and(|d| d <= now);
        let Some(mover) = self.game.mover().filter(|p| p.id == id && due) else {
            return;
        };
        let text = protocol::timed_out(&mover.name);
        self.game.pass_turn();
        self.announce(text);
    }

    fn depart(&mut self, id: PlayerId) {
        self.outboxes.queues.remove(&id);
        if self.game.is_over() {
            return;
        }
        if let Some(departure) = self.game.leave(id) {
            let text = protocol::left_game(&departure.player.name);
            if departure.had_turn {
                self.announce(text);
            } else {
                self.outboxes.broadcast(&text);
            }
        }
    }

    /// Handles the leaves of overflowed clients (which may overflow others); returns them.
    fn settle(&mut self) -> Vec<PlayerId> {
        let mut gone = Vec::new();
        while let Some(id) = self.outboxes.overflowed.pop() {
            self.depart(id);
            gone.push(id);
        }
        gone
    }
}

/// The lobby and every room of one port.
#[derive(Debug)]
pub struct Hall {
    settings: Settings,
    lobby: Lobby,
    rooms: HashMap<u64, Room>,
    /// Which room each playing client is in; clients not here are in the lobby or gone.
    seats: HashMap<PlayerId, u64>,
    next_player: u64,
    /// Also the number of games started.
    next_room: u64,
    finished: u64,
}

/// What a port's games look like now, for the host's metrics and live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HallStats {
    /// Named clients, in the lobby or in a game.
    pub players: u64,
    /// 1 while the lobby has players waiting for a game to fill, else 0.
    pub waiting: u64,
    pub playing: u64,
    pub started: u64,
    pub finished: u64,
}

impl Hall {
    pub fn new(settings: Settings) -> Hall {
        Hall {
            settings,
            lobby: Lobby::default(),
            rooms: HashMap::new(),
            seats: HashMap::new(),
            next_player: 0,
            next_room: 0,
            finished: 0,
        }
    }

    pub fn stats(&self) -> HallStats {
        HallStats {
            players: (self.seats.len() + self.lobby.waiting.len()) as u64,
            waiting: u64::from(!self.lobby.waiting.is_empty()),
            playing: self.rooms.len() as u64,
            started: self.next_room,
            finished: self.finished,
        }
    }

    /// Admits a client to the lobby under the name in `line`, and starts a game when the lobby
    /// is full. The hall keeps a clone of `outbox`: from now on it decides when it closes.
    pub fn join(&mut self, line: &str, outbox: &Sender<Arc<str>>) -> Result<PlayerId, NameError> {
        let name = protocol::check_name(line)?;
        if self.lobby.waiting.iter().any(|p| p.name == name) {
            return Err(NameError::Taken(name.to_owned()));
        }
        let id = PlayerId(self.next_player);
        self.next_player += 1;
        self.lobby.waiting.push(Player::new(id, name));
        self.lobby.outboxes.queues.insert(id, outbox.clone());
        let text = protocol::joined(name, self.lobby.waiting.len(), self.settings.players);
        if self.lobby.waiting.len() == self.settings.players {
            self.start_game(text);
        } else {
            self.lobby.outboxes.broadcast(&text);
            self.settle_lobby();
        }
        Ok(id)
    }

    /// A line from a named client.
    pub fn line(&mut self, id: PlayerId, line: &str) {
        if let Some(&room) = self.seats.get(&id) {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.play(id, line);
            }
            self.settle(room);
        } else if self.lobby.outboxes.queues.contains_key(&id) {
            let missing = self.settings.players - self.lobby.waiting.len();
            let reason = match protocol::parse(line) {
                Err(e) => e.to_string(),
                Ok(_) => protocol::not_started(missing),
            };
            self.lobby.outboxes.send(id, &protocol::error(&reason));
            self.settle_lobby();
        }
    }

    /// When this client's turn times out, if it is the mover of a timed game.
    pub fn deadline(&self, id: PlayerId) -> Option<Instant> {
        let room = self.rooms.get(self.seats.get(&id)?)?;
        room.game.mover().filter(|p| p.id == id)?;
        room.deadline
    }

    /// This client's timer fired: it loses the turn if it still has it and its time is up.
    pub fn expire(&mut self, id: PlayerId, now: Instant) {
        if let Some(&room) = self.seats.get(&id) {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.expire(id, now);
            }
            self.settle(room);
        }
    }

    /// The client's session ended: it leaves its room or the lobby, announced to the others.
    pub fn leave(&mut self, id: PlayerId) {
        if let Some(room) = self.seats.remove(&id) {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.depart(id);
            }
            self.settle(room);
        } else {
            self.leave_lobby(id);
            self.settle_lobby();
        }
    }

    fn leave_lobby(&mut self, id: PlayerId) {
        self.lobby.outboxes.queues.remove(&id);
        if let Some(index) = self.lobby.waiting.iter().position(|p| p.id == id) {
            let player = self.lobby.waiting.remove(index);
            let text = protocol::left_lobby(
                &player.name,
                self.lobby.waiting.len(),
                self.settings.players,
            );
            self.lobby.outboxes.broadcast(&text);
        }
    }

    fn settle_lobby(&mut self) {
        while let Some(id) = self.lobby.outboxes.overflowed.pop() {
            self.leave_lobby(id);
        }
    }

    /// Moves the whole lobby into a new room; `text` announces the last arrival.
    fn start_game(&mut self, text: String) {
        let players = std::mem::take(&mut self.lobby.waiting);
        let outboxes = std::mem::take(&mut self.lobby.outboxes);
        let word = self
            .settings
            .words
            .choose(&mut rand::rng())
            .expect("build rejects an empty word list")
            .clone();
        let room = self.next_room;
        self.next_room += 1;
        for player in &players {
            self.seats.insert(player.id, room);
        }
        let mut r = Room {
            game: Game::new(word, players),
            outboxes,
            turn_timeout: self.settings.turn_timeout,
            deadline: None,
        };
        r.start(text);
        self.rooms.insert(room, r);
        self.settle(room);
    }

    /// Handles overflowed clients of a room, and drops the room once its game is over: that
    /// drops the last senders, so every connection of the room closes after its queue.
    fn settle(&mut self, room: u64) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        for id in r.settle() {
            self.seats.remove(&id);
        }
        if r.game.is_over() {
            for player in r.game.players() {
                self.seats.remove(&player.id);
            }
            self.rooms.remove(&room);
            self.finished += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::Inbox;
    use crate::word_guess::game::Word;
    use tokio::sync::mpsc::{self, error::TryRecvError};

    fn hall(players: usize, word: &str, turn_timeout: Option<Duration>) -> Hall {
        Hall::new(Settings {
            players,
            words: vec![Word::new(word).unwrap()],
            turn_timeout,
        })
    }

    /// Joins a client whose queue holds `queue` messages; the hall keeps the only sender.
    fn join(hall: &mut Hall, name: &str, queue: usize) -> (PlayerId, Inbox) {
        let (tx, rx) = mpsc::channel(queue);
        (hall.join(name, &tx).unwrap(), rx)
    }

    fn drain(inbox: &mut Inbox) -> String {
        let mut text = String::new();
        while let Ok(message) = inbox.try_recv() {
            text += &message;
        }
        text
    }

    #[test]
    fn names_are_unique_in_the_lobby_only() {
        let mut hall = hall(2, "abba", None);
        let (tx, _rx) = mpsc::channel(8);
        hall.join("Ann", &tx).unwrap();
        assert_eq!(hall.join(" Ann ", &tx), Err(NameError::Taken("Ann".into())));
        hall.join("Bob", &tx).unwrap();
        hall.join("Ann", &tx)
            .expect("the first Ann is in a game now");
    }

    #[test]
    fn lines_in_the_lobby_get_a_private_error() {
        let mut hall = hall(3, "abba", None);
        let (ann, mut ann_rx) = join(&mut hall, "Ann", 8);
        let (_, mut bob_rx) = join(&mut hall, "Bob", 8);
        drain(&mut ann_rx);
        drain(&mut bob_rx);
        hall.line(ann, "/letter a");
        hall.line(ann, "hello");
        assert_eq!(
            drain(&mut ann_rx),
            "Error: the game has not started, waiting for 1 more player\n\
             Error: only commands are accepted: /letter X or /word WORD\n"
        );
        assert_eq!(drain(&mut bob_rx), "");
    }

    #[test]
    fn a_full_queue_in_the_lobby_drops_that_client() {
        let mut hall = hall(3, "abba", None);
        let (_, mut ann_rx) = join(&mut hall, "Ann", 1);
        let (_, mut bob_rx) = join(&mut hall, "Bob", 8);
        assert_eq!(
            drain(&mut ann_rx),
            "\"Ann\" joined (1/3)\nWaiting for 2 more players\n"
        );
        assert_eq!(ann_rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(
            drain(&mut bob_rx),
            "\"Bob\" joined (2/3)\nWaiting for 1 more player\n\
             \"Ann\" left (1/3)\nWaiting for 2 more players\n"
        );
        join(&mut hall, "Cid", 8);
        assert!(hall.rooms.is_empty(), "Ann's place is free again");
    }

    #[test]
    fn a_full_queue_in_a_game_drops_that_player_and_the_game_goes_on() {
        let mut hall = hall(3, "abcdefghijklmnopqrstuvwxyz", None);
        let (ann, mut ann_rx) = join(&mut hall, "Ann", 64);
        let (bob, mut bob_rx) = join(&mut hall, "Bob", 64);
        let (cid, mut cid_rx) = join(&mut hall, "Cid", 4);
        drain(&mut ann_rx);
        drain(&mut bob_rx);
        // Cid never reads: the game start (with its join) and three hits fill its queue, the
        // fourth hit overflows it.
        for letter in ['a', 'b', 'c'] {
            hall.line(ann, &format!("/letter {letter}"));
            assert!(!drain(&mut ann_rx).contains("left"));
        }
        hall.line(ann, "/letter d");
        let text = drain(&mut ann_rx);
        assert!(text.ends_with("/turn\n\"Cid\" left the game\n"), "{text}");
        assert!(drain(&mut bob_rx).ends_with("Turn: \"Ann\"\n\"Cid\" left the game\n"));
        assert_eq!(drain(&mut cid_rx).matches("Word: ").count(), 4);
        assert_eq!(cid_rx.try_recv(), Err(TryRecvError::Disconnected));
        hall.line(ann, "/letter 1");
        hall.line(ann, "/letter z");
        hall.line(bob, "/letter y");
        assert!(
            drain(&mut ann_rx).ends_with("Turn: \"Ann\"\n/turn\n"),
            "Cid is out of the ring"
        );
        hall.line(cid, "/letter x");
        hall.leave(cid);
        assert_eq!(hall.seats.len(), 2);
    }

    #[test]
    fn a_won_game_sends_results_then_closes_every_queue() {
        let mut hall = hall(2, "abba", None);
        let (ann, mut ann_rx) = join(&mut hall, "Ann", 64);
        let (_, mut bob_rx) = join(&mut hall, "Bob", 64);
        drain(&mut bob_rx);
        hall.line(ann, "/word abba");
        assert!(drain(&mut ann_rx).ends_with("Winner: \"Ann\"\n/quit\n"));
        assert_eq!(ann_rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(
            drain(&mut bob_rx),
            "\"Ann\": word \"abba\"\nWin: \"Ann\" scores 4 + bonus 4 (total 8)\nWord: abba\n\
             Game over, the word was abba\nResults:\n\"Ann\": 8\n\"Bob\": 0\nWinner: \"Ann\"\n/quit\n"
        );
        assert_eq!(bob_rx.try_recv(), Err(TryRecvError::Disconnected));
        assert!(hall.rooms.is_empty() && hall.seats.is_empty());
        hall.leave(ann);
    }

    #[test]
    fn stats_follow_the_lobby_and_the_games() {
        let mut hall = hall(2, "abba", None);
        assert_eq!(hall.stats(), HallStats::default());
        let (ann, _ann_rx) = join(&mut hall, "Ann", 64);
        assert_eq!(
            hall.stats(),
            HallStats {
                players: 1,
                waiting: 1,
                ..HallStats::default()
            }
        );
        let (_, _bob_rx) = join(&mut hall, "Bob", 64);
        assert_eq!(
            hall.stats(),
            HallStats {
                players: 2,
                playing: 1,
                started: 1,
                ..HallStats::default()
            }
        );
        hall.line(ann, "/word abba");
        assert_eq!(
            hall.stats(),
            HallStats {
                started: 1,
                finished: 1,
                ..HallStats::default()
            }
        );
    }

    #[test]
    fn the_last_player_leaving_ends_the_game() {
        let mut hall = hall(2, "abba", None);
        let (ann, _ann_rx) = join(&mut hall, "Ann", 64);
        let (bob, mut bob_rx) = join(&mut hall, "Bob", 64);
        drain(&mut bob_rx);
        hall.leave(ann);
        assert_eq!(
            drain(&mut bob_rx),
            "\"Ann\" left the game\nTurn: \"Bob\"\n/turn\n"
        );
        hall.leave(bob);
        assert!(hall.rooms.is_empty() && hall.seats.is_empty());
    }

    #[test]
    fn only_the_movers_timer_passes_the_turn_once_due() {
        let timeout = Duration::from_secs(10);
        let mut hall = hall(2, "abba", Some(timeout));
        let (ann, mut ann_rx) = join(&mut hall, "Ann", 64);
        let (bob, mut bob_rx) = join(&mut hall, "Bob", 64);
        drain(&mut ann_rx);
        drain(&mut bob_rx);
        let deadline = hall.deadline(ann).expect("Ann moves first");
        assert_eq!(hall.deadline(bob), None);
        hall.expire(ann, deadline - Duration::from_secs(1));
        hall.expire(bob, deadline);
        assert_eq!(drain(&mut bob_rx), "", "too early, or not the mover");
        hall.expire(ann, deadline);
        assert_eq!(
            drain(&mut ann_rx),
            "\"Ann\" ran out of time\nTurn: \"Bob\" (10 s)\n"
        );
        assert_eq!(
            drain(&mut bob_rx),
            "\"Ann\" ran out of time\nTurn: \"Bob\" (10 s)\n/turn\n"
        );
        assert_eq!(hall.deadline(ann), None);
        assert!(hall.deadline(bob).is_some());
    }

    #[test]
    fn a_letter_tried_before_is_refused_privately_and_the_turn_stays() {
        let mut hall = hall(2, "abba", None);
        let (ann, mut ann_rx) = join(&mut hall, "Ann", 64);
        let (bob, mut bob_rx) = join(&mut hall, "Bob", 64);
        hall.line(ann, "/letter z");
        drain(&mut ann_rx);
        drain(&mut bob_rx);
        hall.line(bob, "/letter Z");
        assert_eq!(
            drain(&mut bob_rx),
            "Error: the letter z was already tried (tried: z)\n/turn\n"
        );
        hall.line(bob, "/letter a");
        hall.line(bob, "/letter a");
        assert_eq!(
            drain(&mut bob_rx),
            "\"Bob\": letter a\nHit: \"Bob\" scores 2 (total 2) and moves again\nWord: a**a\n\
             Turn: \"Bob\"\n/turn\n\
             Error: the letter a was already tried (tried: z, a)\n/turn\n"
        );
        assert_eq!(
            drain(&mut ann_rx),
            "\"Bob\": letter a\nHit: \"Bob\" scores 2 (total 2) and moves again\nWord: a**a\n\
             Turn: \"Bob\"\n",
            "the refusal was Bob's alone"
        );
    }

    #[test]
    fn the_start_says_the_alphabet_and_a_timed_turn_its_limit() {
        let mut hall = hall(2, "їжак", Some(Duration::from_secs(30)));
        let (_, mut ann_rx) = join(&mut hall, "Ann", 64);
        let (_, mut bob_rx) = join(&mut hall, "Bob", 64);
        let start = "\"Bob\" joined (2/2)\nGame starts: \"Ann\", \"Bob\"\n\
                     Alphabet: Cyrillic, 4 letters\nWord: ****\nTurn: \"Ann\" (30 s)\n";
        assert!(drain(&mut ann_rx).ends_with(&format!("{start}/turn\n")));
        assert_eq!(drain(&mut bob_rx), start);
    }

    #[test]
    fn untimed_games_have_no_deadline() {
        let mut hall = hall(1, "abba", None);
        let (ann, _rx) = join(&mut hall, "Ann", 64);
        assert_eq!(hall.deadline(ann), None);
    }
}
