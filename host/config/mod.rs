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
//!
//! Layout: `host.rs` checks the `[host]` table (the host's settings and every port's
//! defaults), `plan.rs` each `[ports.N]` table, `edge.rs` the keys about who may connect that
//! both take, `model.rs` the concurrency models' names and needs, `diagnostics.rs` the errors
//! with their places, and [`bounds`] every number's range.

pub mod bounds;
mod diagnostics;
mod edge;
mod host;
mod model;
mod plan;

pub use diagnostics::{ConfigError, ConfigErrors};
pub use edge::Edge;
pub use host::{AdminPlan, MIN_TOKEN_CHARS};
pub use model::Model;
pub use plan::{EXEC_SERVICE, PortEntry, PortPlan};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use diagnostics::Collector;
use host::{Defaults, RawHost};

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
        match std::str::from_utf8(bytes) {
            Ok(text) => Config::parse(text, path),
            Err(error) => Err(diagnostics::not_utf8(bytes, error, path)),
        }
    }

    /// Validates config text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            c.push_syntax(&syntax);
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
        let defaults = Defaults::check(&host, &mut c);

        let mut ports = match root.remove("ports") {
            None => {
                c.push(root_span, None, "no [ports.N] entries: nothing to serve");
                Vec::new()
            }
            Some(value) => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Table(table) => plan::ports(table, &defaults, &mut c),
                    other => {
                        c.push(
                            span,
                            None,
                            format!(
                                "`ports` must be a table of [ports.N] entries, not {}",
                                other.type_str()
                            ),
                        );
                        Vec::new()
                    }
                }
            }
        };
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

        c.finish()?;
        ports.sort_by_key(|p: &PortPlan| p.entry.port());
        Ok(Config {
            path: path.to_path_buf(),
            shutdown_grace: defaults.shutdown_grace,
            admin: defaults.admin,
            ports,
        })
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

    pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("conf/services.toml"))
    }

    pub(super) fn errors(text: &str) -> Vec<String> {
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
