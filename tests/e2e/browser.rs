//! The live page in a real browser: `cargo test --test browser`.
//!
//! Each test starts the real `porthost run` serving palindrome-v3 under each of the four
//! models with the admin endpoint on (and a token, so the page's token handling is exercised
//! too), opens the page in headless Chromium driven through chromedriver (WebDriver, by
//! `fantoccini`), connects TCP clients and checks one thing the page shows: a card per port,
//! the sequential port's waiting client, the thread-per-client port's threads and the async
//! port's tasks, the process-per-client port's children (their pids read from `/proc`), a load
//! run started from a card, the page saying the host is gone. Each has its own host and
//! browser, so one failing hides none of the others.
//!
//! It needs Chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`; or
//! `CHROME=/path` and `CHROMEDRIVER=/path`) and fails, never skips, when they are missing. It
//! is not part of `cargo test --workspace` (`test = false` in `Cargo.toml`), which must pass
//! with only the Rust toolchain. On failure it saves a screenshot and the page's text next to
//! the test binary's scratch files and prints where.

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::ClientBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use support::{Client, HostProcess, PATIENCE, admin_addr, children_of, entry, eventually};

/// The token the host is given; the page is opened with it.
const TOKEN: &str = "browser-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_goes_live_with_an_empty_card_per_port() {
    let live = Live::start().await;
    // No run yet: Cancel is disabled and does not look like a live red button.
    assert_eq!(
        live.page
            .js("const b = document.getElementById('d-cancel'); \
                 return [b.disabled, getComputedStyle(b).backgroundColor];")
            .await,
        json!([true, "rgba(0, 0, 0, 0)"])
    );
    for port in live.ports {
        let card = live.page.card(port).await;
        assert_eq!(
            card.field("open"),
            "0",
            "port {port} before any client: {card:#?}"
        );
        assert_eq!(card.field("state"), "accepting", "{card:#?}");
    }
    let search = live.page.js("return location.search").await;
    assert_eq!(search, json!(""), "the token stays out of the address bar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequential_card_shows_its_waiting_client() {
    let live = Live::start().await;
    let (page, seq) = (&live.page, live.ports[0]);
    let mut first = Client::connect(live.host.addr(0));
    assert_eq!(first.ask("abba"), "1");
    let mut second = Client::connect(live.host.addr(0));
    second.send(b"kayak\n");

    // One served, one waiting in the backlog, and the card stands out.
    let card = page
        .wait_card(seq, "one served and one waiting", |c| {
            c.field("open") == "1" && c.field("waiting") == "1"
        })
        .await;
    assert!(
        card.classes.contains("queued"),
        "the waiting port stands out: {card:#?}"
    );
    assert!(card.field("workers").contains("1 wait"), "{card:#?}");
    page.wait_feed("client waiting in the backlog").await;

    // The first client leaves: the waiting one is served.
    drop(first);
    assert_eq!(second.line().as_deref(), Some("1"));
    page.wait_card(seq, "the second client served, no one waiting", |c| {
        c.field("open") == "1" && c.field("waiting") == "0" && !c.classes.contains("queued")
    })
    .await;
    drop(second);
    page.wait_card(seq, "no client left", |c| c.field("open") == "0")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_and_async_cards_show_threads_and_tasks() {
    let live = Live::start().await;
    let (page, [_, tpc, _, asy]) = (&live.page, live.ports);
    let threaded: Vec<Client> = (0..3).map(|_| asked(live.host.addr(1))).collect();
    let tasks: Vec<Client> = (0..5).map(|_| asked(live.host.addr(3))).collect();

    page.wait_card(tpc, "three threads for three clients", |c| {
        c.field("open") == "3" && c.field("workers").starts_with("3 threads for 3 clients")
    })
    .await;
    // Async: tasks, and no thread of its own.
    let card = page
        .wait_card(asy, "five tasks", |c| {
            c.field("open") == "5" && c.field("workers").starts_with("5 tasks on")
        })
        .await;
    assert!(
        card.field("lines").parse::<u64>().unwrap() >= 5,
        "{card:#?}"
    );
    // In-host ports say their memory per connection cannot be read apart, not the host's total
    // as if it were theirs.
    for (port, unit) in [(asy, "task"), (tpc, "thread")] {
        let text = page
            .js_with(
                "return document.querySelector(`[data-port=\"${arguments[0]}\"]`).textContent",
                json!(port),
            )
            .await;
        assert!(
            text.as_str()
                .unwrap_or_default()
                .contains(&format!("memory per {unit}: not measurable apart")),
            "{text}"
        );
    }

    drop((threaded, tasks));
    for port in [tpc, asy] {
        page.wait_card(port, "no client left", |c| c.field("open") == "0")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_card_shows_the_children() {
    let live = Live::start().await;
    let (page, ppc) = (&live.page, live.ports[2]);
    let forked: Vec<Client> = (0..2).map(|_| asked(live.host.addr(2))).collect();
    let forker = live
        .host
        .forker()
        .expect("process-per-client started the fork server");
    let pids: BTreeSet<String> = children_of(forker).iter().map(u32::to_string).collect();
    assert_eq!(pids.len(), 2, "a child per client under the fork server");

    // The children's pids, on the card and in the connection list.
    let card = page
        .wait_card(ppc, "the two children's pids", |c| {
            c.field("open") == "2" && c.pids == pids
        })
        .await;
    assert!(
        card.field("workers").starts_with("2 child processes"),
        "{card:#?}"
    );
    assert_eq!(card.conn_pids, pids, "the pid column: {card:#?}");
    let mut numbers: Vec<u32> = card.pid_order.iter().map(|p| p.parse().unwrap()).collect();
    let order = numbers.clone();
    numbers.sort_unstable();
    assert_eq!(order, numbers, "pid chips in pid order: {card:#?}");
    for pid in &pids {
        page.wait_feed(&format!("child {pid} forked")).await;
    }

    // The clients leave: the children go.
    drop(forked);
    let card = page
        .wait_card(ppc, "no client and no child left", |c| {
            c.field("open") == "0" && c.pids.is_empty()
        })
        .await;
    assert!(
        card.field("children").contains("no child process now"),
        "{card:#?}"
    );
    assert_eq!(card.field("accepted"), "2", "{card:#?}");
    for pid in &pids {
        page.wait_feed(&format!("child {pid} reaped")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_started_from_a_card_shows_its_outcome() {
    let live = Live::start().await;
    let (page, asy) = (&live.page, live.ports[3]);
    page.js("document.querySelector('#d-clients').value = '4'; \
             document.querySelector('#d-seconds').value = '3'")
        .await;
    page.js(&format!(
        "document.querySelector('[data-port=\"{asy}\"] .go').click()"
    ))
    .await;
    let status = "return document.querySelector('#d-status').textContent";
    page.wait("the load run's progress or outcome", status, |s| {
        let s = s.as_str().unwrap_or_default();
        (s.starts_with("Driving") || s.starts_with("Last run")) && s.contains(&format!(":{asy}"))
    })
    .await;
    assert_eq!(
        page.js("return document.querySelector('#d-msg').textContent")
            .await,
        json!("")
    );
    page.wait("the load run to end", status, |s| {
        s.as_str().is_some_and(|s| s.starts_with("Last run"))
    })
    .await;
    let outcome = page.js(status).await;
    let outcome = outcome.as_str().unwrap();
    assert!(outcome.ends_with("finished"), "{outcome}");
    let card = page.card(asy).await;
    assert!(
        card.field("accepted").parse::<u64>().unwrap() >= 4,
        "the run's four clients were served: {card:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_host_is_gone() {
    let mut live = Live::start().await;
    live.host.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(live.host.wait_exit(PATIENCE).is_some(), "the host drains");
    live.page
        .wait(
            "the page to say it is disconnected",
            "return document.body.classList.contains('down') \
             && document.querySelector('#banner').textContent",
            |s| s.as_str().is_some_and(|s| s.starts_with("Disconnected")),
        )
        .await;
}

/// A host serving palindrome-v3 under the four models, and its live page, connected.
struct Live {
    host: HostProcess,
    /// The sequential, thread-per-client, process-per-client and async ports.
    ports: [u16; 4],
    page: Page,
}

impl Live {
    async fn start() -> Live {
        let mut host = HostProcess::start(
            &format!("admin = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"),
            &[
                entry("palindrome-v3", "sequential", ""),
                entry("palindrome-v3", "thread-per-client", ""),
                entry("palindrome-v3", "process-per-client", ""),
                entry("palindrome-v3", "async", ""),
            ],
        );
        let ports = [0, 1, 2, 3].map(|i| host.ports[i]);
        let line = host.stdout_line();
        let admin = admin_addr(&line)
            .unwrap_or_else(|| panic!("the host printed no admin address under its plan: {line}"));
        let page = Page::open(&format!("http://{admin}/?token={TOKEN}")).await;
        // The page connects and builds a card per port.
        page.wait(
            "the page to go live with four cards",
            "return document.querySelector('#conn').textContent === 'live' \
             && document.querySelectorAll('.card').length",
            |cards| *cards == json!(4),
        )
        .await;
        Live { host, ports, page }
    }
}

/// A client that has had one answer (so its thread, child or task surely exists).
fn asked(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr);
    assert_eq!(client.ask("Was it a car or a cat I saw?"), "1");
    client
}

/// A headless Chromium window on the page, driven by a chromedriver of its own; the session
/// and chromedriver end when this is dropped.
struct Page {
    client: fantoccini::Client,
    driver: Child,
    /// Chromium's profile, fresh for this window.
    _profile: tempfile::TempDir,
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

impl Page {
    /// Starts chromedriver, has it start Chromium, and opens `url`.
    async fn open(url: &str) -> Page {
        let chrome = program("CHROME", &["chromium", "chromium-browser", "google-chrome"]);
        let driver = program("CHROMEDRIVER", &["chromedriver"]);
        let profile = tempfile::tempdir().unwrap();
        // chromedriver takes a port number; take one the system says is free.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = scratch().join(format!("chromedriver-{port}.log"));
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        // chromedriver listens once it is ready.
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before it was ready; see {}",
                    log.display()
                );
            }
            assert!(Instant::now() < deadline, "chromedriver never got ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args: Vec<String> = [
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
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium: {e}; see {}",
                    log.display()
                )
            });
        let page = Page {
            client,
            driver: child,
            _profile: profile,
        };
        page.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("Chromium cannot open {url}: {e}"));
        page
    }

    /// Runs a script in the page and returns what it returns.
    async fn js(&self, script: &str) -> Value {
        self.js_with(script, Value::Null).await
    }

    /// Runs a script with one argument (`arguments[0]`; none when `Null`).
    async fn js_with(&self, script: &str, arg: Value) -> Value {
        let args = if arg.is_null() { vec![] } else { vec![arg] };
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("WebDriver cannot run {script:?}: {e}"))
    }

    async fn card(&self, port: u16) -> Card {
        serde_json::from_value(self.js_with(READ_CARD, json!(port)).await)
            .unwrap_or_else(|e| panic!("no card for port {port}: {e}"))
    }

    /// Runs `script` until what it returns satisfies `done`; fails the test, with a
    /// screenshot, if it never does.
    async fn wait(&self, what: &str, script: &str, mut done: impl FnMut(&Value) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.js(script).await;
            if done(&value) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {PATIENCE:?} for {what}; the page said {value}; {}",
                    self.keep_evidence().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a port's card until `done` holds; returns the card.
    async fn wait_card(&self, port: u16, what: &str, mut done: impl FnMut(&Card) -> bool) -> Card {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let card = self.card(port).await;
            if done(&card) {
                return card;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {PATIENCE:?} for port {port} to show {what}; it shows {card:#?}\n{}",
                    self.keep_evidence().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an event whose text contains `text` in the feed.
    async fn wait_feed(&self, text: &str) {
        let script = format!(
            "return [...document.querySelectorAll('#f-list li')]\
             .some((li) => li.textContent.includes({}))",
            json!(text)
        );
        self.wait(
            &format!("the event feed to say {text:?}"),
            &script,
            |seen| *seen == json!(true),
        )
        .await;
    }

    /// Saves a screenshot and the page's text; says where.
    async fn keep_evidence(&self) -> String {
        let dir = scratch();
        let stem = format!("browser-failure-{}", self.driver.id());
        let png = dir.join(format!("{stem}.png"));
        let text = dir.join(format!("{stem}.txt"));
        if let Ok(bytes) = self.client.screenshot().await {
            let _ = std::fs::write(&png, bytes);
        }
        if let Ok(body) = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
        {
            let _ = std::fs::write(&text, body.as_str().unwrap_or_default());
        }
        format!(
            "the page as it was: {} and {}",
            png.display(),
            text.display()
        )
    }
}

impl Drop for Page {
    /// Ends the WebDriver session (so chromedriver closes Chromium), then chromedriver.
    fn drop(&mut self) {
        let client = self.client.clone();
        tokio::task::block_in_place(|| {
            let _ = tokio::runtime::Handle::current().block_on(client.close());
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
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
