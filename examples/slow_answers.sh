#!/usr/bin/env bash
# The lesson of slow answers, measured: 50 clients connect at once and each sends one line to
# palindrome-v3 under every model, first with `sleep_ms = 100` per line (a wait: a blocking
# sleep on a thread or process, a timer under async and event-loop), then with
# `busy_us = 20000` (CPU spun on the serving thread). It prints, per model, the median answer
# and the last one, each from the moment all are connected, the wait in the backlog included,
# and the CPU per request: medians of 7 runs. Extra arguments go to `porthost bench`
# (e.g. --burst 100 --sleep-ms 50 --svg slow.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -- bench \
  --models sequential,thread-per-client,thread-pool,async,event-loop,process-per-client \
  --workloads sleep,busy --runs 7 "$@"
