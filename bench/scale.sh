#!/usr/bin/env bash
# The scale tables: one coordinator process, real gRPC on loopback, workers simulated by
# kb-bench (the same calls a worker makes, no Kafka writes), a target broker only for the
# plan's metadata checks. Prints two markdown tables.
# Usage: bash bench/scale.sh [BROKER]   (bench/run.sh calls it with its broker; alone, it
#        starts a tansu of its own)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet -p kafka-backup -p kafka-backup-bench >&2
KB="$ROOT/target/release/kafka-backup"
BENCH="$ROOT/target/release/kb-bench"
W="$(mktemp -d /tmp/kb-scale.XXXXXX)"
COORD_PID=""
BROKER_PID=""
cleanup() {
  [ -n "$COORD_PID" ] && kill "$COORD_PID" 2>/dev/null
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; exit 1
}

BROKER="${1:-}"
if [ -z "$BROKER" ]; then
  scripts/test-env.sh install >&2
  BPORT="${SCALE_BROKER_PORT:-19392}"
  BROKER="127.0.0.1:$BPORT"
  (cd "$W" && exec tansu broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
     --storage-engine sqlite://broker.db >broker.log 2>&1) &
  BROKER_PID=$!
  wait_port "$BPORT"
fi

CPORT="${SCALE_COORD_PORT:-19351}"
URL="http://127.0.0.1:$CPORT"
TICK=$(getconf CLK_TCK)

start_coordinator() {
  stop_coordinator
  rm -rf "$W/ledger"
  "$KB" coordinator --listen "127.0.0.1:$CPORT" --state-dir "$W/ledger" >"$W/coordinator.log" 2>&1 &
  COORD_PID=$!
  wait_port "$CPORT"
}
stop_coordinator() {
  if [ -n "$COORD_PID" ]; then kill "$COORD_PID" 2>/dev/null || true; wait "$COORD_PID" 2>/dev/null || true; fi
  COORD_PID=""
}
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$COORD_PID/status"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$COORD_PID/status"; }
cpu_secs() { awk -v t="$TICK" '{printf "%.2f", ($14+$15)/t}' "/proc/$COORD_PID/stat"; }
j() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
f1() { python3 -c "print(f'{$1:.1f}')"; }
f2() { python3 -c "print(f'{$1:.2f}')"; }

# (a) One partition of 10 .. 1,000,000 segments: plan, lease, page, 300 checkpoints.
declare -A PLAN LARGEST CPMED CPP99 RSS
for n in 10 10000 100000 1000000; do
  "$BENCH" gen-manifest "$W/backups" "s$n" scale 1 "$n" >/dev/null
  start_coordinator
  out=$("$BENCH" scale-task "$URL" "$W/backups" "s$n" scale "$BROKER" 300)
  PLAN[$n]=$(echo "$out" | j '["plan_ms"]')
  LARGEST[$n]=$(echo "$out" | j '["largest_message_bytes"]')
  CPMED[$n]=$(echo "$out" | j '["checkpoint_median_ms"]')
  CPP99[$n]=$(echo "$out" | j '["checkpoint_p99_ms"]')
  RSS[$n]=$(peak_rss_mb)
  stop_coordinator
  [ "$n" != 1000000 ] && rm -rf "$W/backups/s$n"
done
MANIFEST_MB=$(python3 -c "import os; print(f'{os.path.getsize(\"$W/backups/s1000000/manifest.json\")/1e6:.0f}')")

# The dry run of the million-segment backup, whole process (embedded coordinator).
/usr/bin/time -f "%e %M" -o "$W/dry" "$KB" restore --storage "$W/backups" --backup-id s1000000 \
  --source-topic scale --target-topic scale-dry --bootstrap-servers "$BROKER" --create-topics \
  --dry-run >/dev/null
DRY_S=$(cut -d' ' -f1 "$W/dry")
DRY_MB=$(python3 -c "print(f'{$(cut -d' ' -f2 "$W/dry")/1024:.0f}')")
rm -rf "$W/backups/s1000000"

# (b) Simulated workers: 3 tasks of 64 segments (1 GiB, ~10.7 s at 100 MB/s) per worker,
# 30 s each run.
SECS=30
declare -A GPS CPS P99 CP99 CPU WRSS DONE ERR
for w in 10 100 500; do
  "$BENCH" gen-manifest "$W/backups" "w$w" workers $((w * 3)) 64 >/dev/null
  start_coordinator
  c0=$(cpu_secs)
  out=$("$BENCH" scale-workers "$URL" "$W/backups" "w$w" workers "$BROKER" "$w" "$SECS")
  c1=$(cpu_secs)
  GPS[$w]=$(echo "$out" | j '["grants_per_sec"]')
  CPS[$w]=$(echo "$out" | j '["checkpoints_per_sec"]')
  P99[$w]=$(echo "$out" | j '["p99_ms"]')
  CP99[$w]=$(echo "$out" | j '["checkpoint_p99_ms"]')
  DONE[$w]=$(echo "$out" | j '["tasks_completed"]')
  ERR[$w]=$(echo "$out" | j '["worker_errors"]')
  SECONDS_RUN=$(echo "$out" | j '["seconds"]')
  CPU[$w]=$(python3 -c "print(f'{($c1 - $c0)/$SECONDS_RUN:.2f}')")
  WRSS[$w]=$(rss_mb)
  stop_coordinator
  rm -rf "$W/backups/w$w"
done

echo "Scale benchmark of $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)): one coordinator process, workers simulated over real gRPC on loopback, release build"
echo
echo "| segments in the partition | plan (s) | largest gRPC message (KB) | checkpoint report, median (ms) | p99 (ms) | median vs 10 segments | coordinator peak RSS (MB) |"
echo "|---|---|---|---|---|---|---|"
for n in 10 10000 100000 1000000; do
  echo "| $(printf "%'d" "$n") | $(f2 "${PLAN[$n]}/1000") | $(f1 "${LARGEST[$n]}/1000") | $(f2 "${CPMED[$n]}") | $(f2 "${CPP99[$n]}") | $(f2 "${CPMED[$n]}/${CPMED[10]}") | ${RSS[$n]} |"
done
echo
echo "Dry run of the 1,000,000-segment backup (${MANIFEST_MB} MB manifest), whole process: ${DRY_S} s, peak RSS ${DRY_MB} MB (targets 1.5 s, 400 MB)."
echo
echo "| simulated workers | grants/s | checkpoints/s | p99 of all calls (ms) | checkpoint p99 (ms) | tasks completed | coordinator CPU (cores) | coordinator RSS (MB) | worker errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for w in 10 100 500; do
  echo "| $w | $(f1 "${GPS[$w]}") | $(f1 "${CPS[$w]}") | $(f1 "${P99[$w]}") | $(f1 "${CP99[$w]}") | ${DONE[$w]} | ${CPU[$w]} | ${WRSS[$w]} | ${ERR[$w]} |"
done
