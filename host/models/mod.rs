//! The four concurrency models. They differ only in who runs a connection's handler once the
//! accept loop in [`crate::listener`] has accepted it:
//!
//! | model                | who runs the handler                          | file                    |
//! |----------------------|-----------------------------------------------|-------------------------|
//! | `sequential`         | the accept loop itself, one client at a time  | [`sequential`]          |
//! | `thread-per-client`  | a new OS thread per connection                | [`thread_per_client`]   |
//! | `process-per-client` | a new OS process per connection               | [`process_per_client`]  |
//! | `async`              | a tokio task on the shared runtime            | [`async_tasks`]         |

pub mod async_tasks;
pub mod process_per_client;
pub mod sequential;
pub mod thread_per_client;

use std::fmt;
use std::str::FromStr;

use porthost_services::{Conn, Needs, Service};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How a port runs its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    Sequential,
    ThreadPerClient,
    ProcessPerClient,
    Async,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Sequential,
        Model::ThreadPerClient,
        Model::ProcessPerClient,
        Model::Async,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Sequential => "sequential",
            Model::ThreadPerClient => "thread-per-client",
            Model::ProcessPerClient => "process-per-client",
            Model::Async => "async",
        }
    }

    /// Connections served at once when the config does not say. Sequential is 1 by
    /// definition; the others are sized for a classroom-to-benchmark load on a small machine:
    /// threads and processes cost a stack or an address space each, tasks a few KiB.
    pub fn default_max_connections(self) -> usize {
        match self {
            Model::Sequential => 1,
            Model::ThreadPerClient => 1024,
            Model::ProcessPerClient => 256,
            Model::Async => 10_000,
        }
    }

    /// Whether this model can give a service what it needs, and if not, why.
    pub fn check(self, service: &str, needs: Needs) -> Result<(), String> {
        match self {
            Model::ProcessPerClient if needs.shared_state => Err(format!(
                "{service} cannot run under process-per-client: its clients share in-memory \
                 state, and separate processes do not share memory (the reason the lecture's \
                 game uses ThreadingTCPServer); use thread-per-client or async"
            )),
            Model::Sequential if needs.clients_at_once > 1 => Err(format!(
                "{service} cannot run under sequential as configured: it needs {} clients \
                 connected at once and sequential serves one at a time; use thread-per-client \
                 or async",
                needs.clients_at_once
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Model::ALL.iter().map(|m| m.name()).collect();
                format!("unknown model {s:?}; expected one of: {}", names.join(", "))
            })
    }
}

/// Runs one connection to its end, or until `close` says the host is closing connections (a
/// process-per-client child has none: the host signals it instead). Every model ends up here;
/// it is the only place a handler is called.
pub(crate) async fn serve_conn(
    service: &dyn Service,
    conn: Conn,
    close: Option<&CancellationToken>,
) {
    debug!("connected");
    let Some(close) = close else {
        return ended(service.serve(conn).await);
    };
    // A token of the connection's own: the port's token would be polled on every wakeup of
    // every connection, all of them taking one lock.
    let close = close.child_token();
    tokio::select! {
        biased;
        result = service.serve(conn) => ended(result),
        () = close.cancelled() => debug!("closed by the host"),
    }
}

fn ended(result: std::io::Result<()>) {
    match result {
        Ok(()) => debug!("disconnected"),
        Err(e) => debug!("connection ended: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for model in Model::ALL {
            assert_eq!(model.name().parse::<Model>(), Ok(model));
        }
        let err = "asynk".parse::<Model>().unwrap_err();
        assert!(err.contains("sequential, thread-per-client, process-per-client, async"));
    }

    #[test]
    fn needs_rule_out_models() {
        let shared = Needs {
            shared_state: true,
            clients_at_once: 2,
        };
        assert!(Model::ProcessPerClient.check("game", shared).is_err());
        assert!(Model::Sequential.check("game", shared).is_err());
        assert!(Model::Async.check("game", shared).is_ok());
        assert!(Model::ThreadPerClient.check("game", shared).is_ok());
        let solo = Needs {
            shared_state: true,
            clients_at_once: 1,
        };
        assert!(Model::Sequential.check("game", solo).is_ok());
    }
}
