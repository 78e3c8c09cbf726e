#!/usr/bin/env bash
# porthost's process-per-client model against the classic forking servers, on the churn workload
# (connect, one line, disconnect: what a process per connection costs), all in the same run,
# medians of 5 runs:
#   baseline-fork    a hand-written fork() per connection, blocking I/O in the child
#                    (host/bench/baseline.rs)
#   tcpserver-exec   the inetd way: tcpserver (Debian's ucspi-tcp) forks and execs a small C
#                    palindrome program per connection (host/bench/palindrome.c)
#   python-forking   the lecture's socketserver.ForkingTCPServer (examples/python/forking_server.py)
# Needs tcpserver (apt-get install ucspi-tcp), a C compiler and python3; porthost bench says
# which is missing. Extra arguments go to `porthost bench` (e.g. --churn 5000 --runs 7).
set -euo pipefail
cd "$(dirname "$0")/.."
json=$(mktemp --suffix=.json)
trap 'rm -f "$json"' EXIT
cargo run --release -- bench --models process-per-client --tcpserver --python \
  --workloads churn --runs 5 --json "$json" "$@"
# The ratios, each the median of the ratios within one run (the servers ran one after another).
python3 - "$json" <<'EOF'
import json, statistics, sys

entries = json.load(open(sys.argv[1]))["entries"]
runs = {e["subject"]: [r["metrics"]["conn_per_s"] for r in e["per_run"]] for e in entries}
ours = runs["process-per-client"]
print()
for peer in ("tcpserver-exec", "python-forking", "baseline-fork"):
    if peer in runs:
        ratio = statistics.median(o / t for o, t in zip(ours, runs[peer]))
        print(f"process-per-client churn: {ratio:.2f}x {peer}")
EOF
