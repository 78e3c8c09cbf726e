//! `async`: one tokio task per connection on the host's shared multi-threaded runtime. The
//! thread count stays flat however many clients connect; an idle client costs a task and its
//! buffers, a few KiB.

use std::sync::Arc;

use porthost_services::Conn;
use tracing::{Instrument, Span};

use crate::listener::{Admission, PortCtx};

pub(crate) fn spawn(ctx: &Arc<PortCtx>, conn: Conn, admission: Admission, span: Span) {
    let ctx = ctx.clone();
    ctx.tracker.clone().spawn(
        async move {
            super::serve_conn(&*ctx.plan.service, conn, Some(&ctx.close)).await;
            ctx.ended(admission);
        }
        .instrument(span),
    );
}
