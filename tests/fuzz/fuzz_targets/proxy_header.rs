//! The PROXY header reader (`porthost::proxy_protocol::read_header`), v1 and v2, over a stream
//! that hands its bytes out in arbitrary pieces, as a socket does.
//!
//! - Any bytes: no panic; a header that is accepted is accepted whole too, with the same
//!   result, and exactly its bytes were taken from the stream (a v2 header's 16 + length, a
//!   v1 line up to its first CRLF), never a byte of what follows.
//! - Round trip: a header written from random fields by the spec (not by the parser's crate)
//!   parses back to those fields, in any pieces, and leaves the bytes after it unread.
//!
//! Run: `cargo +nightly fuzz run proxy_header --fuzz-dir tests/fuzz`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use porthost::proxy_protocol::{Header, HeaderError, V2_SIGNATURE, read_header};
use porthost_services::testing::{Pieces, cut};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// The reader's answer for `data` in the pieces `cuts` give, and how many bytes it took.
fn read(data: &[u8], cuts: &[u8]) -> (Result<Header, HeaderError>, usize) {
    // Never pending: a header still incomplete at the end is truncated, not timed out.
    let mut stream = Pieces::new(cut(data, cuts));
    let result = runtime().block_on(read_header(&mut stream, Duration::from_secs(3)));
    (result, stream.taken())
}

/// How long the header at the start of `data` is by the spec's framing, if it is complete.
fn framed_length(data: &[u8]) -> Option<usize> {
    if data.starts_with(V2_SIGNATURE) {
        let length = data.get(14..16)?;
        let end = 16 + usize::from(u16::from_be_bytes([length[0], length[1]]));
        (end <= data.len()).then_some(end)
    } else {
        data.windows(2).position(|w| w == b"\r\n").map(|at| at + 2)
    }
}

#[derive(Debug, Arbitrary)]
enum Addresses {
    V4 {
        source: [u8; 4],
        destination: [u8; 4],
        ports: (u16, u16),
    },
    V6 {
        source: [u8; 16],
        destination: [u8; 16],
        ports: (u16, u16),
    },
    /// v1 `UNKNOWN`, v2 `AF_UNSPEC`.
    Unknown,
}

#[derive(Debug, Arbitrary)]
enum Fields {
    V1(Addresses),
    V2 {
        /// `LOCAL` instead of `PROXY`.
        local: bool,
        addresses: Addresses,
        /// TLVs after the addresses: (type, value), each at most 255 bytes here.
        tlvs: Vec<(u8, Vec<u8>)>,
    },
}

/// A round trip's input: the fields, the client's bytes after the header, and the cuts.
#[derive(Debug, Arbitrary)]
struct RoundTrip {
    fields: Fields,
    after: Vec<u8>,
    cuts: Vec<u8>,
}

fn socket(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The header's bytes by the spec, and what it must parse to.
fn build(fields: &Fields) -> (Vec<u8>, Header) {
    match fields {
        Fields::V1(addresses) => {
            let (text, header) = match *addresses {
                Addresses::V4 {
                    source,
                    destination,
                    ports,
                } => {
                    let (s, d) = (Ipv4Addr::from(source), Ipv4Addr::from(destination));
                    let text = format!("PROXY TCP4 {s} {d} {} {}\r\n", ports.0, ports.1);
                    let header = Header::Proxied {
                        source: socket(s, ports.0),
                        destination: socket(d, ports.1),
                    };
                    (text, header)
                }
                Addresses::V6 {
                    source,
                    destination,
                    ports,
                } => {
                    let (s, d) = (Ipv6Addr::from(source), Ipv6Addr::from(destination));
                    let text = format!("PROXY TCP6 {s} {d} {} {}\r\n", ports.0, ports.1);
                    let header = Header::Proxied {
                        source: socket(s, ports.0),
                        destination: socket(d, ports.1),
                    };
                    (text, header)
                }
                Addresses::Unknown => ("PROXY UNKNOWN\r\n".to_owned(), Header::Unknown),
            };
            (text.into_bytes(), header)
        }
        Fields::V2 {
            local,
            addresses,
            tlvs,
        } => {
            let mut body = Vec::new();
            let (family, proxied) = match *addresses {
                Addresses::V4 {
                    source,
                    destination,
                    ports,
                } => {
                    body.extend(source);
                    body.extend(destination);
                    body.extend(ports.0.to_be_bytes());
                    body.extend(ports.1.to_be_bytes());
                    let header = Header::Proxied {
                        source: socket(source, ports.0),
                        destination: socket(destination, ports.1),
                    };
                    (0x11, header)
                }
                Addresses::V6 {
                    source,
                    destination,
                    ports,
                } => {
                    body.extend(source);
                    body.extend(destination);
                    body.extend(ports.0.to_be_bytes());
                    body.extend(ports.1.to_be_bytes());
                    let header = Header::Proxied {
                        source: socket(source, ports.0),
                        destination: socket(destination, ports.1),
                    };
                    (0x21, header)
                }
                Addresses::Unknown => (0x00, Header::Unknown),
            };
            for (kind, value) in tlvs {
                let value = &value[..value.len().min(255)];
                body.push(*kind);
                body.extend((value.len() as u16).to_be_bytes());
                body.extend(value);
            }
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.push(if *local { 0x20 } else { 0x21 });
            bytes.push(family);
            let length = u16::try_from(body.len()).unwrap_or(u16::MAX);
            body.truncate(usize::from(length));
            bytes.extend(length.to_be_bytes());
            bytes.extend(body);
            (bytes, if *local { Header::Local } else { proxied })
        }
    }
}

// Input: a first byte whose low bit picks the kind of case. Even: the next byte counts the
// cuts that follow it (piece lengths, each one more than its value), and the rest is the
// stream, so real headers serve as seeds as they are. Odd: the rest is a `RoundTrip`.
fuzz_target!(|input: &[u8]| {
    let Some((&kind, rest)) = input.split_first() else {
        return;
    };
    if kind & 1 == 0 {
        let Some((&count, rest)) = rest.split_first() else {
            return;
        };
        let (cuts, data) = rest.split_at(usize::from(count).min(rest.len()));
        let (result, taken) = read(data, cuts);
        let Ok(header) = result else { return };
        assert_eq!(Some(taken), framed_length(data), "took exactly the header");
        let (whole, whole_taken) = read(data, &[]);
        assert_eq!(whole.ok(), Some(header), "the same answer in one piece");
        assert_eq!(whole_taken, taken);
        let (alone, _) = read(&data[..taken], &[]);
        assert_eq!(alone.ok(), Some(header), "the header alone says the same");
        return;
    }
    let Ok(RoundTrip {
        fields,
        after,
        cuts,
    }) = Unstructured::new(rest).arbitrary()
    else {
        return;
    };
    let (mut bytes, expected) = build(&fields);
    let length = bytes.len();
    bytes.extend(&after);
    let (result, taken) = read(&bytes, &cuts);
    match result {
        Ok(header) => assert_eq!(header, expected, "{fields:?}"),
        Err(e) => panic!("{fields:?} was refused: {e}"),
    }
    assert_eq!(taken, length, "took exactly the header");
});
