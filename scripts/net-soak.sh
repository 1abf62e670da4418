#!/usr/bin/env bash
# Bounded randomized soak of network faults (tests/network_faults.rs::network_soak): for
# MINUTES, restore after restore on separate hosts (network namespaces; needs root), each run
# with random kill -9 of workers, coordinator restarts, partitions and broker delay/loss.
# Prints the seed and one line per run; exits non-zero on any lost or duplicated record (the
# whole output, with the processes' last log lines on a failure, is in target/net-soak.log).
# Usage: scripts/net-soak.sh [MINUTES=20] [SEED]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export KB_NET_SOAK_MINUTES="${1:-20}"
[ -n "${2:-}" ] && export KB_NET_SOAK_SEED="$2"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
scripts/test-env.sh start
trap 'scripts/test-env.sh stop' EXIT
eval "$(scripts/test-env.sh env)"
export KAFKA_BACKUP_REQUIRE_SERVERS=1
mkdir -p target
LOG=target/net-soak.log
# The run itself is bounded by MINUTES; the last restore may take a few minutes more.
rc=0
timeout $(( KB_NET_SOAK_MINUTES * 60 + 900 )) \
  cargo test --test network_faults network_soak -- --ignored --exact --nocapture >"$LOG" 2>&1 || rc=$?
grep -E "^(network soak|run [0-9]+ seed)|test result" "$LOG" || true
if [ "$rc" != 0 ]; then
  echo "soak FAILED (exit $rc); the end of $LOG:"
  tail -n 120 "$LOG"
fi
exit "$rc"
