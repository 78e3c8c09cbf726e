//! The accept loop of one port: a slot before accept (`max_connections`), accept-error
//! backoff, what a client must pass before any service code runs (its PROXY header on a
//! `proxy_protocol` port, `allow`/`deny`, its rate of new connections, its number of open
//! ones), and the hand-off of each admitted connection to the port's [`Runner`]. It knows no
//! model's internals and never runs service code, so no client can end it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use crate::connection::{self, Accepted};
use crate::models::Runner;
use crate::port::{Port, Refusal};
use crate::proxy_protocol;
use crate::sockets::is_per_connection;

/// The longest pause between accept attempts after errors such as running out of descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until the port stops, retires or loses its listener; meanwhile the
/// port tidies what it remembers about clients ([`Port::tidy_forever`]), in this task, so that
/// a restarted loop brings its own and an ended one takes it along.
pub async fn accept_loop(port: Arc<Port>, runner: Arc<dyn Runner>) {
    let accept = async {
        if !runner.accept(&port).await {
            accept_until_stopped(port.clone(), runner.clone()).await;
        }
    };
    tokio::select! {
        () = accept => {}
        never = port.tidy_forever() => match never {},
    }
}

async fn accept_until_stopped(port: Arc<Port>, runner: Arc<dyn Runner>) {
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
            return stopped(&port, &runner).await;
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
            () = port.shutdown.done_accepting() => {
                drop((slot, listener));
                return stopped(&port, &runner).await;
            }
        };
        drop(listener);
        handle(&port, &runner, stream, peer, slot).await;
    }
}

/// The loop's end: a port that was stopped (not one that retired, which has closed its
/// socket already) serves what is queued and closes its socket.
async fn stopped(port: &Arc<Port>, runner: &Arc<dyn Runner>) {
    if port.shutdown.is_stopped() {
        hand_over(port, runner).await;
    }
}

/// Passes an accepted connection through what it must pass before its service.
async fn handle(
    port: &Arc<Port>,
    runner: &Arc<dyn Runner>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    if let Some(trusted) = &port.plan.entry.edge.trusted_proxies {
        if !trusted.contains(peer.ip()) {
            refuse(
                port,
                stream,
                peer,
                Refusal::UntrustedProxy,
                "not from a trusted proxy",
            );
            return;
        }
        // The header may take a while to come: the slot goes with the handshake, and the loop
        // goes on accepting.
        port.tracker
            .spawn(handshake(port.clone(), runner.clone(), stream, peer, slot));
        return;
    }
    admit(port, &**runner, stream, peer, None, slot).await;
}

/// A port stops: its socket is closed now, so that new clients are refused at once (and a
/// proxy or a client tries another host, or the other hosts on a `reuse_port` port get them)
/// rather than queued where nobody will accept them. First the clients already queued on it
/// (the handshake done, not yet accepted) are accepted and served, since closing would reset
/// them. A client that lands in the queue between the last accept and the close is still
/// reset; on a `reuse_port` port, `net.ipv4.tcp_migrate_req = 1` (Linux 5.14) makes the kernel
/// move such clients to another host's socket instead.
async fn hand_over(port: &Arc<Port>, runner: &Arc<dyn Runner>) {
    let Some(listener) = port.take_listener() else {
        return;
    };
    loop {
        let accepted = std::future::poll_fn(|cx| match listener.poll_accept(cx) {
            std::task::Poll::Pending => std::task::Poll::Ready(None),
            std::task::Poll::Ready(result) => std::task::Poll::Ready(Some(result)),
        })
        .await;
        match accepted {
            Some(Ok((stream, peer))) => {
                let slot = port.slot_for_hand_over().await;
                handle(port, runner, stream, peer, slot).await;
            }
            Some(Err(e)) if is_per_connection(&e) => {}
            Some(Err(_)) | None => break,
        }
    }
    info!(
        port = port.port(),
        "stopped accepting; its queued clients are served and its socket closed (unless \
         systemd holds it)"
    );
}

/// Reads a trusted proxy's PROXY header, then admits the client it names.
async fn handshake(
    port: Arc<Port>,
    runner: Arc<dyn Runner>,
    mut stream: TcpStream,
    proxy: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    match proxy_protocol::read_header(&mut stream, proxy_protocol::DEFAULT_TIMEOUT).await {
        Ok(header) => {
            let (client, destination) = (header.client(proxy), header.destination());
            admit(&port, &*runner, stream, client, destination, slot).await;
        }
        Err(e) => refuse(
            &port,
            stream,
            proxy,
            Refusal::BadProxyHeader,
            &e.to_string(),
        ),
    }
}

/// Admits a client (`peer`: its real address; `destination`: the address it connected to, if
/// its PROXY header named one) and hands it to the runner, or refuses it.
async fn admit(
    port: &Arc<Port>,
    runner: &dyn Runner,
    stream: TcpStream,
    peer: SocketAddr,
    destination: Option<SocketAddr>,
    slot: OwnedSemaphorePermit,
) {
    let admission = match port.admit(slot, peer, destination) {
        Ok(admission) => admission,
        Err(refusal) => {
            let why = refusal.name().replace('_', " ");
            return refuse(port, stream, peer, refusal, &why);
        }
    };
    // Replies are single small writes: send them now rather than waiting for an ACK.
    let _ = stream.set_nodelay(true);
    let span = connection::span(port, peer);
    runner
        .dispatch(Accepted {
            stream,
            peer,
            admission,
            span,
        })
        .await;
}

/// Counts and logs a refusal, and closes the connection after its reply (if it gets one).
fn refuse(port: &Port, stream: TcpStream, peer: SocketAddr, refusal: Refusal, why: &str) {
    port.refused(peer, refusal, why);
    if !refusal.reply().is_empty() {
        port.tracker.spawn(connection::refuse(stream, refusal));
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
        () = port.shutdown.done_accepting() => false,
    }
}
