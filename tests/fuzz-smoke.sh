#!/usr/bin/env bash
# Fuzz smoke: runs every cargo-fuzz target in tests/fuzz for a bounded time and prints the
# executions each made. Usage: tests/fuzz-smoke.sh [SECONDS_PER_TARGET] (default 20).
# Needs a nightly toolchain; installs the pinned cargo-fuzz when it is missing or another version
# (pins below). A crash fails the script and leaves the input under tests/fuzz/artifacts/<target>/
# (turn it into a unit test in the owning crate).
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "$0")/fuzz"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

# Pinned so that CI cannot change under the project: a new cargo-fuzz or nightly can change the
# sanitizer flags, libFuzzer's options or what compiles, and a fuzz failure must mean a bug in Weir.
# - cargo-fuzz: the exact version, installed with its own lock file (--locked).
# - nightly: rustup cannot download a toolchain on every machine Weir is built on (the development
#   machines reach crates.io but not the toolchain server), so the script cannot install a dated
#   nightly; it uses the `nightly` that is there and says so when it is not the one the targets were
#   last checked with. A different date is reported, not failed: fuzzing on any recent nightly is
#   still worth more than none. Bump both pins together, after `tests/fuzz-smoke.sh 60` passes.
CARGO_FUZZ_VERSION="0.13.2"
NIGHTLY_VERSION="rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
nightly="$(rustc +nightly -V)"
if [ "$nightly" != "$NIGHTLY_VERSION" ]; then
    echo "fuzz-smoke: note: nightly is '$nightly', the pinned one is '$NIGHTLY_VERSION';" \
        "fuzzing with it anyway"
fi
installed="$(cargo +nightly fuzz --version 2>/dev/null || true)"
if [ "$installed" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi
targets=(request_decoder batch_validate segment_recovery topic_matcher amqp_frame)
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
