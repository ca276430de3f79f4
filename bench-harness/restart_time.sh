#!/usr/bin/env bash
# Clean-restart time of a broker holding several GB, A/B with alternating binaries (issue 14):
# writes the data once with NEW, then restarts BASE, NEW, BASE, NEW on the same data dir and prints
# the time from exec to the "weir ready" line, each shard's "logs recovered ... scanned_bytes" line
# and the load average. A binary without the checkpoint ignores the checkpoint files and rescans.
#
#   bench-harness/restart_time.sh BASE_WEIR NEW_WEIR [MESSAGES] [DATA_DIR] [PORT]
set -euo pipefail
base=$1 new=$2 messages=${3:-3000000} dir=${4:-/tmp/weir-restart-time} port=${5:-22900}
here=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$dir" && mkdir -p "$dir"
start_broker() { # binary label
  local started
  started=$(date +%s.%N)
  "$1" --data-dir "$dir/data" --listen "127.0.0.1:$port" --amqp-listen none \
    --metrics-listen none --cpus 0-1 >"$dir/$2.log" 2>&1 &
  pid=$!
  until grep -q "weir ready" "$dir/$2.log"; do sleep 0.02; done
  echo "$2: ready after $(echo "$(date +%s.%N) - $started" | bc) s; load $(cut -d' ' -f1-3 /proc/loadavg);" \
    "$(grep 'logs recovered' "$dir/$2.log" | sed 's/.*INFO //' | tr '\n' ' ')"
}
stop_broker() { kill -TERM "$pid"; wait "$pid"; }
start_broker "$new" fill
"$here/target/release/weir-bench" --bootstrap "127.0.0.1:$port" --topic big --partitions 2 \
  --producers 2 --messages "$messages" --message-bytes 1000 --no-consume | tail -1
stop_broker
du -sh "$dir/data"
for round in 1 2; do
  start_broker "$base" "base$round"; stop_broker
  start_broker "$new" "new$round"; stop_broker
done
