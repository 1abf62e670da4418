#!/usr/bin/env bash
# The test command: starts the loopback test servers (installing tansu and moto if missing),
# runs the whole test suite against them, and stops them again.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Fresh servers every run: tansu's SQLite engine slows down as its database grows.
scripts/test-env.sh stop
scripts/test-env.sh start
trap 'scripts/test-env.sh stop' EXIT
eval "$(scripts/test-env.sh env)"
# Every test that needs the servers must run: a missing one fails instead of skipping.
export KAFKA_BACKUP_REQUIRE_SERVERS=1
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"
