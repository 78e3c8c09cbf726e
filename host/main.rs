//! The `porthost` binary: everything is in the library, so that the example (a porthost with
//! one more service linked in) runs the very same command line.

fn main() -> std::process::ExitCode {
    porthost::cli::main()
}
