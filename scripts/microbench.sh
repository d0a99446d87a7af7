#!/usr/bin/env bash
# The criterion microbenchmarks of the shard (lock table, Raft command codec) and the EVM runner
# (transaction decoding, ERC-20 transfer execution, state codec), then one line per benchmark:
# its mean time per iteration and criterion's 95% confidence interval. About a minute in all
# once built; the first run builds the bench profile (optimised) of both crates.
#
# Usage: scripts/microbench.sh [criterion filter]   e.g. scripts/microbench.sh lock_table/
# On a shared machine, run it under `nice -n 10`; the figures are then only indicative.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where criterion writes its estimates, found as criterion finds it: CRITERION_HOME, else the
# criterion directory of cargo's target directory.
if [ -z "${CRITERION_HOME:-}" ]; then
    target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}"
fi
criterion_dir="${CRITERION_HOME:-$target_dir/criterion}"

# Only the estimates this run writes are reported: criterion keeps older ones around.
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT

cargo bench -p parsec-shard -p parsec-evm \
    --bench lock_table --bench command_codec \
    --bench tx_decode --bench revm_transfer --bench state_codec \
    -- "$@"

python3 - "$criterion_dir" "$stamp" <<'EOF'
import json, os, sys

criterion_dir, stamp = sys.argv[1], sys.argv[2]
since = os.path.getmtime(stamp)

def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

rows = []
for root, _, files in os.walk(criterion_dir):
    if os.path.basename(root) != "new" or "estimates.json" not in files:
        continue
    estimates_path = os.path.join(root, "estimates.json")
    mtime = os.path.getmtime(estimates_path)
    if mtime < since:
        continue
    with open(estimates_path) as f:
        mean = json.load(f)["mean"]
    with open(os.path.join(root, "benchmark.json")) as f:
        name = json.load(f)["full_id"]
    interval = mean["confidence_interval"]
    rows.append((mtime, name, mean["point_estimate"], interval["lower_bound"], interval["upper_bound"]))

if not rows:
    sys.exit(f"no estimates written under {criterion_dir}")
rows.sort()  # in the order they ran
width = max(len(name) for _, name, *_ in rows)
print()
print(f"{'benchmark':<{width}}  {'mean':>9}  95% interval")
for _, name, point, lower, upper in rows:
    print(f"{name:<{width}}  {human(point):>9}  [{human(lower)}, {human(upper)}]")
EOF
