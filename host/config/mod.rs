//! `services.toml`: raw TOML first, then a validated [`Config`].
//!
//! The raw structs mirror the file (serde, `deny_unknown_fields`); validation turns them into
//! typed values, looks services up in the registry, builds them from their options and checks
//! each model against what its service needs. Every problem is collected, not just the first,
//! and each names the file, line, column and port entry, because the person reading it is
//! editing that file.
//!
//! Every number has a range ([`bounds`]), checked here with its line: wide enough for any real
//! use, narrow enough that no arithmetic the host does on it can overflow.

pub mod bounds;
mod edge;
mod model;

pub use edge::Edge;
pub use model::Model;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use porthost_services::{Limits, Options, Service};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::registry;
use bounds::Bound;

/// The `[host]` table. Values are kept as written, with their place in the file, and checked
/// in [`host_defaults`], so that a wrong type reads like any other mistake.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    bind: Option<Spanned<toml::Value>>,
    shutdown_grace_secs: Option<Spanned<toml::Value>>,
    max_line_bytes: Option<Spanned<toml::Value>>,
    idle_timeout_secs: Option<Spanned<toml::Value>>,
    max_connections_per_ip: Option<Spanned<toml::Value>>,
    admin: Option<Spanned<toml::Value>>,
    admin_token: Option<Spanned<toml::Value>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    max_connection_rate_per_ip: Option<Spanned<toml::Value>>,
    proxy_protocol: Option<Spanned<toml::Value>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    reuse_port: Option<Spanned<toml::Value>>,
}

/// One `[ports.N]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    service: Spanned<toml::Value>,
    model: Spanned<toml::Value>,
    bind: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<toml::Value>>,
    workers: Option<Spanned<toml::Value>>,
    max_connections_per_ip: Option<Spanned<toml::Value>>,
    max_line_bytes: Option<Spanned<toml::Value>>,
    idle_timeout_secs: Option<Spanned<toml::Value>>,
    options: Option<Spanned<toml::Value>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    max_connection_rate_per_ip: Option<Spanned<toml::Value>>,
    proxy_protocol: Option<Spanned<toml::Value>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    reuse_port: Option<Spanned<toml::Value>>,
}

/// A validated configuration, ready to bind.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    /// How long connected clients may finish after a shutdown or a reload drains their port.
    pub shutdown_grace: Duration,
    /// The admin endpoint (live page, metrics, state), when `[host] admin` turns it on.
    pub admin: Option<AdminPlan>,
    /// Sorted by port number.
    pub ports: Vec<PortPlan>,
}

/// `[host] admin` and `admin_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPlan {
    /// Where it listens; port 0 takes a free one.
    pub addr: SocketAddr,
    /// What every request must carry, when it has to (any address but loopback).
    pub token: Option<String>,
}

/// The shortest `admin_token` accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The name of the `exec` service (the `exec` module), whose entries take keys of their own and
/// whose clients are told nothing when cut off: named here, below both the service and the
/// port, so that neither this module nor the port imports the service.
pub const EXEC_SERVICE: &str = "exec";

/// One port: what the file says about it, and the service built from it.
#[derive(Clone)]
pub struct PortPlan {
    pub entry: PortEntry,
    pub service: Arc<dyn Service>,
    /// Where the entry starts in the file, for messages about it later (a failed bind).
    pub line: usize,
}

impl fmt::Debug for PortPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortPlan")
            .field("entry", &self.entry)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// Everything a port entry decides, in typed form. Two entries that compare equal serve the
/// same way, which is what a reload compares.
#[derive(Debug, Clone, PartialEq)]
pub struct PortEntry {
    pub addr: SocketAddr,
    pub service: String,
    pub model: Model,
    pub limits: Limits,
    pub max_connections: usize,
    /// The size of the port's pool, under a model that has one (`thread-pool`); the
    /// connections it serves at once, so it is `max_connections` too.
    pub workers: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub options: toml::Table,
    /// Where relative paths in `options` are resolved: the config file's directory.
    pub base_dir: PathBuf,
    /// Who may connect, and how clients reach the port.
    pub edge: Edge,
}

impl PortEntry {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn options(&self) -> Options {
        Options::new(self.options.clone(), self.base_dir.clone())
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// `[host]` or `[ports.7001]`, when the problem is inside one.
    pub entry: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if let Some(entry) = &self.entry {
            write!(f, "{entry}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors with positions computed from byte spans of one text.
struct Collector<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn push(&mut self, span: Range<usize>, entry: Option<&str>, reason: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            entry: entry.map(str::to_owned),
            reason: reason.into(),
        });
    }

    /// A serde error from inside a table: its own span when it has one, else the table's.
    fn push_de(&mut self, error: &toml::de::Error, fallback: Range<usize>, entry: &str) {
        let span = error.span().unwrap_or(fallback);
        self.push(span, Some(entry), error.message());
    }

    /// A whole number within its [`Bound`], or `None` (with the error collected) when the
    /// value is of another type or out of range.
    fn number(
        &mut self,
        value: Option<&Spanned<toml::Value>>,
        bound: &Bound,
        entry: Option<&str>,
    ) -> Option<u64> {
        let value = value?;
        bound
            .check(value.get_ref())
            .map_err(|reason| self.push(value.span(), entry, reason))
            .ok()
    }

    /// A string, or `None` with an error saying what the key should hold.
    fn text<'v>(
        &mut self,
        value: &'v Spanned<toml::Value>,
        key: &str,
        what: &str,
        entry: Option<&str>,
    ) -> Option<&'v str> {
        match value.get_ref() {
            toml::Value::String(text) => Some(text),
            other => {
                self.push(
                    value.span(),
                    entry,
                    format!(
                        "{key} must be a string, {what}, not {}",
                        bounds::describe(other)
                    ),
                );
                None
            }
        }
    }

    fn ip(
        &mut self,
        value: Option<&Spanned<toml::Value>>,
        entry: Option<&str>,
    ) -> Option<Option<IpAddr>> {
        let Some(value) = value else {
            return Some(None);
        };
        let text = self.text(value, "bind", "an IP address", entry)?;
        match text.parse() {
            Ok(ip) => Some(Some(ip)),
            Err(_) => {
                self.push(
                    value.span(),
                    entry,
                    format!(
                        "bind = {text:?} is not an IP address (e.g. \"127.0.0.1\", \"::1\", \"0.0.0.0\")"
                    ),
                );
                None
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_bytes(&bytes, path).map_err(LoadError::Invalid)
    }

    /// Validates the bytes of a config file. Bytes that are not UTF-8 are an error at the first
    /// of them, with its line and column like any other, not an unreadable file.
    pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<Config, ConfigErrors> {
        let error = match std::str::from_utf8(bytes) {
            Ok(text) => return Config::parse(text, path),
            Err(error) => error,
        };
        let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).expect("valid up to here");
        let (line, column) = line_column(valid, valid.len());
        Err(ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line,
            column,
            entry: None,
            reason: format!(
                "byte 0x{:02x} is not UTF-8; the file must be UTF-8 text",
                bytes[error.valid_up_to()]
            ),
        }]))
    }

    /// Validates config text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut c = Collector {
            path,
            text,
            errors: Vec::new(),
        };
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // Where a table written twice starts its second copy: the parser also calls each
            // key in it a duplicate, which says nothing the table's own error does not.
            let mut second_copy: Option<usize> = None;
            for e in &syntax {
                let span = e.span().unwrap_or(0..0);
                let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or_default().trim();
                if e.message() == "duplicate key" {
                    if line.starts_with('[') {
                        let header = line.split('#').next().unwrap_or(line).trim();
                        c.push(
                            span.clone(),
                            None,
                            format!(
                                "{header} is written twice; put all its keys in one {header} table"
                            ),
                        );
                        second_copy = Some(span.start);
                        continue;
                    }
                    if second_copy.is_some_and(|at| !text[at..span.start].contains("\n[")) {
                        continue;
                    }
                }
                c.push(span, None, e.message());
            }
            return Err(ConfigErrors(c.errors));
        }
        let root_span = root.span();
        let mut root = root.into_inner();

        let host = match root.remove("host") {
            None => RawHost::default(),
            Some(value) => {
                let span = value.span();
                RawHost::deserialize(ValueDeserializer::from(value)).unwrap_or_else(|e| {
                    c.push_de(&e, span, "[host]");
                    RawHost::default()
                })
            }
        };
        let defaults = host_defaults(&host, &mut c);

        let mut ports = Vec::new();
        match root.remove("ports") {
            None => c.push(root_span, None, "no [ports.N] entries: nothing to serve"),
            Some(value) => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Table(table) => {
                        // Where each port number was first defined: `[ports.7100]` and
                        // `[ports.07100]` are one port.
                        let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
                        for (key, value) in table {
                            let Some(port) = port_number(&key, &mut c) else {
                                continue;
                            };
                            let line = line_column(c.text, key.span().start).0;
                            if let Some(first) = seen.insert(port, line) {
                                c.push(
                                    key.span(),
                                    Some(&format!("[ports.{}]", key.get_ref())),
                                    format!(
                                        "port {port} is defined twice: here and at line {first}"
                                    ),
                                );
                                continue;
                            }
                            if let Some(plan) = port_plan(&key, port, value, &defaults, &mut c) {
                                ports.push(plan);
                            }
                        }
                    }
                    other => c.push(
                        span,
                        None,
                        format!(
                            "`ports` must be a table of [ports.N] entries, not {}",
                            other.type_str()
                        ),
                    ),
                }
            }
        }
        for (key, _) in root {
            c.push(
                key.span(),
                None,
                format!(
                    "unknown table `{}`; expected `host` or `ports`",
                    key.get_ref()
                ),
            );
        }

        if !c.errors.is_empty() {
            c.errors.sort_by_key(|e| (e.line, e.column));
            return Err(ConfigErrors(c.errors));
        }
        ports.sort_by_key(|p: &PortPlan| p.entry.port());
        Ok(Config {
            path: path.to_path_buf(),
            shutdown_grace: defaults.shutdown_grace,
            admin: defaults.admin,
            ports,
        })
    }
}

/// Values from `[host]` that every port inherits unless it says otherwise, and the host's own.
struct Defaults {
    bind: IpAddr,
    edge: edge::HostEdge,
    shutdown_grace: Duration,
    admin: Option<AdminPlan>,
    limits: Limits,
    max_connections_per_ip: Option<usize>,
    base_dir: PathBuf,
}

fn host_defaults(host: &RawHost, c: &mut Collector<'_>) -> Defaults {
    let entry = Some("[host]");
    let bind = c
        .ip(host.bind.as_ref(), entry)
        .flatten()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let base = Limits::default();
    let limits = limits(
        host.max_line_bytes.as_ref(),
        host.idle_timeout_secs.as_ref(),
        base,
        entry,
        c,
    );
    let shutdown_grace = c
        .number(
            host.shutdown_grace_secs.as_ref(),
            &bounds::SHUTDOWN_GRACE_SECS,
            entry,
        )
        .map_or(Duration::from_secs(5), Duration::from_secs);
    Defaults {
        bind,
        edge: edge::host(
            edge::RawEdge {
                allow: host.allow.as_ref(),
                deny: host.deny.as_ref(),
                max_connection_rate_per_ip: host.max_connection_rate_per_ip.as_ref(),
                proxy_protocol: host.proxy_protocol.as_ref(),
                trusted_proxies: host.trusted_proxies.as_ref(),
                reuse_port: host.reuse_port.as_ref(),
            },
            c,
        ),
        shutdown_grace,
        admin: admin(host, c),
        limits,
        max_connections_per_ip: c
            .number(
                host.max_connections_per_ip.as_ref(),
                &bounds::MAX_CONNECTIONS_PER_IP,
                entry,
            )
            .map(bounds::to_usize),
        base_dir: c
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    }
}

/// `admin` and `admin_token`: off without `admin`; on loopback, a token is optional; anywhere
/// else it is required, so that a page that can start load generators is never open to all.
fn admin(host: &RawHost, c: &mut Collector<'_>) -> Option<AdminPlan> {
    let entry = Some("[host]");
    let token = host.admin_token.as_ref().and_then(|value| {
        let text = c.text(
            value,
            "admin_token",
            "a secret every admin request must carry",
            entry,
        )?;
        if text.chars().count() < MIN_TOKEN_CHARS || text.chars().any(char::is_whitespace) {
            c.push(
                value.span(),
                entry,
                format!(
                    "admin_token must be at least {MIN_TOKEN_CHARS} characters without spaces \
                     (e.g. the output of `openssl rand -hex 16`)"
                ),
            );
            return None;
        }
        Some(text.to_owned())
    });
    let Some(value) = &host.admin else {
        if let Some(value) = &host.admin_token {
            c.push(
                value.span(),
                entry,
                "admin_token has no effect without admin = \"127.0.0.1:7000\" (the admin endpoint's address)",
            );
        }
        return None;
    };
    let text = c.text(
        value,
        "admin",
        "the admin endpoint's address, e.g. \"127.0.0.1:7000\"",
        entry,
    )?;
    let Ok(addr) = text.parse::<SocketAddr>() else {
        c.push(
            value.span(),
            entry,
            format!("admin = {text:?} is not an address with a port (e.g. \"127.0.0.1:7000\", \"[::1]:7000\")"),
        );
        return None;
    };
    if !addr.ip().is_loopback() && token.is_none() && host.admin_token.is_none() {
        c.push(
            value.span(),
            entry,
            format!(
                "admin = {text:?} can be reached from other machines, and the admin endpoint can \
                 start load generators: set admin_token (every request must then carry it), or \
                 use 127.0.0.1"
            ),
        );
        return None;
    }
    Some(AdminPlan { addr, token })
}

/// The limits of a port or of `[host]`: what the entry says, else `inherited`.
fn limits(
    max_line_bytes: Option<&Spanned<toml::Value>>,
    idle_timeout_secs: Option<&Spanned<toml::Value>>,
    inherited: Limits,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Limits {
    Limits {
        max_line_bytes: c
            .number(max_line_bytes, &bounds::MAX_LINE_BYTES, entry)
            .map_or(inherited.max_line_bytes, bounds::to_usize),
        // `0` turns the idle timeout off.
        idle_timeout: c
            .number(idle_timeout_secs, &bounds::IDLE_TIMEOUT_SECS, entry)
            .map_or(inherited.idle_timeout, |secs| {
                (secs > 0).then(|| Duration::from_secs(secs))
            }),
    }
}

/// The port number of a `[ports.N]` key.
fn port_number(key: &Spanned<std::borrow::Cow<'_, str>>, c: &mut Collector<'_>) -> Option<u16> {
    match key.get_ref().parse::<u16>() {
        Ok(port) if port >= 1 => Some(port),
        _ => {
            c.push(
                key.span(),
                Some(&format!("[ports.{}]", key.get_ref())),
                format!(
                    "port {:?} is not a number between 1 and 65535",
                    key.get_ref()
                ),
            );
            None
        }
    }
}

fn port_plan(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    port: u16,
    value: Spanned<DeValue<'_>>,
    defaults: &Defaults,
    c: &mut Collector<'_>,
) -> Option<PortPlan> {
    let entry_name = format!("[ports.{}]", key.get_ref());
    let entry = Some(entry_name.as_str());
    let entry_span = value.span();
    let line = line_column(c.text, key.span().start).0;
    let raw = match RawPort::deserialize(ValueDeserializer::from(value)) {
        Ok(raw) => raw,
        Err(e) => {
            c.push_de(&e, entry_span, &entry_name);
            return None;
        }
    };

    let errors_before = c.errors.len();
    let registration = c
        .text(
            &raw.service,
            "service",
            "the name of a registered service",
            entry,
        )
        .and_then(|name| {
            registry::find(name)
                .map_err(|reason| c.push(raw.service.span(), entry, reason))
                .ok()
        });
    let model = c
        .text(
            &raw.model,
            "model",
            "the name of a concurrency model",
            entry,
        )
        .and_then(|name| {
            name.parse::<Model>()
                .map_err(|reason| c.push(raw.model.span(), entry, reason))
                .ok()
        });
    let bind = c.ip(raw.bind.as_ref(), entry);
    let limits = limits(
        raw.max_line_bytes.as_ref(),
        raw.idle_timeout_secs.as_ref(),
        defaults.limits,
        entry,
        c,
    );
    let max_connections = c
        .number(
            raw.max_connections.as_ref(),
            &bounds::MAX_CONNECTIONS,
            entry,
        )
        .map(bounds::to_usize);
    let max_connections_per_ip = c
        .number(
            raw.max_connections_per_ip.as_ref(),
            &bounds::MAX_CONNECTIONS_PER_IP,
            entry,
        )
        .map(bounds::to_usize)
        .or(defaults.max_connections_per_ip);
    let edge = edge::port(
        edge::RawEdge {
            allow: raw.allow.as_ref(),
            deny: raw.deny.as_ref(),
            max_connection_rate_per_ip: raw.max_connection_rate_per_ip.as_ref(),
            proxy_protocol: raw.proxy_protocol.as_ref(),
            trusted_proxies: raw.trusted_proxies.as_ref(),
            reuse_port: raw.reuse_port.as_ref(),
        },
        &defaults.edge,
        entry,
        entry_span.clone(),
        c,
    );
    let options = match &raw.options {
        None => Some((toml::Table::new(), entry_span.clone())),
        Some(value) => match value.get_ref() {
            toml::Value::Table(table) => Some((table.clone(), value.span())),
            other => {
                c.push(
                    value.span(),
                    entry,
                    format!(
                        "options must be a table of the service's options, e.g. \
                         options = {{ strict = true }}, not {}",
                        bounds::describe(other)
                    ),
                );
                None
            }
        },
    };
    let (registration, model, bind, (options, options_span)) =
        (registration?, model?, bind?, options?);
    if registration.name == EXEC_SERVICE {
        exec_keys(&raw, entry, c);
    }

    let workers = workers(&raw, model, entry, c)?;
    let max_connections_span = || {
        raw.max_connections
            .as_ref()
            .map_or(entry_span.clone(), Spanned::span)
    };
    let max_connections = match (model, max_connections) {
        (Model::Sequential, Some(n)) if n != 1 => {
            c.push(
                max_connections_span(),
                entry,
                format!("max_connections = {n}, but sequential serves exactly one connection at a time; remove the key or set it to 1"),
            );
            return None;
        }
        (Model::ThreadPool, Some(n)) => {
            c.push(
                max_connections_span(),
                entry,
                format!(
                    "max_connections = {n}, but a thread-pool serves exactly `workers` \
                     connections at once, one per thread (the rest wait in the backlog); \
                     remove the key and set workers = {n} instead"
                ),
            );
            return None;
        }
        (_, Some(n)) => n,
        (model, None) => model.default_max_connections(workers.unwrap_or(1)),
    };

    let entry_value = PortEntry {
        addr: SocketAddr::new(bind.unwrap_or(defaults.bind), port),
        service: registration.name.to_owned(),
        model,
        limits,
        max_connections,
        workers,
        max_connections_per_ip,
        options,
        base_dir: defaults.base_dir.clone(),
        edge,
    };
    let service = match (registration.build)(&entry_value.options()) {
        Ok(service) => service,
        Err(reason) => {
            c.push(
                options_span,
                entry,
                format!("invalid options for {}: {reason}", registration.name),
            );
            return None;
        }
    };
    if let Err(reason) = model.check(
        registration.name,
        service.needs(),
        workers.unwrap_or(usize::MAX),
    ) {
        c.push(raw.model.span(), entry, reason);
    }
    (c.errors.len() == errors_before).then(|| PortPlan {
        entry: entry_value,
        service,
        line,
    })
}

/// `workers`: the size of the pool under a model that has one (checked, or the default),
/// `None` under the others, which refuse the key; `Err` (reported) when it is wrong.
fn workers(
    raw: &RawPort,
    model: Model,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Option<usize>> {
    let number = c.number(raw.workers.as_ref(), &bounds::WORKER_THREADS, entry);
    match (&raw.workers, model.has_workers()) {
        (Some(_), true) => Some(Some(bounds::to_usize(number?))),
        (None, true) => Some(Some(Model::default_workers())),
        (None, false) => Some(None),
        (Some(value), false) => {
            c.push(
                value.span(),
                entry,
                format!(
                    "workers sizes the fixed pool of a thread-pool port; {model} has none (it \
                     {}); remove the key, or use model = \"thread-pool\"",
                    model.how()
                ),
            );
            None
        }
    }
}

/// The keys an `exec` port refuses: the host never reads a program's bytes, so it has no
/// lines to bound, and an idle timer from the socket's last-data times (`TCP_INFO`) would cut
/// off a program that is computing while its client waits, which is no idleness at all. A
/// program that needs either sets its own (`read` with a timeout, a bounded `readline`). The
/// `[host]` defaults of these keys do not apply to `exec` ports.
fn exec_keys(raw: &RawPort, entry: Option<&str>, c: &mut Collector<'_>) {
    let keys = [
        (
            "max_line_bytes",
            &raw.max_line_bytes,
            "frames its own input",
        ),
        (
            "idle_timeout_secs",
            &raw.idle_timeout_secs,
            "decides when its client is idle (the socket's last-data times cannot tell idle \
             from a program computing an answer)",
        ),
    ];
    for (key, value, why) in keys {
        if let Some(value) = value {
            c.push(
                value.span(),
                entry,
                format!(
                    "{key} does not apply to an exec port: the host never sees the program's \
                     bytes, the program {why}; remove it"
                ),
            );
        }
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("conf/services.toml"))
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_full_entry_parses() {
        let config = parse(
            r#"
[host]
bind = "127.0.0.1"
shutdown_grace_secs = 2

[ports.7004]
service = "palindrome-v3"
model = "async"
bind = "::1"
max_connections = 100
max_line_bytes = 1000
idle_timeout_secs = 0
options = { strict = true }
"#,
        )
        .unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_secs(2));
        let e = &config.ports[0].entry;
        assert_eq!(e.addr, "[::1]:7004".parse().unwrap());
        assert_eq!(e.model, Model::Async);
        assert_eq!(e.max_connections, 100);
        assert_eq!(e.limits.max_line_bytes, 1000);
        assert_eq!(e.limits.idle_timeout, None);
        assert_eq!(e.base_dir, Path::new("conf"));
        assert_eq!(config.ports[0].line, 6);
    }

    #[test]
    fn defaults_come_from_the_model_and_the_host_table() {
        let config = parse(
            "[host]\nidle_timeout_secs = 7\n[ports.1]\nservice = \"palindrome-v1\"\nmodel = \"sequential\"\n\
             [ports.2]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n",
        )
        .unwrap();
        assert_eq!(config.ports[0].entry.max_connections, 1);
        assert_eq!(config.ports[1].entry.max_connections, 10_000);
        assert_eq!(
            config.ports[1].entry.limits.idle_timeout,
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let errs = errors(
            "[ports.7001]\nservice = \"palindrome-v1\"\nmodle = \"async\"\n\n\
             [ports.7002]\nservice = \"palindrom-v3\"\nmodel = \"asynk\"\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("conf/services.toml:3:1: [ports.7001]: unknown field `modle`"),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("conf/services.toml:6:11: [ports.7002]: unknown service"),
            "{errs:#?}"
        );
        assert!(
            errs[1].contains("did you mean \"palindrome-v3\""),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("conf/services.toml:7:9: [ports.7002]: unknown model \"asynk\""),
            "{errs:#?}"
        );
    }

    #[test]
    fn bad_ports_types_and_options() {
        let errs = errors(
            "[ports.0]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n\
             [ports.99999]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n\
             [ports.x]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n\
             [ports.7]\nservice = \"palindrome-v1\"\nmodel = \"async\"\nmax_connections = \"many\"\n\
             [ports.8]\nservice = \"palindrome-v1\"\nmodel = \"async\"\noptions = { strictt = true }\n",
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].contains(":1:8: [ports.0]: port \"0\" is not a number between 1 and 65535")
        );
        assert!(errs[1].contains(":4:8: [ports.99999]: port"));
        assert!(errs[2].contains(":7:8: [ports.x]: port"));
        assert!(
            errs[3].contains(
                ":13:19: [ports.7]: max_connections must be a whole number of connections from 1 \
                 to 1000000, not the string \"many\""
            ),
            "{errs:#?}"
        );
        assert!(
            errs[4].contains(
                ":17:11: [ports.8]: invalid options for palindrome-v1: unknown field `strictt`"
            ),
            "{errs:#?}"
        );
    }

    #[test]
    fn sequential_is_one_connection() {
        let errs = errors(
            "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"sequential\"\nmax_connections = 5\n",
        );
        assert!(
            errs[0].contains(":4:19: [ports.7]: max_connections = 5, but sequential"),
            "{errs:#?}"
        );
    }

    #[test]
    fn a_thread_pool_is_sized_by_workers_and_refuses_max_connections() {
        let config = parse(
            "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"thread-pool\"\nworkers = 3\n\
             [ports.8]\nservice = \"palindrome-v1\"\nmodel = \"thread-pool\"\n",
        )
        .unwrap();
        let (seven, eight) = (&config.ports[0].entry, &config.ports[1].entry);
        assert_eq!((seven.workers, seven.max_connections), (Some(3), 3));
        let default = Model::default_workers();
        assert_eq!(
            (eight.workers, eight.max_connections),
            (Some(default), default)
        );

        let errs = errors(
            "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"thread-pool\"\nmax_connections = 5\n",
        );
        assert!(
            errs[0].contains(
                ":4:19: [ports.7]: max_connections = 5, but a thread-pool serves \
                 exactly `workers` connections"
            ) && errs[0].contains("set workers = 5 instead"),
            "{errs:#?}"
        );
        for (workers, shown) in [("0", "0"), ("1025", "1025"), ("\"4\"", "the string \"4\"")] {
            let errs = errors(&format!(
                "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"thread-pool\"\nworkers = {workers}\n"
            ));
            assert_eq!(
                errs,
                [format!(
                    "conf/services.toml:4:11: [ports.7]: workers must be a whole number of \
                     threads from 1 to 1024, not {shown}"
                )]
            );
        }
    }

    #[test]
    fn workers_is_refused_where_there_is_no_pool() {
        for model in Model::ALL.into_iter().filter(|m| !m.has_workers()) {
            let errs = errors(&format!(
                "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"{model}\"\nworkers = 4\n"
            ));
            assert_eq!(errs.len(), 1, "{errs:#?}");
            assert!(
                errs[0].starts_with(&format!(
                    "conf/services.toml:4:11: [ports.7]: workers sizes the fixed pool of a \
                     thread-pool port; {model} has none ("
                )),
                "{errs:#?}"
            );
        }
    }

    #[test]
    fn an_event_loop_defaults_to_ten_thousand_connections() {
        let config =
            parse("[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"event-loop\"\n").unwrap();
        assert_eq!(config.ports[0].entry.max_connections, 10_000);
        assert_eq!(config.ports[0].entry.workers, None);
    }

    #[test]
    fn a_port_table_written_twice_is_one_error_naming_the_port() {
        let entry = "service = \"palindrome-v1\"\nmodel = \"async\"\n";
        let errs = errors(&format!(
            "[ports.7]\n{entry}[ports.7] # again\n{entry}[ports.8]\n{entry}"
        ));
        assert_eq!(
            errs,
            [
                "conf/services.toml:4:8: [ports.7] is written twice; put all its keys in one \
              [ports.7] table"
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_tables() {
        assert!(errors("[ports.7\n")[0].starts_with("conf/services.toml:1:"));
        let errs = errors(
            "[hosts]\nbind = \"x\"\n[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n",
        );
        assert!(errs[0].contains(":1:2: unknown table `hosts`"), "{errs:#?}");
        let errs = errors(
            "[host]\nbind = \"localhost\"\n[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"async\"\n",
        );
        assert!(
            errs[0].contains(":2:8: [host]: bind = \"localhost\" is not an IP address"),
            "{errs:#?}"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\nцd", 5), (2, 2));
        assert_eq!(line_column("", 0), (1, 1));
    }

    /// One edit of a config file's bytes, at a position given as a fraction of its length.
    #[derive(Debug, Clone)]
    enum Edit {
        Delete(prop::sample::Index, usize),
        Insert(prop::sample::Index, Vec<u8>),
        Replace(prop::sample::Index, u8),
    }

    /// Edits that break TOML in interesting ways: its punctuation, quotes, newlines, digits,
    /// multi-byte characters and bytes that are not UTF-8 at all.
    fn edit() -> impl Strategy<Value = Edit> {
        let byte = prop_oneof![
            prop::sample::select(b"[]{}=\".,#'\n\r\t 0179-_.ax".to_vec()),
            any::<u8>(),
        ];
        let bytes = prop_oneof![
            prop::collection::vec(byte.clone(), 1..4),
            prop::sample::select(vec![
                "я".as_bytes().to_vec(),
                b"\xff".to_vec(),
                b"[ports.7001]\n".to_vec(),
                b"[host]\n".to_vec(),
                b"= \"".to_vec(),
                b"99999999999999999999".to_vec(),
            ]),
        ];
        prop_oneof![
            (any::<prop::sample::Index>(), 1usize..16).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<prop::sample::Index>(), bytes).prop_map(|(at, b)| Edit::Insert(at, b)),
            (any::<prop::sample::Index>(), byte).prop_map(|(at, b)| Edit::Replace(at, b)),
        ]
    }

    fn apply(text: &mut Vec<u8>, edit: &Edit) {
        match edit {
            Edit::Delete(at, n) => {
                let start = at.index(text.len() + 1);
                let end = (start + n).min(text.len());
                text.drain(start..end);
            }
            Edit::Insert(at, bytes) => {
                let at = at.index(text.len() + 1);
                text.splice(at..at, bytes.iter().copied());
            }
            Edit::Replace(at, byte) if !text.is_empty() => {
                let at = at.index(text.len());
                text[at] = *byte;
            }
            Edit::Replace(..) => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The shipped file, mutated, is either valid or rejected with errors that each point
        /// at a place in it; nothing panics.
        #[test]
        fn a_mutated_config_is_accepted_or_rejected_with_lines(
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let mut bytes = include_bytes!("../../config/services.toml").to_vec();
            for edit in &edits {
                apply(&mut bytes, edit);
            }
            let path = Path::new("conf/services.toml");
            if let Err(ConfigErrors(errors)) = Config::parse_bytes(&bytes, path) {
                prop_assert!(!errors.is_empty());
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.split('\n').collect();
                for error in errors {
                    // A line of the file (the one after its last newline included), and a
                    // column on it or just past its end.
                    let line = lines.get(error.line.wrapping_sub(1));
                    prop_assert!(
                        line.is_some_and(|l| (1..=l.chars().count() + 1).contains(&error.column)),
                        "{} is not a place in the file of {} lines", error, lines.len()
                    );
                    let position = format!("conf/services.toml:{}:{}: ", error.line, error.column);
                    prop_assert!(error.to_string().starts_with(&position), "{}", error);
                }
            }
        }
    }
}
