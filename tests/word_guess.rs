//! The word-guess game on hosts served in this process, under both models that can run it, and
//! the bundled client against them: as the `porthost` subprocess, and in this process where
//! the test must type like a person at a terminal (a pipe as stdin is a script otherwise).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use porthost_cli::client::word_guess::{Input, Reading, play};

use crate::support::{Client, PATIENCE, TestHost, config_file, entry, run, text, wait_exit};

const GAME_MODELS: [&str; 4] = ["thread-per-client", "async", "thread-pool", "event-loop"];

fn game_host(model: &str, options: &str) -> TestHost {
    // A pool with a worker for every player of two games at once.
    let workers = if model == "thread-pool" {
        "\nworkers = 8"
    } else {
        ""
    };
    let extra = format!("options = {{ {options} }}{workers}");
    TestHost::start("", &[entry("word-guess", model, &extra)])
}

/// Reads the next lines and checks them one by one.
fn expect(client: &mut Client, lines: &[&str]) {
    for want in lines {
        assert_eq!(client.line().as_deref(), Some(*want));
    }
}

/// Connects and joins under `name`, consuming the welcome line.
fn join(host: &TestHost, name: &str) -> Client {
    let mut client = Client::connect(host.addr(0));
    expect(&mut client, &["Welcome to word-guess! Send your name."]);
    client.send(format!("{name}\n").as_bytes());
    client
}

/// `names` join the port's game of `players`, each once every one before has read its
/// arrival, so that the turn order is known; every one has read the lobby's lines.
fn lobby<const N: usize>(host: &TestHost, players: usize, names: [&str; N]) -> [Client; N] {
    let mut clients: Vec<Client> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        clients.push(join(host, name));
        let mut lines = vec![format!("{name:?} joined ({}/{players})", i + 1)];
        match players - (i + 1) {
            0 => {}
            1 => lines.push("Waiting for 1 more player".to_owned()),
            more => lines.push(format!("Waiting for {more} more players")),
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        for client in &mut clients {
            expect(client, &lines);
        }
    }
    clients
        .try_into()
        .unwrap_or_else(|_| unreachable!("a client per name"))
}

/// A game of `names`, joined as in [`lobby`]: every one has read `start` (the lines after the
/// last one joined), and the first one its `/turn`.
fn game_of<const N: usize>(host: &TestHost, names: [&str; N], start: &[&str]) -> [Client; N] {
    let mut clients = lobby(host, N, names);
    for client in &mut clients {
        expect(client, start);
    }
    expect(&mut clients[0], &["/turn"]);
    clients
}

/// Ann and Bob in a two-player game of `abba`; both have read up to Ann's `/turn`.
fn ann_and_bob(host: &TestHost) -> (Client, Client) {
    let start = [
        "Game starts: \"Ann\", \"Bob\"",
        "Alphabet: Latin, 4 letters",
        "Word: ****",
        "Turn: \"Ann\"",
    ];
    let [ann, bob] = game_of(host, ["Ann", "Bob"], &start);
    (ann, bob)
}

#[test]
fn a_full_game_with_scores_and_winner() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"]");
        let (mut ann, mut bob) = ann_and_bob(&host);

        ann.send(b"/letter a\n");
        let hit = [
            "\"Ann\": letter a",
            "Hit: \"Ann\" scores 2 (total 2) and moves again",
            "Word: a**a",
            "Turn: \"Ann\"",
        ];
        expect(&mut ann, &hit);
        expect(&mut ann, &["/turn"]);
        expect(&mut bob, &hit);

        ann.send(b"/letter z\n");
        let miss = [
            "\"Ann\": letter z",
            "Miss: no z in the word",
            "Word: a**a",
            "Turn: \"Bob\"",
        ];
        expect(&mut ann, &miss);
        expect(&mut bob, &miss);
        expect(&mut bob, &["/turn"]);

        bob.send("/word ABBA\n".as_bytes());
        let end = [
            "\"Bob\": word \"ABBA\"",
            "Win: \"Bob\" scores 2 + bonus 4 (total 6)",
            "Word: abba",
            "Game over, the word was abba",
            "Results:",
            "\"Ann\": 2",
            "\"Bob\": 6",
            "Winner: \"Bob\"",
            "/quit",
        ];
        for client in [&mut ann, &mut bob] {
            expect(client, &end);
            assert!(
                client.is_closed(),
                "{model}: the game closes the connections"
            );
        }
    }
}

#[test]
fn a_wrong_word_resets_the_score_and_a_letter_tried_before_is_refused() {
    let host = game_host("async", "words = [\"abba\"]");
    let (mut ann, mut bob) = ann_and_bob(&host);
    ann.send(b"/letter a\n");
    expect(
        &mut ann,
        &[
            "\"Ann\": letter a",
            "Hit: \"Ann\" scores 2 (total 2) and moves again",
            "Word: a**a",
            "Turn: \"Ann\"",
            "/turn",
        ],
    );
    ann.send(b"/word abca\n");
    expect(
        &mut ann,
        &[
            "\"Ann\": word \"abca\"",
            "Wrong: \"Ann\" drops to 0 points",
            "Word: a**a",
            "Turn: \"Bob\"",
        ],
    );
    expect(
        &mut bob,
        &[
            "\"Ann\": letter a",
            "Hit: \"Ann\" scores 2 (total 2) and moves again",
            "Word: a**a",
            "Turn: \"Ann\"",
        ],
    );
    expect(
        &mut bob,
        &[
            "\"Ann\": word \"abca\"",
            "Wrong: \"Ann\" drops to 0 points",
            "Word: a**a",
            "Turn: \"Bob\"",
            "/turn",
        ],
    );
    // Tried by Ann and revealed: refused, privately, and Bob keeps the turn.
    bob.send(b"/letter A\n");
    expect(
        &mut bob,
        &["Error: the letter a was already tried (tried: a)", "/turn"],
    );
    bob.send(b"/letter z\n");
    let miss = [
        "\"Bob\": letter z",
        "Miss: no z in the word",
        "Word: a**a",
        "Turn: \"Ann\"",
    ];
    expect(&mut bob, &miss);
    expect(&mut ann, &miss);
    expect(&mut ann, &["/turn"]);
    // Missed by Bob: refused too.
    ann.send(b"/letter z\n");
    expect(
        &mut ann,
        &[
            "Error: the letter z was already tried (tried: a, z)",
            "/turn",
        ],
    );
}

#[test]
fn bad_names_are_refused_until_a_good_one_comes() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"], players = 3");
        let mut ann = join(&host, "  Ann  ");
        expect(
            &mut ann,
            &["\"Ann\" joined (1/3)", "Waiting for 2 more players"],
        );
        let mut other = Client::connect(host.addr(0));
        expect(&mut other, &["Welcome to word-guess! Send your name."]);
        let long = "я".repeat(33);
        let huge = "n".repeat(10 * 1024);
        for (name, reason) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            (long.as_str(), "it is longer than 32 characters"),
            (huge.as_str(), "it is longer than 32 characters"),
            ("/bob", "it starts with '/'"),
            ("Ann", "\"Ann\" is taken"),
        ] {
            other.send(format!("{name}\n").as_bytes());
            expect(
                &mut other,
                &[&format!("Name rejected: {reason}; send another name")],
            );
        }
        other.send("Їжак\n".as_bytes());
        expect(
            &mut other,
            &["\"Їжак\" joined (2/3)", "Waiting for 1 more player"],
        );
        expect(
            &mut ann,
            &["\"Їжак\" joined (2/3)", "Waiting for 1 more player"],
        );
    }
}

#[test]
fn out_of_turn_and_malformed_commands_get_a_private_error_and_the_turn_stays() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"]");
        let (mut ann, mut bob) = ann_and_bob(&host);
        bob.send(b"/letter a\n");
        expect(&mut bob, &["Error: not your turn, waiting for \"Ann\""]);
        for (line, error) in [
            (
                "hello",
                "only commands are accepted: /letter X or /word WORD",
            ),
            (
                "/guess a",
                "unknown command \"/guess\", the commands are /letter X and /word WORD",
            ),
            ("/letter", "missing argument, send /letter X"),
            (
                "/letter a b",
                "extra argument, send /letter X with one space before it",
            ),
            ("/letter ab", "\"ab\" is not a letter"),
            ("/word !!", "\"!!\" is not a word: letters only"),
            // Quoted the way names are: escaped, so a combining mark shows as `\u{301}`.
            ("/letter е\u{301}", "\"е\\u{301}\" is not a letter"),
        ] {
            ann.send(format!("{line}\n").as_bytes());
            expect(&mut ann, &[&format!("Error: {error}"), "/turn"]);
        }
        // None of that reached Bob, and it is still Ann's turn.
        ann.send(b"/letter b\n");
        expect(&mut bob, &["\"Ann\": letter b"]);
    }
}

#[test]
fn a_player_leaving_on_their_turn_passes_it() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"], players = 3");
        let start = [
            "Game starts: \"Ann\", \"Bob\", \"Cid\"",
            "Alphabet: Latin, 4 letters",
            "Word: ****",
            "Turn: \"Ann\"",
        ];
        let [ann, mut bob, mut cid] = game_of(&host, ["Ann", "Bob", "Cid"], &start);
        drop(ann);
        expect(
            &mut bob,
            &["\"Ann\" left the game", "Turn: \"Bob\"", "/turn"],
        );
        expect(&mut cid, &["\"Ann\" left the game", "Turn: \"Bob\""]);
        // The game goes on with whoever remains.
        bob.send(b"/word abba\n");
        expect(
            &mut cid,
            &[
                "\"Bob\": word \"abba\"",
                "Win: \"Bob\" scores 4 + bonus 4 (total 8)",
                "Word: abba",
            ],
        );
    }
}

#[test]
fn two_games_run_at_once_on_one_port() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"]");
        let (mut ann, mut bob) = ann_and_bob(&host);
        let start = [
            "Game starts: \"Cid\", \"Dan\"",
            "Alphabet: Latin, 4 letters",
            "Word: ****",
            "Turn: \"Cid\"",
        ];
        let [mut cid, mut dan] = game_of(&host, ["Cid", "Dan"], &start);
        // Moves in one game are not seen in the other.
        cid.send(b"/word abba\n");
        expect(
            &mut dan,
            &[
                "\"Cid\": word \"abba\"",
                "Win: \"Cid\" scores 4 + bonus 4 (total 8)",
            ],
        );
        ann.send(b"/letter b\n");
        expect(
            &mut bob,
            &[
                "\"Ann\": letter b",
                "Hit: \"Ann\" scores 2 (total 2) and moves again",
            ],
        );
    }
}

#[test]
fn one_player_games_run_under_sequential() {
    let host = TestHost::start(
        "",
        &[entry(
            "word-guess",
            "sequential",
            "options = { players = 1, words = [\"їжак\"] }",
        )],
    );
    for _ in 0..2 {
        let start = [
            "Game starts: \"Solo\"",
            "Alphabet: Cyrillic, 4 letters",
            "Word: ****",
            "Turn: \"Solo\"",
        ];
        let [mut solo] = game_of(&host, ["Solo"], &start);
        solo.send("/letter Ї\n".as_bytes());
        expect(
            &mut solo,
            &[
                "\"Solo\": letter ї",
                "Hit: \"Solo\" scores 1 (total 1) and moves again",
                "Word: ї***",
                "Turn: \"Solo\"",
                "/turn",
            ],
        );
        solo.send("/word ЇЖАК\n".as_bytes());
        expect(
            &mut solo,
            &[
                "\"Solo\": word \"ЇЖАК\"",
                "Win: \"Solo\" scores 3 + bonus 4 (total 8)",
            ],
        );
        while let Some(line) = solo.line() {
            if line == "/quit" {
                break;
            }
        }
        assert!(solo.is_closed());
    }
}

#[test]
fn models_that_cannot_share_state_are_refused() {
    // `extra`: more lines of the port's entry.
    let check_with = |model: &str, options: &str, extra: &str| {
        let file = config_file(&format!(
            "[ports.7021]\nservice = \"word-guess\"\nmodel = \"{model}\"\noptions = {{ {options} }}\n{extra}"
        ));
        let out = run(&["check", "--config", file.path.to_str().unwrap()]);
        (
            out.status.code(),
            text(&out.stderr),
            file.path.display().to_string(),
        )
    };
    let check = |model: &str, options: &str| check_with(model, options, "");
    let (code, stderr, path) = check("process-per-client", "players = 2");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{path}:3:9: [ports.7021]: word-guess cannot run under process-per-client: its clients share in-memory state, and separate processes do not share memory")),
        "{stderr}"
    );
    let (code, stderr, _) = check("sequential", "players = 2");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("word-guess cannot run under sequential as configured: it needs 2 clients connected at once and sequential serves one at a time; use thread-per-client or async, or `options = { players = 1 }` to serve one client at a time"), "{stderr}");
    let (code, stderr, _) = check("sequential", "players = 1");
    assert_eq!(code, Some(0), "{stderr}");
    // A pool smaller than a game would fill every worker with a lobby waiting for a player
    // who never gets one.
    let (code, stderr, path) = check_with("thread-pool", "players = 3", "workers = 2\n");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "{path}:3:9: [ports.7021]: word-guess cannot run under thread-pool with workers = 2: \
             it needs 3 clients connected at once, and a pool of 2 serves only 2"
        )) && stderr.contains("set workers to at least 3, or use event-loop or async"),
        "{stderr}"
    );
    let (code, stderr, _) = check_with("thread-pool", "players = 3", "workers = 3\n");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr, _) = check("event-loop", "players = 16");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr, _) = check("async", "players = 17");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            ":4:11: [ports.7021]: invalid options for word-guess: players must be a whole number \
             from 1 to 16, not 17"
        ),
        "{stderr}"
    );
}

#[test]
fn two_bundled_clients_play_a_game_from_piped_input() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"]");
        let addr = host.addr(0).to_string();
        let spawn = |name: &str, input: &str| {
            let mut child = crate::support::porthost()
                .args(["client", "word-guess", &addr, "--name", name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child
        };
        let mut ann = spawn("Ann", "a\nz\n");
        // Bob joins once Ann waits in the lobby, so the turn order is known.
        let mut ann_out = std::io::BufReader::new(ann.stdout.take().unwrap());
        let mut ann_text = String::new();
        while !ann_text.ends_with("Waiting for 1 more player\n") {
            let n = std::io::BufRead::read_line(&mut ann_out, &mut ann_text).unwrap();
            assert!(n > 0, "Ann's client ended early: {ann_text}");
        }
        let bob = spawn("Bob", "abba\n");
        std::io::Read::read_to_string(&mut ann_out, &mut ann_text).unwrap();
        let ann = ann.wait_with_output().unwrap();
        let bob = bob.wait_with_output().unwrap();
        assert!(ann.status.success(), "{}", text(&ann.stderr));
        assert!(bob.status.success(), "{}", text(&bob.stderr));
        for out in [ann_text, text(&bob.stdout)] {
            assert!(
                out.contains("\"Ann\": letter a\nHit: \"Ann\" scores 2 (total 2)"),
                "{out}"
            );
            assert!(
                out.contains("Results:\n\"Ann\": 2\n\"Bob\": 6\nWinner: \"Bob\"\n"),
                "{out}"
            );
        }
    }
}

#[test]
fn the_client_fails_when_input_ends_before_its_move() {
    let host = game_host("async", "words = [\"abba\"], players = 1");
    let out = crate::support::porthost()
        .args([
            "client",
            "word-guess",
            &host.addr(0).to_string(),
            "--name",
            "Ann",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("standard input ended, but the game needs your move"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("Game starts: \"Ann\""));
}

#[test]
fn leaving_the_lobby_is_announced_and_frees_the_place() {
    for model in GAME_MODELS {
        let host = game_host(model, "words = [\"abba\"], players = 3");
        let [ann, mut bob] = lobby(&host, 3, ["Ann", "Bob"]);
        drop(ann);
        expect(
            &mut bob,
            &["\"Ann\" left (1/3)", "Waiting for 2 more players"],
        );
        bob.send(b"/letter a\n");
        expect(
            &mut bob,
            &["Error: the game has not started, waiting for 2 more players"],
        );
        let _ann = join(&host, "Ann");
        expect(
            &mut bob,
            &["\"Ann\" joined (2/3)", "Waiting for 1 more player"],
        );
    }
}

#[test]
fn a_timed_turn_is_announced_with_its_limit() {
    let host = game_host("async", "words = [\"abba\"], turn_timeout_secs = 30");
    let start = [
        "Game starts: \"Ann\", \"Bob\"",
        "Alphabet: Latin, 4 letters",
        "Word: ****",
        "Turn: \"Ann\" (30 s)",
    ];
    let [mut ann, mut bob] = game_of(&host, ["Ann", "Bob"], &start);
    ann.send(b"/letter z\n");
    expect(
        &mut bob,
        &[
            "\"Ann\": letter z",
            "Miss: no z in the word",
            "Word: ****",
            "Turn: \"Bob\" (30 s)",
            "/turn",
        ],
    );
}

/// Starts `porthost client word-guess ADDR [--name NAME]` with `input` piped in as its script.
fn game_client(addr: SocketAddr, name: Option<&str>, input: &str) -> Child {
    let mut command = crate::support::porthost();
    command.args(["client", "word-guess", &addr.to_string()]);
    if let Some(name) = name {
        command.args(["--name", name]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A client that fails at once may not read its input: that is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child
}

/// The client's output once it exits; a client still running after [`PATIENCE`] is a hang,
/// and is killed and failed.
fn finished(mut child: Child) -> Output {
    if wait_exit(&mut child, PATIENCE).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the client hangs: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_client_refuses_a_move_that_cannot_be_meant_and_asks_again() {
    let host = game_host("async", "words = [\"abba\"], players = 1");
    // A word of the wrong length, not letters, a Cyrillic а on a Latin word: none is sent
    // (the server would have played the first as a wrong word, dropping Ann to 0).
    let out = finished(game_client(
        host.addr(0),
        Some("Ann"),
        "ab\n!!\nа\nb\nb\nabba\n",
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Welcome to word-guess!\n\
         \"Ann\" joined (1/1)\n\
         Game starts: \"Ann\"\n\
         Alphabet: Latin, 4 letters\n\
         Word: ****\n\
         Turn: \"Ann\"\n\
         \"ab\" has 2 letters, but the word has 4.\n\
         \"!!\" is not a word: letters only.\n\
         \"а\" is a Cyrillic letter, but the word is Latin: check the keyboard layout.\n\
         \"Ann\": letter b\n\
         Hit: \"Ann\" scores 2 (total 2) and moves again\n\
         Word: *bb*\n\
         Turn: \"Ann\"\n\
         The letter b was already tried (tried: b).\n\
         \"Ann\": word \"abba\"\n\
         Win: \"Ann\" scores 2 + bonus 4 (total 8)\n\
         Word: abba\n\
         Game over, the word was abba\n\
         Results:\n\
         \"Ann\": 8\n\
         Winner: \"Ann\"\n"
    );
}

#[test]
fn the_client_pointed_at_a_palindrome_port_says_so_and_exits_non_zero() {
    let host = TestHost::start(
        "",
        &[entry("palindrome-v3", "async", "idle_timeout_secs = 1")],
    );
    // With a name it sends at once: the palindrome server answers it with "1".
    let named = game_client(host.addr(0), Some("Bob"), "");
    // Without one it waits for the welcome; the server's first line is its idle timeout's.
    let unnamed = game_client(host.addr(0), None, "Bob\n");
    let addr = host.addr(0);
    for (out, reason) in [
        (
            finished(named),
            format!(
                "porthost: {addr} does not speak word-guess: its first line was \"1\", not the \
                 game's welcome\n"
            ),
        ),
        (
            finished(unnamed),
            format!(
                "porthost: {addr} does not speak word-guess: its first line was \"ERR idle for 1 \
                 s, closing\", not the game's welcome\n"
            ),
        ),
    ] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stderr), reason);
        assert_eq!(
            text(&out.stdout),
            "",
            "nothing of the palindrome server's is shown"
        );
    }
}

/// On a busy sequential port the connection waits in the backlog: the client says so and
/// keeps waiting (it used to give up after 5 s, calling the port "not word-guess"), then plays
/// once the first player leaves.
#[test]
fn the_client_at_a_busy_sequential_port_waits_to_be_accepted() {
    let host = game_host("sequential", "words = [\"abba\"], players = 1");
    let [mut first] = lobby(&host, 1, ["Ann"]);
    expect(&mut first, &["Game starts: \"Ann\""]);
    let mut child = game_client(host.addr(0), Some("Bob"), "abba\n");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    std::io::BufRead::read_line(&mut out, &mut said).unwrap();
    assert_eq!(
        said,
        format!(
            "Connected to {}; waiting for the server to accept you (the port is busy).\n",
            host.addr(0)
        )
    );
    // Ann leaves: the port accepts Bob, who plays his game.
    first.reset();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest}");
    assert!(
        rest.starts_with("Welcome to word-guess!\n\"Bob\" joined (1/1)\n"),
        "{rest}"
    );
    assert!(rest.contains("Winner: \"Bob\""), "{rest}");
}

/// What a client draws, read on a thread of its own as it comes.
struct Drawn {
    chunks: mpsc::Receiver<Vec<u8>>,
    /// Drawn and not yet waited for.
    seen: Vec<u8>,
}

impl Drawn {
    fn read(mut from: impl Read + Send + 'static) -> Drawn {
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Drawn {
            chunks,
            seen: Vec::new(),
        }
    }

    /// Waits until the client has drawn `text`; returns what it drew up to and including it.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let needle = text.as_bytes();
            if let Some(at) = self.seen.windows(needle.len()).position(|w| w == needle) {
                let drawn: Vec<u8> = self.seen.drain(..at + needle.len()).collect();
                return String::from_utf8(drawn).unwrap();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(_) => panic!(
                    "the client did not draw {text:?}; it drew {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Everything drawn that was not waited for, until the drawing ends.
    fn rest(mut self) -> String {
        while let Ok(chunk) = self.chunks.recv_timeout(PATIENCE) {
            self.seen.extend(chunk);
        }
        String::from_utf8(self.seen).unwrap()
    }
}

/// The game client run in this process as if typed at a terminal: the test types into a pipe
/// and reads what the client draws from another.
struct TypedClient {
    keys: Option<std::io::PipeWriter>,
    drawn: Drawn,
    game: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl TypedClient {
    /// `terminal`: whether the client draws for a terminal (clearing the prompt's line).
    fn start(addr: SocketAddr, name: &str, terminal: bool) -> TypedClient {
        let (keys_in, keys) = std::io::pipe().unwrap();
        let (drawn_out, drawn_in) = std::io::pipe().unwrap();
        let name = name.to_owned();
        let game = std::thread::spawn(move || {
            play(
                &addr.to_string(),
                Some(&name),
                Input::Typed,
                Reading::Lines,
                keys_in,
                drawn_in,
                terminal,
            )
        });
        TypedClient {
            keys: Some(keys),
            drawn: Drawn::read(drawn_out),
            game,
        }
    }

    fn type_line(&mut self, line: &str) {
        let keys = self.keys.as_mut().expect("typing still open");
        keys.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Ctrl-D: the end of input.
    fn ctrl_d(&mut self) {
        self.keys.take();
    }

    /// Waits until the client has drawn `text`; returns what it drew up to and including it.
    fn wait_for(&mut self, text: &str) -> String {
        self.drawn.wait_for(text)
    }

    /// How the client ended, and everything it drew that was not waited for.
    fn finish(self) -> (anyhow::Result<()>, String) {
        let result = self.game.join().unwrap();
        (result, self.drawn.rest())
    }
}

/// What Bob sees when Ann joins his two-player game of "abba" and it starts on his turn.
const BOB_STARTS_AGAINST_ANN: &[&str] = &[
    "\"Ann\" joined (2/2)",
    "Game starts: \"Bob\", \"Ann\"",
    "Alphabet: Latin, 4 letters",
    "Word: ****",
    "Turn: \"Bob\"",
    "/turn",
];

#[test]
fn a_line_typed_out_of_turn_is_discarded_and_never_played() {
    let host = game_host("async", "words = [\"abba\"]");
    let [mut bob] = lobby(&host, 2, ["Bob"]);
    let mut ann = TypedClient::start(host.addr(0), "Ann", false);
    expect(&mut bob, BOB_STARTS_AGAINST_ANN);
    ann.wait_for("Turn: \"Bob\"\n");
    ann.type_line("x");
    ann.wait_for("Not your turn yet: \"x\" was not sent.\n");
    bob.send(b"/letter z\n");
    let miss = [
        "\"Bob\": letter z",
        "Miss: no z in the word",
        "Word: ****",
        "Turn: \"Ann\"",
    ];
    expect(&mut bob, &miss);
    ann.wait_for("Your move (a letter or the 4-letter word; tried: z): ");
    // Refused by the client itself: none of these reaches the server.
    ann.type_line("z");
    ann.wait_for("The letter z was already tried (tried: z).\n");
    ann.type_line("ab");
    ann.wait_for("\"ab\" has 2 letters, but the word has 4.\n");
    ann.type_line("/letter a");
    // Bob's next line is Ann's move as she typed it now: the x she typed earlier was dropped.
    expect(
        &mut bob,
        &[
            "\"Ann\": letter a",
            "Hit: \"Ann\" scores 2 (total 2) and moves again",
            "Word: a**a",
            "Turn: \"Ann\"",
        ],
    );
    ann.wait_for("Your move (a letter or the 4-letter word; tried: z, a): ");
    ann.type_line("abba");
    expect(&mut bob, &["\"Ann\": word \"abba\""]);
    let (result, drawn) = ann.finish();
    result.unwrap();
    assert!(drawn.ends_with("Winner: \"Ann\"\n"), "{drawn:?}");
}

#[test]
fn a_message_clears_the_prompts_line_and_ctrl_d_ends_it() {
    let host = game_host("async", "words = [\"abba\"], players = 3");
    let mut ann = TypedClient::start(host.addr(0), "Ann", true);
    ann.wait_for("Waiting for 2 more players\n");
    let bob = join(&host, "Bob");
    ann.wait_for("Waiting for 1 more player\n");
    let _cid = join(&host, "Cid");
    let prompt = "Your move (a letter or the 4-letter word): ";
    ann.wait_for(&format!("Turn: \"Ann\"\n{prompt}"));
    drop(bob);
    // The prompt's line is cleared, the message printed on its own line, the prompt redrawn.
    let drawn = ann.wait_for(&format!("\"Bob\" left the game\n{prompt}"));
    assert_eq!(drawn, format!("\r\x1b[K\"Bob\" left the game\n{prompt}"));
    ann.ctrl_d();
    let (result, drawn) = ann.finish();
    result.unwrap();
    assert_eq!(
        drawn, "\nYou left the game.\n",
        "the prompt's line is ended first"
    );
}

/// At a real terminal, `xy` typed without Enter in the other player's turn is dropped with a
/// note when the turn comes, and the move typed then is played alone: a terminal left to its
/// own line editing kept `xy` and glued it to the move (`"xyz" has 3 letters`). When the
/// client leaves on Ctrl-C, the terminal has its line editing and echo back.
#[test]
fn at_a_terminal_what_is_typed_out_of_turn_is_dropped_when_the_turn_comes() {
    use nix::sys::termios::{LocalFlags, tcgetattr};

    let host = game_host("async", "words = [\"abba\"]");
    let mut bob = join(&host, "Bob");
    expect(
        &mut bob,
        &["\"Bob\" joined (1/2)", "Waiting for 1 more player"],
    );
    let pty = nix::pty::openpty(None, None).unwrap();
    let terminal = std::fs::File::from(pty.slave);
    let mut ann = crate::support::porthost()
        .args([
            "client",
            "word-guess",
            &host.addr(0).to_string(),
            "--name",
            "Ann",
        ])
        .stdin(terminal.try_clone().unwrap())
        .stdout(terminal.try_clone().unwrap())
        .stderr(terminal.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut keys = std::fs::File::from(pty.master);
    let mut drawn = Drawn::read(keys.try_clone().unwrap());
    expect(&mut bob, BOB_STARTS_AGAINST_ANN);
    drawn.wait_for("Turn: \"Bob\"");
    keys.write_all(b"xy").unwrap();
    drawn.wait_for("xy");
    bob.send(b"/letter q\n");
    expect(
        &mut bob,
        &[
            "\"Bob\": letter q",
            "Miss: no q in the word",
            "Word: ****",
            "Turn: \"Ann\"",
        ],
    );
    drawn.wait_for("Not your turn yet: \"xy\" was not sent.");
    drawn.wait_for("Your move (a letter or the 4-letter word; tried: q): ");
    keys.write_all(b"z\r").unwrap();
    expect(&mut bob, &["\"Ann\": letter z"]);
    // Ctrl-C (the pty is not the client's controlling terminal: the signal itself).
    let pid = nix::unistd::Pid::from_raw(ann.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    drawn.wait_for("You left the game.");
    let deadline = Instant::now() + PATIENCE;
    while ann.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client did not leave");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ann.wait().unwrap().success());
    let flags = tcgetattr(&terminal).unwrap().local_flags;
    assert!(
        flags.contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal's settings are back: {flags:?}"
    );
}
