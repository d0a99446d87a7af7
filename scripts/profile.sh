#!/usr/bin/env bash
# Where the CPU of one ERC-20 transfer goes: starts `parsec dev` (fresh data directory), drives
# it with `parsec bench erc20`, records the dev process with perf (call graphs) and charges its
# samples to components (scripts/perf_components.py), in µs per committed transfer.
#
#   scripts/profile.sh [CONCURRENCY] [-- parsec dev flags, e.g. --shards 1 or --in-memory]
#
# Needs perf (Debian: apt-get install linux-perf) and a release build (cargo build --release).
# perf records the whole bench, set-up included (about a tenth of the transfers); the µs figures
# use the server CPU the bench measured over its window only.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
parsec="${PARSEC:-$here/target/release/parsec}"
concurrency="${1:-64}"
shift || true
[ "${1:-}" = "--" ] && shift
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
[ -x "$parsec" ] || { echo "$parsec not built: cargo build --release -p parsec-cli" >&2; exit 2; }

work="$(mktemp -d)"
trap 'kill "$dev" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$parsec" dev --data-dir "$work/data" "$@" >"$work/dev.log" 2>&1 &
dev=$!
ready=""
for _ in $(seq 1 150); do
  if curl -sf -o /dev/null -H 'content-type: application/json' \
      --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' http://127.0.0.1:8545; then
    ready=yes; break
  fi
  kill -0 "$dev" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ready" ] || { echo "parsec dev did not come up:" >&2; cat "$work/dev.log" >&2; exit 1; }

perf record -q -F 199 --call-graph dwarf,16384 -p "$dev" -o "$work/perf.data" >/dev/null 2>&1 &
perf_pid=$!
"$parsec" bench erc20 --concurrency "$concurrency" --duration "${DURATION:-15}" \
  --server-pids "$dev" --json >"$work/bench.json"
kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true

cat "$work/bench.json"
us=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server_cpu_us_per_transfer"] or 0)' "$work/bench.json")
perf script -i "$work/perf.data" 2>/dev/null | python3 "$here/scripts/perf_components.py" --us-per-tx "$us"
