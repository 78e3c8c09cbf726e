//! The options, and whole games over real TCP without the host: a listener on 127.0.0.1:0 that
//! serves each connection the way the `async` model does (a task each) or the
//! `thread-per-client` model does (a thread and a current-thread runtime each), and scripted
//! clients. Every read has a timeout, so a bug fails instead of hanging.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

use super::*;
use crate::{Conn, Limits};

/// Long enough for a loaded machine, short enough that a stuck test fails soon.
const WAIT: Duration = Duration::from_secs(10);

fn options(table: &str, base_dir: &Path) -> Options {
    Options::new(table.parse::<toml::Table>().unwrap(), base_dir)
}

fn settings(table: &str, base_dir: &Path) -> Result<Settings, String> {
    let options = options(table, base_dir);
    Settings::new(options.parse()?, options.base_dir())
}

fn settings_err(table: &str, base_dir: &Path) -> String {
    settings(table, base_dir).unwrap_err()
}

fn build_err(table: &str) -> String {
    match build(&options(table, Path::new("."))) {
        Ok(_) => panic!("{table:?} should be refused"),
        Err(error) => error,
    }
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("word-guess-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_defaults_are_two_players_and_the_built_in_words() {
    let service = build(&Options::default()).unwrap();
    assert_eq!(
        service.needs(),
        Needs {
            shared_state: true,
            clients_at_once: 2
        }
    );
    let settings = settings("", Path::new(".")).unwrap();
    assert_eq!(settings.words.len(), words::BUILT_IN.len());
    assert_eq!(settings.turn_timeout, None);
}

#[test]
fn the_service_is_registered_and_needs_every_player_at_once() {
    let registration = crate::find("word-guess").expect("registered");
    let service = (registration.build)(&options("players = 5", Path::new("."))).unwrap();
    assert_eq!(service.needs().clients_at_once, 5);
    assert!(service.needs().shared_state);
}

#[test]
fn players_are_1_to_16() {
    for ok in [1, 16] {
        let settings = settings(&format!("players = {ok}"), Path::new(".")).unwrap();
        assert_eq!(settings.players, ok);
    }
    for bad in [0, 17, -1] {
        let error = build_err(&format!("players = {bad}"));
        assert_eq!(error, format!("players must be 1 to 16, got {bad}"));
    }
}

#[test]
fn unknown_options_are_refused() {
    assert!(build_err("player = 2").contains("unknown field"));
}

#[test]
fn words_are_letters_only_and_compared_in_lowercase() {
    let settings = settings(r#"words = ["Їжак", "abba"]"#, Path::new(".")).unwrap();
    let shown: Vec<String> = settings.words.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["їжак", "abba"]);
    let error = build_err(r#"words = ["abba", "ab1"]"#);
    assert!(
        error.starts_with("words: ") && error.contains("\"ab1\""),
        "{error}"
    );
    assert!(build_err(r#"words = ["м'ята"]"#).contains("not a letter"));
    assert!(build_err(r#"words = [""]"#).contains("empty"));
    assert_eq!(
        build_err("words = []"),
        "the word list is empty: give at least one word"
    );
}

#[test]
fn a_words_file_is_read_relative_to_the_config() {
    let dir = scratch("words-file");
    std::fs::write(dir.join("list.txt"), "  Їжак \r\n\n\nabba\n").unwrap();
    std::fs::write(dir.join("bad.txt"), "abba\n\nab ba\n").unwrap();
    std::fs::write(dir.join("blank.txt"), "\n \n").unwrap();
    let settings = settings(r#"words_file = "list.txt""#, &dir).unwrap();
    assert_eq!(
        settings.words,
        [Word::new("їжак").unwrap(), Word::new("abba").unwrap()]
    );
    let error = settings_err(r#"words_file = "bad.txt""#, &dir);
    assert!(
        error.contains("bad.txt") && error.contains("line 3"),
        "{error}"
    );
    let error = settings_err(r#"words_file = "blank.txt""#, &dir);
    assert_eq!(error, "the word list is empty: give at least one word");
    let error = settings_err(r#"words_file = "missing.txt""#, &dir);
    assert!(
        error.contains("missing.txt") && error.contains("cannot read"),
        "{error}"
    );
    let both = "words = [\"abba\"]\nwords_file = \"list.txt\"";
    let error = settings_err(both, &dir);
    assert_eq!(error, "give either words or words_file, not both");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_turn_timeout_is_at_least_one_second() {
    let settings = settings("turn_timeout_secs = 1", Path::new(".")).unwrap();
    assert_eq!(settings.turn_timeout, Some(Duration::from_secs(1)));
    for bad in [0, -5] {
        let error = build_err(&format!("turn_timeout_secs = {bad}"));
        assert!(
            error.starts_with("turn_timeout_secs must be at least 1"),
            "{error}"
        );
    }
}

fn service(table: &str) -> Arc<dyn Service> {
    build(&options(table, Path::new("."))).unwrap()
}

/// Serves like the `async` model: a task per connection on the test's runtime.
fn serve(listener: TcpListener, service: Arc<dyn Service>) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let limits = Limits::default();
                service
                    .serve(Conn {
                        stream,
                        peer,
                        limits,
                        meter: crate::Meter::default(),
                    })
                    .await
            });
        }
    });
}

async fn start(table: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, service(table));
    addr
}

/// Serves like the `thread-per-client` model: each connection on its own thread with its own
/// current-thread runtime, so nothing may rely on another session's runtime.
fn start_threads(table: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let service = service(table);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let service = Arc::clone(&service);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    stream.set_nonblocking(true).unwrap();
                    let peer = stream.peer_addr().unwrap();
                    let stream = TcpStream::from_std(stream).unwrap();
                    let limits = Limits::default();
                    service
                        .serve(Conn {
                            stream,
                            peer,
                            limits,
                            meter: crate::Meter::default(),
                        })
                        .await
                })
            });
        }
    });
    addr
}

#[derive(Debug)]
struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the welcome.
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut client = Client {
            lines: BufReader::new(read).lines(),
            writer,
        };
        client
            .expect(&["Welcome to word-guess! Send your name."])
            .await;
        client
    }

    /// Connects and gives a name, which must be accepted.
    async fn named(addr: SocketAddr, name: &str) -> Client {
        let mut client = Client::connect(addr).await;
        client.send(name).await;
        client
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line, or `None` once the server closed the connection.
    async fn line(&mut self) -> Option<String> {
        match timeout(WAIT, self.lines.next_line()).await {
            Ok(line) => line.unwrap(),
            Err(_) => panic!("no line from the server within {WAIT:?}"),
        }
    }

    async fn expect<S: AsRef<str>>(&mut self, want: &[S]) {
        for want in want {
            assert_eq!(self.line().await.as_deref(), Some(want.as_ref()));
        }
    }

    async fn expect_closed(&mut self) {
        assert_eq!(self.line().await, None);
    }
}

/// Reads the same lines from each client.
async fn all_expect<S: AsRef<str>>(clients: &mut [&mut Client], want: &[S]) {
    for client in clients {
        client.expect(want).await;
    }
}

fn waiting(missing: usize) -> String {
    let plural = if missing == 1 { "" } else { "s" };
    format!("Waiting for {missing} more player{plural}")
}

/// Names clients in order until their game starts, checking the lobby and start messages on
/// the way. The first client has the turn and its `/turn` is read.
async fn game_of(addr: SocketAddr, names: &[&str], masked: &str) -> Vec<Client> {
    let n = names.len();
    let mut clients: Vec<Client> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        clients.push(Client::named(addr, name).await);
        let mut lobby = vec![format!("{name:?} joined ({}/{n})", i + 1)];
        if i + 1 < n {
            lobby.push(waiting(n - i - 1));
        }
        for client in &mut clients {
            client.expect(&lobby).await;
        }
    }
    let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    let start = [
        format!("Game starts: {}", quoted.join(", ")),
        format!("Word: {masked}"),
        format!("Turn: {:?}", names[0]),
    ];
    for client in &mut clients {
        client.expect(&start).await;
    }
    clients[0].expect(&["/turn"]).await;
    clients
}

/// The issue's rules, move by move: a hit moves again, a miss and an already revealed letter
/// pass, a wrong word resets to 0, a right word (any case) scores the hidden letters plus the
/// bonus, then the results, `/quit` and the close.
async fn play_a_full_game(addr: SocketAddr) {
    let [mut ann, mut bob] = game_of(addr, &["Ann", "Bob"], "****")
        .await
        .try_into()
        .unwrap();
    ann.send("/letter A").await;
    let hit = [
        "\"Ann\": letter a",
        "Hit: \"Ann\" scores 2 (total 2) and moves again",
        "Word: a**a",
        "Turn: \"Ann\"",
    ];
    all_expect(&mut [&mut ann, &mut bob], &hit).await;
    ann.expect(&["/turn"]).await;
    ann.send("/letter z").await;
    let miss = [
        "\"Ann\": letter z",
        "Miss: no z in the word",
        "Word: a**a",
        "Turn: \"Bob\"",
    ];
    all_expect(&mut [&mut ann, &mut bob], &miss).await;
    bob.expect(&["/turn"]).await;
    bob.send("/letter a").await;
    let repeated = [
        "\"Bob\": letter a",
        "Miss: a is already revealed",
        "Word: a**a",
        "Turn: \"Ann\"",
    ];
    all_expect(&mut [&mut ann, &mut bob], &repeated).await;
    ann.expect(&["/turn"]).await;
    ann.send("/word abab").await;
    let wrong = [
        "\"Ann\": word \"abab\"",
        "Wrong: \"Ann\" drops to 0 points",
        "Word: a**a",
        "Turn: \"Bob\"",
    ];
    all_expect(&mut [&mut ann, &mut bob], &wrong).await;
    bob.expect(&["/turn"]).await;
    bob.send("/word ABBA").await;
    let won = [
        "\"Bob\": word \"ABBA\"",
        "Win: \"Bob\" scores 2 + bonus 4 (total 6)",
        "Word: abba",
        "Game over, the word was abba",
        "Results:",
        "\"Ann\": 0",
        "\"Bob\": 6",
        "Winner: \"Bob\"",
        "/quit",
    ];
    all_expect(&mut [&mut ann, &mut bob], &won).await;
    ann.expect_closed().await;
    bob.expect_closed().await;
}

const ABBA: &str = r#"words = ["abba"]"#;

#[tokio::test]
async fn a_full_two_player_game() {
    play_a_full_game(start(ABBA).await).await;
}

#[tokio::test]
async fn a_full_two_player_game_with_a_thread_per_client() {
    play_a_full_game(start_threads(ABBA)).await;
}

#[tokio::test]
async fn a_one_player_game() {
    let addr = start(&format!("players = 1\n{ABBA}")).await;
    let [mut solo] = game_of(addr, &["Solo"], "****").await.try_into().unwrap();
    solo.send("/letter b").await;
    solo.expect(&[
        "\"Solo\": letter b",
        "Hit: \"Solo\" scores 2 (total 2) and moves again",
        "Word: *bb*",
        "Turn: \"Solo\"",
        "/turn",
    ])
    .await;
    solo.send("/letter x").await;
    solo.expect(&[
        "\"Solo\": letter x",
        "Miss: no x in the word",
        "Word: *bb*",
        "Turn: \"Solo\"",
        "/turn",
    ])
    .await;
    solo.send("/letter a").await;
    solo.expect(&[
        "\"Solo\": letter a",
        "Win: \"Solo\" scores 2 + bonus 4 (total 8)",
        "Word: abba",
        "Game over, the word was abba",
        "Results:",
        "\"Solo\": 8",
        "Winner: \"Solo\"",
        "/quit",
    ])
    .await;
    solo.expect_closed().await;
}

#[tokio::test]
async fn bad_names_are_refused_until_a_good_one() {
    let addr = start(ABBA).await;
    let mut ann = Client::named(addr, "Ann").await;
    ann.expect(&["\"Ann\" joined (1/2)", &waiting(1)]).await;
    let mut bob = Client::connect(addr).await;
    let too_long = "я".repeat(33);
    for (name, reason) in [
        ("", "it is empty"),
        ("   ", "it is empty"),
        (too_long.as_str(), "it is longer than 32 characters"),
        ("/bob", "it starts with '/'"),
        (" Ann ", "\"Ann\" is taken"),
    ] {
        bob.send(name).await;
        bob.expect(&[format!("Name rejected: {reason}; send another name")])
            .await;
    }
    bob.send(&"я".repeat(32)).await;
    let joined = format!("{:?} joined (2/2)", "я".repeat(32));
    all_expect(&mut [&mut ann, &mut bob], &[joined]).await;
    ann.expect(&["Game starts: \"Ann\", \"яяяяяяяяяяяяяяяяяяяяяяяяяяяяяяяя\""])
        .await;
}

#[tokio::test]
async fn bad_and_out_of_turn_commands_get_a_private_error_and_the_turn_stays() {
    let addr = start(ABBA).await;
    let [mut ann, mut bob] = game_of(addr, &["Ann", "Bob"], "****")
        .await
        .try_into()
        .unwrap();
    for line in ["/letter a", "/word abba", "hello"] {
        bob.send(line).await;
    }
    bob.expect(&[
        "Error: not your turn, waiting for \"Ann\"",
        "Error: not your turn, waiting for \"Ann\"",
        "Error: only commands are accepted: /letter X or /word WORD",
    ])
    .await;
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
        ("/word", "missing argument, send /word WORD"),
        (
            "/letter a b",
            "extra argument, send /letter X with one space before it",
        ),
        ("/letter ab", "\"ab\" is not exactly one letter"),
        (
            "/letter е\u{301}",
            "\"е\\u{301}\" is not exactly one letter",
        ),
    ] {
        ann.send(line).await;
        ann.expect(&[format!("Error: {error}"), "/turn".to_owned()])
            .await;
    }
    ann.send("/letter b").await;
    let hit = [
        "\"Ann\": letter b",
        "Hit: \"Ann\" scores 2 (total 2) and moves again",
        "Word: *bb*",
        "Turn: \"Ann\"",
    ];
    // Bob's next line is the move: Ann's errors were hers alone.
    all_expect(&mut [&mut ann, &mut bob], &hit).await;
}

#[tokio::test]
async fn leaving_on_your_turn_passes_it_and_the_game_goes_on() {
    let addr = start(&format!("players = 3\n{ABBA}")).await;
    let [mut ann, bob, mut cid] = game_of(addr, &["Ann", "Bob", "Cid"], "****")
        .await
        .try_into()
        .unwrap();
    drop(bob);
    all_expect(&mut [&mut ann, &mut cid], &["\"Bob\" left the game"]).await;
    drop(ann);
    cid.expect(&["\"Ann\" left the game", "Turn: \"Cid\"", "/turn"])
        .await;
    cid.send("/letter q").await;
    cid.expect(&[
        "\"Cid\": letter q",
        "Miss: no q in the word",
        "Word: ****",
        "Turn: \"Cid\"",
        "/turn",
    ])
    .await;
    cid.send("/word abba").await;
    cid.expect(&[
        "\"Cid\": word \"abba\"",
        "Win: \"Cid\" scores 4 + bonus 4 (total 8)",
        "Word: abba",
        "Game over, the word was abba",
        "Results:",
        "\"Cid\": 8",
        "Winner: \"Cid\"",
        "/quit",
    ])
    .await;
    cid.expect_closed().await;
}

#[tokio::test]
async fn leaving_the_lobby_is_announced_and_frees_the_place() {
    let addr = start(&format!("players = 3\n{ABBA}")).await;
    let ann = Client::named(addr, "Ann").await;
    let mut bob = Client::named(addr, "Bob").await;
    bob.expect(&["\"Bob\" joined (2/3)", &waiting(1)]).await;
    drop(ann);
    bob.expect(&["\"Ann\" left (1/3)", &waiting(2)]).await;
    bob.send("/letter a").await;
    bob.expect(&["Error: the game has not started, waiting for 2 more players"])
        .await;
    let _ann = Client::named(addr, "Ann").await;
    bob.expect(&["\"Ann\" joined (2/3)", &waiting(1)]).await;
}

#[tokio::test]
async fn two_games_at_once_on_one_port() {
    let addr = start(ABBA).await;
    let [mut ann, mut bob] = game_of(addr, &["Ann", "Bob"], "****")
        .await
        .try_into()
        .unwrap();
    // A name is unique per game: the second game may have its own Ann.
    let [mut ann2, mut cid] = game_of(addr, &["Ann", "Cid"], "****")
        .await
        .try_into()
        .unwrap();
    ann.send("/letter z").await;
    all_expect(
        &mut [&mut ann, &mut bob],
        &[
            "\"Ann\": letter z",
            "Miss: no z in the word",
            "Word: ****",
            "Turn: \"Bob\"",
        ],
    )
    .await;
    bob.expect(&["/turn"]).await;
    ann2.send("/word abba").await;
    all_expect(
        &mut [&mut ann2, &mut cid],
        &[
            "\"Ann\": word \"abba\"",
            "Win: \"Ann\" scores 4 + bonus 4 (total 8)",
            "Word: abba",
            "Game over, the word was abba",
            "Results:",
            "\"Ann\": 8",
            "\"Cid\": 0",
            "Winner: \"Ann\"",
            "/quit",
        ],
    )
    .await;
    ann2.expect_closed().await;
    cid.expect_closed().await;
    bob.send("/letter a").await;
    all_expect(
        &mut [&mut ann, &mut bob],
        &[
            "\"Bob\": letter a",
            "Hit: \"Bob\" scores 2 (total 2) and moves again",
            "Word: a**a",
            "Turn: \"Bob\"",
        ],
    )
    .await;
}

/// Ann never moves and loses the turn; Bob hits, which restarts his time, and loses it too.
async fn turns_time_out(addr: SocketAddr) {
    let [mut ann, mut bob] = game_of(addr, &["Ann", "Bob"], "****")
        .await
        .try_into()
        .unwrap();
    let timed_out = ["\"Ann\" ran out of time", "Turn: \"Bob\""];
    all_expect(&mut [&mut ann, &mut bob], &timed_out).await;
    bob.expect(&["/turn"]).await;
    bob.send("/letter b").await;
    let hit = [
        "\"Bob\": letter b",
        "Hit: \"Bob\" scores 2 (total 2) and moves again",
        "Word: *bb*",
        "Turn: \"Bob\"",
    ];
    all_expect(&mut [&mut ann, &mut bob], &hit).await;
    bob.expect(&["/turn"]).await;
    let timed_out = ["\"Bob\" ran out of time", "Turn: \"Ann\""];
    all_expect(&mut [&mut ann, &mut bob], &timed_out).await;
    ann.expect(&["/turn"]).await;
}

const TIMED: &str = "turn_timeout_secs = 1\nwords = [\"abba\"]";

#[tokio::test]
async fn a_turn_times_out() {
    turns_time_out(start(TIMED).await).await;
}

#[tokio::test]
async fn a_turn_times_out_with_a_thread_per_client() {
    turns_time_out(start_threads(TIMED)).await;
}

/// A client that never reads fills its socket, then its queue, and is dropped as a leave while
/// the others play on without waiting. Small socket buffers and a long word of distinct letters
/// (each move's message carries the whole word) make the overflow come within a few hundred
/// moves, all hits, so the turn never reaches the stuck client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_without_stalling_the_others() {
    let word: String = ('\u{4e00}'..).take(600).collect();
    assert!(word.chars().all(char::is_alphabetic));
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    serve(
        listener,
        service(&format!("players = 3\nwords = [\"{word}\"]")),
    );

    let mut ann = Client::named(addr, "Ann").await;
    ann.expect(&["\"Ann\" joined (1/3)", &waiting(2)]).await;
    let mut bob = Client::named(addr, "Bob").await;
    ann.expect(&["\"Bob\" joined (2/3)", &waiting(1)]).await;
    let stuck = TcpSocket::new_v4().unwrap();
    stuck.set_recv_buffer_size(4096).unwrap();
    let mut stuck = stuck.connect(addr).await.unwrap();
    stuck.write_all(b"Stuck\n").await.unwrap();
    ann.expect(&["\"Stuck\" joined (3/3)"]).await;
    let hidden = "*".repeat(600);
    ann.expect(&[
        "Game starts: \"Ann\", \"Bob\", \"Stuck\"",
        &format!("Word: {hidden}"),
        "Turn: \"Ann\"",
        "/turn",
    ])
    .await;
    let bob = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(line) = bob.line().await {
            seen.push(line);
        }
        seen
    });

    let mut left_at = None;
    let mut last = Vec::new();
    for (moves, letter) in word.chars().enumerate() {
        ann.send(&format!("/letter {letter}")).await;
        last.clear();
        while let Some(line) = ann.line().await {
            if line == "\"Stuck\" left the game" {
                left_at = Some(moves);
            }
            let done = line == "/turn" || line == "/quit";
            last.push(line);
            if done {
                break;
            }
        }
    }
    let left_at = left_at.expect("the stuck client was dropped");
    assert!(left_at < 400, "dropped only after {left_at} moves");
    let results = [
        "Results:",
        "\"Ann\": 1200",
        "\"Bob\": 0",
        "Winner: \"Ann\"",
        "/quit",
    ];
    assert!(last.ends_with(&results.map(String::from)), "{last:?}");
    ann.expect_closed().await;
    let seen = timeout(WAIT, bob).await.unwrap().unwrap();
    assert!(seen.ends_with(&results.map(String::from)));
    let leaves = seen.iter().filter(|l| l.contains("left the game")).count();
    assert_eq!(leaves, 1);
    drop(stuck);
}
