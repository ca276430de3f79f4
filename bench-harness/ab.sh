#!/usr/bin/env bash
# A/B of two weir binaries in one sitting, alternating them run by run (this machine's disk and
# CPUs drift by 2x from hour to hour, so only ratios measured side by side mean anything).
#
#   bench-harness/ab.sh OLD_WEIR NEW_WEIR [ROUNDS]
#
# Each round runs every workload once with OLD then NEW, swapping that order every other round.
# Workloads (WORKLOADS, space-separated, default "kafka-2014 many-partitions"): the preset of that
# name, with the server CPUs benchmarks.sh gives it (kafka-2014: one shard on CPU 0;
# many-partitions: two shards on CPUs 0,1, 4 consumers; one-in-flight: kafka-2014 with the client
# matched to Iggy's, 1 produce request in flight and 100 KB batches, produce only, so that each
# request's own cost shows). Environment: DURATION (10s), WARMUP
# (3s), HARNESS_CPUS (unset: the harness floats; e.g. 1 pins it off the broker's CPU 0), PORT (19500), WEIR_BENCH (target/release/weir-bench), OUT (target/ab).
# Prints one line per run and a summary table of produce and consume rates per binary.
set -euo pipefail
cd "$(dirname "$0")/.."

old=${1:?usage: ab.sh OLD_WEIR NEW_WEIR [ROUNDS]}
new=${2:?usage: ab.sh OLD_WEIR NEW_WEIR [ROUNDS]}
rounds=${3:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
PORT=${PORT:-19500}
BENCH=${WEIR_BENCH:-target/release/weir-bench}
OUT=${OUT:-target/ab}
WORKLOADS=${WORKLOADS:-kafka-2014 many-partitions}
mkdir -p "$OUT"

flags_for() { # workload -> server cpus and extra flags
    case $1 in
        kafka-2014) echo "0 --preset kafka-2014" ;;
        many-partitions) echo "0,1 --preset many-partitions --topic many --consumers 4" ;;
        one-in-flight) echo "0 --preset kafka-2014 --max-in-flight 1 --batch-bytes 102400 --no-consume" ;;
        *) echo "unknown workload $1" >&2; return 1 ;;
    esac
}

run() { # label, binary, workload, round
    local label=$1 bin=$2 workload=$3 round=$4
    local spec cpus json
    spec=$(flags_for "$workload")
    cpus=${spec%% *}
    json="$OUT/$workload-$label-$round.json"
    # shellcheck disable=SC2086 # the flags are words on purpose
    if ! "$BENCH" --spawn-server --weir-bin "$bin" --bootstrap "127.0.0.1:$PORT" \
        --duration "$DURATION" --warmup "$WARMUP" --server-cpus "$cpus" --json "$json" \
        ${HARNESS_CPUS:+--cpus "$HARNESS_CPUS"} ${spec#* } >"$OUT/$workload-$label-$round.txt" 2>&1; then
        echo "$workload $label round $round FAILED (see $OUT/$workload-$label-$round.txt)" >&2
        return 1
    fi
    python3 - "$json" "$workload" "$label" "$round" <<'EOF'
import json, sys
path, workload, label, round_ = sys.argv[1:]
r = json.load(open(path))
print(f"{workload:16} {label:4} round {round_}: produce {r['produce_msgs_per_s'] / 1e6:6.2f} M msgs/s"
      f", consume {r.get('consume_msgs_per_s', 0) / 1e6:6.2f} M msgs/s")
EOF
}

for round in $(seq 1 "$rounds"); do
    for workload in $WORKLOADS; do
        if (( round % 2 )); then
            run old "$old" "$workload" "$round"
            run new "$new" "$workload" "$round"
        else
            run new "$new" "$workload" "$round"
            run old "$old" "$workload" "$round"
        fi
    done
done

python3 - "$OUT" "$rounds" $WORKLOADS <<'EOF'
import json, sys
out, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("\n| workload | binary | produce M msgs/s (each run) | consume M msgs/s (each run) |")
print("|---|---|---|---|")
for workload in workloads:
    for label in ("old", "new"):
        runs = [json.load(open(f"{out}/{workload}-{label}-{r}.json")) for r in range(1, rounds + 1)]
        produce = " / ".join(f"{r['produce_msgs_per_s'] / 1e6:.2f}" for r in runs)
        consume = " / ".join(f"{r.get('consume_msgs_per_s', 0) / 1e6:.2f}" for r in runs)
        print(f"| {workload} | {label} | {produce} | {consume} |")
EOF
