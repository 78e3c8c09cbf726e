//! `sequential`: the accept loop serves each connection itself, so the next client is accepted
//! only when the current one has left, like the lecture's `socketserver.TCPServer`. Waiting
//! clients sit in the listen backlog.

use porthost_services::Conn;
use tracing::{Instrument, Span};

use crate::listener::{Admission, PortCtx};

pub(crate) async fn run(ctx: &PortCtx, conn: Conn, admission: Admission, span: Span) {
    super::serve_conn(&*ctx.plan.service, conn, Some(&ctx.close))
        .instrument(span)
        .await;
    ctx.ended(admission);
}
