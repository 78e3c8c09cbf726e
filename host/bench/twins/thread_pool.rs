//! `twin-thread-pool`, the twin of thread-pool: `--workers N` threads started first, each
//! blocking in `accept(2)` on the one listening socket (the kernel wakes one per client) and
//! serving that client with blocking I/O, then accepting the next: UNP's prethreaded server
//! in its simplest form. `porthost bench` starts it; it prints its address and serves until
//! killed.

#[path = "common.rs"]
mod common;

use std::sync::Arc;

fn main() -> std::io::Result<()> {
    let workers = match std::env::args().collect::<Vec<_>>().as_slice() {
        [_, flag, n] if flag == "--workers" => {
            n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                std::io::Error::other(format!("--workers {n}: not a thread count"))
            })?
        }
        _ => return Err(std::io::Error::other("usage: twin-thread-pool --workers N")),
    };
    let listener = Arc::new(common::listen()?);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let listener = listener.clone();
            std::thread::spawn(move || {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = common::serve(stream);
                        }
                        Err(e) => eprintln!("accept: {e}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}
