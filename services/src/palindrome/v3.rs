//! Palindrome server, version 3: a handler for the host's line framing, like the lecture's
//! `RequestHandler(StreamRequestHandler)` served by `socketserver.TCPServer`. The framing,
//! limits and writes are the host's; this file is only the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::lines::{Flow, LineHandler, LineServer, LineService};
use crate::{Options, Registration, Service};

#[derive(Debug)]
struct PalindromeV3 {
    strict: bool,
    work: super::Work,
}

#[derive(Debug)]
struct Handler {
    strict: bool,
    work: super::Work,
}

impl LineService for PalindromeV3 {
    type Handler = Handler;

    fn connect(&self, _peer: SocketAddr) -> Handler {
        Handler {
            strict: self.strict,
            work: self.work,
        }
    }
}

impl LineHandler for Handler {
    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow {
        if line.is_empty() {
            return Flow::Close;
        }
        self.work.spin(1);
        reply.extend_from_slice(super::verdict(line, self.strict));
        Flow::Continue
    }

    /// `sleep_ms`, which the framing waits the way its form waits.
    fn delay(&mut self) -> Duration {
        self.work.sleep
    }
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let (strict, work, ()) = super::strict_and(options, |_| ())?;
    Ok(Arc::new(LineServer(PalindromeV3 { strict, work })))
}

porthost_services::register!(Registration {
    name: "palindrome-v3",
    options: &[super::STRICT, super::BUSY_US, super::SLEEP_MS],
    summary: "palindrome checker on the host's line framing (lecture v3, StreamRequestHandler)",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_lines_and_closes_on_an_empty_one() {
        let mut handler = Handler {
            strict: false,
            work: super::super::Work::default(),
        };
        let mut reply = Vec::new();
        assert_eq!(handler.handle("abba", &mut reply), Flow::Continue);
        assert_eq!(handler.handle("abc", &mut reply), Flow::Continue);
        assert_eq!(reply, b"1\n\n");
        assert_eq!(handler.handle("", &mut reply), Flow::Close);
    }
}
