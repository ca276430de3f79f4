#!/usr/bin/env bash
# Runs the benchmark suite behind docs/benchmarks.md against a weir broker that weir-bench spawns
# for each run, and prints the results as a Markdown table.
#
#   bench-harness/benchmarks.sh [OUT_DIR]
#
# Environment: ONLY (space-separated run names: run just those), WEIR_BENCH (the harness binary), DURATION (default 20s), WARMUP (5s), BENCH_CPUS (unset: the harness's threads
# float), PORT (19400), WEIR_BIN (target/release/weir). Single-partition runs give the broker one
# shard (CPU 0: the partition lives on one shard anyway and the other core serves the client);
# multi-partition runs give it two (CPUs 0,1), shared with the client.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/benchmarks}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
PORT=${PORT:-19400}
WEIR_BIN=${WEIR_BIN:-target/release/weir}
BENCH=${WEIR_BENCH:-target/release/weir-bench}
mkdir -p "$OUT"

cargo build --release -j2 --bin weir --bin weir-bench >&2

common=(--spawn-server --weir-bin "$WEIR_BIN" --bootstrap "127.0.0.1:$PORT"
        --duration "$DURATION" --warmup "$WARMUP")
if [[ -n "${BENCH_CPUS:-}" ]]; then common+=(--cpus "$BENCH_CPUS"); fi

run() { # name, server cpus, flags...
    local name=$1 cpus=$2; shift 2
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return 0; fi
    echo "== $name: weir-bench ${*}" >&2
    if ! "$BENCH" "${common[@]}" --server-cpus "$cpus" --json "$OUT/$name.json" --plot "$OUT/$name.svg" "$@" >"$OUT/$name.txt" 2>&1; then
        echo "   FAILED (see $OUT/$name.txt)" >&2
    fi
    tail -n 6 "$OUT/$name.txt" >&2
}

run kafka-2014        0   --preset kafka-2014
run 2p2c-100b         0,1 --message-bytes 100 --partitions 2 --producers 2 --consumers 2 --topic p2c2
run omb-1kb-2p        0,1 --preset omb-1kb --producers 2 --consumers 2 --topic omb2
run omb-1kb-2p-2groups 0,1 --preset omb-1kb --producers 2 --consumers 1 --consumer-groups 2 --topic omb2g
run omb-1kb-backlog   0,1 --preset omb-1kb --producers 2 --consumers 2 --topic ombbl --backlog --messages 4000000 --warmup 0s
run acks1-16p         0,1 --partitions 16 --topic acks1 --message-bytes 1024
run acks-all-fsync    0,1 --partitions 16 --topic acksall --message-bytes 1024 --acks -1 --server-set flush.messages=1
run keyed-16p         0,1 --partitions 16 --keys round-robin --topic keyed16
run many-partitions   0,1 --preset many-partitions --topic many --consumers 4
run many-partitions-4m 0,1 --preset many-partitions --topic many4m --consumers 4 --max-request-bytes 4194304
# Latency at half the peak rate of kafka-2014.
peak=$(python3 -c "import json;print(int(json.load(open('$OUT/kafka-2014.json'))['produce_msgs_per_s']))" 2>/dev/null || echo 0)
if [[ "$peak" -gt 0 ]]; then
    run half-peak-latency 0 --preset kafka-2014 --topic halfpeak --rate $((peak / 2)) --linger-ms 0
    run half-peak-latency-linger025 0 --preset kafka-2014 --topic halfpeak025 --rate $((peak / 2)) --linger-ms 0.25
    run half-peak-latency-linger1 0 --preset kafka-2014 --topic halfpeak1 --rate $((peak / 2))
fi
if [[ -z "${ONLY:-}" ]]; then "$BENCH" encode --duration 3s --json "$OUT/encode.json" >&2 || true; fi

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def f(value, digits=2):
    return "-" if value is None else f"{value:,.{digits}f}"
print("| run | msg B | partitions | producers | groups x consumers | acks | produce msgs/s | produce MB/s | consume msgs/s | consume MB/s | ack p50 / p99 / p99.9 ms | request p50 / p99 ms | e2e p50 / p99 / p99.9 ms | counted |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
names = ["kafka-2014", "2p2c-100b", "omb-1kb-2p", "omb-1kb-2p-2groups", "omb-1kb-backlog", "acks1-16p",
         "acks-all-fsync", "keyed-16p", "many-partitions", "many-partitions-4m", "half-peak-latency", "half-peak-latency-linger025", "half-peak-latency-linger1"]
for name in names:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        print(f"| {name} | failed or not run | | | | | | | | | | | | |")
        continue
    r = json.load(open(path))
    w = r["workload"]
    p, e = r["produce_latency"], r["e2e_latency"]
    q = r.get("produce_request_latency", {})
    ok = "yes" if not r["errors"] else "NO: " + "; ".join(r["errors"])[:200]
    print(f"| {name} | {w['message_bytes']} | {w['partitions']} | {w['producers']} | {w['consumer_groups']} x {w['consumers']} | {w['acks']} | "
          f"{f(r['produce_msgs_per_s'], 0)} | {f(r['produce_mb_per_s'], 1)} | {f(r['consume_msgs_per_s'], 0)} | "
          f"{f(r['consume_mb_per_s'], 1)} | {f(p['p50_ms'])} / {f(p['p99_ms'])} / {f(p['p999_ms'])} | "
          f"{f(q.get('p50_ms'))} / {f(q.get('p99_ms'))} | "
          f"{f(e['p50_ms'])} / {f(e['p99_ms'])} / {f(e['p999_ms'])} | {ok} |")
enc = os.path.join(out, "encode.json")
if os.path.exists(enc):
    r = json.load(open(enc))
    print(f"\nClient encode rate (one thread, {r['message_bytes']} B records, {r['batch_bytes']} B batches): "
          f"{r['batches_per_s']:,.0f} batches/s, {r['records_per_s']/1e6:.1f} M records/s, {r['gb_per_s']:.2f} GB/s; "
          f"decode {r['decode_records_per_s']/1e6:.1f} M records/s")
EOF
