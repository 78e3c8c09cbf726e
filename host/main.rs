//! The `porthost` binary: the command line of `porthost-cli` (`host/cli/`) plus the
//! measurement tools, which live in a crate of their own (`host/bench/`) so that the server
//! never links them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use porthost_bench::BenchArgs;
use porthost_bench::soak::SoakArgs;
use porthost_cli::{ABOUT, RunArgs, exit_code, raise_descriptor_limit};

#[derive(Debug, Parser)]
#[command(name = "porthost", version, about = ABOUT, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Host(porthost_cli::Command),
    /// Compare the models side by side on this machine: throughput, latency, connection
    /// set-up and memory, next to hand-written baseline servers.
    Bench(Box<BenchArgs>),
    /// Soak a real host: mixed load and garbage at every port of a config, a reload every
    /// minute, then a report on errors, memory, descriptors and processes.
    Soak(SoakArgs),
}

fn main() -> ExitCode {
    // This binary's `bench` is what the live page's load runs start; without the path to this
    // executable the page refuses them, saying so, and everything else works.
    let _ = porthost::admin::drive::offer_load_generator();
    let cli = Cli::parse();
    exit_code(match cli.command {
        None => porthost_cli::run(None, cli.run),
        Some(Command::Host(command)) => porthost_cli::run(Some(command), cli.run),
        Some(Command::Bench(args)) => {
            raise_descriptor_limit();
            porthost_bench::main(*args)
        }
        Some(Command::Soak(args)) => {
            raise_descriptor_limit();
            porthost_bench::soak::main(args)
        }
    })
}
