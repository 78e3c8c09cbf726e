//! The errors of a config file, each at its file, line and column, and the [`Collector`] that
//! gathers them while the file is checked: every problem, not just the first.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;

use toml::Spanned;

use super::bounds::{self, Bound};

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

/// The error of bytes that are not UTF-8, at the first of them.
pub(super) fn not_utf8(bytes: &[u8], error: std::str::Utf8Error, path: &Path) -> ConfigErrors {
    let valid = std::str::from_utf8(&bytes[..error.valid_up_to()]).expect("valid up to here");
    let (line, column) = line_column(valid, valid.len());
    ConfigErrors(vec![ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        entry: None,
        reason: format!(
            "byte 0x{:02x} is not UTF-8; the file must be UTF-8 text",
            bytes[error.valid_up_to()]
        ),
    }])
}

/// Collects errors with positions computed from byte spans of one text.
pub(super) struct Collector<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Collector<'a> {
        Collector {
            path,
            text,
            errors: Vec::new(),
        }
    }

    pub fn push(&mut self, span: Range<usize>, entry: Option<&str>, reason: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            entry: entry.map(str::to_owned),
            reason: reason.into(),
        });
    }

    /// The line a byte offset of the text is on.
    pub fn line(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    /// A serde error from inside a table: its own span when it has one, else the table's.
    pub fn push_de(&mut self, error: &toml::de::Error, fallback: Range<usize>, entry: &str) {
        let span = error.span().unwrap_or(fallback);
        self.push(span, Some(entry), error.message());
    }

    /// The parser's syntax errors. Where a table is written twice, the parser also calls each
    /// key of its second copy a duplicate, which says nothing the table's own error does not:
    /// one error says where the second copy starts.
    pub fn push_syntax(&mut self, syntax: &[toml::de::Error]) {
        let text = self.text;
        let mut second_copy: Option<usize> = None;
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
            let line = text[line_start..].lines().next().unwrap_or_default().trim();
            if e.message() == "duplicate key" {
                if line.starts_with('[') {
                    let header = line.split('#').next().unwrap_or(line).trim();
                    self.push(
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
            self.push(span, None, e.message());
        }
    }

    /// A whole number within its [`Bound`], or `None` (with the error collected) when the
    /// value is of another type or out of range.
    pub fn number(
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
    pub fn text<'v>(
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

    /// `bind`: `Some(None)` when the key is absent, `None` (reported) when it is wrong.
    pub fn ip(
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

    /// The errors in file order, or `Ok` when there are none.
    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(self.errors))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::errors;

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\nцd", 5), (2, 2));
        assert_eq!(line_column("", 0), (1, 1));
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
}
