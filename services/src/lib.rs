//! The porthost service API and the services it ships.
//!
//! A service is a type implementing [`Service`]: it serves one connection at a time, as tokio
//! I/O, and, if it also implements [`BlockingService`], with blocking `std::net` I/O; it never
//! knows which concurrency model runs it. It joins the registry with one
//! [`register!`] of a [`Registration`]; the host finds it there by name.
//!
//! # Layout
//! - [`service`](Service): the trait, [`Needs`], [`Registration`], [`Options`].
//! - [`conn`](Conn): what a service gets per client ([`Conn`], [`BlockingConn`]), the port's
//!   [`Limits`], reads with a deadline, graceful close, in both forms.
//! - [`meter`]: what a connection served (bytes, lines, replies, latency), for the host.
//! - [`histogram`]: the lock-free histogram of durations the meter and the host's ports keep.
//! - [`lines`]: the line framing the host offers line-based services
//!   (`socketserver.StreamRequestHandler`'s analogue), both forms, used by `palindrome-v3`.
//! - [`palindrome`]: the lecture's palindrome servers v1, v2 and v3.
//! - [`word_guess`]: the multiplayer word-guess game: a lobby, many games per port, turns and
//!   scores, shared state behind a mutex and one bounded queue per client.
//!
//! - `testing` (the `testing` feature): a stream in arbitrary pieces and the obvious
//!   framing, for the tests and fuzz targets of readers.
//!
//! Adding a service is one new module here with its [`register!`], plus a `mod` line.

// Services in this crate may name it `porthost_services`, as services outside it do, so the
// code of a service reads the same wherever it lives (the README's "Adding a service").
extern crate self as porthost_services;

mod conn;
pub mod histogram;
pub mod lines;
pub mod meter;
mod service;

pub mod palindrome;
#[cfg(feature = "testing")]
pub mod testing;
pub mod word_guess;

pub use conn::{
    BlockingConn, Conn, DeadlineReader, Limits, catch_unwind, close_gracefully,
    close_gracefully_blocking, prepare_blocking, until, write_reply, write_reply_blocking,
};
pub use meter::Meter;
pub use service::{
    BlockingService, Needs, OptionDoc, OptionReader, Options, Registration, Service, Site, Stat,
    duplicate, duplicates, find, registered,
};

/// For [`register!`]: services name the registry through this crate.
#[doc(hidden)]
pub use inventory;
