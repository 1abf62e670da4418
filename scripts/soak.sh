#!/usr/bin/env bash
# Bounded soak of the distributed failure test: repeats the run that kills workers at random
# moments and restarts the coordinator, with a fresh random seed each time.
# Usage: scripts/soak.sh [ITERATIONS=5] [MAX_MINUTES=60]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ITER="${1:-5}"
MAX_MIN="${2:-60}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
scripts/test-env.sh start
trap 'scripts/test-env.sh stop' EXIT
eval "$(scripts/test-env.sh env)"
deadline=$(( $(date +%s) + MAX_MIN * 60 ))
for i in $(seq 1 "$ITER"); do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "time limit reached after $((i - 1)) runs"; break; fi
  echo "== soak run $i/$ITER"
  cargo test --test restore_failures distributed_restore_survives -- --exact --nocapture 2>&1 \
    | grep -E "rng seed|killed|coordinator killed|test result" || { echo "soak run $i failed"; exit 1; }
done
