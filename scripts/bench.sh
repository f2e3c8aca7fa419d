#!/usr/bin/env bash
# The benchmark, in one run on this machine, from empty:
#   (a) the database ceiling: pgbench running one order creation's writes per
#       transaction (bench/create-order.sql) at several client counts;
#   (b) the broker ceiling: pipelined JetStream publishes and an explicit-ack
#       pull consumer;
#   (c) the whole system (release build, every process as scripts/up.sh runs
#       them) under scenario 1: the highest rate meeting the SLO, a run at half
#       the pgbench ceiling, and the scenario-3 burst;
# then `posctl check` (read models = write model), a timed `posctl rebuild
# bills`; then the rows ten million events leave behind, bulk-loaded, and the
# same load again (flat cost as data grows); and BENCHMARKS.md with every
# figure and the ratios of (c) to (a), (b) and of full to empty.
#
# It uses its own database (smartpos_bench), stream prefix (BENCH) and ports
# (18080, 18081, 19101, 19102), so it runs beside `scripts/up.sh`. Results and
# the processes' logs are kept in target/bench/. Takes about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[bench] %s\n' "$*" >&2; }

scripts/services.sh
cargo build --release --bins

OUT=${BENCH_OUT:-target/bench}
rm -rf "$OUT" && mkdir -p "$OUT"
git rev-parse --short HEAD > "$OUT/commit" 2>/dev/null || echo "not a git checkout" > "$OUT/commit"  # the commit measured
date -u '+%Y-%m-%d %H:%M' > "$OUT/started"  # when the run began, for the report
export DATABASE_URL=${BENCH_DATABASE_URL:-postgres://smartpos:smartpos@127.0.0.1:5432/smartpos_bench}
export NATS_STREAM_PREFIX=BENCH NATS_SUBJECT_PREFIX=bench
export COMMAND_API_ADDR=127.0.0.1:18080 QUERY_API_ADDR=127.0.0.1:18081
export PROJECTORS_ADDR=127.0.0.1:19101 WORKERS_ADDR=127.0.0.1:19102
export LOADGEN_COMMAND_URL=http://$COMMAND_API_ADDR LOADGEN_QUERY_URL=http://$QUERY_API_ADDR
export RECEIPT_DIR=${RECEIPT_DIR:-$OUT/receipts}
B=target/release

log "from empty: dropping $DATABASE_URL and the BENCH_* streams"
$B/loadgen reset

log "(a) database ceiling"
$B/loadgen pgbench --json "$OUT/pgbench.json" --seconds "${BENCH_PGBENCH_SECONDS:-15}"
log "(b) broker ceiling"
$B/loadgen broker --json "$OUT/broker.json"

log "(c) the system"
$B/posctl setup
pids=()
stop() { [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
for p in command-api projectors query-api workers; do
  $B/$p >"$OUT/$p.log" 2>&1 & pids+=($!)
done
ready() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 18080 18081 19101 19102; do
  for _ in $(seq 1 300); do ready $port && break; sleep 0.1; done
  ready $port || { log "nothing listens on $port; see $OUT/*.log"; exit 1; }
done

# Every fixed-rate run and every step of the searches starts from a quiet
# database (scripts/pg-quiet.sh: VACUUM ANALYZE, CHECKPOINT), not from the
# background work an overloaded step leaves behind.
quiet() { scripts/pg-quiet.sh || log "scripts/pg-quiet.sh failed; measuring anyway"; }
MAX=(--start "${BENCH_START_RATE:-200}" --step-seconds "${BENCH_STEP_SECONDS:-20}" --between-steps scripts/pg-quiet.sh)

$B/loadgen max --json "$OUT/max.json" "${MAX[@]}"
# A fixed rate below the edge, where p99 is steady enough to compare with the same run after the history.
quiet
$B/loadgen run --json "$OUT/empty-fixed.json" --rate-of-max "$OUT/max.json" --fraction 0.8 --seconds 30
quiet
$B/loadgen run --json "$OUT/half.json" --rate-of "$OUT/pgbench.json" --fraction 0.5 --seconds 30
$B/loadgen max --json "$OUT/reads.json" --mix reads --start 400 --step-seconds 10 --max-rate 80000
quiet
$B/loadgen burst --json "$OUT/burst.json" --peak-of "$OUT/max.json" --ramp-seconds 15 --sustain-seconds 30

log "consistency: read models vs write model"
$B/posctl check --wait 300 | tee "$OUT/check.txt"
log "rebuild of the bills projection from the whole stream"
# The machine's CPU by program while it runs (rebuild-cpu.json): what limits the rate.
$B/loadgen profile --json "$OUT/rebuild-cpu.json" -- $B/posctl rebuild bills 2>&1 | tee "$OUT/rebuild.txt"
$B/posctl check --wait 60 | tee -a "$OUT/check.txt"

log "flat cost: the rows of ${BENCH_HISTORY_EVENTS:-10000000} events, then the same load again"
$B/loadgen history --events "${BENCH_HISTORY_EVENTS:-10000000}" --json "$OUT/history.json"
# Write the loaded gigabytes out now rather than during the measurement.
quiet
$B/loadgen run --json "$OUT/full-fixed.json" --rate-of-max "$OUT/max.json" --fraction 0.8 --seconds 30
$B/loadgen max --json "$OUT/full-max.json" "${MAX[@]}"

stop
pids=()
$B/loadgen report --dir "$OUT" --out BENCHMARKS.md --notes bench/NOTES.md
log "wrote BENCHMARKS.md (results and logs in $OUT)"
