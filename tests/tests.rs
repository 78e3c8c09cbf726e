//! Integration tests: each starts the real `porthost` binary (see `util`) and talks TCP to it.

mod util;

mod bench;
mod cli;
mod config;
mod faults;
mod limits;
mod models;
mod palindrome;
mod reload;
mod word_guess;
