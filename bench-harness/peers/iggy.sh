#!/usr/bin/env bash
# Weir beside Apache Iggy, one broker at a time on this machine, in one sitting.
#
#   bench-harness/peers/iggy.sh IGGY_CHECKOUT [IGGY_COMMIT] [ROUNDS]
#   IGGY_TREE=/path/to/built/iggy bench-harness/peers/iggy.sh - [IGGY_COMMIT] [ROUNDS]
#
# IGGY_CHECKOUT is a local clone of https://github.com/apache/iggy (CI cannot reach the source, so
# this is a tool for people who benchmark, not a CI step). The script checks out IGGY_COMMIT
# (default cc269ef, the commit of issue 15's table) in a detached worktree of that clone and builds
# `iggy-server` and `iggy-bench` with LTO off (Iggy's release profile turns it on; a 2-core
# machine then links for tens of minutes). With IGGY_TREE set to a tree where
# `target/release/iggy-server` and `target/release/iggy-bench` are already built, nothing is
# checked out or built (IGGY_CHECKOUT is then ignored; the table names the tree's HEAD).
# Iggy pins `rust-toolchain.toml` to a release that may not be installed: set RUSTUP_TOOLCHAIN
# (e.g. nightly) and CARGO_BUILD_JOBS for the build step as needed.
#
# For each round and workload it runs:
#   - Iggy: a fresh iggy-server (one shard, `taskset -c 0` and `cpu_allocation = 1`) on a fresh
#     data dir, ready when TCP 8090 accepts, then its own iggy-bench on CPU 1;
#   - Weir: weir-bench --spawn-server (a fresh weir, one shard on CPU 0, harness on CPU 1) with
#     weir-bench's default client settings (acks=1, 5 requests in flight as Kafka's default,
#     512 KiB batches, linger 1 ms, 32 MiB / 8 MiB per partition fetches), and with settings
#     matched to iggy-bench's (1 request in flight, batches of 1000
#     records: 100 KB or 1 MB; for the backlog also 1 MiB fetches, like iggy-bench's polls of
#     1000 messages);
# alternating which broker goes first every round. Results: OUT/peers.md (one markdown table,
# and links to the charts), every run's output beside it, and for each produce workload and
# round a latency chart OUT/peers-WORKLOAD-ROUND.svg drawn by `weir-bench peer-chart`: Iggy's
# per-batch percentiles (iggy-bench's report.json, written by its `output -o DIR` subcommand
# under OUT/iggy-report-WORKLOAD-ROUND/ after the measured run's actors have joined) and both
# Weir runs' per-request and per-record curves (their --json), on the log-log axes of
# weir-bench's --plot.
#
# Workloads (name: what is measured):
#   100b-1p      produce, 100 B records, 1 producer, 1 partition
#   100b-2p      produce, 100 B records, 2 producers, 2 partitions (Iggy: 2 streams of 1)
#   1000b-2p     produce, 1000 B records, 2 producers, 2 partitions (Iggy: 2 streams of 1)
#   1000b-2c-backlog  consume of a backlog: 1000 B records, 2 partitions, 2 consumers reading
#                what was produced before they started. Iggy: pinned-producer (2 producers, 2
#                streams) fills, then pinned-consumer (2 consumers) reads it, same server; Weir:
#                weir-bench --backlog. Default size 2 x 10^9 B of records (2,000,000 x 1000 B).
#
# Environment: WEIR_BENCH (target/release/weir-bench), WEIR_BIN (target/release/weir),
# DURATION (10s, Weir produce runs, after a 3 s warm-up), IGGY_MESSAGES (batches of 1000 per
# Iggy producer in the produce workloads, 2000: 200 MB of 100 B, 2 GB of 1000 B per producer),
# BACKLOG_MESSAGES (2000000 records of 1000 B in the backlog workload, both brokers), WEIR_PORT
# (19600), IGGY_PORT (8090), OUT (target/peers), WORKLOADS (all; space-separated names),
# WEIR_COMMIT (what the table names; default: HEAD of the checkout WEIR_BIN sits in),
# WEIR_EXTRA (more weir-bench arguments for every Weir run, e.g. `--server-set
# weir.tail.cache.shard.bytes=3000000000` to serve the backlog from memory as Iggy's page cache
# does; the table's header names them).
#
# p99: Iggy's is iggy-bench's "p99 latency" of its summary line, the mean over actors of each
# actor's p99 of one batch round trip (send of 1000 messages, or poll of up to 1000). Weir's
# produce p99 is per record (append to ack) and per request (a request carries a batch; at
# matched settings one batch of 1000 records), both given. For the backlog only throughput is
# compared (weir-bench's end-to-end latency there includes the wait in the backlog). The charts
# plot Iggy's p50, p90, p95, p99, p99.9 and p99.99 (each the mean over producers, as the summary
# line's), not its "max" (taken from 10 ms averages, it can sit below its p99); Weir's legend
# gives the mean records per request (about 930 at matched settings for 100b-1p: a 100 KB batch
# holds fewer than 1000 records of 100 B with their framing).
#
# STATUS: both halves run, 2 rounds, 2026-12-07 22:35–22:39 UTC on the 2-vCPU VM (Iggy cc269ef
# built with rustc 1.97.0-nightly, LTO off, given as IGGY_TREE; table in docs/benchmarks.md,
# "Iggy side by side"). The iggy-bench arguments, the server's environment (IGGY_SYSTEM_PATH,
# IGGY_CONFIG_PATH, root credentials, one shard) and the parsing of iggy-bench's summary line were
# checked against that commit's `--help` and real output. The build step itself (without
# IGGY_TREE) was run by hand with the same cargo arguments, not through this script. The charts
# (`output -o`, peer-chart) ran 2026-12-08 for 100b-1p and 100b-2p, 1 round (docs/benchmarks.md,
# "Latency on one chart"); not yet run for 1000b-2p.
set -euo pipefail
cd "$(dirname "$0")/../.."

checkout=${1:?usage: iggy.sh IGGY_CHECKOUT [IGGY_COMMIT] [ROUNDS] (IGGY_CHECKOUT may be - with IGGY_TREE)}
commit=${2:-cc269ef}
rounds=${3:-2}
WEIR_BENCH=${WEIR_BENCH:-target/release/weir-bench}
WEIR_BIN=${WEIR_BIN:-target/release/weir}
DURATION=${DURATION:-10s}
IGGY_MESSAGES=${IGGY_MESSAGES:-2000}
BACKLOG_MESSAGES=${BACKLOG_MESSAGES:-2000000}
WEIR_PORT=${WEIR_PORT:-19600}
IGGY_PORT=${IGGY_PORT:-8090}
OUT=${OUT:-target/peers}
WORKLOADS=${WORKLOADS:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if (( BACKLOG_MESSAGES % 2000 )); then
    echo "BACKLOG_MESSAGES must be a multiple of 2000 (2 actors x batches of 1000)" >&2
    exit 2
fi
backlog_batches=$(( BACKLOG_MESSAGES / 2000 )) # per Iggy producer and per consumer

build_iggy() {
    local tree
    if [ -n "${IGGY_TREE:-}" ]; then
        tree=$(cd "$IGGY_TREE" && pwd)
        local head
        head=$(git -C "$tree" rev-parse --short HEAD 2>/dev/null || echo unknown)
        case $head in
            "$commit"*) ;;
            *) echo "note: IGGY_TREE is at $head, not $commit; the table names $head" >&2 ;;
        esac
        commit=$head
    else
        tree="$OUT/iggy-src"
        if [ ! -d "$tree" ]; then
            git -C "$checkout" worktree add --detach "$tree" "$commit"
        fi
        git -C "$tree" checkout --quiet --detach "$commit"
        # LTO off, Iggy's codegen-units = 1 kept: the comparison is of the brokers' designs, not
        # of the linker. `-p`: without it cargo unifies features over the whole workspace, and the
        # bench dashboard's server turns on charming's `ssr`, which needs V8 (deno_core's build
        # downloads a prebuilt librusty_v8 from github.com); neither binary needs it.
        (cd "$tree" && CARGO_PROFILE_RELEASE_LTO=false cargo build --release \
            -p server -p iggy-bench --bin iggy-server --bin iggy-bench)
    fi
    IGGY_CONFIG="$tree/core/server/config.toml"
    IGGY_SERVER="$tree/target/release/iggy-server"
    IGGY_BENCH="$tree/target/release/iggy-bench"
    local f
    for f in "$IGGY_CONFIG" "$IGGY_SERVER" "$IGGY_BENCH"; do
        [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
    done
}

# Workloads: name | iggy-bench runs (";" separates runs against one server, the last is the
# measured one) | weir-bench arguments (Kafka defaults) | weir-bench arguments (matched to
# iggy-bench: 1 request in flight, 1000 records per batch). iggy-bench's global options go before
# the benchmark kind, its kind options before the transport (`tcp`).
workloads() {
    local m=$IGGY_MESSAGES b=$backlog_batches
    cat <<EOF
100b-1p|-b $m -m 100 -P 1000 pinned-producer --producers 1 --streams 1 tcp|--preset kafka-2014 --no-consume|--preset kafka-2014 --no-consume --max-in-flight 1 --batch-bytes 102400
100b-2p|-b $m -m 100 -P 1000 pinned-producer --producers 2 --streams 2 tcp|--message-bytes 100 --producers 2 --partitions 2 --no-consume|--message-bytes 100 --producers 2 --partitions 2 --no-consume --max-in-flight 1 --batch-bytes 102400
1000b-2p|-b $m -m 1000 -P 1000 pinned-producer --producers 2 --streams 2 tcp|--message-bytes 1000 --producers 2 --partitions 2 --no-consume|--message-bytes 1000 --producers 2 --partitions 2 --no-consume --max-in-flight 1 --batch-bytes 1048576
1000b-2c-backlog|-b $b -m 1000 -P 1000 pinned-producer --producers 2 --streams 2 tcp;-b $b -m 1000 -P 1000 pinned-consumer --consumers 2 --streams 2 tcp|--backlog --message-bytes 1000 --partitions 2 --consumers 2 --messages $BACKLOG_MESSAGES|--backlog --message-bytes 1000 --partitions 2 --consumers 2 --messages $BACKLOG_MESSAGES --max-in-flight 1 --batch-bytes 1048576 --fetch-max-bytes 1048576 --fetch-partition-max-bytes 1048576
EOF
}

wait_for_port() { # port, pid: until the port accepts, or the pid died, or 60 s passed
    local port=$1 pid=$2
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

run_iggy() { # workload name, iggy-bench runs, round
    local name=$1 runs=$2 round=$3 data="$OUT/iggy-data-$1-$3" pid run n=0 count out
    local -a argv
    rm -rf "$data"
    mkdir -p "$data"
    # One shard on CPU 0, as weir gets: the affinity mask is {0} and cpu_allocation = 1 takes
    # one core from it. The cwd is the data dir so that no stray .env is read.
    (cd "$data" && exec env IGGY_CONFIG_PATH="$IGGY_CONFIG" IGGY_SYSTEM_PATH="$data/local_data" \
        IGGY_TCP_ADDRESS="127.0.0.1:$IGGY_PORT" IGGY_SYSTEM_SHARDING_CPU_ALLOCATION=1 \
        taskset -c 0 "$IGGY_SERVER" --with-default-root-credentials) \
        >"$OUT/iggy-server-$name-$round.log" 2>&1 &
    pid=$!
    if ! wait_for_port "$IGGY_PORT" "$pid"; then
        echo "iggy-server for $name round $round did not listen (see $OUT/iggy-server-$name-$round.log)" >&2
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -rf "$data"
        return 0
    fi
    count=$(awk -F';' '{print NF}' <<<"$runs")
    while IFS= read -r run; do
        n=$(( n + 1 ))
        local -a report=()
        if (( n < count )); then
            out="$OUT/iggy-$name-$round-fill$n.txt"
        else
            out="$OUT/iggy-$name-$round.txt"
            # The measured run also writes report.json (its latency percentiles, for the chart)
            # under this directory; iggy-bench builds it after the actors have joined.
            report=(output -o "$OUT/iggy-report-$name-$round")
        fi
        read -r -a argv <<<"$run"
        # iggy-bench's server address belongs to the transport subcommand, the last word but
        # for the output subcommand after it.
        if ! taskset -c 1 "$IGGY_BENCH" "${argv[@]}" --server-address "127.0.0.1:$IGGY_PORT" \
            "${report[@]}" >"$out" 2>&1; then
            echo "iggy $name round $round FAILED (see $out)" >&2
        fi
    done < <(tr ';' '\n' <<<"$runs")
    kill "$pid"
    wait "$pid" || true
    rm -rf "$data"
}

run_weir() { # workload name, label, weir-bench args, round
    local name=$1 label=$2 args=$3 round=$4
    local -a timing=(--duration "$DURATION" --warmup 3s)
    case " $args " in *" --messages "*) timing=() ;; esac
    # shellcheck disable=SC2086 # the arguments are words on purpose
    if ! "$WEIR_BENCH" --spawn-server --weir-bin "$WEIR_BIN" --bootstrap "127.0.0.1:$WEIR_PORT" \
        --server-cpus 0 --cpus 1 "${timing[@]}" \
        --json "$OUT/weir-$label-$name-$round.json" $args ${WEIR_EXTRA:-} \
        >"$OUT/weir-$label-$name-$round.txt" 2>&1; then
        echo "weir $label $name round $round FAILED (see $OUT/weir-$label-$name-$round.txt)" >&2
    fi
}

run_round() { # round
    local round=$1 name iggy_runs weir_default weir_matched
    while IFS='|' read -r name iggy_runs weir_default weir_matched; do
        if [ -n "$WORKLOADS" ] && [[ " $WORKLOADS " != *" $name "* ]]; then
            continue
        fi
        echo "$(date -u +%H:%M:%S) round $round: $name" >&2
        if (( round % 2 )); then
            run_iggy "$name" "$iggy_runs" "$round"
            run_weir "$name" default "$weir_default" "$round"
            run_weir "$name" matched "$weir_matched" "$round"
        else
            run_weir "$name" matched "$weir_matched" "$round"
            run_weir "$name" default "$weir_default" "$round"
            run_iggy "$name" "$iggy_runs" "$round"
        fi
    done < <(workloads)
}

if [ "${SKIP_IGGY:-}" = 1 ]; then
    # The Weir half alone (to test this script where Iggy cannot be built).
    run_iggy() { :; }
else
    build_iggy
fi
# The broker measured is WEIR_BIN, which may come from another checkout than this script's.
weir_commit=${WEIR_COMMIT:-$(git -C "$(dirname "$WEIR_BIN")" rev-parse --short HEAD 2>/dev/null || echo unknown)}
weir_commit="$weir_commit (weir built $(date -u -r "$WEIR_BIN" '+%Y-%m-%d %H:%M' 2>/dev/null || echo '?') UTC)"
[ -n "${WEIR_EXTRA:-}" ] && weir_commit="$weir_commit, every Weir run with \`$WEIR_EXTRA\`"
start=$(date -u +%H:%M)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$rounds"); do
    run_round "$round"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
end=$(date -u +%H:%M)

# One latency chart per produce workload and round: Iggy's per-batch percentiles and both Weir
# runs' per-request and per-record curves (weir-bench peer-chart). Drawn only where all three
# runs left their files.
chart() { # workload name, round
    local name=$1 round=$2 iggy weir_short
    [ -d "$OUT/iggy-report-$name-$round" ] && [ -e "$OUT/weir-matched-$name-$round.json" ] \
        && [ -e "$OUT/weir-default-$name-$round.json" ] || return 0
    # iggy-bench names the directory inside after its parameters and the CPU.
    iggy=$(find "$OUT/iggy-report-$name-$round" -name report.json | head -n 1)
    [ -n "$iggy" ] || return 0
    weir_short=${weir_commit%% *}
    "$WEIR_BENCH" peer-chart --iggy "$iggy" \
        --title "$name, round $round: produce latency, Iggy $commit and Weir $weir_short" \
        --weir "matched (1 request in flight)=$OUT/weir-matched-$name-$round.json" \
        --weir "defaults (5 in flight)=$OUT/weir-default-$name-$round.json" \
        --out "$OUT/peers-$name-$round.svg" \
        || echo "peer-chart $name round $round FAILED" >&2
}
for round in $(seq 1 "$rounds"); do
    while IFS='|' read -r name _; do
        case $name in *backlog) continue ;; esac
        chart "$name" "$round"
    done < <(workloads)
done

python3 - "$OUT" "$rounds" "$commit" "$load_before" "$load_after" "$weir_commit" "$start" "$end" <<'EOF'
import glob, json, math, os, re, sys
out, rounds, commit, before, after, weir_commit, start, end = sys.argv[1:9]
rounds = int(rounds)
order = ["100b-1p", "100b-2p", "1000b-2p", "1000b-2c-backlog"]
seen = {re.sub(r"^weir-(default|matched)-(.*)-\d+\.json$", r"\2", os.path.basename(p))
        for p in glob.glob(f"{out}/weir-*-*.json")}
seen |= {re.sub(r"^iggy-(.*)-\d+\.txt$", r"\1", os.path.basename(p))
         for p in glob.glob(f"{out}/iggy-*-[0-9].txt")}
names = [n for n in order if n in seen] + sorted(seen - set(order))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# iggy-bench's summary, one line per actor group (at cc269ef, report/src/prints.rs):
# "Producers Results: Total throughput: X MB/s, Y messages/s, average throughput per producer:
#  ... p99 latency: Z ms, ..." ("Consumers Results: ..." for consumers).
SUMMARY = re.compile(r"(Producers|Consumers) Results: Total throughput: ([\d.]+) MB/s, ([\d.]+) messages/s"
                     r".*?p99 latency: ([\d.]+) ms")

def trunc(x, d=2):  # truncated, never rounded up
    return f"{math.floor(x * 10 ** d) / 10 ** d:.{d}f}"

def m(x):
    return trunc(x / 1e6)

def weir_runs(label, name):
    runs = []
    for r in range(1, rounds + 1):
        path = f"{out}/weir-{label}-{name}-{r}.json"
        if not os.path.exists(path):
            continue
        j = json.load(open(path))
        if j.get("errors"):
            runs.append(None)
            continue
        if name.endswith("backlog"):
            runs.append((j["consume_msgs_per_s"], None, None))
        else:
            rec = (j.get("produce_latency") or {}).get("p99_ms")
            req = (j.get("produce_request_latency") or {}).get("p99_ms")
            runs.append((j["produce_msgs_per_s"], rec, req))
    return runs

def iggy_runs(name):
    runs = []
    for r in range(1, rounds + 1):
        path = f"{out}/iggy-{name}-{r}.txt"
        if not os.path.exists(path):
            continue
        found = SUMMARY.search(ANSI.sub("", open(path).read()))
        runs.append((float(found.group(3)), float(found.group(4))) if found else None)
    return runs

def fmt_weir(runs):
    if not runs:
        return "not run"
    cells = []
    for x in runs:
        if x is None:
            cells.append("failed")
        elif x[1] is None:
            cells.append(f"{m(x[0])} M")
        else:
            cells.append(f"{m(x[0])} M (p99 {trunc(x[1])} rec / {trunc(x[2])} req ms)")
    return " / ".join(cells)

def fmt_iggy(runs):
    if not runs:
        return "not run"
    return " / ".join("unparsed" if x is None else f"{m(x[0])} M (p99 {trunc(x[1])} ms/batch)" for x in runs)

def ratios(w, i):
    cells = []
    for a, b in zip(w, i):
        cells.append("-" if a is None or b is None or not b[0] else trunc(a[0] / b[0]))
    return " / ".join(cells) or "-"

lines = [f"Iggy at `{commit}`, weir at {weir_commit}; {start}–{end} UTC; load average {before}"
         f" before, {after} after; {rounds} round(s), order alternating. M msgs/s (produce; consume"
         " for the backlog), one figure per round.", "",
         "| workload | Iggy (iggy-bench defaults) | Weir, weir-bench defaults | Weir, matched | Weir defaults / Iggy | Weir matched / Iggy |",
         "|---|---|---|---|---|---|"]
for name in names:
    i, d, mt = iggy_runs(name), weir_runs("default", name), weir_runs("matched", name)
    lines.append(f"| {name} | {fmt_iggy(i)} | {fmt_weir(d)} | {fmt_weir(mt)} | {ratios(d, i)} | {ratios(mt, i)} |")
charts = [f"[{n}, round {r}](peers-{n}-{r}.svg)" for n in names for r in range(1, rounds + 1)
          if os.path.exists(f"{out}/peers-{n}-{r}.svg")]
if charts:
    lines += ["", "Produce latency by percentile, Iggy per batch and Weir per request and per record"
              " (log-log): " + ", ".join(charts) + "."]
open(f"{out}/peers.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
