//! `twin-event-loop`, the twin of event-loop: one thread, one current-thread tokio runtime,
//! a task per connection, as an asyncio server is written. `porthost bench` starts it; it
//! prints its address and serves until killed.

#[path = "tasks.rs"]
mod tasks;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    tasks::serve_all().await
}
