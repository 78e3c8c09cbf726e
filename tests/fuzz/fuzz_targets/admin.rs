//! The admin endpoint's routes (`porthost::admin::routes`), driven in process with
//! `tower::ServiceExt::oneshot`, no sockets: arbitrary methods, paths, queries, headers, bodies
//! and tokens, with and without a configured `admin_token`.
//!
//! - No panic, in the handlers or while their bodies are read.
//! - With a token configured, a request that carries it nowhere (in no header value, not in the
//!   query as sent nor percent-decoded) gets 401, whatever else it says: no answer without it.
//! - A request whose first `Authorization` header is `Bearer <token>` is never refused as
//!   unauthorized, whatever its query holds.
//!
//! The host behind the routes serves no ports, so a load run asked for has nothing to drive and
//! starts no process.
//!
//! Run: `cargo +nightly fuzz run admin --fuzz-dir tests/fuzz`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use porthost::admin::drive::LoadCommand;
use porthost::observed::Observed;
use tower::ServiceExt;

const ROUTES: [&str; 6] = [
    "/",
    "/metrics",
    "/api/state",
    "/api/events",
    "/api/drive",
    "/nowhere",
];
const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::DELETE,
    Method::HEAD,
    Method::PUT,
    Method::OPTIONS,
];

#[derive(Debug, Arbitrary)]
enum Path {
    Route(u8),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Auth {
    None,
    /// `Authorization: Bearer <the token>`, first of the request's headers.
    Bearer,
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    token: Option<String>,
    method: u8,
    path: Path,
    query: Option<String>,
    /// `token=<the token>` appended to the query.
    token_in_query: bool,
    auth: Auth,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// `%XX` and `+` decoded, as a query string's values are.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let token = input.token.filter(|t| !t.is_empty());
    let mut uri = match &input.path {
        Path::Route(n) => ROUTES[usize::from(*n) % ROUTES.len()].to_owned(),
        Path::Raw(path) => path.clone(),
    };
    let mut query = input.query.clone();
    if input.token_in_query {
        if let Some(token) = &token {
            let carried = format!("token={}", percent_encoded(token));
            query = Some(match query {
                Some(q) if !q.is_empty() => format!("{q}&{carried}"),
                _ => carried,
            });
        }
    }
    if let Some(query) = &query {
        uri = format!("{uri}?{query}");
    }
    let method = METHODS[usize::from(input.method) % METHODS.len()].clone();
    let mut request = Request::builder().method(method).uri(uri.as_str());
    let mut values: Vec<Vec<u8>> = Vec::new();
    match (&input.auth, &token) {
        (Auth::Bearer, Some(token)) => {
            let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
                return;
            };
            values.push(value.as_bytes().to_vec());
            request = request.header(header::AUTHORIZATION, value);
        }
        (Auth::Raw(raw), _) => {
            let Ok(value) = HeaderValue::from_bytes(raw) else {
                return;
            };
            values.push(raw.clone());
            request = request.header(header::AUTHORIZATION, value);
        }
        _ => {}
    }
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            return;
        };
        values.push(value.as_bytes().to_vec());
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::from(input.body)) else {
        return;
    };
    let load = LoadCommand {
        program: "/bin/false".into(),
        args: Vec::new(),
    };
    let router =
        porthost::admin::routes(Arc::new(Observed::default()), Some(load), token.as_deref());
    let status = runtime().block_on(async {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        // A live stream ends once the (absent) sampler has nothing more to send.
        let body = axum::body::to_bytes(response.into_body(), 1 << 24);
        tokio::time::timeout(Duration::from_secs(5), body)
            .await
            .expect("the body ends")
            .expect("the body reads");
        status
    });
    let Some(token) = &token else { return };
    let needle = token.as_bytes();
    let carried = values.iter().any(|v| contains(v, needle))
        || query.as_deref().is_some_and(|q| {
            contains(q.as_bytes(), needle) || contains(&percent_decoded(q), needle)
        });
    if !carried {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no token, {uri:?}");
    }
    if matches!(input.auth, Auth::Bearer) {
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "the right bearer, {uri:?}"
        );
    }
});
