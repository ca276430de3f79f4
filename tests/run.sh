#!/usr/bin/env bash
# The whole test suite, from a fresh Linux machine: installs what the tests need, builds once
# (release), then runs every test against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --all-targets
cargo test --release --workspace
