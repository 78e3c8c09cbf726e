//! The contract between the host and a service: the [`Service`] trait (and its blocking form,
//! [`BlockingService`]), what a service [`Needs`] from the host, and the [`Registration`] that
//! puts it in the registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::{BlockingConn, Conn};

/// One service instance serves every connection of the port it was built for.
///
/// The host decides *who* serves a connection (the port's one thread, a thread of its own, a
/// child process or a tokio task); the service only sees one connection at a time and must not
/// assume anything about the others. That is what lets one service run under all four models.
///
/// A service comes in up to two forms. [`Service::serve`], the async form, is required: the
/// `async` model runs it, and every model can. [`Service::blocking`] is the same protocol
/// written with blocking I/O: `sequential`, `thread-per-client` and `process-per-client` run
/// it when it is there, like the lecture's `socketserver` servers, and otherwise run the async
/// form on a small runtime of the connection's own.
///
/// A service is also [`std::any::Any`], so that the host can recognise the one service it
/// adapts to each model itself: `exec`, a program that takes the raw socket.
#[async_trait]
pub trait Service: std::any::Any + Send + Sync {
    /// Serves one connection until the client leaves, the service ends the session, or a
    /// limit in `conn.limits` is hit. An error ends only this connection.
    ///
    /// The connection is this future's and must not outlive it (no task spawned with its
    /// socket): the host ends a connection at the end of a drain by writing the reason to its
    /// socket, then dropping this future.
    async fn serve(&self, conn: Conn) -> std::io::Result<()>;

    /// The blocking form of this service, if it has one.
    fn blocking(&self) -> Option<&dyn BlockingService> {
        None
    }

    /// What this instance, as configured by its options, needs from the host. The host rejects
    /// models that cannot give it, before binding any port.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// True when the port should stop accepting once its first client has left, the way the
    /// lecture's first server exits after one client.
    fn single_session(&self) -> bool {
        false
    }

    /// Figures the service keeps about itself (a game's players, say), for the host's metrics
    /// and live view. Read about once a second and at every scrape: keep it cheap.
    fn stats(&self) -> Vec<Stat> {
        Vec::new()
    }
}

/// One figure a service reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Part of the metric's name (`porthost_service_<name>`): lowercase and underscores. A
    /// counter's name does not end in `_total`; the exposition adds that.
    pub name: &'static str,
    pub help: &'static str,
    /// A count that only grows (games finished), or else a level (players now).
    pub counter: bool,
    pub value: u64,
}

/// A service written with blocking I/O: it serves one connection on the calling thread, which
/// is the connection's own (or the sequential port's), with plain `read(2)` and `write(2)`.
pub trait BlockingService: Send + Sync {
    /// Serves one connection, like [`Service::serve`]. Reads must honour the idle timeout
    /// (see [`crate::DeadlineReader`]); writes already time out after it.
    fn serve_blocking(&self, conn: BlockingConn) -> std::io::Result<()>;
}

/// Requirements a service places on the concurrency model that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Clients of one port see each other's state (players of one game): they must be served
    /// by one process, so `process-per-client` cannot run this service.
    pub shared_state: bool,
    /// How many clients must be connected at once for any of them to make progress. More than
    /// one rules out `sequential`, which serves a single client at a time.
    pub clients_at_once: usize,
    /// The options under which one client at a time is enough (`options = { players = 1 }`),
    /// for the error that refuses `sequential`: what to change besides the model.
    pub alone_with: Option<&'static str>,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            shared_state: false,
            clients_at_once: 1,
            alone_with: None,
        }
    }
}

/// One option of a service, as `porthost services` lists it.
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    pub name: &'static str,
    /// The value it has when left out, as TOML (`false`, `2`), or how it is decided.
    pub default: &'static str,
    pub meaning: &'static str,
}

/// An entry in the service registry, submitted by each service module with
/// `inventory::submit!`.
///
/// ```
/// use std::sync::Arc;
/// use porthost_services::{Options, Registration, Service};
/// # struct Echo;
/// # #[async_trait::async_trait]
/// # impl Service for Echo {
/// #     async fn serve(&self, _conn: porthost_services::Conn) -> std::io::Result<()> { Ok(()) }
/// # }
/// fn build(_options: &Options) -> Result<Arc<dyn Service>, String> {
///     Ok(Arc::new(Echo))
/// }
///
/// porthost_services::register!(Registration {
///     name: "echo",
///     summary: "sends every line back",
///     options: &[],
///     build,
/// });
/// ```
#[derive(Debug)]
pub struct Registration {
    /// The name `services.toml` uses in `service = "..."`.
    pub name: &'static str,
    /// One line for `porthost services`.
    pub summary: &'static str,
    /// The keys of its `options = { ... }` table, for `porthost services`.
    pub options: &'static [OptionDoc],
    /// Builds the instance for one port from that port's `options` table. The error is shown
    /// to the user next to the config line, so it should say what is wrong and what is allowed.
    pub build: fn(&Options) -> Result<Arc<dyn Service>, String>,
}

inventory::collect!(Registration);

/// Where a service was registered: [`register!`](crate::register) records it next to the
/// [`Registration`], so that two services of one name are refused with both places named.
#[derive(Debug)]
pub struct Site {
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(Site);

/// Registers a service: `porthost_services::register!(Registration { ... });`. It is
/// `inventory::submit!` plus the file and line of the registration, which the error for a
/// name registered twice shows.
#[macro_export]
macro_rules! register {
    ($registration:expr) => {
        $crate::inventory::submit! { $registration }
        $crate::inventory::submit! {
            $crate::Site { name: $registration.name, file: file!(), line: line!() }
        }
    };
}

/// Every registered service, sorted by name (inventory itself gives no order).
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// Why `name` is registered more than once, naming each place, or `None` if it is not.
/// `inventory` keeps both, and a lookup would take whichever it met first.
pub fn duplicate(name: &str) -> Option<String> {
    let count = inventory::iter::<Registration>
        .into_iter()
        .filter(|r| r.name == name)
        .count();
    if count < 2 {
        return None;
    }
    let mut places: Vec<String> = inventory::iter::<Site>
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| format!("{}:{}", s.file, s.line))
        .collect();
    places.sort();
    let unknown = count.saturating_sub(places.len());
    if unknown > 0 {
        places.push(format!(
            "{unknown} more with inventory::submit! (use porthost_services::register! to see where)"
        ));
    }
    Some(format!(
        "service name {name:?} is registered {count} times: {}; give each service a name of its own",
        places.join(", ")
    ))
}

/// Every name registered more than once, explained by [`duplicate`].
pub fn duplicates() -> Vec<String> {
    let mut names: Vec<&str> = registered().iter().map(|r| r.name).collect();
    names.dedup();
    names.into_iter().filter_map(duplicate).collect()
}

/// Looks a service up by its registered name.
pub fn find(name: &str) -> Option<&'static Registration> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| r.name == name)
}

/// The `options` table of one port, plus the directory of the config file so that services can
/// resolve relative paths (a word list, say) the way the user reads them.
#[derive(Debug, Clone, Default)]
pub struct Options {
    table: toml::Table,
    base_dir: PathBuf,
}

impl Options {
    pub fn new(table: toml::Table, base_dir: impl Into<PathBuf>) -> Self {
        Options {
            table,
            base_dir: base_dir.into(),
        }
    }

    /// Deserializes the table into the service's own options type. Use
    /// `#[serde(deny_unknown_fields)]` on it so typos are reported, not ignored.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        toml::Value::Table(self.table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())
    }

    /// Where relative paths in the options are resolved from.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Reads the options one by one, collecting every problem rather than stopping at the
    /// first as serde does; see [`OptionReader`].
    pub fn reader(&self) -> OptionReader<'_> {
        OptionReader {
            table: &self.table,
            known: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Reads a service's options by hand, so that every mistake in them is reported at once:
/// ask for each option, then [`OptionReader::finish`] also reports the keys nobody asked for.
#[derive(Debug)]
pub struct OptionReader<'a> {
    table: &'a toml::Table,
    known: Vec<&'static str>,
    errors: Vec<String>,
}

impl OptionReader<'_> {
    /// A `true`/`false` option.
    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        self.known.push(key);
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                let got = match other {
                    toml::Value::String(s) => format!("the string {s:?}"),
                    other => other.to_string(),
                };
                self.errors
                    .push(format!("{key} must be true or false, not {got}"));
                default
            }
        }
    }

    /// A whole number from 0 to `max`; `unit` names what it counts, for the message.
    pub fn number(&mut self, key: &'static str, default: u64, max: u64, unit: &str) -> u64 {
        self.known.push(key);
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Integer(n)) if (0..=max).contains(&n.unsigned_abs()) && *n >= 0 => {
                n.unsigned_abs()
            }
            Some(other) => {
                let got = match other {
                    toml::Value::String(s) => format!("the string {s:?}"),
                    other => other.to_string(),
                };
                self.errors.push(format!(
                    "{key} must be a whole number of {unit} from 0 to {max}, not {got}"
                ));
                default
            }
        }
    }

    /// Every problem found, joined with "; ", or nothing.
    pub fn finish(mut self) -> Result<(), String> {
        let expected: Vec<String> = self.known.iter().map(|k| format!("`{k}`")).collect();
        let expected = match expected.as_slice() {
            [] => "no options".to_owned(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        };
        let unknown: Vec<String> = self
            .table
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .map(|k| format!("unknown field `{k}`, expected {expected}"))
            .collect();
        self.errors.splice(0..0, unknown);
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors.join("; "))
        }
    }
}
