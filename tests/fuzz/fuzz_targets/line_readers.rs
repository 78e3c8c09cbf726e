//! The line readers, async (`LineReader`) and blocking (`BlockingLineReader`), fed any bytes cut
//! into any pieces under any `max_line_bytes` the config accepts: both frame them exactly as
//! the obvious split on `\n` does (one `\r` stripped, the first line over the limit ends it),
//! as the property tests in `services/tests/framing.rs` check for their generated inputs.
//!
//! The async reader reads from a stream that hands out one piece per read. The blocking one
//! reads a real loopback socket, as it does in the host; the writer sends the next piece only
//! once the reader has read the one before, so each `read(2)` returns one piece (or less, when
//! the buffer has less room), not whatever the kernel coalesced.
//!
//! Run: `cargo +nightly fuzz run line_readers --fuzz-dir tests/fuzz`.
#![no_main]

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use libfuzzer_sys::fuzz_target;
use porthost::config::bounds::MAX_LINE_BYTES;
use porthost_services::lines::{BlockingLineReader, Frame, LineReader};
use porthost_services::meter::Traffic;
use porthost_services::testing::{Frames, Pieces, cut, obvious_frames};
use porthost_services::{Limits, Meter};

fn limits(max_line_bytes: usize) -> Limits {
    Limits {
        max_line_bytes,
        idle_timeout: None,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn async_frames(max: usize, pieces: Vec<Vec<u8>>) -> Frames {
    let mut reader = LineReader::new(Pieces::new(pieces), limits(max), Meter::default());
    runtime().block_on(async {
        let mut out = Vec::new();
        loop {
            match reader.next_line().await.expect("reads never fail here") {
                Frame::Line(line) => out.push(Ok(line.to_vec())),
                Frame::TooLong => {
                    out.push(Err("too long"));
                    return out;
                }
                Frame::Idle => panic!("idle without an idle timeout"),
                Frame::Eof => return out,
            }
        }
    })
}

fn listener() -> &'static TcpListener {
    static LISTENER: OnceLock<TcpListener> = OnceLock::new();
    LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
}

/// What the writer sends for one input: to the client socket, piece by piece, each once the
/// reader's meter shows the one before was read (or the reader is done).
struct Send {
    client: TcpStream,
    pieces: Vec<Vec<u8>>,
    traffic: Arc<Traffic>,
    done: Arc<AtomicBool>,
    sent: mpsc::Sender<()>,
}

/// One writer thread for the whole run: a thread per input would still be exiting when
/// libFuzzer checks for leaks after the input, which LeakSanitizer reports as one.
fn writer() -> &'static Mutex<mpsc::Sender<Send>> {
    static WRITER: OnceLock<Mutex<mpsc::Sender<Send>>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Send>();
        std::thread::spawn(move || {
            for mut job in rx {
                write_pieces(&mut job);
                drop(job.client);
                let _ = job.sent.send(());
            }
        });
        Mutex::new(tx)
    })
}

fn write_pieces(job: &mut Send) {
    let mut sent = 0u64;
    for piece in &job.pieces {
        if job.client.write_all(piece).is_err() {
            return;
        }
        sent += piece.len() as u64;
        while job.traffic.bytes_in.load(Ordering::Acquire) < sent {
            if job.done.load(Ordering::Acquire) {
                return;
            }
            std::thread::yield_now();
        }
    }
    let _ = job.client.shutdown(Shutdown::Write);
    // Stay until the reader is done, so closing cannot reset what it has not read.
    while !job.done.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
}

fn blocking_frames(max: usize, pieces: Vec<Vec<u8>>) -> Frames {
    let listener = listener();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let traffic = Arc::new(Traffic::default());
    let done = Arc::new(AtomicBool::new(false));
    let (sent, finished) = mpsc::channel();
    writer()
        .lock()
        .unwrap()
        .send(Send {
            client,
            pieces,
            traffic: traffic.clone(),
            done: done.clone(),
            sent,
        })
        .expect("the writer runs");
    let mut reader = BlockingLineReader::new(&stream, limits(max), Meter::new(traffic));
    let mut out = Vec::new();
    loop {
        match reader.next_line().expect("reads never fail here") {
            Frame::Line(line) => out.push(Ok(line.to_vec())),
            Frame::TooLong => {
                out.push(Err("too long"));
                break;
            }
            Frame::Idle => panic!("idle without an idle timeout"),
            Frame::Eof => break,
        }
    }
    done.store(true, Ordering::Release);
    finished.recv().expect("the writer answers");
    out
}

// Input: 4 bytes of `max_line_bytes` (mostly small limits, so that lines cross them; any the
// config accepts one time in eight), a byte counting the cuts that follow it (piece lengths,
// each one more than its value), and the stream, so the lecture's lines serve as seeds.
fuzz_target!(|input: &[u8]| {
    let Some((head, rest)) = input.split_first_chunk::<5>() else {
        return;
    };
    let raw = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let max = match raw % 8 {
        0 => MAX_LINE_BYTES.min + raw % MAX_LINE_BYTES.max,
        _ => 1 + raw % 64,
    };
    let max = usize::try_from(max).expect("the bound fits");
    let (cuts, data) = rest.split_at(usize::from(head[4]).min(rest.len()));
    let pieces = cut(data, cuts);
    let want = obvious_frames(data, max);
    assert_eq!(async_frames(max, pieces.clone()), want, "async, max {max}");
    assert_eq!(blocking_frames(max, pieces), want, "blocking, max {max}");
});
