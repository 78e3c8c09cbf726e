//! The admin endpoint (`[host] admin = "127.0.0.1:7000"`): the live page, `/metrics` for
//! Prometheus, `/api/state` as JSON (what `porthost status` reads), `/api/events` (the same,
//! pushed once a second as Server-Sent Events), and `/api/drive` to start a load run.
//!
//! It runs on the host's runtime but apart from the service ports: its own listener, at most
//! [`MAX_CONNECTIONS`] connections (more wait in its backlog), a few seconds to send request
//! headers, a small body limit, and at most [`MAX_STREAMS`] live streams. A slow or hostile
//! admin client holds one of those, never anything of a service port. With `admin_token`,
//! every request must carry it (`Authorization: Bearer ...`, or `?token=` for the page).
//!
//! - [`live`]: the snapshot of the host, sampled once a second.
//! - [`drive`]: load runs started from the page.

pub mod drive;
pub mod live;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::warn;

use crate::config::AdminPlan;
use crate::metrics::{ProcessFigures, Scrape};
use crate::observed::Observed;
use crate::port::PortState;
use drive::{DriveRequest, Drives, LoadCommand};
use live::Snapshot;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Live streams (open pages, `status --watch`) at once.
pub const MAX_STREAMS: usize = 8;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body accepted (a drive request is a few dozen bytes).
const MAX_BODY: usize = 4096;

/// The live page, one self-contained file.
const PAGE: &str = include_str!("page.html");

/// A running admin endpoint.
#[derive(Debug)]
pub struct Admin {
    pub plan: AdminPlan,
    /// Where it listens (the port the system chose, for `:0`).
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What the handlers share.
#[derive(Debug, Clone)]
struct App {
    observed: Arc<Observed>,
    latest: watch::Receiver<Arc<Snapshot>>,
    drives: Drives,
    token: Option<Arc<str>>,
    streams: Arc<Semaphore>,
}

impl Admin {
    /// Binds `plan.addr` and serves until [`Admin::stop`].
    pub async fn start(
        plan: AdminPlan,
        observed: Arc<Observed>,
        load: Option<LoadCommand>,
    ) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(plan.addr).await?;
        let addr = listener.local_addr()?;
        observed.events.turn_on();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let drives = Drives::new(load, observed.events.clone());
        let (latest_tx, latest) = watch::channel(Arc::new(Snapshot::default()));
        tasks.spawn(live::sample(
            observed.clone(),
            latest_tx,
            drives.clone(),
            stop.clone(),
        ));
        let app = App {
            observed,
            latest,
            drives,
            token: plan.token.as_deref().map(Arc::from),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        };
        tasks.spawn(serve(listener, router(app), stop.clone(), tasks.clone()));
        Ok(Admin {
            plan,
            addr,
            stop,
            tasks,
        })
    }

    /// Stops serving and waits for open admin connections to end (live streams end at once).
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }
}

/// The endpoint's routes over `observed`, with no socket and no sampler (the live snapshot
/// stays the empty one): requests driven in process reach the same handlers and the same
/// token check as over HTTP. The fuzz target `admin` uses it.
pub fn routes(observed: Arc<Observed>, load: Option<LoadCommand>, token: Option<&str>) -> Router {
    let drives = Drives::new(load, observed.events.clone());
    let (_, latest) = watch::channel(Arc::new(Snapshot::default()));
    router(App {
        observed,
        latest,
        drives,
        token: token.map(Arc::from),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
    })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route(
            "/api/drive",
            axum::routing::post(start_drive).delete(cancel_drive),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app)
}

/// Accepts admin connections: a slot before accept, then HTTP/1 with a header timeout.
async fn serve(listener: TcpListener, router: Router, stop: CancellationToken, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = stop.cancelled() => return,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("admin endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let router = router.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    router.clone().oneshot(request)
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// With a token configured, every request carries it: `Authorization: Bearer <token>`, or
/// `?token=<token>` (a browser opening the page, and the page's own requests).
///
/// The query is read here by hand, never through an extractor that can refuse it: a request
/// without the token learns "unauthorized" and nothing else, not that its query was malformed.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    // As bytes: a token beyond ASCII (TOML allows it) arrives as its UTF-8 bytes, which
    // `HeaderValue::to_str` refuses.
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let in_query = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .any(|(key, value)| key == "token" && same(value.as_bytes(), token.as_bytes()));
    if in_query || bearer.is_some_and(|given| same(given, token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "401: this admin endpoint needs its token (Authorization: Bearer ..., or ?token=...)\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"porthost\""),
    );
    response
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let children = app.observed.children();
    let process = tokio::task::spawn_blocking(move || ProcessFigures::read(&children))
        .await
        .unwrap_or_default();
    let ports = app.observed.ports();
    let text = Scrape {
        ports: &ports,
        host: &app.observed.stats,
        process,
    }
    .encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn state(State(app): State<App>) -> impl IntoResponse {
    let snapshot = app.latest.borrow().clone();
    axum::Json((*snapshot).clone())
}

/// The snapshot, pushed each time it is taken.
async fn events(State(app): State<App>) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503: already {MAX_STREAMS} live streams open; close one\n"),
        )
            .into_response();
    };
    let mut latest = app.latest.clone();
    latest.mark_changed();
    let stream =
        futures_util::stream::unfold((latest, permit), |(mut latest, permit)| async move {
            latest.changed().await.ok()?;
            let snapshot = latest.borrow_and_update().clone();
            let event = SseEvent::default()
                .event("state")
                .json_data(&*snapshot)
                .unwrap_or_default();
            Some((Ok::<_, Infallible>(event), (latest, permit)))
        });
    sse(stream).into_response()
}

fn sse<S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>(
    stream: S,
) -> impl IntoResponse {
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn start_drive(State(app): State<App>, body: axum::Json<DriveRequest>) -> Response {
    // Loopback only: a port bound to a loopback address, or to every address (reached on the
    // loopback one). A port bound to one outside address is not driven from here.
    let ours: Vec<(u16, SocketAddr)> = app
        .observed
        .ports()
        .iter()
        .filter(|p| p.state() == PortState::Accepting)
        .filter_map(|p| {
            let addr = p.plan.entry.addr;
            let ip: std::net::IpAddr = match addr.ip() {
                ip if ip.is_loopback() => ip,
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    std::net::Ipv4Addr::LOCALHOST.into()
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    std::net::Ipv6Addr::LOCALHOST.into()
                }
                _ => return None,
            };
            Some((addr.port(), SocketAddr::new(ip, addr.port())))
        })
        .collect();
    match app.drives.start(body.0, &ours) {
        Ok(view) => (StatusCode::ACCEPTED, axum::Json(view)).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn cancel_drive(State(app): State<App>, _headers: HeaderMap) -> Response {
    if app.drives.cancel() {
        (StatusCode::ACCEPTED, "cancelling\n").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no load run is going on\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status(router: &Router, authorization: &str) -> StatusCode {
        let request = Request::builder()
            .uri("/api/state")
            .header(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(authorization.as_bytes()).unwrap(),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap().status()
    }

    /// Found by the fuzz target `admin`: a token with characters beyond ASCII was refused even
    /// from a client that sent it as its bearer, since the header was read as ASCII only.
    #[tokio::test]
    async fn a_token_beyond_ascii_is_taken_as_a_bearer() {
        let token = "пароль-длиннее-16";
        let load = LoadCommand {
            program: "/bin/false".into(),
            args: Vec::new(),
        };
        let router = routes(Arc::new(Observed::default()), Some(load), Some(token));
        assert_eq!(
            status(&router, &format!("Bearer {token}")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&router, "Bearer пароль-длиннее-17").await,
            StatusCode::UNAUTHORIZED
        );
    }
}
