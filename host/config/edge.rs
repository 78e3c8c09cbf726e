//! The keys about who may connect to a port and how clients reach it: `allow` and `deny`,
//! `max_connection_rate_per_ip`, `proxy_protocol` with `trusted_proxies`, and `reuse_port`.
//! Each may be in `[host]`, as every port's default, and in a port. `allow`/`deny` combine
//! (see [`crate::access`]); for the others, a port's value replaces the host's.

use std::ops::Range;

use toml::Spanned;

use super::bounds;
use super::diagnostics::Collector;
use crate::access::{Access, AccessLists, Networks, RuleError};
use crate::rate_limit::Rate;

/// The raw keys, as either table has them.
pub(super) struct RawEdge<'a> {
    pub allow: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub max_connection_rate_per_ip: Option<&'a Spanned<toml::Value>>,
    pub proxy_protocol: Option<&'a Spanned<toml::Value>>,
    pub trusted_proxies: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub reuse_port: Option<&'a Spanned<toml::Value>>,
}

/// What a port checks and how it listens, host and port levels combined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edge {
    pub access: Access,
    /// New connections per second per address, with a burst.
    pub rate: Option<Rate>,
    /// With `proxy_protocol = true`: the proxies whose connections start with a PROXY header
    /// naming the real client. Nobody else may connect.
    pub trusted_proxies: Option<Networks>,
    /// `SO_REUSEPORT`: a second host may bind the same port (a hand-over without refusals).
    pub reuse_port: bool,
}

/// `[host]`'s values, the defaults of every port.
#[derive(Debug, Default)]
pub(super) struct HostEdge {
    lists: AccessLists,
    rate: Option<Rate>,
    proxy_protocol: Option<bool>,
    trusted_proxies: Option<Networks>,
    reuse_port: Option<bool>,
}

/// The most new connections per second per address accepted as a rate.
const MAX_RATE: f64 = 1_000_000.0;

const RATE_FORMS: &str =
    "a number of new connections per second per address, or { per_second = 5, burst = 20 }";

pub(super) fn host(raw: RawEdge<'_>, c: &mut Collector<'_>) -> HostEdge {
    let entry = Some("[host]");
    HostEdge {
        lists: lists(&raw, entry, c),
        rate: raw
            .max_connection_rate_per_ip
            .and_then(|value| rate(value, entry, c)),
        proxy_protocol: raw
            .proxy_protocol
            .and_then(|value| flag(value, "proxy_protocol", entry, c)),
        trusted_proxies: raw
            .trusted_proxies
            .and_then(|value| networks(value, entry, c)),
        reuse_port: raw
            .reuse_port
            .and_then(|value| flag(value, "reuse_port", entry, c)),
    }
}

/// A port's keys over the host's.
pub(super) fn port(
    raw: RawEdge<'_>,
    host: &HostEdge,
    entry: Option<&str>,
    entry_span: Range<usize>,
    c: &mut Collector<'_>,
) -> Edge {
    let port_lists = lists(&raw, entry, c);
    let rate = match raw.max_connection_rate_per_ip {
        Some(value) => rate(value, entry, c),
        None => host.rate,
    };
    let proxy_protocol = match raw.proxy_protocol {
        Some(value) => flag(value, "proxy_protocol", entry, c),
        None => host.proxy_protocol,
    }
    .unwrap_or(false);
    let trusted = match raw.trusted_proxies {
        Some(value) => networks(value, entry, c),
        None => host.trusted_proxies.clone(),
    };
    let trusted_proxies = match (proxy_protocol, trusted) {
        (true, Some(trusted)) => Some(trusted),
        (true, None) => {
            let span = raw.proxy_protocol.map_or(entry_span, Spanned::span);
            c.push(
                span,
                entry,
                "proxy_protocol = true needs trusted_proxies = [\"...\"]: the proxies allowed to \
                 say who the client is (anyone else could claim any address)",
            );
            None
        }
        (false, Some(_)) => {
            if let Some(value) = raw.trusted_proxies {
                c.push(
                    value.span(),
                    entry,
                    "trusted_proxies has no effect without proxy_protocol = true",
                );
            }
            None
        }
        (false, None) => None,
    };
    let reuse_port = match raw.reuse_port {
        Some(value) => flag(value, "reuse_port", entry, c),
        None => host.reuse_port,
    }
    .unwrap_or(false);
    Edge {
        access: Access::new(&host.lists, &port_lists),
        rate,
        trusted_proxies,
        reuse_port,
    }
}

/// `allow` and `deny`, every bad entry reported at its own line.
fn lists(raw: &RawEdge<'_>, entry: Option<&str>, c: &mut Collector<'_>) -> AccessLists {
    let texts = |list: Option<&Spanned<Vec<Spanned<String>>>>| {
        list.map(|l| {
            l.get_ref()
                .iter()
                .map(|e| e.get_ref().clone())
                .collect::<Vec<_>>()
        })
    };
    let (allow, deny) = (texts(raw.allow), texts(raw.deny));
    match AccessLists::parse(allow.as_deref(), deny.as_deref()) {
        Ok(lists) => lists,
        Err(errors) => {
            for error in errors {
                let list = match error.list {
                    crate::access::List::Allow => raw.allow,
                    crate::access::List::Deny => raw.deny,
                };
                push_rule(list, &error, entry, c);
            }
            AccessLists::default()
        }
    }
}

fn networks(
    value: &Spanned<Vec<Spanned<String>>>,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<Networks> {
    let texts: Vec<&str> = value
        .get_ref()
        .iter()
        .map(|e| e.get_ref().as_str())
        .collect();
    if texts.is_empty() {
        c.push(
            value.span(),
            entry,
            "trusted_proxies = [] trusts no proxy: name the proxies' addresses or networks",
        );
        return None;
    }
    match Networks::parse(&texts) {
        Ok(networks) => Some(networks),
        Err(errors) => {
            for error in errors {
                let message = error.message.replace("allow", "trusted_proxies");
                let error = RuleError { message, ..error };
                push_rule(Some(value), &error, entry, c);
            }
            None
        }
    }
}

/// A rule's error at its entry's place, or at the list's when it is about the whole list.
fn push_rule(
    list: Option<&Spanned<Vec<Spanned<String>>>>,
    error: &RuleError,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) {
    let span = list.map_or(0..0, |l| {
        error
            .index
            .and_then(|i| l.get_ref().get(i))
            .map_or_else(|| l.span(), Spanned::span)
    });
    c.push(span, entry, error.message.clone());
}

fn flag(
    value: &Spanned<toml::Value>,
    key: &str,
    entry: Option<&str>,
    c: &mut Collector<'_>,
) -> Option<bool> {
    match value.get_ref() {
        toml::Value::Boolean(b) => Some(*b),
        other => {
            c.push(
                value.span(),
                entry,
                format!(
                    "{key} must be true or false, not {}",
                    bounds::describe(other)
                ),
            );
            None
        }
    }
}

/// `max_connection_rate_per_ip`: `5`, `0.5`, or `{ per_second = 5, burst = 20 }`. Without a
/// burst, one second's worth (at least one) may come at once.
fn rate(value: &Spanned<toml::Value>, entry: Option<&str>, c: &mut Collector<'_>) -> Option<Rate> {
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::Float(x) => Some(*x),
        _ => None,
    };
    let (per_second, burst) = match value.get_ref() {
        toml::Value::Table(table) => {
            if let Some(key) = table
                .keys()
                .find(|k| !["per_second", "burst"].contains(&k.as_str()))
            {
                c.push(
                    value.span(),
                    entry,
                    format!("max_connection_rate_per_ip has no key `{key}`; it is {RATE_FORMS}"),
                );
                return None;
            }
            let Some(per_second) = table.get("per_second").and_then(number) else {
                c.push(
                    value.span(),
                    entry,
                    format!("max_connection_rate_per_ip needs per_second: it is {RATE_FORMS}"),
                );
                return None;
            };
            let burst = match table.get("burst") {
                None => None,
                Some(toml::Value::Integer(n)) => Some(*n),
                Some(other) => {
                    c.push(
                        value.span(),
                        entry,
                        format!(
                            "max_connection_rate_per_ip's burst must be a whole number of \
                             connections from 1 to 1000000, not {}",
                            bounds::describe(other)
                        ),
                    );
                    return None;
                }
            };
            (per_second, burst)
        }
        other => match number(other) {
            Some(per_second) => (per_second, None),
            None => {
                c.push(
                    value.span(),
                    entry,
                    format!(
                        "max_connection_rate_per_ip must be {RATE_FORMS}, not {}",
                        bounds::describe(other)
                    ),
                );
                return None;
            }
        },
    };
    if !(per_second > 0.0 && per_second <= MAX_RATE) {
        c.push(
            value.span(),
            entry,
            format!(
                "max_connection_rate_per_ip must be more than 0 and at most {MAX_RATE} \
                 connections per second, not {per_second}"
            ),
        );
        return None;
    }
    let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as i64);
    let Some(burst) = u32::try_from(burst)
        .ok()
        .filter(|b| (1..=1_000_000).contains(b))
    else {
        c.push(
            value.span(),
            entry,
            format!(
                "max_connection_rate_per_ip's burst must be a whole number of connections from \
                 1 to 1000000, not {burst}"
            ),
        );
        return None;
    };
    Rate::new(per_second, burst)
        .map_err(|reason| c.push(value.span(), entry, reason))
        .ok()
}
