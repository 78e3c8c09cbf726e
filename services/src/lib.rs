//! The porthost service API and the services it ships.
//!
//! A service is a type implementing [`Service`]: it serves one connection at a time, as tokio
//! I/O, and never knows which concurrency model runs it. It joins the registry with one
//! `inventory::submit!` of a [`Registration`]; the host finds it there by name.
//!
//! # Layout
//! - [`service`](Service): the trait, [`Needs`], [`Registration`], [`Options`].
//! - [`conn`](Conn): what a service gets per client, the port's [`Limits`], graceful close.
//! - [`lines`]: the line framing the host offers line-based services
//!   (`socketserver.StreamRequestHandler`'s analogue), used by `palindrome-v3`.
//! - [`palindrome`]: the lecture's palindrome servers v1, v2 and v3.
//! - [`word_guess`]: the multiplayer word-guess game: a lobby, many games per port, turns and
//!   scores, shared state behind a mutex and one bounded queue per client.
//!
//! Adding a service is one new module here with its `inventory::submit!`, plus a `mod` line.

mod conn;
pub mod lines;
mod service;

pub mod palindrome;
pub mod word_guess;

pub use conn::{Conn, Limits, catch_unwind, close_gracefully, until, write_reply};
pub use service::{Needs, Options, Registration, Service, find, registered};
