//! Property tests of line framing: any byte stream, cut into any pieces, is framed and answered
//! exactly as when it arrives whole, by the line readers themselves (async and blocking) and by
//! each palindrome version over a real TCP connection, in both its forms (where the three
//! versions and the two forms must all agree: one protocol).

use porthost_services::lines::{BlockingLineReader, Frame, LineReader};
use porthost_services::testing::{Frames, Pieces, obvious_frames};
use porthost_services::{BlockingConn, Conn, Limits, Meter, Options};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn limits(max_line_bytes: usize) -> Limits {
    Limits {
        max_line_bytes,
        idle_timeout: None,
    }
}

/// Input that stresses framing: lines whose lengths cluster around the limit, holding `\r`, the
/// odd `\n` and invalid UTF-8, each ended by `\n`, `\r\n` or nothing (running into the next).
fn stream(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![0..=max + 2, Just(max), Just(max + 1)];
    let line = len.prop_flat_map(|n| {
        prop::collection::vec(
            prop_oneof![6 => any::<u8>(), 2 => b'a'..=b'b', 1 => Just(b'\r')],
            n,
        )
    });
    let end = prop_oneof![3 => Just(&b"\n"[..]), 2 => Just(&b"\r\n"[..]), 1 => Just(&b""[..])];
    prop::collection::vec((line, end), 0..12).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(l, end)| [l, end.to_vec()])
            .flatten()
            .collect()
    })
}

/// Where to cut an input of `len` bytes: anywhere, or every few bytes (between every `\r` and
/// its `\n` too).
fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        prop::collection::vec(0..=len, 0..24),
        (1..8usize).prop_map(move |k| (0..len).step_by(k).collect()),
    ]
}

/// A line limit, an input and where to cut it.
fn case() -> impl Strategy<Value = (usize, Vec<u8>, Vec<usize>)> {
    (1usize..24).prop_flat_map(|max| {
        stream(max).prop_flat_map(move |input| {
            let len = input.len();
            (Just(max), Just(input), cuts(len))
        })
    })
}

fn pieces(input: &[u8], mut cuts: Vec<usize>) -> Vec<Vec<u8>> {
    cuts.extend([0, input.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| input[w[0]..w[1]].to_vec())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every frame up to the end or the first line too long.
async fn frames<R: AsyncRead + Unpin>(mut reader: LineReader<R>) -> Frames {
    let mut out = Vec::new();
    loop {
        match reader.next_line().await.unwrap() {
            Frame::Line(line) => out.push(Ok(line.to_vec())),
            Frame::TooLong => {
                out.push(Err("too long"));
                return out;
            }
            Frame::Idle => unreachable!("no idle timeout"),
            Frame::Eof => return out,
        }
    }
}

/// Every frame the blocking reader finds in the pieces, sent one write each over loopback TCP.
fn blocking_frames(max: usize, pieces: Vec<Vec<u8>>) -> Frames {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for piece in pieces {
            // The reader may have stopped at a line too long: what it left unread is not ours.
            if client.write_all(&piece).is_err() {
                return;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Write);
        // Stay until the reader is done, so closing cannot reset what it has not read.
        let _ = std::io::copy(&mut client, &mut std::io::sink());
    });
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BlockingLineReader::new(&stream, limits(max), Meter::default());
    let mut out = Vec::new();
    loop {
        match reader.next_line().unwrap() {
            Frame::Line(line) => out.push(Ok(line.to_vec())),
            Frame::TooLong => {
                out.push(Err("too long"));
                break;
            }
            Frame::Idle => unreachable!("no idle timeout"),
            Frame::Eof => break,
        }
    }
    drop(stream);
    writer.join().unwrap();
    out
}

/// [`exchange`] with the service's blocking form, served on a thread of its own.
fn exchange_blocking(service: &str, max: usize, pieces: &[Vec<u8>]) -> Vec<u8> {
    use std::io::{Read, Write};
    let registration = porthost_services::find(service).unwrap();
    let service = (registration.build)(&Options::default()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, peer) = listener.accept().unwrap();
        let blocking = service
            .blocking()
            .expect("every palindrome has a blocking form");
        let conn = BlockingConn {
            stream,
            peer,
            limits: limits(max),
            meter: Meter::default(),
        };
        // An I/O error ends only this connection; what the client received is what counts.
        let _ = blocking.serve_blocking(conn);
    });
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    let mut read_half = client.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut replies = Vec::new();
        let _ = read_half.read_to_end(&mut replies);
        replies
    });
    for piece in pieces {
        if client.write_all(piece).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
    let replies = reader.join().unwrap();
    server.join().unwrap();
    replies
}

/// Serves one connection with `service`, sends it the pieces one write each (the server gets a
/// turn after each), half-closes, and returns all the server sent until it closed.
async fn exchange(service: &str, max: usize, pieces: &[Vec<u8>]) -> Vec<u8> {
    let registration = porthost_services::find(service).unwrap();
    let service = (registration.build)(&Options::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let limits = limits(max);
        // An I/O error ends only this connection; what the client received is what counts.
        let _ = service
            .serve(Conn {
                stream,
                peer,
                limits,
                meter: Meter::default(),
            })
            .await;
    });
    let client = TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let (mut read_half, mut write_half) = client.into_split();
    let reader = tokio::spawn(async move {
        let mut replies = Vec::new();
        let _ = read_half.read_to_end(&mut replies).await;
        replies
    });
    for piece in pieces {
        write_half.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    write_half.shutdown().await.unwrap();
    let replies = reader.await.unwrap();
    server.await.unwrap();
    replies
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_line_reader_frames_any_pieces_like_the_obvious_split((max, input, cuts) in case()) {
        let reader = LineReader::new(Pieces::new(pieces(&input, cuts)), limits(max), Meter::default());
        prop_assert_eq!(runtime().block_on(frames(reader)), obvious_frames(&input, max));
    }
}

proptest! {
    // Each case is a TCP session.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_blocking_line_reader_frames_like_the_async_one((max, input, cuts) in case()) {
        let blocking = blocking_frames(max, pieces(&input, cuts));
        prop_assert_eq!(blocking, obvious_frames(&input, max));
    }
}

proptest! {
    // Each case is nine TCP sessions; a modest count keeps the suite fast.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_version_answers_any_pieces_as_it_answers_the_whole((max, input, cuts) in case()) {
        let pieces = pieces(&input, cuts);
        let answers = runtime().block_on(async {
            let mut answers = Vec::new();
            for service in ["palindrome-v1", "palindrome-v2", "palindrome-v3"] {
                let whole = exchange(service, max, std::slice::from_ref(&input)).await;
                let cut = exchange(service, max, &pieces).await;
                answers.push((service, whole, cut));
            }
            answers
        });
        for (service, whole, cut) in &answers {
            prop_assert_eq!(
                String::from_utf8_lossy(cut),
                String::from_utf8_lossy(whole),
                "{} in {} pieces",
                service,
                pieces.len()
            );
            // The blocking form answers every stream as the async form does.
            let blocking = exchange_blocking(service, max, &pieces);
            prop_assert_eq!(
                String::from_utf8_lossy(&blocking),
                String::from_utf8_lossy(whole),
                "{} blocking, in {} pieces",
                service,
                pieces.len()
            );
        }
        prop_assert_eq!(&answers[0].1, &answers[1].1, "v1 and v2 differ");
        prop_assert_eq!(&answers[1].1, &answers[2].1, "v2 and v3 differ");
    }
}
