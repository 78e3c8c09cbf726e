//! The options, and what only real TCP can show, which the hall's unit tests and the host's
//! integration tests (`tests/word_guess.rs`) cannot reach: a turn timing out on the mover's own
//! session timer, under a task per connection (the `async` model) and under a thread and a
//! current-thread runtime per connection (`thread-per-client`), and a client that never reads
//! filling its socket and then its queue. Whole games are played in `tests/word_guess.rs`.
//! Every read has a timeout, so a bug fails instead of hanging.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

use std::path::PathBuf;

use super::protocol::{QUIT, TURN, WELCOME};
use super::*;
use crate::{Conn, Limits};

/// Long enough for a loaded machine, short enough that a stuck test fails soon.
const WAIT: Duration = Duration::from_secs(10);

fn options(table: &str, base_dir: &Path) -> Options {
    Options::new(table.parse::<toml::Table>().unwrap(), base_dir)
}

fn settings(table: &str, base_dir: &Path) -> Result<Settings, String> {
    let options = options(table, base_dir);
    Settings::new(&options.parse()?, options.base_dir())
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
            clients_at_once: 2,
            alone_with: Some("options = { players = 1 }"),
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
    for (bad, shown) in [
        ("0", "0"),
        ("17", "17"),
        ("-1", "-1"),
        ("9223372036854775807", "9223372036854775807"),
        ("\"2\"", "the string \"2\""),
        ("2.5", "2.5"),
    ] {
        let error = build_err(&format!("players = {bad}"));
        assert_eq!(
            error,
            format!("players must be a whole number from 1 to 16, not {shown}")
        );
    }
}

#[test]
fn unknown_options_are_refused_with_the_known_ones() {
    assert_eq!(
        build_err("player = 2"),
        "unknown field `player`, expected one of `players`, `words`, `words_file`, \
         `turn_timeout_secs`"
    );
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
    assert_eq!(
        build_err("words = \"abba\""),
        "words must be a list of strings, not the string \"abba\""
    );
    assert_eq!(
        build_err("words = [\"abba\", 7]"),
        "words: 7 is not a word: words are strings"
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
    assert_eq!(
        settings_err("words_file = 3", &dir),
        "words_file must be a path (a string), not 3"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_turn_timeout_is_1_second_to_a_day() {
    for (ok, secs) in [("1", 1), ("86400", 86_400)] {
        let settings = settings(&format!("turn_timeout_secs = {ok}"), Path::new(".")).unwrap();
        assert_eq!(settings.turn_timeout, Some(Duration::from_secs(secs)));
    }
    for (bad, shown) in [
        ("0", "0"),
        ("-5", "-5"),
        ("86401", "86401"),
        ("9223372036854775807", "9223372036854775807"),
        ("\"30\"", "the string \"30\""),
        ("1.5", "1.5"),
    ] {
        assert_eq!(
            build_err(&format!("turn_timeout_secs = {bad}")),
            format!(
                "turn_timeout_secs must be a whole number of seconds from 1 to 86400, not {shown}"
            )
        );
    }
}

/// Every problem is reported at once, so a config is fixed in one round, not one per error.
#[test]
fn every_options_error_is_reported_not_only_the_first() {
    let error = build_err(
        "players = 0\nturn_timeout_secs = 0\nwords = [\"ab1\", \"ok\", \"c d\"]\nplayer = 2",
    );
    let errors: Vec<&str> = error.split("; ").collect();
    assert_eq!(errors.len(), 5, "{error}");
    assert!(errors[0].starts_with("unknown field `player`"), "{error}");
    assert_eq!(
        errors[1],
        "players must be a whole number from 1 to 16, not 0"
    );
    assert_eq!(
        errors[2],
        "turn_timeout_secs must be a whole number of seconds from 1 to 86400, not 0"
    );
    assert!(errors[3].starts_with("words: ") && errors[3].contains("\"ab1\""));
    assert!(errors[4].starts_with("words: ") && errors[4].contains("\"c d\""));
}

#[test]
fn a_long_list_of_bad_words_is_cut_short() {
    let bad: Vec<String> = (0..8).map(|i| format!("\"w{i}\"")).collect();
    let error = build_err(&format!("words = [{}]", bad.join(", ")));
    let errors: Vec<&str> = error.split("; ").collect();
    assert_eq!(errors.len(), 6, "{error}");
    assert_eq!(errors[5], "words: and 3 more bad words");
}

fn service(table: &str) -> Arc<dyn Service> {
    build(&options(table, Path::new("."))).unwrap()
}

/// One client's session, under the default limits.
async fn session(
    service: Arc<dyn Service>,
    stream: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    service
        .serve(Conn {
            stream,
            peer,
            limits: Limits::default(),
            meter: crate::Meter::default(),
        })
        .await
}

/// Serves like the `async` model: a task per connection on the test's runtime.
fn serve(listener: TcpListener, service: Arc<dyn Service>) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = Arc::clone(&service);
            tokio::spawn(session(service, stream, peer));
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
                    session(service, stream, peer).await
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
        client.expect(&[WELCOME]).await;
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

/// Names clients in order until their game starts, checking the lobby messages on the way
/// and then the `start` lines. The first client has the turn and its `/turn` is read.
async fn game_of(addr: SocketAddr, names: &[&str], start: &[&str]) -> Vec<Client> {
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
    for client in &mut clients {
        client.expect(start).await;
    }
    clients[0].expect(&[TURN]).await;
    clients
}

/// Ann never moves and loses the turn; Bob hits, which restarts his time, and loses it too.
async fn turns_time_out(addr: SocketAddr) {
    let start = [
        "Game starts: \"Ann\", \"Bob\"",
        "Alphabet: Latin, 4 letters",
        "Word: ****",
        "Turn: \"Ann\" (1 s)",
    ];
    let [mut ann, mut bob] = game_of(addr, &["Ann", "Bob"], &start)
        .await
        .try_into()
        .unwrap();
    let timed_out = ["\"Ann\" ran out of time", "Turn: \"Bob\" (1 s)"];
    all_expect(&mut [&mut ann, &mut bob], &timed_out).await;
    bob.expect(&[TURN]).await;
    bob.send("/letter b").await;
    let hit = [
        "\"Bob\": letter b",
        "Hit: \"Bob\" scores 2 (total 2) and moves again",
        "Word: *bb*",
        "Turn: \"Bob\" (1 s)",
    ];
    all_expect(&mut [&mut ann, &mut bob], &hit).await;
    bob.expect(&[TURN]).await;
    let timed_out = ["\"Bob\" ran out of time", "Turn: \"Ann\" (1 s)"];
    all_expect(&mut [&mut ann, &mut bob], &timed_out).await;
    ann.expect(&[TURN]).await;
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
        "Alphabet: Han, 600 letters",
        &format!("Word: {hidden}"),
        "Turn: \"Ann\"",
        TURN,
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
        ann.send(&protocol::Command::Letter(letter).to_string())
            .await;
        last.clear();
        while let Some(line) = ann.line().await {
            if line == "\"Stuck\" left the game" {
                left_at = Some(moves);
            }
            let done = line == TURN || line == QUIT;
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
        QUIT,
    ];
    assert!(last.ends_with(&results.map(String::from)), "{last:?}");
    ann.expect_closed().await;
    let seen = timeout(WAIT, bob).await.unwrap().unwrap();
    assert!(seen.ends_with(&results.map(String::from)));
    let leaves = seen.iter().filter(|l| l.contains("left the game")).count();
    assert_eq!(leaves, 1);
    drop(stuck);
}
