//! Every number a config can hold, at its extremes: refused with its line and column, or, when
//! accepted, a host started with it serves a client under every model that allows it. (A value
//! the check accepted once overflowed a deadline on every connection and killed the port.)

use proptest::prelude::*;

use crate::support::{Client, MODELS, TestHost, entry};

/// Values around every bound in the config, and the integer extremes. Each is TOML text.
const EXTREMES: [&str; 22] = [
    "0",
    "1",
    "2",
    "16",
    "17",
    "3600",
    "3601",
    "86400",
    "86401",
    "604800",
    "604801",
    "1000000",
    "1000001",
    "16777216",
    "16777217",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "-1",
    "-9223372036854775808",
    "1.5",
];

const HOST_KEYS: [&str; 4] = [
    "idle_timeout_secs",
    "shutdown_grace_secs",
    "max_line_bytes",
    "max_connections_per_ip",
];

const PORT_KEYS: [&str; 4] = [
    "max_connections",
    "max_connections_per_ip",
    "max_line_bytes",
    "idle_timeout_secs",
];

/// Starts the config; a refusal must point at a place in the file, an acceptance must serve.
fn refused_or_served(host_table: &str, entries: &[crate::support::Entry<'_>]) {
    match TestHost::try_start(host_table, entries) {
        Err(errors) => {
            // A refusal with no lines would be a start that failed without saying why.
            assert!(
                errors.lines().next().is_some(),
                "{host_table:?}: refused with no error line"
            );
            for line in errors.lines() {
                let (_, place) = line
                    .split_once("services.toml:")
                    .unwrap_or_else(|| panic!("no file in {line:?}"));
                let mut numbers = place.split(':').take(2).map(str::parse::<usize>);
                assert!(
                    matches!((numbers.next(), numbers.next()), (Some(Ok(l)), Some(Ok(c))) if l >= 1 && c >= 1),
                    "no line and column in {line:?}"
                );
            }
        }
        Ok(host) => {
            for (i, e) in entries.iter().enumerate() {
                let mut client = Client::connect(host.addr(i));
                if e.service == "word-guess" {
                    assert_eq!(
                        client.line().as_deref(),
                        Some("Welcome to word-guess! Send your name."),
                        "{host_table:?} {e:?}"
                    );
                } else {
                    // One byte: within any accepted line limit.
                    assert_eq!(client.ask("a"), "1", "{host_table:?} {e:?}");
                }
            }
        }
    }
}

#[test]
fn extreme_host_numbers_are_refused_with_a_line_or_served_by_every_model() {
    let entries: Vec<_> = MODELS
        .iter()
        .map(|m| entry("palindrome-v3", m, ""))
        .collect();
    for key in HOST_KEYS {
        for value in EXTREMES {
            refused_or_served(&format!("{key} = {value}"), &entries);
        }
    }
}

#[test]
fn extreme_port_numbers_are_refused_with_a_line_or_served_by_their_model() {
    for key in PORT_KEYS {
        for value in EXTREMES {
            let line = format!("{key} = {value}");
            for model in MODELS {
                refused_or_served("", &[entry("palindrome-v3", model, &line)]);
            }
        }
    }
}

#[test]
fn extreme_game_options_are_refused_with_a_line_or_served() {
    for key in ["players", "turn_timeout_secs"] {
        for value in EXTREMES {
            let options = format!("options = {{ {key} = {value} }}");
            for model in ["thread-per-client", "async", "sequential"] {
                refused_or_served("", &[entry("word-guess", model, &options)]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any integer at all, for any numeric key of a port.
    #[test]
    fn any_integer_in_any_numeric_key_is_refused_with_a_line_or_served(
        key in prop::sample::select(PORT_KEYS.to_vec()),
        value in any::<i64>(),
        model in prop::sample::select(MODELS.to_vec()),
    ) {
        refused_or_served("", &[entry("palindrome-v3", model, &format!("{key} = {value}"))]);
    }
}
