//! The concurrency models as the config spells them, and what each can give a service.
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
    ThreadPool,
    EventLoop,
    Prefork,
}

impl Model {
    pub const ALL: [Model; 7] = [
        Model::Sequential,
        Model::ThreadPerClient,
        Model::ProcessPerClient,
        Model::Async,
        Model::ThreadPool,
        Model::EventLoop,
        Model::Prefork,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Sequential => "sequential",
            Model::ThreadPerClient => "thread-per-client",
            Model::ProcessPerClient => "process-per-client",
            Model::Async => "async",
            Model::ThreadPool => "thread-pool",
            Model::EventLoop => "event-loop",
            Model::Prefork => "prefork",
        }
    }

    /// How the model serves its clients, in a few words, for messages.
    pub fn how(self) -> &'static str {
        match self {
            Model::Sequential => "serves with one thread, one client at a time",
            Model::ThreadPerClient => "starts a thread per client",
            Model::ProcessPerClient => "forks a process per client",
            Model::Async => "runs a task per client on the shared runtime",
            Model::ThreadPool => "serves with a fixed pool of threads, a client each",
            Model::EventLoop => "runs every client as a task on its one thread",
            Model::Prefork => "serves with processes forked at start, a client each",
        }
    }

    /// The bound of the port's `workers`, under a model that serves with a fixed set of them
    /// (threads of a `thread-pool`, processes of a `prefork` port); `None` under the others.
    pub fn workers_bound(self) -> Option<&'static super::bounds::Bound> {
        match self {
            Model::ThreadPool => Some(&super::bounds::WORKER_THREADS),
            Model::Prefork => Some(&super::bounds::WORKER_PROCESSES),
            _ => None,
        }
    }

    /// Whether the model serves with a fixed set of workers, sized by the port's `workers`.
    pub fn has_workers(self) -> bool {
        self.workers_bound().is_some()
    }

    /// `workers` when the config does not say: two per CPU, so that a worker waiting on its
    /// client leaves another to run, within [`super::bounds::WORKER_PROCESSES`] (the
    /// smaller of the two bounds).
    pub fn default_workers() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let bound = &super::bounds::WORKER_PROCESSES;
        (2 * cpus).clamp(
            super::bounds::to_usize(bound.min),
            super::bounds::to_usize(bound.max),
        )
    }

    /// Connections served at once when the config does not say. Sequential is 1 by
    /// definition, a thread pool its `workers`; the others are sized for a
    /// classroom-to-benchmark load on a small machine: threads and processes cost a stack or an
    /// address space each, tasks a few KiB.
    pub fn default_max_connections(self, workers: usize) -> usize {
        match self {
            Model::Sequential => 1,
            Model::ThreadPool | Model::Prefork => workers,
            Model::ThreadPerClient => 1024,
            Model::ProcessPerClient => 256,
            Model::Async | Model::EventLoop => 10_000,
        }
    }

    /// Whether this model, with `workers` where it has them, can give a service what it needs,
    /// and if not, why.
    pub fn check(self, service: &str, needs: Needs, workers: usize) -> Result<(), String> {
        match self {
            Model::ThreadPool if needs.clients_at_once > workers => Err(format!(
                "{service} cannot run under thread-pool with workers = {workers}: it needs {} \
                 clients connected at once, and a pool of {workers} serves only {workers} (the \
                 players in the lobby would hold every worker, waiting for one who never gets \
                 one); set workers to at least {}, or use event-loop or async",
                needs.clients_at_once, needs.clients_at_once
            )),
            Model::ProcessPerClient | Model::Prefork if needs.shared_state => Err(format!(
                "{service} cannot run under {self}: its clients share in-memory state, and \
                 separate processes do not share memory (the reason the lecture's game uses \
                 ThreadingTCPServer); use thread-per-client, thread-pool, async or event-loop"
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
             thread-per-client, process-per-client, async, thread-pool, event-loop, prefork"
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
        assert!(Model::ProcessPerClient.check("game", shared, 4).is_err());
        let err = Model::Prefork.check("game", shared, 4).unwrap_err();
        assert!(
            err.contains("under prefork") && err.contains("do not share memory"),
            "{err}"
        );
        assert!(Model::Sequential.check("game", shared, 4).is_err());
        assert!(Model::Async.check("game", shared, 4).is_ok());
        assert!(Model::ThreadPerClient.check("game", shared, 4).is_ok());
        assert!(Model::EventLoop.check("game", shared, 1).is_ok());
        assert!(Model::ThreadPool.check("game", shared, 2).is_ok());
        let err = Model::ThreadPool.check("game", shared, 1).unwrap_err();
        assert!(
            err.contains("workers = 1") && err.contains("at least 2"),
            "{err}"
        );
        let solo = Needs {
            shared_state: true,
            clients_at_once: 1,
            alone_with: None,
        };
        assert!(Model::Sequential.check("game", solo, 1).is_ok());
        assert!(Model::ThreadPool.check("game", solo, 1).is_ok());
    }
}
