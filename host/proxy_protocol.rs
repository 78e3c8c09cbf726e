//! The PROXY protocol, v1 and v2: the header a proxy in front of the host (HAProxy's
//! `send-proxy` and `send-proxy-v2`) puts at the start of each connection, saying whose
//! connection it relays. [`read_header`] reads it, with a time limit.
//!
//! # Exactly the header, never a byte more
//! The bytes after the header are the client's, and the service must see them untouched, so
//! nothing here reads ahead into a buffer:
//! - v2 gives its length in its first 16 bytes: those are read exactly, then exactly the
//!   length they give.
//! - v1 is a text line of at most 107 bytes ending in CRLF, so its length is only known at
//!   its end. The bytes that have arrived are *peeked* (`MSG_PEEK`: looked at, left in the
//!   socket); if the CRLF is among them, exactly the bytes up to it are read. If it is not,
//!   every peeked byte is still header, so they are read before peeking again, which then
//!   waits for new bytes instead of returning the same ones in a busy loop.
//!
//! # Never guess
//! The caller reads a header only from the proxies it trusts, and then insists on one: a
//! connection that starts with anything else is an error ([`HeaderError::Missing`]), never
//! served as a client without a header, because the header's address is what access control
//! and the per-address limits see. Parsing is `ppp`'s; the framing, the time limit and which
//! headers are accepted are decided here.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;

/// A time limit for callers without a reason to pick another. A proxy sends its header as
/// soon as it has connected, usually in the same packet as the client's first bytes, so a
/// header that takes longer than this is a broken or hostile peer, not a slow network.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest v1 header, CRLF included (the spec's worst case, `PROXY UNKNOWN` with two
/// full IPv6 addresses and ports).
pub const V1_MAX_BYTES: usize = 107;

/// The start of every v2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";

/// A stream whose next bytes can be looked at without taking them. A trait so that tests can
/// script how bytes arrive; [`TcpStream`] is the one the host uses.
pub trait Peek {
    /// Like [`TcpStream::poll_peek`]: fills `buf` with bytes that have arrived, leaving them
    /// to be read; `Ok(0)` at the end of the stream.
    fn poll_peek(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>)
    -> Poll<io::Result<usize>>;
}

impl Peek for TcpStream {
    fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        TcpStream::poll_peek(self, cx, buf)
    }
}

/// The stream in pieces of the tests (here and the fuzz target's) peeks as a socket does.
#[cfg(any(test, feature = "testing"))]
impl Peek for porthost_services::testing::Pieces {
    fn poll_peek(&mut self, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill(buf, false).map(Ok)
    }
}

async fn peek<S: Peek>(stream: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| stream.poll_peek(cx, &mut ReadBuf::new(buf))).await
}

/// Which version of the protocol a header is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A client's TCP connection, relayed: its address and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the proxy's own connection, not a relayed one (HAProxy's health checks
    /// with `check-send-proxy`). It carries no client address; the spec says to use the
    /// socket's own, so the client is the proxy.
    Local,
    /// A relayed connection whose addresses the proxy could not put in the header (v1
    /// `PROXY UNKNOWN`, v2 `PROXY` with `AF_UNSPEC`). The spec says to use the socket's
    /// addresses, as for [`Header::Local`]; a caller that would rather refuse such clients
    /// (their real address is unknown) can tell them apart here.
    Unknown,
}

impl Header {
    /// The address to treat the client as: the relayed source, or for [`Header::Local`] and
    /// [`Header::Unknown`] the socket's peer (the proxy itself), as the spec says.
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        match self {
            Header::Proxied { source, .. } => *source,
            Header::Local | Header::Unknown => peer,
        }
    }

    /// The address the client connected to at the proxy, when the header names it; for
    /// [`Header::Local`] and [`Header::Unknown`] the socket's own address stands, as the spec
    /// says.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxied { destination, .. } => Some(*destination),
            Header::Local | Header::Unknown => None,
        }
    }
}

/// Why a connection from a trusted proxy did not start with a usable header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Nothing at all: a plain TCP connect-and-close, such as a health check without
    /// `check-send-proxy`. Worth logging more quietly than the rest.
    #[error("the connection closed before sending anything")]
    Closed,
    /// The first bytes are not the start of any PROXY header.
    #[error("no PROXY header: the connection starts with \"{start}\"")]
    Missing {
        /// The first bytes, escaped for a log line.
        start: String,
    },
    #[error("malformed PROXY {version} header: {reason}")]
    Malformed { version: Version, reason: String },
    #[error("truncated PROXY {version} header: the connection closed after {got} bytes of it")]
    Truncated { version: Version, got: usize },
    #[error("no complete PROXY header within {limit:?} ({got} bytes of it arrived)")]
    TimedOut { limit: Duration, got: usize },
    /// Well formed, but not something a TCP service can serve: another protocol version, an
    /// unknown command, UDP, or Unix socket addresses.
    #[error("unsupported PROXY {version} header: {what}")]
    Unsupported { version: Version, what: String },
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header at the start of `stream`, and nothing after it, within `limit`.
pub async fn read_header<S>(stream: &mut S, limit: Duration) -> Result<Header, HeaderError>
where
    S: Peek + AsyncRead + Unpin,
{
    let mut got = 0;
    let result = tokio::time::timeout(limit, read(stream, &mut got)).await;
    result.unwrap_or(Err(HeaderError::TimedOut { limit, got }))
}

/// `got` counts the header bytes taken from the stream so far, for the time-out message.
async fn read<S>(stream: &mut S, got: &mut usize) -> Result<Header, HeaderError>
where
    S: Peek + AsyncRead + Unpin,
{
    // Enough to tell the versions apart, and to show in a message what came instead.
    let mut first = [0u8; 16];
    let n = peek(stream, &mut first).await?;
    let seen = &first[..n];
    let v2 = n.min(V2_SIGNATURE.len());
    if n == 0 {
        Err(HeaderError::Closed)
    } else if seen[..v2] == V2_SIGNATURE[..v2] {
        read_v2(stream, got).await
    } else if is_v1_start(seen) {
        read_v1(stream, got).await
    } else {
        Err(missing(seen))
    }
}

/// Whether `bytes` could be the start of a v1 header.
fn is_v1_start(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V1_PREFIX.len());
    bytes[..n] == V1_PREFIX[..n]
}

fn missing(start: &[u8]) -> HeaderError {
    HeaderError::Missing {
        start: start.escape_ascii().to_string(),
    }
}

/// Reads exactly `buf.len()` bytes; the end of the stream first is a truncated header.
async fn read_exactly<S>(
    stream: &mut S,
    buf: &mut [u8],
    got: &mut usize,
    version: Version,
) -> Result<(), HeaderError>
where
    S: AsyncRead + Unpin,
{
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(HeaderError::Truncated { version, got: *got });
        }
        filled += n;
        *got += n;
    }
    Ok(())
}

async fn read_v2<S>(stream: &mut S, got: &mut usize) -> Result<Header, HeaderError>
where
    S: AsyncRead + Unpin,
{
    let mut header = vec![0u8; 16];
    read_exactly(stream, &mut header, got, Version::V2).await?;
    if header[..V2_SIGNATURE.len()] != V2_SIGNATURE[..] {
        return Err(missing(&header));
    }
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(16 + length, 0);
    read_exactly(stream, &mut header[16..], got, Version::V2).await?;
    parse_v2(&header)
}

async fn read_v1<S>(stream: &mut S, got: &mut usize) -> Result<Header, HeaderError>
where
    S: Peek + AsyncRead + Unpin,
{
    let mut line: Vec<u8> = Vec::with_capacity(V1_MAX_BYTES);
    let mut buf = [0u8; V1_MAX_BYTES];
    loop {
        let start = line.len();
        let n = peek(stream, &mut buf[..V1_MAX_BYTES - start]).await?;
        if n == 0 {
            return Err(HeaderError::Truncated {
                version: Version::V1,
                got: *got,
            });
        }
        line.extend_from_slice(&buf[..n]);
        if !is_v1_start(&line) {
            return Err(missing(&line));
        }
        // The CR may have come with the previous bytes and the LF with these.
        let from = start.saturating_sub(1);
        let end = line[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|at| from + at + 2);
        // Take from the socket what is header: up to the CRLF, or all of it if none yet.
        let take = end.unwrap_or(line.len()) - start;
        read_exactly(stream, &mut buf[..take], got, Version::V1).await?;
        debug_assert_eq!(
            buf[..take],
            line[start..start + take],
            "read what was peeked"
        );
        if let Some(end) = end {
            line.truncate(end);
            return parse_v1(&line);
        }
        if line.len() >= V1_MAX_BYTES {
            return Err(HeaderError::Malformed {
                version: Version::V1,
                reason: format!("no CRLF within {V1_MAX_BYTES} bytes"),
            });
        }
    }
}

/// A complete v1 line, CRLF included.
fn parse_v1(line: &[u8]) -> Result<Header, HeaderError> {
    use ppp::v1::{Addresses, Header as V1};
    let header = V1::try_from(line).map_err(|e| HeaderError::Malformed {
        version: Version::V1,
        reason: format!("{e} (\"{}\")", line.escape_ascii()),
    })?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Header::Proxied {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        },
        Addresses::Tcp6(a) => Header::Proxied {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        },
        Addresses::Unknown => Header::Unknown,
    })
}

/// A complete v2 header: signature, fixed part, addresses and TLVs (which are ignored).
fn parse_v2(bytes: &[u8]) -> Result<Header, HeaderError> {
    use ppp::v2::{Addresses, Command, Header as V2, ParseError, Protocol};
    let unsupported = |what: String| HeaderError::Unsupported {
        version: Version::V2,
        what,
    };
    let header = V2::try_from(bytes).map_err(|e| match e {
        ParseError::Version(v) => unsupported(format!("protocol version {}", v >> 4)),
        ParseError::Command(c) => unsupported(format!("command {c:#x}")),
        ParseError::AddressFamily(a) => unsupported(format!("address family {:#x}", a >> 4)),
        ParseError::Protocol(p) => unsupported(format!("transport protocol {p:#x}")),
        other => HeaderError::Malformed {
            version: Version::V2,
            reason: other.to_string(),
        },
    })?;
    if header.command == Command::Local {
        return Ok(Header::Local);
    }
    match (header.addresses, header.protocol) {
        (Addresses::Unspecified, _) => Ok(Header::Unknown),
        (Addresses::Unix(_), _) => Err(unsupported(
            "Unix socket addresses (porthost serves TCP clients)".to_owned(),
        )),
        (_, Protocol::Datagram) => Err(unsupported("UDP".to_owned())),
        (_, Protocol::Unspecified) => Err(unsupported(
            "an IP address family with an unspecified transport protocol".to_owned(),
        )),
        (Addresses::IPv4(a), Protocol::Stream) => Ok(Header::Proxied {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        }),
        (Addresses::IPv6(a), Protocol::Stream) => Ok(Header::Proxied {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthost_services::testing::Pieces;
    use tokio::io::AsyncWriteExt;

    /// HAProxy 2.6's `send-proxy-v2` for a client at 127.0.0.1:49632 that connected to
    /// 127.0.0.1:17001, then the client's `abba\n` (captured from a real HAProxy).
    const HAPROXY_V2_TCP4: &[u8] =
        b"\r\n\r\n\x00\r\nQUIT\n!\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01\xc1\xe0Biabba\n";
    /// The same for a client at [::1]:36532 that connected to [::1]:17001.
    const HAPROXY_V2_TCP6: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n!!\x00$\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x8e\xb4Biabba\n";
    /// HAProxy's health check with `check-send-proxy` and `send-proxy-v2`: `LOCAL`, then the
    /// `tcp-check send`.
    const HAPROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n \x00\x00\x00abba\n";
    /// HAProxy's `send-proxy`.
    const HAPROXY_V1_TCP4: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 36822 17002\r\nabba\n";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A v2 header: signature, version 2 with `command`, `family_protocol`, then `body`.
    fn v2(command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family_protocol);
        bytes.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    async fn scripted(chunks: &[&[u8]]) -> (Result<Header, HeaderError>, Vec<u8>) {
        let mut s = Pieces::new(chunks);
        let result = read_header(&mut s, Duration::from_secs(5)).await;
        (result, s.rest())
    }

    /// Every byte of `bytes` in a chunk of its own.
    fn bytewise(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.chunks(1).collect()
    }

    #[tokio::test]
    async fn haproxys_headers_give_the_client_and_leave_its_bytes() {
        let cases = [
            (
                HAPROXY_V2_TCP4,
                addr("127.0.0.1:49632"),
                addr("127.0.0.1:17001"),
            ),
            (HAPROXY_V2_TCP6, addr("[::1]:36532"), addr("[::1]:17001")),
            (
                HAPROXY_V1_TCP4,
                addr("127.0.0.1:36822"),
                addr("127.0.0.1:17002"),
            ),
        ];
        for (bytes, source, destination) in cases {
            let expected = Header::Proxied {
                source,
                destination,
            };
            // All at once, and one byte per arrival.
            let (header, rest) = scripted(&[bytes]).await;
            assert_eq!(header.unwrap(), expected);
            assert_eq!(rest, b"abba\n");
            let (header, rest) = scripted(&bytewise(bytes)).await;
            assert_eq!(header.unwrap(), expected);
            assert_eq!(rest, b"abba\n");
        }
    }

    #[tokio::test]
    async fn v1_tcp6_and_the_longest_unknown() {
        let (h, rest) = scripted(&[b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 7001\r\nx"]).await;
        assert_eq!(
            h.unwrap(),
            Header::Proxied {
                source: addr("[2001:db8::1]:56324"),
                destination: addr("[2001:db8::2]:7001"),
            }
        );
        assert_eq!(rest, b"x");
        let (h, _) = scripted(&[b"PROXY UNKNOWN\r\n"]).await;
        assert_eq!(h.unwrap(), Header::Unknown);
        // The spec's worst case, 107 bytes: UNKNOWN with two 39-character addresses.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.extend_from_slice(&[b'f'; 39]);
        line.push(b' ');
        line.extend_from_slice(&[b'f'; 39]);
        line.extend_from_slice(b" 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX_BYTES);
        line.extend_from_slice(b"after");
        let (h, rest) = scripted(&[&line]).await;
        assert_eq!(h.unwrap(), Header::Unknown);
        assert_eq!(rest, b"after");
    }

    #[tokio::test]
    async fn a_crlf_split_across_arrivals_is_found() {
        let (h, rest) = scripted(&[b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r", b"\nabba\n"]).await;
        let h = h.unwrap();
        assert_eq!(h.client(addr("127.0.0.1:9")), addr("10.0.0.1:1"));
        assert_eq!(h.destination(), Some(addr("10.0.0.2:2")));
        assert_eq!(rest, b"abba\n");
    }

    #[tokio::test]
    async fn local_and_unspecified_mean_the_sockets_addresses() {
        let peer = addr("127.0.0.1:40000");
        let (h, rest) = scripted(&[HAPROXY_V2_LOCAL]).await;
        let h = h.unwrap();
        assert_eq!(h, Header::Local);
        assert_eq!(h.client(peer), peer);
        assert_eq!(h.destination(), None);
        assert_eq!(rest, b"abba\n");
        // LOCAL with addresses and a TLV: all ignored.
        let mut body = vec![127, 0, 0, 9, 127, 0, 0, 1, 0, 1, 0, 2];
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]); // PP2_TYPE_NOOP
        let (h, _) = scripted(&[&v2(0, 0x11, &body)]).await;
        assert_eq!(h.unwrap(), Header::Local);
        // PROXY with AF_UNSPEC.
        let (h, rest) = scripted(&[&v2(1, 0x00, b""), b"hi"]).await;
        assert_eq!(h.unwrap(), Header::Unknown);
        assert_eq!(rest, b"hi");
    }

    #[tokio::test]
    async fn v2_tlvs_are_skipped_whole() {
        let mut body = vec![192, 0, 2, 1, 192, 0, 2, 2, 0x30, 0x39, 0x1b, 0x59];
        body.extend_from_slice(&[0x05, 0x00, 0x04, b'u', b'n', b'i', b'q']); // PP2_TYPE_UNIQUE_ID
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"line\n");
        let (h, rest) = scripted(&bytewise(&bytes)).await;
        assert_eq!(
            h.unwrap().client(addr("127.0.0.1:1")),
            addr("192.0.2.1:12345")
        );
        assert_eq!(rest, b"line\n");
    }

    #[tokio::test]
    async fn anything_else_is_missing_at_once() {
        for start in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"abba\n",
            b"\x16\x03\x01\x02\x00\x01",
            b"PROXX TCP4",
            b"\r\n\r\nhello world",
            b"proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n",
        ] {
            let mut s = Pieces::new([start]).stalled();
            let err = read_header(&mut s, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(err, HeaderError::Missing { .. }),
                "{start:?}: {err}"
            );
        }
        let (err, _) = scripted(&[b"GET / HTTP/1.1\r\n"]).await;
        assert_eq!(
            err.unwrap_err().to_string(),
            "no PROXY header: the connection starts with \"GET / HTTP/1.1\\r\\n\""
        );
        // Garbage after a v1 prefix that only shows up later is caught when it arrives.
        let (err, _) = scripted(&[b"PRO", b"TOCOL"]).await;
        assert!(matches!(err.unwrap_err(), HeaderError::Missing { .. }));
    }

    #[tokio::test]
    async fn malformed_headers_say_what_is_wrong() {
        let too_long = [b'P', b'R', b'O', b'X', b'Y', b' ']
            .into_iter()
            .chain(std::iter::repeat_n(b'A', 200))
            .collect::<Vec<u8>>();
        for bytes in [
            &b"PROXY TCP4 1.2.3.4\r\n"[..],
            b"PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n",
            b"PROXY TCP4 256.0.0.1 1.2.3.5 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\rX\r\n",
            &too_long,
            // v2 whose length cannot hold its IPv4 addresses.
            &v2(1, 0x11, &[1, 2, 3, 4]),
        ] {
            let mut s = Pieces::new([bytes]).stalled();
            let err = read_header(&mut s, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(err, HeaderError::Malformed { .. }),
                "{:?}: {err}",
                bytes.escape_ascii().to_string()
            );
        }
        let mut s = Pieces::new([&too_long]).stalled();
        let err = read_header(&mut s, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed PROXY v1 header: no CRLF within 107 bytes"
        );
        assert_eq!(
            s.rest().len(),
            200 + 6 - V1_MAX_BYTES,
            "no more than 107 bytes were read"
        );
    }

    #[tokio::test]
    async fn unsupported_v2_headers_are_refused() {
        let ipv4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let mut version_1 = v2(1, 0x11, &ipv4);
        version_1[12] = 0x11;
        let cases: [(Vec<u8>, &str); 5] = [
            (version_1, "protocol version 1"),
            (v2(2, 0x11, &ipv4), "command 0x2"),
            (v2(1, 0x12, &ipv4), "UDP"),
            (v2(1, 0x31, &[0; 216]), "Unix socket addresses"),
            (v2(1, 0x41, &ipv4), "address family 0x4"),
        ];
        for (bytes, what) in cases {
            let (err, _) = scripted(&[&bytes]).await;
            let err = err.unwrap_err();
            assert!(matches!(err, HeaderError::Unsupported { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err} lacks {what}");
        }
    }

    #[tokio::test]
    async fn truncated_headers() {
        for (chunks, got) in [
            (vec![&b"PROXY TCP4 1.2.3.4 "[..]], 19),
            (vec![&HAPROXY_V2_TCP4[..5]], 5),
            (vec![&HAPROXY_V2_TCP4[..20]], 20),
        ] {
            let (err, _) = scripted(&chunks).await;
            match err.unwrap_err() {
                HeaderError::Truncated { got: g, .. } => assert_eq!(g, got),
                other => panic!("{other}"),
            }
        }
        let (err, _) = scripted(&[]).await;
        assert!(matches!(err.unwrap_err(), HeaderError::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_stalls_times_out() {
        let limit = Duration::from_secs(3);
        for (chunks, got) in [
            (vec![], 0),
            (vec![&b"PROXY TCP4 1.2.3.4"[..]], 18),
            (vec![&HAPROXY_V2_TCP6[..30]], 30),
        ] {
            let mut s = Pieces::new(&chunks).stalled();
            let started = tokio::time::Instant::now();
            let err = read_header(&mut s, limit).await.unwrap_err();
            assert_eq!(started.elapsed(), limit);
            match err {
                HeaderError::TimedOut { limit: l, got: g } => assert_eq!((l, g), (limit, got)),
                other => panic!("{other}"),
            }
        }
    }

    /// A connected pair of loopback sockets: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn over_loopback_the_service_reads_the_clients_bytes_untouched() {
        for bytes in [HAPROXY_V1_TCP4, HAPROXY_V2_TCP4, HAPROXY_V2_LOCAL] {
            let (mut client, mut server) = pair().await;
            client.write_all(bytes).await.unwrap();
            client.write_all(b"more\n").await.unwrap();
            client.shutdown().await.unwrap();
            let header = read_header(&mut server, Duration::from_secs(5))
                .await
                .unwrap();
            assert_ne!(header, Header::Unknown);
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"abba\nmore\n");
        }
    }

    #[tokio::test]
    async fn over_loopback_a_header_in_pieces() {
        let (mut client, mut server) = pair().await;
        client.set_nodelay(true).unwrap();
        let writer = tokio::spawn(async move {
            for piece in HAPROXY_V1_TCP4.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        let header = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(header.client(addr("127.0.0.1:1")), addr("127.0.0.1:36822"));
        drop(writer.await.unwrap());
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"abba\n");
    }

    #[tokio::test]
    async fn over_loopback_slow_closed_and_missing() {
        // Half a header, and the connection stays open.
        let (mut client, mut server) = pair().await;
        client.write_all(&HAPROXY_V2_TCP4[..14]).await.unwrap();
        let err = read_header(&mut server, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HeaderError::TimedOut { got: 14, .. }),
            "{err}"
        );
        // Connected, then closed without a byte.
        let (client, mut server) = pair().await;
        drop(client);
        let err = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Closed), "{err}");
        // A client that talks first, as if there were no proxy.
        let (mut client, mut server) = pair().await;
        client.write_all(b"abba\n").await.unwrap();
        let err = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Missing { .. }), "{err}");
        drop(client);
    }
}
