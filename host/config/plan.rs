//! The `[ports.N]` tables: each checked into a [`PortPlan`], the typed entry and the service
//! built from its options, in named steps (the service, the model, the limits, the size, the
//! service built and checked against its model).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use porthost_services::{Limits, Options, Registration, Service};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::bounds;
use super::diagnostics::Collector;
use super::edge::{self, Edge, RawEdge};
use super::host::{Defaults, limits};
use super::model::Model;
use crate::registry;

/// The name of the `exec` service (the `exec` module), whose entries take keys of their own and
/// whose clients are told nothing when cut off: named here, below both the service and the
/// port, so that neither this module nor the port imports the service.
pub const EXEC_SERVICE: &str = "exec";

/// One `[ports.N]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    service: Spanned<toml::Value>,
    model: Spanned<toml::Value>,
    bind: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<toml::Value>>,
    workers: Option<Spanned<toml::Value>>,
    max_connections_per_worker: Option<Spanned<toml::Value>>,
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
    /// The size of the port's pool, under a model that has one (`thread-pool`, `prefork`);
    /// the connections it serves at once, so it is `max_connections` too.
    pub workers: Option<usize>,
    /// After how many connections a prefork worker is replaced by a fresh one (`None`: never).
    pub max_connections_per_worker: Option<u64>,
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

/// The plans of a `[ports]` table's entries, each port number once: `[ports.7100]` and
/// `[ports.07100]` are one port.
pub(super) fn ports(
    table: DeTable<'_>,
    defaults: &Defaults,
    c: &mut Collector<'_>,
) -> Vec<PortPlan> {
    let mut plans = Vec::new();
    // Where each port number was first defined.
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    for (key, value) in table {
        let Some(port) = port_number(&key, c) else {
            continue;
        };
        let line = c.line(key.span().start);
        if let Some(first) = seen.insert(port, line) {
            c.push(
                key.span(),
                Some(&format!("[ports.{}]", key.get_ref())),
                format!("port {port} is defined twice: here and at line {first}"),
            );
            continue;
        }
        plans.extend(port_plan(&key, port, value, defaults, c));
    }
    plans
}

/// The port number of a `[ports.N]` key.
fn port_number(key: &Spanned<Cow<'_, str>>, c: &mut Collector<'_>) -> Option<u16> {
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

/// One entry's plan, or `None` when anything in it is wrong (every problem collected).
fn port_plan(
    key: &Spanned<Cow<'_, str>>,
    port: u16,
    value: Spanned<DeValue<'_>>,
    defaults: &Defaults,
    c: &mut Collector<'_>,
) -> Option<PortPlan> {
    let entry_name = format!("[ports.{}]", key.get_ref());
    let entry = Some(entry_name.as_str());
    let entry_span = value.span();
    let line = c.line(key.span().start);
    let raw = match RawPort::deserialize(ValueDeserializer::from(value)) {
        Ok(raw) => raw,
        Err(e) => {
            c.push_de(&e, entry_span, &entry_name);
            return None;
        }
    };

    let errors_before = c.errors.len();
    let (entry_value, registration, options_span) =
        port_entry(&raw, port, defaults, entry, &entry_span, c)?;
    let service = build(registration, &entry_value, options_span, entry, c)?;
    let model = entry_value.model;
    if let Err(reason) = model.check(
        registration.name,
        service.needs(),
        entry_value.workers.unwrap_or(usize::MAX),
    ) {
        c.push(raw.model.span(), entry, reason);
    }
    (c.errors.len() == errors_before).then(|| PortPlan {
        entry: entry_value,
        service,
        line,
    })
}

/// The entry's keys, each checked (every one, so that one wrong key does not hide the next),
/// then what depends on the model: the typed entry, its service's registration, and where its
/// options are for the errors of building the service.
fn port_entry(
    raw: &RawPort,
    port: u16,
    defaults: &Defaults,
    entry: Option<&str>,
    entry_span: &Range<usize>,
    c: &mut Collector<'_>,
) -> Option<(PortEntry, &'static Registration, Range<usize>)> {
    let registration = registration(raw, entry, c);
    let model = model(raw, entry, c);
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
    let edge = edge::port(raw.edge(), &defaults.edge, entry, entry_span.clone(), c);
    let options = options(raw, entry, entry_span, c);
    let (registration, model, bind, (options, options_span)) =
        (registration?, model?, bind?, options?);
    if registration.name == EXEC_SERVICE {
        exec_keys(raw, entry, c);
        if model == Model::Prefork {
            c.push(
                raw.model.span(),
                entry,
                "exec runs its program once per connection, and a prefork worker serves \
                 connection after connection in one process: use model = \"process-per-client\" \
                 (a fork and an exec per connection, tcpserver's shape)"
                    .to_owned(),
            );
        }
    }

    // Then what depends on the model.
    let workers = workers(raw, model, entry, c)?;
    let max_connections_per_worker = per_worker(raw, model, entry, c)?;
    let max_connections_span = raw
        .max_connections
        .as_ref()
        .map_or(entry_span.clone(), Spanned::span);
    let max_connections = connections(
        model,
        max_connections,
        workers,
        max_connections_span,
        entry,
        c,
    )?;

    let entry_value = PortEntry {
        addr: SocketAddr::new(bind.unwrap_or(defaults.bind), port),
        service: registration.name.to_owned(),
        model,
        limits,
        max_connections,
        workers,
        max_connections_per_worker,
        max_connections_per_ip,
        options,
        base_dir: defaults.base_dir.clone(),
        edge,
    };
    Some((entry_value, registration, options_span))
}

impl RawPort {
    fn edge(&self) -> RawEdge<'_> {
        RawEdge {
            allow: self.allow.as_ref(),
            deny: self.deny.as_ref(),
            max_connection_rate_per_ip: self.max_connection_rate_per_ip.as_ref(),
            proxy_protocol: self.proxy_protocol.as_ref(),
            trusted_proxies: self.trusted_proxies.as_ref(),
            reuse_port: self.reuse_port.as_ref(),
        }
    }
}

/// `service`: a registered service's name.
fn registration(
    raw: &RawPort,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<&'static Registration> {
    let name = c.text(
        &raw.service,
        "service",
        "the name of a registered service",
        entry,
    )?;
    registry::find(name)
        .map_err(|reason| c.push(raw.service.span(), entry, reason))
        .ok()
}

/// `model`: a concurrency model's name.
fn model(raw: &RawPort, entry: Option<&str>, c: &mut Collector<'_>) -> Option<Model> {
    let name = c.text(
        &raw.model,
        "model",
        "the name of a concurrency model",
        entry,
    )?;
    name.parse::<Model>()
        .map_err(|reason| c.push(raw.model.span(), entry, reason))
        .ok()
}

/// `options`: the service's own table (empty when absent), with where it is for its errors.
fn options(
    raw: &RawPort,
    entry: Option<&str>,
    entry_span: &Range<usize>,
    c: &mut Collector<'_>,
) -> Option<(toml::Table, Range<usize>)> {
    let Some(value) = &raw.options else {
        return Some((toml::Table::new(), entry_span.clone()));
    };
    match value.get_ref() {
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
    }
}

/// `workers`: the size of the pool under a model that has one (checked, or the default),
/// `None` under the others, which refuse the key; `Err` (reported) when it is wrong.
fn workers(
    raw: &RawPort,
    model: Model,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Option<usize>> {
    match (&raw.workers, model.workers_bound()) {
        (Some(value), Some(bound)) => Some(Some(bounds::to_usize(c.number(
            Some(value),
            bound,
            entry,
        )?))),
        (None, Some(_)) => Some(Some(Model::default_workers())),
        (None, None) => Some(None),
        (Some(value), None) => {
            c.push(
                value.span(),
                entry,
                format!(
                    "workers sizes the fixed pool of a thread-pool or prefork port; {model} has \
                     none (it {}); remove the key, or use model = \"thread-pool\" or \"prefork\"",
                    model.how()
                ),
            );
            None
        }
    }
}

/// `max_connections_per_worker`: only a prefork port recycles its workers (a thread of a
/// `thread-pool` leaks nothing a fresh one would not; a process may, which is why Apache and
/// gunicorn recycle theirs).
fn per_worker(
    raw: &RawPort,
    model: Model,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Option<u64>> {
    match (&raw.max_connections_per_worker, model) {
        (None, _) => Some(None),
        (Some(value), Model::Prefork) => Some(Some(c.number(
            Some(value),
            &bounds::CONNECTIONS_PER_WORKER,
            entry,
        )?)),
        (Some(value), model) => {
            c.push(
                value.span(),
                entry,
                format!(
                    "max_connections_per_worker recycles the processes of a prefork port; {model} \
                     has none (it {}); remove the key, or use model = \"prefork\"",
                    model.how()
                ),
            );
            None
        }
    }
}

/// The connections served at once: `max_connections` (already checked against its bound)
/// where the model lets the entry choose, else the model's own number.
fn connections(
    model: Model,
    max_connections: Option<usize>,
    workers: Option<usize>,
    span: Range<usize>,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<usize> {
    match (model, max_connections) {
        (Model::Sequential, Some(n)) if n != 1 => {
            c.push(
                span,
                entry,
                format!("max_connections = {n}, but sequential serves exactly one connection at a time; remove the key or set it to 1"),
            );
            None
        }
        (Model::ThreadPool | Model::Prefork, Some(n)) => {
            c.push(
                span,
                entry,
                format!(
                    "max_connections = {n}, but a {model} port serves exactly `workers` \
                     connections at once, one per {} (the rest wait in the backlog); \
                     remove the key and set workers = {n} instead",
                    if model == Model::Prefork {
                        "process"
                    } else {
                        "thread"
                    }
                ),
            );
            None
        }
        (_, Some(n)) => Some(n),
        (model, None) => Some(model.default_max_connections(workers.unwrap_or(1))),
    }
}

/// The service, built from the entry's options; their errors are the service's words.
fn build(
    registration: &Registration,
    entry_value: &PortEntry,
    options_span: Range<usize>,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Arc<dyn Service>> {
    (registration.build)(&entry_value.options())
        .map_err(|reason| {
            c.push(
                options_span,
                entry,
                format!("invalid options for {}: {reason}", registration.name),
            );
        })
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{errors, parse};

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
            Some(std::time::Duration::from_secs(7))
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
                ":4:19: [ports.7]: max_connections = 5, but a thread-pool port serves \
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
                     thread-pool or prefork port; {model} has none ("
                )),
                "{errs:#?}"
            );
        }
    }

    #[test]
    fn a_prefork_port_is_sized_in_processes_and_may_recycle_them() {
        let config = parse(
            "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"prefork\"\nworkers = 3\n\
             max_connections_per_worker = 100\n",
        )
        .unwrap();
        let seven = &config.ports[0].entry;
        assert_eq!(
            (
                seven.workers,
                seven.max_connections,
                seven.max_connections_per_worker
            ),
            (Some(3), 3, Some(100))
        );
        let errs = errors(
            "[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"prefork\"\nworkers = 257\n\
             [ports.8]\nservice = \"palindrome-v1\"\nmodel = \"prefork\"\nmax_connections = 4\n\
             [ports.9]\nservice = \"palindrome-v1\"\nmodel = \"async\"\nmax_connections_per_worker = 4\n\
             [ports.10]\nservice = \"palindrome-v1\"\nmodel = \"prefork\"\nmax_connections_per_worker = 0\n",
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].ends_with(
                ":4:11: [ports.7]: workers must be a whole number of processes from 1 to 256, \
                 not 257"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[1].contains(
                ":8:19: [ports.8]: max_connections = 4, but a prefork port serves \
                 exactly `workers` connections at once, one per process"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[2].contains(
                ":12:30: [ports.9]: max_connections_per_worker recycles the \
                 processes of a prefork port; async has none"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[3].contains(
                ":16:30: [ports.10]: max_connections_per_worker must be a whole \
                 number of connections from 1 to 1000000000, not 0"
            ),
            "{errs:#?}"
        );
    }

    #[test]
    fn exec_is_refused_under_prefork() {
        let errs = errors(
            "[ports.7]\nservice = \"exec\"\nmodel = \"prefork\"\noptions = { command = [\"/bin/cat\"] }\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains(":3:9: [ports.7]: exec runs its program once per connection")),
            "{errs:#?}"
        );
    }

    #[test]
    fn an_event_loop_defaults_to_ten_thousand_connections() {
        let config =
            parse("[ports.7]\nservice = \"palindrome-v1\"\nmodel = \"event-loop\"\n").unwrap();
        assert_eq!(config.ports[0].entry.max_connections, 10_000);
        assert_eq!(config.ports[0].entry.workers, None);
    }
}
