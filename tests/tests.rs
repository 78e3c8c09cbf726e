//! Integration tests. Behaviour (replies, limits, framing, reload, the game) is checked on
//! hosts served inside this process on port-0 listeners; the real `porthost` binary is started
//! only where the process itself is measured: threads, children, descriptors, signals, the CLI.
//! See `support`.

mod support;

// Process-per-client ports in this process fork their children from this binary.
porthost::forker_entry_point!();

mod admin;
mod bench;
mod cli;
mod config;
mod edge;
mod exec;
mod faults;
mod limits;
mod models;
mod numbers;
mod palindrome;
mod panics;
mod reload;
mod word_guess;
