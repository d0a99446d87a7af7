#!/usr/bin/env bash
# The test command of the README, and what CI runs: formatting, lints, then every test of the
# workspace (unit, property, in-process protocol and multi-process cluster tests).
# Needs only the Rust toolchain and gcc (Lua 5.4 and libsecp256k1 are built from the crates;
# protobuf is compiled in pure Rust, no protoc).
set -euo pipefail
cd "$(dirname "$0")/.."

# CI machines have 2 cores: share them between rustc and the tests, keep debug info small.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
