//! The four concurrency models as the config spells them, and what each can give a service.
//! The code that runs each one is in [`crate::models`].

use std::fmt;
use std::str::FromStr;

use porthost_services::Needs;

use crate::suggest::did_you_mean;

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
                 or async{}",
                needs.clients_at_once,
                needs
                    .alone_with
                    .map(|options| format!(", or `{options}` to serve one client at a time"))
                    .unwrap_or_default()
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
                let names = Model::ALL.map(Model::name);
                let hint = did_you_mean(s, &names)
                    .map(|name| format!("did you mean {name:?}? "))
                    .unwrap_or_default();
                format!(
                    "unknown model {s:?}; {hint}expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_get_a_suggestion() {
        for model in Model::ALL {
            assert_eq!(model.name().parse::<Model>(), Ok(model));
        }
        let err = "asynk".parse::<Model>().unwrap_err();
        assert_eq!(
            err,
            "unknown model \"asynk\"; did you mean \"async\"? expected one of: sequential, \
             thread-per-client, process-per-client, async"
        );
        let err = "threads".parse::<Model>().unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn needs_rule_out_models() {
        let shared = Needs {
            shared_state: true,
            clients_at_once: 2,
            alone_with: None,
        };
        assert!(Model::ProcessPerClient.check("game", shared).is_err());
        assert!(Model::Sequential.check("game", shared).is_err());
        assert!(Model::Async.check("game", shared).is_ok());
        assert!(Model::ThreadPerClient.check("game", shared).is_ok());
        let solo = Needs {
            shared_state: true,
            clients_at_once: 1,
            alone_with: None,
        };
        assert!(Model::Sequential.check("game", solo).is_ok());
    }
}
