//! The accept loop of one port: a slot before accept (`max_connections`), the per-address
//! limit, accept-error backoff, and the hand-off of each admitted connection to the port's
//! [`Runner`]. It knows no model's internals and never runs service code, so no client can
//! end it.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info_span, warn};

use crate::connection::{self, Accepted};
use crate::events::Kind;
use crate::models::Runner;
use crate::port::Port;

/// The longest pause between accept attempts after errors such as running out of descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until the port stops, retires or loses its listener.
pub async fn accept_loop(port: Arc<Port>, runner: Arc<dyn Runner>) {
    let entry = &port.plan.entry;
    let mut backoff = Duration::ZERO;
    loop {
        #[cfg(test)]
        if port
            .fail_next_accept
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("the accept loop was told to fail (test)");
        }
        // Limit before accept: above `max_connections` clients wait in the backlog.
        let Some(slot) = port.slot().await else {
            return;
        };
        let Some(listener) = port.listener() else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    if !back_off(&port, &mut backoff, "accept", &e).await {
                        return;
                    }
                    continue;
                }
            },
            () = port.ending() => return,
        };
        drop(listener);
        let admission = match port.admit(slot, peer) {
            Ok(admission) => admission,
            Err(refusal) => {
                port.stats.refused(refusal);
                port.events.push(Some(port.port()), Kind::Refused, || {
                    format!("{peer} refused: {}", refusal.name().replace('_', " "))
                });
                port.tracker.spawn(connection::refuse(stream, refusal));
                continue;
            }
        };
        // Replies are single small writes: send them now rather than waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let span = info_span!(
            "conn",
            port = port.port(),
            service = %entry.service,
            model = %entry.model,
            %peer
        );
        runner
            .dispatch(Accepted {
                stream,
                peer,
                admission,
                span,
            })
            .await;
    }
}

/// Pauses after a failure that freed descriptors may cure (EMFILE, ENFILE), doubling the pause
/// up to [`MAX_BACKOFF`] so that the loop neither spins nor gives up; `false` if the port
/// stopped meanwhile.
async fn back_off(port: &Port, backoff: &mut Duration, what: &str, e: &std::io::Error) -> bool {
    *backoff = (*backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
    warn!(
        port = port.port(),
        "{what} failed: {e}; retrying in {backoff:?}"
    );
    tokio::select! {
        () = tokio::time::sleep(*backoff) => true,
        () = port.ending() => false,
    }
}

/// Errors that concern one connection that died in the backlog, not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}
