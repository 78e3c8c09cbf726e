//! `twin-threads`, the twin of thread-per-client: a thread per connection, blocking I/O.
//! `porthost bench` starts it; it prints its address and serves until killed.

#[path = "common.rs"]
mod common;

fn main() -> std::io::Result<()> {
    let listener = common::listen()?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || common::serve(stream));
    }
    Ok(())
}
