//! `twin-sequential`, the twin of the sequential model: accept, serve with blocking I/O, accept
//! the next. `porthost bench` starts it; it prints its address and serves until killed.

#[path = "common.rs"]
mod common;

fn main() -> std::io::Result<()> {
    let listener = common::listen()?;
    for stream in listener.incoming() {
        // A client that breaks its connection ends only its own session.
        let _ = common::serve(stream?);
    }
    Ok(())
}
