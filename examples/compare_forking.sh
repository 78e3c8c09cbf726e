#!/usr/bin/env bash
# One command for the process-per-client target: porthost's process-per-client model against
# the lecture's Python socketserver.ForkingTCPServer (examples/python/forking_server.py), on the
# churn workload (connect, one line, disconnect), medians of 3 runs, same machine, same run.
# Needs python3. Extra arguments go to `porthost bench` (e.g. --churn 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -- bench --models process-per-client --no-baselines --python \
  --workloads churn --runs 3 "$@"
