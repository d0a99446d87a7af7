#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, one run each, on a release build: `parsec dev` (in process) at
# several loads, shard counts and contention levels, in memory, the multi-process cluster
# (2 shards × 3 replicas, ticket machine × 3, 2 agents), and Lua payments. Prints one JSON line
# per run (also kept in $OUT, default benchmarks.jsonl), then a Markdown table.
#
#   cargo build --release -p parsec-cli && scripts/benchmarks.sh [RUNS]
#
# RUNS: a regular expression over run names (default: all), e.g. 'dev-hot-.*|cluster-r3'.
#
# About 12 minutes. Every run audits the token (or wallet) balances at its end.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
parsec="${PARSEC:-$here/target/release/parsec}"
out="${OUT:-benchmarks.jsonl}"
duration="${DURATION:-10}"
only="${1:-.*}"
[ -x "$parsec" ] || { echo "$parsec not built: cargo build --release -p parsec-cli" >&2; exit 2; }
: >"$out"
work="$(mktemp -d)"
dev=""
cleanup() {
  [ -n "$dev" ] && kill "$dev" 2>/dev/null && wait "$dev" 2>/dev/null
  [ -d "$work/cluster" ] && "$parsec" cluster down --dir "$work/cluster" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# wait_rpc URL LOG: until URL answers, while $dev runs.
wait_rpc() {
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$1" && return 0
    kill -0 "$dev" 2>/dev/null || break
    sleep 0.2
  done
  echo "no JSON-RPC at $1; the server's log:" >&2; cat "$2" >&2; return 1
}

# record NAME JSON: tags a bench's JSON line with the run's name and keeps it.
record() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); r["run"]=sys.argv[1]; print(json.dumps(r))' "$1" "$2" | tee -a "$out"
}

# dev NAME "DEV FLAGS" WORKLOAD "BENCH FLAGS"
dev_run() {
  local name=$1 dev_flags=$2 workload=$3 bench_flags=$4
  [[ "$name" =~ ^($only)$ ]] || return 0
  local storage="--data-dir $work/dev-$name"
  [[ "$dev_flags" == *--in-memory* ]] && storage=""
  # shellcheck disable=SC2086
  "$parsec" dev $storage $dev_flags >"$work/dev-$name.log" 2>&1 &
  dev=$!
  wait_rpc http://127.0.0.1:8545 "$work/dev-$name.log"
  local extra=""
  [ "$workload" = erc20 ] && extra="--server-pids $dev"
  # shellcheck disable=SC2086
  record "$name" "$("$parsec" bench "$workload" --duration "$duration" --json $extra $bench_flags)"
  kill "$dev"; wait "$dev" 2>/dev/null || true; dev=""
  rm -rf "$work/dev-$name"
}

dev_run dev-c16 "" erc20 "--concurrency 16"
dev_run dev-c64 "" erc20 "--concurrency 64"
dev_run dev-c256 "" erc20 "--concurrency 256"
dev_run dev-inline-signing "" erc20 "--concurrency 64 --sign-inline"
dev_run dev-in-memory "--in-memory" erc20 "--concurrency 64"
dev_run dev-1-shard "--shards 1" erc20 "--concurrency 64"
dev_run dev-4-shards "--shards 4" erc20 "--concurrency 64"
dev_run dev-hot-1 "" erc20 "--concurrency 64 --hot 0.01"
dev_run dev-hot-10 "" erc20 "--concurrency 64 --hot 0.1"
dev_run dev-hot-50 "" erc20 "--concurrency 64 --hot 0.5"
dev_run lua-dev-c64 "" lua-pay "--concurrency 64"
dev_run lua-dev-c256 "" lua-pay "--concurrency 256"

if [[ cluster-r3 =~ ^($only)$ ]]; then
  "$parsec" cluster up --dir "$work/cluster" --shards 2 --agents 2 --replicas 3 >/dev/null
  record cluster-r3 "$("$parsec" bench erc20 --topology "$work/cluster/topology.yaml" \
    --concurrency 64 --duration "$duration" --json)"
  record lua-cluster-r3 "$("$parsec" bench lua-pay --topology "$work/cluster/topology.yaml" \
    --concurrency 256 --duration "$duration" --json)"
  "$parsec" cluster down --dir "$work/cluster" >/dev/null
  rm -rf "$work/cluster"
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def f(value, spec):
    return "" if value is None else format(value, spec)
print("| run | tx/s | p50 ms | p99 ms | server µs/tx | client µs/tx | floor µs | × floor | Raft entries/tx | audit |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    floor = r.get("floor_us")
    floor_total = floor["recover_us"] + floor["execute_us"] if floor else None
    entries = r.get("raft_entries_per_transfer", r.get("raft_entries_per_payment"))
    audit = "ok" if r.get("total_ok") and r.get("wallets_ok") else "FAILED"
    print(f"| {r['run']} | {r['tps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
          f"{f(r.get('server_cpu_us_per_transfer'), '.0f')} | {f(r.get('client_cpu_us_per_transfer'), '.0f')} | "
          f"{f(floor_total, '.0f')} | {f(r.get('server_cpu_over_floor'), '.1f')} | {f(entries, '.2f')} | {audit} |")
PY
