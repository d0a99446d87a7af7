#!/usr/bin/env bash
# The test command of the README, and what CI runs: formatting, lints, then every test of the
# workspace (unit, property, in-process protocol and multi-process cluster tests).
# Needs the Rust toolchain, gcc and Python 3 with venv and PyPI access (Lua 5.4, libsecp256k1 and
# revm's C precompiles are built from the crates; protobuf is compiled in pure Rust, no protoc).
set -euo pipefail
cd "$(dirname "$0")/.."

# CI machines have 2 cores: share them between rustc and the tests, keep debug info small.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Prometheus (Debian package `prometheus`: `prometheus` and `promtool`) checks the alert rules
# and runs under the monitoring test (services/cli/tests/monitoring.rs), which says SKIPPED
# without it.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "== apt-get install prometheus"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends prometheus \
            || { apt-get update && apt-get install -y --no-install-recommends prometheus; } \
            || echo "cannot install prometheus: the rules check and the monitoring test are skipped"
    fi
fi
echo "== promtool check rules"
if command -v promtool >/dev/null; then
    promtool check rules manifests/monitoring/parsec-rules.yaml
else
    echo "SKIPPED: promtool not installed (Debian package prometheus)"
fi

echo "== cargo test"
cargo test --workspace --locked

# A short fuzz run: every target of fuzz/ for PARSEC_FUZZ_SECONDS (20) seconds, without
# sanitizers (0 skips it). `cargo test` above already replayed the committed corpus; this builds
# the libFuzzer binaries and lets each explore a little. Without sanitizers because the cold
# build of the whole dependency tree is what costs: ~18 minutes here without them (on a loaded
# machine), more with AddressSanitizer. The long run with ASan is in the README ("Fuzzing").
fuzz_seconds="${PARSEC_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" -gt 0 ]; then
    echo "== scripts/fuzz.sh --seconds $fuzz_seconds --sanitizer none"
    scripts/fuzz.sh --seconds "$fuzz_seconds" --sanitizer none
fi

# The operator's manifests, chart and rendered objects against the real Kubernetes schemas
# (kubernetes-validate --strict) and Helm itself (helm-python-sdk), installed from PyPI.
echo "== Kubernetes schemas and Helm"
scripts/validate-k8s.sh
