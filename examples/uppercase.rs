//! A service added without touching porthost: `uppercase` answers every line in capitals.
//!
//! Run it: `cargo run --example uppercase -- --config examples/uppercase.toml`, then
//! `nc 127.0.0.1 7100`. This binary is the whole porthost command line plus one more service:
//! `cargo run --example uppercase -- services` lists it next to the shipped ones.

use std::process::ExitCode;
use std::sync::Arc;

use porthost_services::lines::{Flow, LineHandler, LineServer, LineService};
use porthost_services::{OptionDoc, Options, Registration, Service};
use serde::Deserialize;

/// The service's options, from `options = { ... }` in the port's entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UppercaseOptions {
    /// Put this in front of every answer.
    #[serde(default)]
    prefix: String,
}

/// One instance per port; it builds a handler per connection.
#[derive(Debug)]
struct Uppercase {
    prefix: String,
}

#[derive(Debug)]
struct Handler {
    prefix: String,
}

impl LineService for Uppercase {
    type Handler = Handler;

    fn connect(&self, _peer: std::net::SocketAddr) -> Handler {
        Handler {
            prefix: self.prefix.clone(),
        }
    }
}

impl LineHandler for Handler {
    fn handle(&mut self, line: &str, reply: &mut Vec<u8>) -> Flow {
        if line.is_empty() {
            return Flow::Close;
        }
        reply.extend_from_slice(self.prefix.as_bytes());
        reply.extend_from_slice(line.to_uppercase().as_bytes());
        reply.push(b'\n');
        Flow::Continue
    }
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let UppercaseOptions { prefix } = options.parse()?;
    Ok(Arc::new(LineServer(Uppercase { prefix })))
}

porthost_services::register!(Registration {
    name: "uppercase",
    summary: "answers every line in capitals (the example of adding a service)",
    options: &[OptionDoc {
        name: "prefix",
        default: "\"\"",
        meaning: "put this in front of every answer",
    }],
    build,
});

fn main() -> ExitCode {
    porthost_cli::main()
}

// This test binary is the fork server of its own process-per-client ports.
#[cfg(test)]
porthost::forker_entry_point!();

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::time::Duration;

    use porthost::config::Config;
    use porthost::testing::{TestHost, entry};

    /// Serves the example's service through the host library on an ephemeral port under every
    /// model, the way the `porthost` binary would, and talks to it over TCP.
    #[test]
    fn serves_under_every_model() {
        let models = [
            "sequential",
            "thread-per-client",
            "process-per-client",
            "async",
        ];
        let entries: Vec<_> = models
            .iter()
            .map(|m| entry("uppercase", m, "options = { prefix = \"> \" }"))
            .collect();
        let host = TestHost::start("", &entries);
        for (i, model) in models.iter().enumerate() {
            let stream = std::net::TcpStream::connect(host.addr(i)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
            (&stream).write_all("hello\nїжак\n".as_bytes()).unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), "> HELLO", "{model}");
            assert_eq!(lines.next().unwrap().unwrap(), "> ЇЖАК", "{model}");
            (&stream).write_all(b"\n").unwrap();
            assert!(lines.next().is_none(), "{model}: an empty line ends it");
        }
    }

    #[test]
    fn joins_the_registry_next_to_the_shipped_services() {
        let names: Vec<_> = porthost::services::registered()
            .iter()
            .map(|r| r.name)
            .collect();
        assert!(names.contains(&"uppercase"), "{names:?}");
        assert!(names.contains(&"palindrome-v3"), "{names:?}");
    }

    #[test]
    fn rejects_unknown_options() {
        let text = "[ports.7100]\nservice = \"uppercase\"\nmodel = \"async\"\noptions = { prefx = \"x\" }\n";
        let errors = Config::parse(text, Path::new("uppercase.toml")).unwrap_err();
        assert!(
            errors.to_string().contains("unknown field `prefx`"),
            "{errors}"
        );
    }
}
