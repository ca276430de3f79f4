#!/usr/bin/env bash
# Weir beside Apache Iggy, one broker at a time on this machine, in one sitting.
#
#   bench-harness/peers/iggy.sh IGGY_CHECKOUT [IGGY_COMMIT] [ROUNDS]
#
# IGGY_CHECKOUT is a local clone of https://github.com/apache/iggy (CI cannot reach the source, so
# this is a tool for people who benchmark, not a CI step). The script checks out IGGY_COMMIT
# (default cc269ef, the commit of issue 15's table) in a detached worktree of that clone, builds
# `iggy-server` and `iggy-bench` with LTO off (Iggy's release profile turns it on; a 2-core
# machine then links for tens of minutes), and for each round and workload runs:
#   - Iggy: a fresh iggy-server on a fresh data dir, then its own iggy-bench;
#   - Weir: weir-bench --spawn-server (a fresh weir on a fresh data dir) with Kafka-default client
#     settings (5 requests in flight, 16 KiB batches... as the preset gives), and with settings
#     matched to iggy-bench's (1 request in flight, 100 KB batches of 1000 x 100 B);
# alternating which broker goes first every round. Results: OUT/peers.md (one markdown table),
# and every run's output beside it.
#
# Environment: WEIR_BENCH (target/release/weir-bench), WEIR_BIN (target/release/weir),
# DURATION (10s, Weir runs), IGGY_MESSAGES (batches per Iggy producer, 2000 = 200 MB of 100 B),
# WEIR_PORT (19600), OUT (target/peers). The server CPUs follow benchmarks.sh: one shard on CPU 0.
#
# Iggy's p99 is per 1000-message batch round trip; Weir's per record (from append to ack): the
# table says which is which.
#
# STATUS: the Weir half has been run (SKIP_IGGY=1 runs it alone); the Iggy half has NOT been run
# yet: the iggy-bench arguments and the parsing of its output follow iggy-bench's documented
# examples and must be checked against the pinned commit's `iggy-bench --help` on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."

checkout=${1:?usage: iggy.sh IGGY_CHECKOUT [IGGY_COMMIT] [ROUNDS]}
commit=${2:-cc269ef}
rounds=${3:-2}
WEIR_BENCH=${WEIR_BENCH:-target/release/weir-bench}
WEIR_BIN=${WEIR_BIN:-target/release/weir}
DURATION=${DURATION:-10s}
IGGY_MESSAGES=${IGGY_MESSAGES:-2000}
WEIR_PORT=${WEIR_PORT:-19600}
OUT=${OUT:-target/peers}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

build_iggy() {
    local tree="$OUT/iggy-src"
    if [ ! -d "$tree" ]; then
        git -C "$checkout" worktree add --detach "$tree" "$commit"
    fi
    git -C "$tree" checkout --quiet --detach "$commit"
    # LTO off, one codegen unit per crate as usual: the comparison is of the brokers' designs,
    # not of the linker.
    (cd "$tree" && CARGO_PROFILE_RELEASE_LTO=false cargo build --release \
        --bin iggy-server --bin iggy-bench)
    IGGY_SERVER="$tree/target/release/iggy-server"
    IGGY_BENCH="$tree/target/release/iggy-bench"
}

# Workloads: name, iggy-bench arguments, weir-bench arguments (Kafka defaults), weir-bench
# arguments (matched to iggy-bench: 1 request in flight, 1000 records of 100 B per batch).
workloads() {
    cat <<'EOF'
100b-1p|--message-size 100 --messages-per-batch 1000 pinned-producer --producers 1 tcp|--preset kafka-2014 --no-consume|--preset kafka-2014 --no-consume --max-in-flight 1 --batch-bytes 102400
100b-2p|--message-size 100 --messages-per-batch 1000 pinned-producer --producers 2 --streams 2 tcp|--message-bytes 100 --producers 2 --partitions 2 --no-consume|--message-bytes 100 --producers 2 --partitions 2 --no-consume --max-in-flight 1 --batch-bytes 102400
1000b-2p|--message-size 1000 --messages-per-batch 1000 pinned-producer --producers 2 --streams 2 tcp|--message-bytes 1000 --producers 2 --partitions 2 --no-consume|--message-bytes 1000 --producers 2 --partitions 2 --no-consume --max-in-flight 1 --batch-bytes 1048576
EOF
}

run_iggy() { # workload name, iggy-bench args, round
    local name=$1 args=$2 round=$3 data="$OUT/iggy-data-$1-$3" pid
    rm -rf "$data"
    IGGY_SYSTEM_PATH="$data" "$IGGY_SERVER" >"$OUT/iggy-server-$name-$round.log" 2>&1 &
    pid=$!
    sleep 3 # iggy-server has no readiness signal on stdout we can rely on across versions
    # shellcheck disable=SC2086 # the arguments are words on purpose
    if ! taskset -c 1 "$IGGY_BENCH" --message-batches "$IGGY_MESSAGES" $args \
        >"$OUT/iggy-$name-$round.txt" 2>&1; then
        echo "iggy $name round $round FAILED (see $OUT/iggy-$name-$round.txt)" >&2
    fi
    kill "$pid"
    wait "$pid" || true
    rm -rf "$data"
}

run_weir() { # workload name, label, weir-bench args, round
    local name=$1 label=$2 args=$3 round=$4
    # shellcheck disable=SC2086
    if ! "$WEIR_BENCH" --spawn-server --weir-bin "$WEIR_BIN" --bootstrap "127.0.0.1:$WEIR_PORT" \
        --server-cpus 0 --cpus 1 --duration "$DURATION" --warmup 3s \
        --json "$OUT/weir-$label-$name-$round.json" $args \
        >"$OUT/weir-$label-$name-$round.txt" 2>&1; then
        echo "weir $label $name round $round FAILED (see $OUT/weir-$label-$name-$round.txt)" >&2
    fi
}

run_round() { # round
    local round=$1 name iggy_args weir_default weir_matched
    while IFS='|' read -r name iggy_args weir_default weir_matched; do
        if (( round % 2 )); then
            run_iggy "$name" "$iggy_args" "$round"
            run_weir "$name" default "$weir_default" "$round"
            run_weir "$name" matched "$weir_matched" "$round"
        else
            run_weir "$name" matched "$weir_matched" "$round"
            run_weir "$name" default "$weir_default" "$round"
            run_iggy "$name" "$iggy_args" "$round"
        fi
    done < <(workloads)
}

if [ "${SKIP_IGGY:-}" = 1 ]; then
    # The Weir half alone (to test this script where Iggy cannot be built).
    run_iggy() { :; }
else
    build_iggy
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$rounds"); do
    run_round "$round"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$rounds" "$commit" "$load_before" "$load_after" <<'EOF'
import glob, json, os, re, sys
out, rounds, commit, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
names = sorted({os.path.basename(p).split("-", 2)[2].rsplit("-", 1)[0]
                for p in glob.glob(f"{out}/weir-*-*-*.json")})

def weir(label, name):
    runs = []
    for r in range(1, rounds + 1):
        path = f"{out}/weir-{label}-{name}-{r}.json"
        if os.path.exists(path):
            j = json.load(open(path))
            p99 = (j.get("produce_latency") or {}).get("p99_ms")
            runs.append(f"{j['produce_msgs_per_s'] / 1e6:.2f} M (p99 {p99 if p99 is None else round(p99, 2)} ms)")
    return " / ".join(runs) or "not run"

def iggy(name):
    runs = []
    for r in range(1, rounds + 1):
        path = f"{out}/iggy-{name}-{r}.txt"
        if not os.path.exists(path):
            continue
        text = open(path).read()
        # iggy-bench prints its aggregate as "... Total throughput: X MB/s, Y messages/s ..." and
        # per-batch latency percentiles "p99: Z ms"; the first of each is taken.
        rate = re.search(r"([\d.]+) messages/s", text)
        p99 = re.search(r"p99: ([\d.]+) ms", text)
        runs.append(f"{float(rate.group(1)) / 1e6:.2f} M" if rate else "unparsed"
                    + (f" (p99 {p99.group(1)} ms per batch)" if p99 else ""))
    return " / ".join(runs) or "not run"

lines = [f"Iggy at `{commit}` (LTO off), weir at `{os.popen('git rev-parse --short HEAD').read().strip()}`;"
         f" load average {before} before, {after} after; {rounds} rounds, order alternating.", "",
         "| workload | Iggy (iggy-bench) | Weir, Kafka defaults | Weir, matched (1 in flight, 100 KB) |",
         "|---|---|---|---|"]
for name in names:
    lines.append(f"| {name} | {iggy(name)} | {weir('default', name)} | {weir('matched', name)} |")
open(f"{out}/peers.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
