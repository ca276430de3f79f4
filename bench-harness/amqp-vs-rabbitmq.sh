#!/usr/bin/env bash
# Weir against RabbitMQ with `weir-bench amqp`, side by side in one sitting: one broker at a time,
# the order alternated round by round (this machine drifts by 2x from hour to hour, so only
# figures from one sitting compare).
#
#   bench-harness/amqp-vs-rabbitmq.sh [ROUNDS]
#
# RabbitMQ must already run (e.g. `WEIR_RABBITMQ_PORT=5674 target/release/weir-test-rabbitmq
# start`, the test suite's node on its own port). Weir is started by weir-bench for each run
# (`--spawn-server`, one shard on CPU 0); weir-bench itself is pinned to CPU 1 in both cases.
# Environment: RABBITMQ_URL (amqp://guest:guest@127.0.0.1:5674/%2f), WEIR_BIN
# (target/release/weir), WEIR_BENCH (target/release/weir-bench), PORT (19600, Weir's AMQP port;
# its Kafka ports from PORT+10), DURATION (10s), WARMUP (3s), OUT (target/amqp-vs-rabbitmq).
# CASES (space-separated NAME:FLAGS, flags joined by commas) replaces the default cases: 1 queue
# durable and transient, 16 durable queues, 1 KiB durable, 16 transient queues, and 1,000 durable
# queues with a consumer each (4 consumer connections).
# Prints one line per run; the JSON and the tables of every run are kept in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-2}
RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5674/%2f}
WEIR_BIN=${WEIR_BIN:-target/release/weir}
BENCH=${WEIR_BENCH:-target/release/weir-bench}
PORT=${PORT:-19600}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
OUT=${OUT:-target/amqp-vs-rabbitmq}
mkdir -p "$OUT"
default_cases="durable1:--durable transient1: durable16:--durable,--queues,16,--consumers,2"
default_cases+=" durable1k:--durable,--message-bytes,1024 transient16:--queues,16,--consumers,2"
default_cases+=" durable1000q:--durable,--queues,1000,--consumers,4"
read -r -a cases <<<"${CASES:-$default_cases}"

run() { # broker, case (name:flags), round
    local broker=$1 name=${2%%:*} flags=${2#*:} round=$3
    flags=${flags//,/ }
    local json="$OUT/$name-$broker-$round.json"
    local target=(--url "$RABBITMQ_URL")
    if [ "$broker" = weir ]; then
        target=(--spawn-server --weir-bin "$WEIR_BIN" --server-cpus 0
            --url "amqp://guest:guest@127.0.0.1:$PORT/%2f"
            --server-kafka-listen "127.0.0.1:$((PORT + 10))")
    fi
    # shellcheck disable=SC2086 # the flags are words on purpose
    if ! "$BENCH" amqp "${target[@]}" --cpus 1 --duration "$DURATION" --warmup "$WARMUP" \
        $flags --json "$json" >"$OUT/$name-$broker-$round.txt" 2>&1; then
        echo "$name $broker round $round FAILED (see $OUT/$name-$broker-$round.txt)" >&2
        return 1
    fi
    python3 - "$json" "$name" "$broker" "$round" <<'PY'
import json, sys
path, name, broker, round_ = sys.argv[1:]
r = json.load(open(path))
print(f"{name:10} {broker:8} round {round_}: publish {r['publish_msgs_per_s']:9.0f}"
      f" consume {r['consume_msgs_per_s']:9.0f} msgs/s, confirm p99"
      f" {r['publish_confirm_p99_ms']:.1f} ms, e2e p99 {r['e2e_p99_ms']:.1f} ms")
PY
}

for round in $(seq 1 "$rounds"); do
    for case in "${cases[@]}"; do
        if (( round % 2 )); then
            run weir "$case" "$round"
            run rabbitmq "$case" "$round"
        else
            run rabbitmq "$case" "$round"
            run weir "$case" "$round"
        fi
    done
done
