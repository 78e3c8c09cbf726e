//! `twin-async`, the twin of the async model: a tokio task per connection on the multi-threaded
//! runtime, as tokio's own examples write it. `porthost bench` starts it; it prints its address
//! and serves until killed.

#[path = "tasks.rs"]
mod tasks;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tasks::serve_all().await
}
