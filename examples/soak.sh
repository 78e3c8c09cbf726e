#!/usr/bin/env bash
# The bounded soak: mixed load and garbage at every port of config/services.toml (ports
# 7001-7022 on loopback must be free; every model the config has no port for gets a
# palindrome-v3 port of the soak's own on a free one), a reload with a changed config every
# minute, for 10 minutes; then the report (requests, errors, RSS, descriptors, zombies). Not
# part of the test suite. Extra arguments go to `porthost soak` (e.g. --minutes 2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -- soak --config config/services.toml --minutes 10 --reload-every 60 "$@"
