//! The live page in a real browser: `cargo test --test browser`.
//!
//! It starts the real `porthost run` serving palindrome-v3 under each of the four models with
//! the admin endpoint on (and a token, so the page's token handling is exercised too), opens
//! the page in headless Chromium driven through chromedriver's WebDriver API (a few lines of
//! HTTP/1.1 and JSON below, no client crate), connects TCP clients to every port and checks
//! that the page shows them: the counts change, the sequential port shows its waiting client,
//! the thread-per-client port a thread per client, the process-per-client port the pids of its
//! children (read from `/proc`), the async port its tasks; then that they go away, that a load
//! run started from a card shows its outcome, and that the page says so when the host is gone.
//!
//! It needs Chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`; or
//! `CHROME=/path` and `CHROMEDRIVER=/path`) and fails, never skips, when they are missing. It
//! is not part of `cargo test --workspace` (`test = false` in `Cargo.toml`), which must pass
//! with only the Rust toolchain. On failure it saves a screenshot and the page's text next to
//! the test binary's scratch files and prints where.

#[allow(dead_code, unused_imports)] // this test uses a few of the helpers the main test binary shares
#[path = "../util.rs"]
mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::{Client, HostProcess, children_of, entry};

/// How long the page may take to show something (it updates once a second).
const PATIENCE: Duration = Duration::from_secs(20);

/// The token the host is given; the page is opened with it.
const TOKEN: &str = "browser-test-token-0123456789";

#[test]
fn the_live_page_shows_what_each_model_does() {
    let chrome = Browser::start();
    let mut host = HostProcess::start(
        &format!("admin = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
        &[
            entry("palindrome-v3", "sequential", ""),
            entry("palindrome-v3", "thread-per-client", ""),
            entry("palindrome-v3", "process-per-client", ""),
            entry("palindrome-v3", "async", ""),
        ],
    );
    let [seq, tpc, ppc, asy] = [0, 1, 2, 3].map(|i| host.ports[i]);
    let admin = admin_addr(&mut host);
    let page = chrome.open(&format!("http://{admin}/?token={TOKEN}"));

    // The page connects and builds a card per port, every one empty.
    page.wait("the page to go live with four cards", |p| {
        p.js(
            "return document.querySelector('#conn').textContent === 'live' \
              && document.querySelectorAll('.card').length",
        ) == json!(4)
    });
    // No run yet: Cancel is disabled and does not look like a live red button.
    assert_eq!(
        page.js("const b = document.getElementById('d-cancel'); \
             return [b.disabled, getComputedStyle(b).backgroundColor];"),
        json!([true, "rgba(0, 0, 0, 0)"])
    );
    for port in [seq, tpc, ppc, asy] {
        let card = page.card(port);
        assert_eq!(
            card.field("open"),
            "0",
            "port {port} before any client: {card:#?}"
        );
        assert_eq!(card.field("state"), "accepting", "{card:#?}");
    }
    let search = page.js("return location.search");
    assert_eq!(search, json!(""), "the token stays out of the address bar");

    // Clients on every port.
    let mut first = Client::connect(host.addr(0));
    assert_eq!(first.ask("abba"), "1");
    let mut second = Client::connect(host.addr(0));
    second.send(b"kayak\n");
    let threaded: Vec<Client> = (0..3).map(|_| asked(host.addr(1))).collect();
    let forked: Vec<Client> = (0..2).map(|_| asked(host.addr(2))).collect();
    let tasks: Vec<Client> = (0..5).map(|_| asked(host.addr(3))).collect();
    let forker = host
        .forker()
        .expect("process-per-client started the fork server");
    let pids: BTreeSet<String> = children_of(forker).iter().map(u32::to_string).collect();
    assert_eq!(pids.len(), 2, "a child per client under the fork server");

    // Sequential: one served, one waiting in the backlog, and the card stands out.
    let card = page.wait_card(seq, "one served and one waiting", |c| {
        c.field("open") == "1" && c.field("waiting") == "1"
    });
    assert!(
        card.classes.contains("queued"),
        "the waiting port stands out: {card:#?}"
    );
    assert!(card.field("workers").contains("1 wait"), "{card:#?}");
    // Thread-per-client: a thread per client.
    page.wait_card(tpc, "three threads for three clients", |c| {
        c.field("open") == "3" && c.field("workers").starts_with("3 threads for 3 clients")
    });
    // Process-per-client: the children's pids, on the card and in the connection list.
    let card = page.wait_card(ppc, "the two children's pids", |c| {
        c.field("open") == "2" && c.pids == pids
    });
    assert!(
        card.field("workers").starts_with("2 child processes"),
        "{card:#?}"
    );
    assert_eq!(card.conn_pids, pids, "the pid column: {card:#?}");
    let mut numbers: Vec<u32> = card.pid_order.iter().map(|p| p.parse().unwrap()).collect();
    let order = numbers.clone();
    numbers.sort_unstable();
    assert_eq!(order, numbers, "pid chips in pid order: {card:#?}");
    // Async: tasks, and no thread of its own.
    let card = page.wait_card(asy, "five tasks", |c| {
        c.field("open") == "5" && c.field("workers").starts_with("5 tasks on")
    });
    // In-host ports say their memory per connection cannot be read apart, not the host's total
    // as if it were theirs.
    for (port, unit) in [(asy, "task"), (tpc, "thread")] {
        let text = page.js_with(
            "return document.querySelector(`[data-port=\"${arguments[0]}\"]`).textContent",
            json!([port]),
        );
        assert!(
            text.as_str()
                .unwrap_or_default()
                .contains(&format!("memory per {unit}: not measurable apart")),
            "{text}"
        );
    }
    assert!(
        card.field("lines").parse::<u64>().unwrap() >= 5,
        "{card:#?}"
    );
    // The feed says what happened.
    for pid in &pids {
        page.wait_feed(&format!("child {pid} forked"));
    }
    page.wait_feed("client waiting in the backlog");

    // The first sequential client leaves: the waiting one is served.
    drop(first);
    assert_eq!(second.line().as_deref(), Some("1"));
    page.wait_card(seq, "the second client served, no one waiting", |c| {
        c.field("open") == "1" && c.field("waiting") == "0" && !c.classes.contains("queued")
    });
    // Every client leaves: the counts return to zero and the children go.
    drop((second, threaded, forked, tasks));
    for port in [seq, tpc, ppc, asy] {
        page.wait_card(port, "no client left", |c| c.field("open") == "0");
    }
    let card = page.wait_card(ppc, "no child left", |c| c.pids.is_empty());
    assert!(
        card.field("children").contains("no child process now"),
        "{card:#?}"
    );
    assert_eq!(card.field("accepted"), "2", "{card:#?}");
    for pid in &pids {
        page.wait_feed(&format!("child {pid} reaped"));
    }

    // A load run started from the async card: the page shows it running or how it ended.
    page.js("document.querySelector('#d-clients').value = '4'; \
             document.querySelector('#d-seconds').value = '3'");
    page.js(&format!(
        "document.querySelector('[data-port=\"{asy}\"] .go').click()"
    ));
    page.wait("the load run's progress or outcome", |p| {
        let s = p.js("return document.querySelector('#d-status').textContent");
        let s = s.as_str().unwrap_or_default();
        (s.starts_with("Driving") || s.starts_with("Last run")) && s.contains(&format!(":{asy}"))
    });
    assert_eq!(
        page.js("return document.querySelector('#d-msg').textContent"),
        json!("")
    );
    page.wait("the load run to end", |p| {
        p.js("return document.querySelector('#d-status').textContent")
            .as_str()
            .is_some_and(|s| s.starts_with("Last run"))
    });
    let outcome = page.js("return document.querySelector('#d-status').textContent");
    let outcome = outcome.as_str().unwrap();
    assert!(outcome.ends_with("finished"), "{outcome}");
    let card = page.card(asy);
    assert!(
        card.field("accepted").parse::<u64>().unwrap() >= 5 + 4,
        "{card:#?}"
    );

    // The host goes away: the page says so.
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(host.wait_exit(PATIENCE).is_some(), "the host drains");
    page.wait("the page to say it is disconnected", |p| {
        p.js("return document.body.classList.contains('down') \
              && document.querySelector('#banner').textContent")
            .as_str()
            .is_some_and(|s| s.starts_with("Disconnected"))
    });
}

/// A client that has had one answer (so its thread, child or task surely exists).
fn asked(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr);
    assert_eq!(client.ask("Was it a car or a cat I saw?"), "1");
    client
}

/// The admin endpoint's address, from the plan's line under its table.
fn admin_addr(host: &mut HostProcess) -> String {
    let line = host.stdout_line();
    line.strip_prefix("live page: http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the host printed no admin address under its plan: {line}"))
        .to_owned()
}

/// A chromedriver and the headless Chromium it drives; both end when this is dropped.
struct Browser {
    driver: Child,
    base: String,
    chrome: PathBuf,
    /// Chromium's profile, fresh for this test.
    profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chrome = program("CHROME", &["chromium", "chromium-browser", "google-chrome"]);
        let driver = program("CHROMEDRIVER", &["chromedriver"]);
        let log = scratch().join("chromedriver.log");
        // chromedriver takes a port number; take one the system says is free.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let mut browser = Browser {
            driver: child,
            base: format!("127.0.0.1:{port}"),
            chrome,
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, body)) = http(&browser.base, "GET", "/status", None)
                && body["value"]["ready"] == json!(true)
            {
                return browser;
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before it was ready; see {}",
                    log.display()
                );
            }
            assert!(Instant::now() < deadline, "chromedriver never got ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new headless window on `url`.
    fn open(&self, url: &str) -> Page<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", self.profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chrome, "args": args },
        }}});
        let (status, body) = http(&self.base, "POST", "/session", Some(&capabilities))
            .expect("chromedriver answers");
        assert_eq!(status, 200, "chromedriver could not start Chromium: {body}");
        let session = body["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let page = Page {
            browser: self,
            session,
        };
        page.call("POST", "/url", json!({ "url": url }));
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver session: a window showing the page.
struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

/// What a port's card shows, read from the page.
#[derive(Debug, serde::Deserialize)]
struct Card {
    /// `data-field` name to its text.
    fields: std::collections::BTreeMap<String, String>,
    classes: String,
    pids: BTreeSet<String>,
    /// The pid chips as the page orders them.
    pid_order: Vec<String>,
    conn_pids: BTreeSet<String>,
}

impl Card {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// Reads a card (the port is the script's argument); `null` when there is none.
const READ_CARD: &str = "
    const card = document.querySelector(`[data-port=\"${arguments[0]}\"]`);
    if (!card) return null;
    const fields = {};
    for (const e of card.querySelectorAll('[data-field]')) fields[e.dataset.field] = e.textContent;
    const texts = (sel) => [...card.querySelectorAll(sel)].map((e) => e.textContent).filter((t) => t);
    return { fields, classes: card.className, pids: texts('.pid'), pid_order: texts('.pid'),
             conn_pids: texts('tbody td.pidcol') };
";

impl Page<'_> {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = (method == "POST").then_some(&body);
        let (status, answer) =
            http(&self.browser.base, method, &path, body).expect("chromedriver answers");
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    /// Runs a script in the page and returns what it returns.
    fn js(&self, script: &str) -> Value {
        self.js_with(script, json!([]))
    }

    fn js_with(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    fn card(&self, port: u16) -> Card {
        serde_json::from_value(self.js_with(READ_CARD, json!([port])))
            .unwrap_or_else(|e| panic!("no card for port {port}: {e}"))
    }

    /// Polls until `done` holds; fails the test, with a screenshot, if it never does.
    fn wait(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            if Instant::now() > deadline {
                panic!("waited {PATIENCE:?} for {what}; {}", self.keep_evidence());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls a port's card until `done` holds; returns the card.
    fn wait_card(&self, port: u16, what: &str, mut done: impl FnMut(&Card) -> bool) -> Card {
        let mut last = None;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let card = self.card(port);
            if done(&card) {
                return card;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {PATIENCE:?} for port {port} to show {what}; it shows {:#?}\n{}",
                    last.unwrap_or(card),
                    self.keep_evidence()
                );
            }
            last = Some(card);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for an event whose text contains `text` in the feed.
    fn wait_feed(&self, text: &str) {
        self.wait(&format!("the event feed to say {text:?}"), |p| {
            p.js_with(
                "return [...document.querySelectorAll('#f-list li')]\
                 .some((li) => li.textContent.includes(arguments[0]))",
                json!([text]),
            ) == json!(true)
        });
    }

    /// Saves a screenshot and the page's text; says where.
    fn keep_evidence(&self) -> String {
        let dir = scratch();
        let png = dir.join("browser-failure.png");
        let text = dir.join("browser-failure.txt");
        let shot = self.call("GET", "/screenshot", Value::Null);
        if let Some(bytes) = shot.as_str().and_then(base64) {
            let _ = std::fs::write(&png, bytes);
        }
        let body = self.js("return document.body.innerText");
        let _ = std::fs::write(&text, body.as_str().unwrap_or_default());
        format!(
            "the page as it was: {} and {}",
            png.display(),
            text.display()
        )
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(&self.browser.base, "DELETE", &path, None);
    }
}

/// Where this test keeps what it leaves behind (chromedriver's log, a failure's screenshot).
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A program named by `env`, else the first of `names` on the `PATH`; fails the test when
/// there is none.
fn program(env: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser test needs {} on the PATH (or {env}=/path/to/it): on Debian, \
         `apt-get install chromium chromium-driver`. It does not skip without it.",
        names.join(" or ")
    );
}

/// One HTTP/1.1 request with a JSON body; returns the status and the JSON answer (`Null` when
/// the answer is not JSON). chromedriver keeps the connection open whatever the request says,
/// so the answer is read to its `Content-Length` (or its last chunk).
fn http(
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(host)?;
    // Starting Chromium is the slowest thing asked of chromedriver; a minute covers it.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        answer.extend_from_slice(&buf[..n]);
        if let Some(done) = complete(&answer) {
            return Ok(done);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("a cut answer: {:?}", String::from_utf8_lossy(&answer)),
            ));
        }
    }
}

/// The status and body of an answer, once all of it has arrived.
fn complete(answer: &[u8]) -> Option<(u16, Value)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let rest = &answer[end + 4..];
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let body = if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length)?.to_vec()
    } else if header("transfer-encoding") == Some("chunked") {
        dechunk(rest)?
    } else {
        return None;
    };
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The body of a chunked answer, once its last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        let chunk = rest.get(line + 2..line + 2 + size)?;
        body.extend_from_slice(chunk);
        rest = rest.get(line + 2 + size + 2..)?;
    }
}

/// Standard base64, as WebDriver sends screenshots.
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
