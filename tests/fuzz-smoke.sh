#!/usr/bin/env bash
# Fuzz smoke: runs every cargo-fuzz target in tests/fuzz for a bounded time and prints the
# executions each made. Usage: tests/fuzz-smoke.sh [SECONDS_PER_TARGET] (default 20).
# Needs a nightly toolchain; installs cargo-fuzz when missing. A crash fails the script and leaves
# the input under tests/fuzz/artifacts/<target>/ (turn it into a unit test in the owning crate).
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "$0")/fuzz"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=(request_decoder batch_validate segment_recovery topic_matcher)
cargo +nightly fuzz build
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz-smoke: $target FAILED (input saved under tests/fuzz/artifacts/$target/)"
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "fuzz-smoke: $target ok, $runs executions in ${seconds}s"
    rm -f "$log"
done
