//! porthost: serve line-protocol services on the ports a TOML file names, each under the
//! concurrency model the file picks, so the models can be compared side by side.
//!
//! # Layout
//! A connection flows one way: [`supervisor`] → [`listener`] → [`models`] → [`connection`] →
//! the service.
//!
//! - [`access`], [`rate_limit`], [`proxy_protocol`]: who may connect (allow/deny lists,
//!   connections per second per address) and who a client is behind a proxy.
//! - [`admin`]: the admin endpoint: live page, Prometheus metrics, state, load runs.
//! - [`config`]: `services.toml`, raw then validated, with errors that point at lines; the
//!   [`config::Model`] names.
//! - [`registry`]: finding services in the `inventory` registry.
//! - [`suggest`]: "did you mean ...?" for the names a config types.
//! - [`sockets`]: listening sockets, bound or passed in (systemd, tests).
//! - [`systemd`]: readiness, reloads, status and the watchdog, told to systemd.
//! - [`supervisor`]: serving every port of a config, watching the accept loops, reload, drain.
//! - [`observed`]: the read model of a running host, which the supervisor keeps and the admin
//!   endpoint and systemd's status read.
//! - [`port`]: the state of a running port, and the [`port::Admission`] a connection holds.
//! - [`shutdown`]: how a port ends: it stops accepting, then closes its connections, or retires.
//! - [`listener`]: one port's accept loop: slots, per-address limits, backoff, hand-off.
//! - [`models`]: the concurrency models, each a [`models::Runner`], one file each.
//! - [`connection`]: an accepted connection, and the one place a service is called.
//! - [`exec`]: the `exec` service, a program per connection on the raw socket (inetd's way).
//! - [`procfs`]: what `/proc` says about a process: memory, threads, children, descriptors.
//! - [`events`]: the live view's feed of what just happened, bounded under any load.
//! - [`lock`]: taking a mutex that a panicked connection held.
//! - [`logging`]: logs and printing that can never take the host down, nor fill the disk.
//! - [`stats`]: the counters a port keeps on the hot path, and why a client is refused.
//! - [`metrics`]: what the host counts, added up, and the Prometheus text of it.
//! - `testing` (feature `testing`): serving services inside a test process.
//!
//! # Module graph
//! Who imports whom (`grep -rn 'crate::'` outside comments, one level), from the top down to
//! the leaves (`lock`, which many use, left out). No module imports one above it: the graph
//! has no cycle.
//!
//! - `testing` → `supervisor`, `admin`, `models`, `config`, `sockets`, `logging`
//! - `supervisor` → `admin`, `listener`, `models`, `observed`, `port`, `shutdown`, `config`,
//!   `sockets`, `events`
//! - `systemd` → `observed`; `admin` → `observed`, `metrics`, `port`, `exec`, `config`,
//!   `procfs`
//! - `observed` → `metrics`, `models` (the fork server, for its pid), `port`, `events`;
//!   `metrics` → `port`, `stats`, `procfs`,
//!   `logging`
//! - `listener` → `models`, `connection`, `port`, `proxy_protocol`
//! - `models` → `connection`, `exec`, `port`, `config`, `events`; `connection` → `exec`, `port`,
//!   `shutdown`
//! - `exec` → `port` (the [`port::Admission`] a program runs under), `shutdown`, `config`,
//!   `events`, `logging`
//! - `port` → `shutdown`, `stats`, `config`, `sockets`, `rate_limit`, `events`, `logging`
//! - `sockets` → `config`; `config` → `registry`, `suggest`, `access`, `rate_limit` (the
//!   `exec` service's name is the config's [`config::EXEC_SERVICE`], so neither the config
//!   nor the port imports the service)
//! - `registry` → `suggest`; `stats`, `events` → `lock`
//! - leaves: `access`, `rate_limit`, `proxy_protocol`, `procfs`, `logging`, `lock`, `suggest`,
//!   `shutdown`
//!
//! The services themselves and their API live in the `porthost-services` crate (`services/`),
//! re-exported here as [`services`]. The command line and the bundled clients live in the
//! `porthost-cli` crate (`host/cli/`), which only binaries link: the server knows no clap.

pub mod access;
pub mod admin;
pub mod config;
pub mod connection;
pub mod events;
pub mod exec;
pub mod gate;
pub mod listener;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod observed;
pub mod port;
pub mod procfs;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod registry;
pub mod shutdown;
pub mod sockets;
pub mod stats;
pub mod suggest;
pub mod supervisor;
pub mod systemd;
#[cfg(feature = "testing")]
pub mod testing;

pub use porthost_services as services;
