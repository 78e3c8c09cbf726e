//! `prefork`: `workers` single-threaded processes forked once, when the port starts, each
//! accepting on the port's shared listening socket and serving one connection at a time with
//! blocking I/O, then the next: Stevens' preforked server (UNP 30.6), Apache's prefork MPM,
//! gunicorn's sync workers. No fork per connection, so short connections cost what a thread
//! pool's do; but the workers share no memory, and client `workers + 1` waits in the backlog.
//!
//! The workers are children of the fork server ([`super::fork_server`]), which forks them from the port's registration (the service built once, inherited by each), keeps
//! the pool full, and is where every client is admitted:
//!
//! 1. A worker waits in `epoll` on the listening socket (`EPOLLEXCLUSIVE`: one worker woken per
//!    client, not the whole pool) and on its control socket to the fork server, and accepts.
//! 2. It passes the client's socket to the fork server and asks whether it may serve it. The
//!    fork server decides with the port's [`Gate`](crate::gate::Gate) (allow/deny,
//!    per-address limits, the rate: the code every model admits with, in the one process
//!    that sees every worker's clients), keeps the socket's second handle (to tell the client
//!    why, should a drain cut it off), and reports the connection to the host.
//! 3. The worker serves it with the blocking loop a forked child serves with, reports what it served to the host as a child does, tells the fork server it is done,
//!    and accepts the next. After `max_connections_per_worker` it exits, and the fork server
//!    forks a fresh one; so it does for a worker that crashed, and logs it.
//!
//! Where the host must see a client first (a PROXY header, a `once = true` port), the host
//! accepts it and the fork server passes it to an idle worker (UNP 30.9's descriptor passing).
//! A worker holds the listening socket only while idle (it cannot hear a drain while it blocks
//! in a client's read). A drain tells the idle workers to close it; once none holds it the
//! fork server closes its copy too, and the host's accept loop takes what the backlog still
//! holds and hands each client over, as above.
//!
//! Where it lives (this module is its map; the code is the fork server's, which both forking
//! models share, so that neither depends on the other):
//! - `fork_server/pool.rs`: the fork server's side of a pool (forking, admitting, handing
//!   clients over, replacing workers);
//! - `fork_server/worker.rs`: a worker's life, and what it and the fork server say;
//! - the port's runner is [`super::process_per_client::ProcessPerClient`], registered with a
//!   pool ([`super::fork_server::wire::PoolSpec`]).
