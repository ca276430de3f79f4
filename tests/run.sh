#!/usr/bin/env bash
# The whole test suite, from a fresh Linux machine (Debian 12, root, Rust toolchain installed):
#   1. installs the real Kafka clients the suites drive (idempotent: tests/install-clients.sh),
#   2. builds the workspace ONCE, in release, with every test target,
#   3. runs every test of every crate against that build (the client suites start the release
#      `weir` binary themselves), without stopping at the first failing test binary,
#   4. prints one line `weir test suite: N passed, N failed` and exits non-zero if anything failed.
# CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# A bare machine lacks the toolchain: a C compiler (glommio builds liburing) and Rust (rustup; the
# version itself comes from rust-toolchain.toml on the first cargo call).
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
if ! command -v cc >/dev/null; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential
fi
if ! command -v cargo >/dev/null; then
    if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
        if ! command -v curl >/dev/null; then
            $sudo apt-get update -qq
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
        fi
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
fi

./tests/install-clients.sh

cargo build --release --workspace --all-targets

# The README's `cargo run --release --bin weir` must reuse this build, not recompile (resolver 2
# resolves features without dev-dependencies there; see the regex-syntax line in
# server/Cargo.toml) and replace the binary the suites are about to start. Costs well under a second.
rebuild=$(cargo build --release --bin weir 2>&1)
if grep -q 'Compiling' <<<"$rebuild"; then
    echo "$rebuild"
    echo "tests/run.sh: \`cargo build --release --bin weir\` recompiled after the workspace build:" \
        "the two builds resolve features differently (compare \`cargo tree -e features -i CRATE" \
        "--workspace\` with \`cargo tree -e features -i CRATE -p weir-server -e normal\`)" >&2
    exit 1
fi

# The release binary that the suites start (see tests/src/lib.rs: broker_binary).
export WEIR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/weir"

# The AMQP differential suite compares Weir with a real RabbitMQ. Started here once, before
# `cargo test` (tests/src/rabbitmq.rs: its own node on 5673, ~5-6 s to start here; each test binary
# would otherwise start it on first use, which works but charges that to one test's timeout), and
# stopped when the suite ends so that CI leaves no daemon behind.
rabbitmq="${CARGO_TARGET_DIR:-$PWD/target}/release/weir-test-rabbitmq"
# Not fatal: without RabbitMQ only the AMQP suites fail (each tries to start it again and says why).
"$rabbitmq" start || echo "tests/run.sh: RabbitMQ did not start; the AMQP suites will fail" >&2

log=$(mktemp)
trap 'rm -f "$log"; "$rabbitmq" stop || true' EXIT
set +e
# A hang must fail the suite in time, not use up CI's 90 minutes: on a 2-core machine the whole
# run takes ~24 minutes from a fresh clone on a fresh machine (13 building: workspace ~9-12 min,
# fuzz targets under nightly+ASan ~9 min, cargo-fuzz install ~2 min; see README) and 12-15 with
# clients and cargo-fuzz installed; `cargo test` itself ~10 of them (build figures measured on a
# busy machine, upper bounds). On timeout, every test process in the group is killed (timeout
# signals its process group), and libtest's "has been running for over 60 seconds" lines name the
# hung test.
timeout --kill-after=30s "${WEIR_TEST_TIMEOUT_SECONDS:-2700}" \
    cargo test --release --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Fuzz smoke: every cargo-fuzz target for a bounded time (nightly, as the brief allows for fuzzing).
fuzz_failed=0
if ! ./tests/fuzz-smoke.sh "${WEIR_FUZZ_SECONDS:-20}"; then
    fuzz_failed=1
    status=1
fi
set -e
awk -v fuzz_failed="$fuzz_failed" '/^test result:/ { passed += $4; failed += $6 }
     END { printf "weir test suite: %d passed, %d failed\n", passed, failed + fuzz_failed }' "$log"
exit "$status"
