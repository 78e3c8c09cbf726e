//! The client side: a line client with timeouts, and a load of short sessions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

use super::{PATIENCE, eventually, text};

/// A line-protocol client with timeouts, so a wrong server fails the test instead of hanging.
pub struct Client {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Client::wrap(stream)
    }

    /// Connects from another loopback address (`127.0.0.2`, say), as a second client machine.
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .unwrap_or_else(|e| panic!("binding {source} to connect to {addr}: {e}"));
        socket
            .connect_timeout(&addr.into(), PATIENCE)
            .unwrap_or_else(|e| panic!("connecting to {addr} from {source}: {e}"));
        Client::wrap(socket.into())
    }

    /// Connects with a receive buffer of about `bytes`, so that replies the client has not
    /// read yet pile up in the server's send queue.
    pub fn connect_small_window(addr: SocketAddr, bytes: usize) -> Client {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket
            .connect_timeout(&addr.into(), PATIENCE)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Client::wrap(socket.into())
    }

    fn wrap(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending {:?}: {e}", text(bytes)));
    }

    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// The next line without its `\n`; `None` at the end of the stream.
    pub fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(
                    buf.last(),
                    Some(&b'\n'),
                    "unterminated line {:?}",
                    text(&buf)
                );
                buf.pop();
                Some(text(&buf))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// The next line, which must come.
    pub fn expect_line(&mut self) -> String {
        self.line().expect("a line, not the end of the stream")
    }

    /// Sends one line and returns the one-line answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send_line(line);
        self.line()
            .unwrap_or_else(|| panic!("closed instead of answering {line:?}"))
    }

    /// Connects, sends one line and returns the answer; `None` if any step fails.
    pub fn try_ask(addr: SocketAddr, line: &str) -> Option<String> {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        (&stream).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).ok()?;
        answer.strip_suffix('\n').map(str::to_owned)
    }

    /// The next whole line if one arrives within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = Vec::new();
        let got = match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 && buf.ends_with(b"\n") => {
                buf.pop();
                Some(text(&buf))
            }
            _ => None,
        };
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        got
    }

    /// Closes with a reset (`SO_LINGER` 0) instead of a FIN, as a crashed or rude client does.
    pub fn reset(self) {
        SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }

    /// Whether the server has closed: the end of the stream with no more data before it.
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// One short session: connect, send `abba`, expect `1`, close. `Err` says what went wrong.
pub fn palindrome_session(addr: SocketAddr) -> Result<(), String> {
    let stream =
        TcpStream::connect_timeout(&addr, PATIENCE).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    (&stream)
        .write_all(b"abba\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    match answer.as_str() {
        "1\n" => Ok(()),
        "" => Err("closed without an answer".to_owned()),
        other => Err(format!("answered {other:?}")),
    }
}

/// Threads running [`palindrome_session`] in a loop against some addresses until stopped,
/// counting sessions served and keeping every failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `per_addr` threads for each address.
    pub fn start(addrs: &[SocketAddr], per_addr: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .flat_map(|addr| std::iter::repeat_n(*addr, per_addr))
            .map(|addr| {
                let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match palindrome_session(addr) {
                            Ok(()) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{addr}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            failures,
            threads,
        }
    }

    /// Sessions served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until `more` sessions beyond those served now have been served.
    pub fn wait_for(&self, more: u64) {
        let target = self.served() + more;
        assert!(
            eventually(|| self.served() >= target || !self.failures().is_empty()),
            "the load did not get {more} sessions served in {PATIENCE:?}"
        );
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Stops the threads; returns the sessions served and the failures.
    pub fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.served.load(Ordering::Relaxed), failures)
    }
}
