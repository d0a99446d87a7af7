#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) and prints a table of what each did.
#
#   scripts/fuzz.sh [--seconds N] [--sanitizer address|none] [--merge] [TARGET...]
#
# --seconds N     how long each target runs (default 60)
# --sanitizer S   address (default: AddressSanitizer with leak detection) or none (faster to
#                 build and run; what CI's short run uses)
# --merge         afterwards, add what the run found to the committed corpus and minimise it
#                 (cargo fuzz cmin)
# TARGET...       the targets to run (default: all of them)
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets rustc accept the -Z flags cargo-fuzz
# passes. Targets run one at a time, under nice. New corpus entries of a run go to
# fuzz/target/runs/<target>/ (not the repository); crashes, hangs and leaks to
# fuzz/artifacts/<target>/ (then: move the input to fuzz/regressions/<target>/ and add a test).
# Exits non-zero if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
sanitizer=address
merge=false
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        --merge) merge=true; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! command -v cargo-fuzz >/dev/null; then
    echo "== cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# cargo-fuzz builds in fuzz/target with its own flags; a shared target dir would only be
# invalidated by them.
unset CARGO_TARGET_DIR
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== cargo fuzz build --sanitizer $sanitizer (${targets[*]})"
build_started=$SECONDS
for target in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" "$target"
done
echo "built in $((SECONDS - build_started)) s"

# The targets run every service in process and need no network: where it is allowed (root),
# each runs in a network namespace of its own, so that nothing a fuzzed message names (a Raft
# peer's address) can be dialled outside the machine.
isolate=()
if unshare --net true 2>/dev/null; then
    isolate=(unshare --net)
fi
binaries=fuzz/target/x86_64-unknown-linux-gnu/release

# Per input: a hang is an input running over 60 s (the slowest legitimate inputs, gRPC
# sequences that wait on locks, take a few seconds under ASan); memory is capped at 4 GiB.
libfuzzer_flags=(-max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1)
if [ "$sanitizer" = address ]; then
    # detect_odr_violation=0 as cargo fuzz run sets it (Rust's duplicated generics trip it).
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0:detect_leaks=1"
    # False leaks of a dependency, explained in the file.
    export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$PWD/fuzz/lsan.supp"
    libfuzzer_flags+=(-detect_leaks=1)
fi

rows=()
failed=0
for target in "${targets[@]}"; do
    runs="fuzz/target/runs/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$runs" "$artifacts" "fuzz/corpus/$target"
    flags=("${libfuzzer_flags[@]}" -artifact_prefix="$artifacts/")
    [ -f "fuzz/dicts/$target.dict" ] && flags+=(-dict="fuzz/dicts/$target.dict")
    log="fuzz/target/runs/$target.log"
    echo "== $target: ${seconds} s"
    started=$SECONDS
    set +e
    nice -n 10 "${isolate[@]}" "$binaries/$target" "$runs" "fuzz/corpus/$target" \
        "${flags[@]}" >"$log" 2>&1
    status=$?
    set -e
    elapsed=$((SECONDS - started))
    stat() { grep -o "^stat::$1: *[0-9]*" "$log" | tail -1 | grep -o "[0-9]*$" || echo "?"; }
    corpus=$(grep -o "corp: [0-9]*" "$log" | tail -1 | grep -o "[0-9]*" || echo "?")
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED ($status): see $log and $artifacts/"
        failed=1
        grep -E "^==[0-9]+==ERROR|panicked at|SUMMARY|Test unit written" "$log" | head -5 || true
    fi
    rows+=("$(printf '%-11s %7s %11s %8s %7s %8s  %s' "$target" "$elapsed" \
        "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$corpus" \
        "$(stat peak_rss_mb)" "$result")")
    if $merge && [ "$status" -eq 0 ]; then
        cp -n "$runs"/* "fuzz/corpus/$target/" 2>/dev/null || true
        cargo fuzz cmin --sanitizer "$sanitizer" "$target" >>"$log" 2>&1
    fi
done

echo
printf '%-11s %7s %11s %8s %7s %8s  %s\n' target seconds execs exec/s corpus "rss MB" result
printf '%s\n' "${rows[@]}"
exit "$failed"
