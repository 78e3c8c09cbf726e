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
//! - [`sockets`]: listening sockets, bound or passed in (systemd, tests).
//! - [`systemd`]: readiness, reloads, status and the watchdog, told to systemd.
//! - [`supervisor`]: serving every port of a config, watching the accept loops, reload, drain.
//! - [`port`]: the state of a running port, and the [`port::Admission`] a connection holds.
//! - [`listener`]: one port's accept loop: slots, per-address limits, backoff, hand-off.
//! - [`models`]: the four concurrency models, each a [`models::Runner`], one file each.
//! - [`connection`]: an accepted connection, and the one place a service is called.
//! - [`exec`]: the `exec` service, a program per connection on the raw socket (inetd's way).
//! - [`client`]: the bundled clients.
//! - [`procfs`]: what `/proc` says about a process: memory, threads, children, descriptors.
//! - [`events`]: the live view's feed of what just happened, bounded under any load.
//! - [`lock`]: taking a mutex that a panicked connection held.
//! - [`logging`]: logs and printing that can never take the host down, nor fill the disk.
//! - [`metrics`]: what the host counts, and the Prometheus text of it.
//! - [`cli`]: the `porthost` command line.
//! - `testing` (feature `testing`): serving services inside a test process.
//!
//! The services themselves and their API live in the `porthost-services` crate (`services/`),
//! re-exported here as [`services`].

pub mod access;
pub mod admin;
pub mod cli;
pub mod client;
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
pub mod port;
pub mod procfs;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod registry;
pub mod sockets;
pub mod supervisor;
pub mod systemd;
#[cfg(feature = "testing")]
pub mod testing;

pub use porthost_services as services;
