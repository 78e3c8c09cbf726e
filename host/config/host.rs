//! The `[host]` table: the host's own settings (the drain's grace, the admin endpoint) and the
//! defaults every port inherits unless it says otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use porthost_services::Limits;
use serde::Deserialize;
use toml::Spanned;

use super::bounds;
use super::diagnostics::Collector;
use super::edge::{self, HostEdge, RawEdge};

/// The `[host]` table. Values are kept as written, with their place in the file, and checked
/// in [`Defaults::check`], so that a wrong type reads like any other mistake.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
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

/// Values from `[host]` that every port inherits unless it says otherwise, and the host's own.
pub(super) struct Defaults {
    pub bind: IpAddr,
    pub edge: HostEdge,
    pub shutdown_grace: Duration,
    pub admin: Option<AdminPlan>,
    pub limits: Limits,
    pub max_connections_per_ip: Option<usize>,
    /// Where relative paths in a port's `options` are resolved: the config file's directory.
    pub base_dir: PathBuf,
}

impl Defaults {
    /// The `[host]` table's values, each checked, the errors collected; a wrong value leaves
    /// its default.
    pub fn check(host: &RawHost, c: &mut Collector<'_>) -> Defaults {
        let entry = Some("[host]");
        let bind = c
            .ip(host.bind.as_ref(), entry)
            .flatten()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let limits = limits(
            host.max_line_bytes.as_ref(),
            host.idle_timeout_secs.as_ref(),
            Limits::default(),
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
            edge: edge::host(host.edge(), c),
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
}

impl RawHost {
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
pub(super) fn limits(
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
