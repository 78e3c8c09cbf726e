//! porthost: serve line-protocol services on the ports a TOML file names, each under the
//! concurrency model the file picks, so the models can be compared side by side.
//!
//! # Layout
//! - [`config`]: `services.toml`, raw then validated, with errors that point at lines.
//! - [`registry`]: finding services in the `inventory` registry.
//! - [`supervisor`]: binding every port (all or nothing), running them, draining.
//! - [`listener`]: one port's accept loop: limits, backoff, hand-off to a model.
//! - [`models`]: the four concurrency models, one file each.
//! - [`client`]: the bundled clients.
//! - [`procfs`]: what `/proc` says about a process: memory, threads, children, descriptors.
//! - [`cli`]: the `porthost` command line.
//!
//! The services themselves and their API live in the `porthost-services` crate (`services/`),
//! re-exported here as [`services`].

pub mod cli;
pub mod client;
pub mod config;
pub mod listener;
pub mod models;
pub mod procfs;
pub mod registry;
pub mod supervisor;

pub use porthost_services as services;
