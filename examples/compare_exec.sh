#!/usr/bin/env bash
# porthost's `exec` service under process-per-client against tcpserver (Debian's ucspi-tcp)
# running the same small C program (host/bench/palindrome.c) per connection: the churn workload
# (connect, one line, its answer, disconnect) of `porthost bench`, against both servers started
# here, unpinned (as users run them), 5 runs, each server started afresh per run. Reported side by side,
# medians of the 5 runs: connections/s, and CPU per connection of each server's whole process
# tree (utime + stime of every process under it, and cutime + cstime of the children they
# reaped: the programs), from /proc/<pid>/stat before and after each run.
# Needs a release build (cargo build --release), tcpserver (apt-get install ucspi-tcp) and cc.
# Usage: examples/compare_exec.sh [CONNECTIONS_PER_RUN (2000)] [RUNS (5)] [CLIENTS_AT_ONCE]
set -euo pipefail
cd "$(dirname "$0")/.."
churn=${1:-2000}
runs=${2:-5}
porthost=target/release/porthost
[ -x "$porthost" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v tcpserver >/dev/null || { echo "needs tcpserver: apt-get install ucspi-tcp" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -o "$work/palindrome" host/bench/palindrome.c

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU seconds of a process tree: every live process under $1 (and $1), each with the CPU of the
# children it has reaped.
tree_cpu() {
  python3 - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1])
tick = os.sysconf("SC_CLK_TCK")
stats = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    fields = text[text.rindex(")") + 2:].split()
    # fields[1] is the parent (stat field 4); 11..14 are utime, stime, cutime, cstime.
    stats[int(pid)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
tree, todo = set(), [root]
while todo:
    pid = todo.pop()
    tree.add(pid)
    todo.extend(p for p, (parent, _) in stats.items() if parent == pid and p not in tree)
print(sum(stats[p][1] for p in tree if p in stats) / tick)
EOF
}

results="$work/results.txt"
for run in $(seq 1 "$runs"); do
  tport=$(free_port)
  tcpserver -q -H -R -D -l 0 -c 300 -b 1024 127.0.0.1 "$tport" "$work/palindrome" &
  tpid=$!
  pids+=("$tpid")
  pport=$(free_port)
  cat > "$work/exec.toml" <<EOF
[host]
shutdown_grace_secs = 1
[ports.$pport]
service = "exec"
model = "process-per-client"
max_connections = 300
options = { command = ["$work/palindrome"] }
EOF
  RUST_LOG=warn "$porthost" run --config "$work/exec.toml" > /dev/null 2> "$work/host.log" &
  ppid=$!
  pids+=("$ppid")
  sleep 1
  # Warm both up (the first fork, the program's first load) before counting.
  printf 'abba\n' | python3 -c 'import socket,sys
for p in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", int(p))); s.sendall(b"abba\n"); s.recv(10); s.close()' "$tport" "$pport"
  sleep 0.2
  t0=$(tree_cpu "$tpid"); p0=$(tree_cpu "$ppid")
  "$porthost" bench --addr "tcpserver-exec=127.0.0.1:$tport" --addr "porthost-exec=127.0.0.1:$pport" \
    --workloads churn --churn "$churn" --duration 60 --runs 1 --json "$work/run.json" > "$work/bench.txt"
  sleep 0.5
  t1=$(tree_cpu "$tpid"); p1=$(tree_cpu "$ppid")
  python3 - "$work/run.json" "$t0" "$t1" "$p0" "$p1" "$churn" >> "$results" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))["entries"]
# CPU per connection divides by the connections made: every one of them must have been.
for e in entries:
    run = e["per_run"][0]
    if run.get("unfinished") or run.get("errors"):
        sys.exit(f"{e['subject']}: {run.get('unfinished')}, {run.get('errors')} errors")
rate = {e["subject"]: e["per_run"][0]["metrics"]["conn_per_s"] for e in entries}
t0, t1, p0, p1, churn = map(float, sys.argv[2:7])
# Each server also served the one warm-up connection outside the counted interval.
print(rate["tcpserver-exec"], rate["porthost-exec"], (t1 - t0) / churn * 1e6, (p1 - p0) / churn * 1e6)
EOF
  kill "$tpid" "$ppid"
  wait "$tpid" "$ppid" 2>/dev/null || true
  pids=()
  echo "run $run: $(tail -1 "$results")" >&2
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = [statistics.median(r[i] for r in rows) for i in range(4)]
print(f"medians of {len(rows)} runs (churn: connect, one line, disconnect)")
print(f"{'':16}{'conn/s':>10}{'CPU us/conn':>14}")
print(f"{'tcpserver-exec':16}{med[0]:>10.0f}{med[2]:>14.0f}")
print(f"{'porthost-exec':16}{med[1]:>10.0f}{med[3]:>14.0f}")
ratio = statistics.median(r[1] / r[0] for r in rows)
cpu = statistics.median(r[3] / r[2] for r in rows)
print(f"porthost/tcpserver: {ratio:.2f}x connections/s, {cpu:.2f}x CPU per connection "
      "(medians of the per-run ratios)")
EOF
