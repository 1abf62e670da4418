#!/usr/bin/env bash
# Quickstart: a real backup and restore on local defaults.
# Starts a tansu broker on 127.0.0.1:19192 (installing it if missing), fills a demo topic,
# backs it up to ./demo/backups, restores it to the renamed topic `orders-restored` through the
# embedded coordinator and workers, and prints what the restored topic holds.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export PATH="$HOME/.cargo/bin:$PATH"
PORT="${DEMO_BROKER_PORT:-19192}"
BROKER="127.0.0.1:$PORT"
DEMO="$ROOT/demo"

scripts/test-env.sh install
cargo build --quiet --bin kafka-backup --example demo_produce
KB="$ROOT/target/debug/kafka-backup"

rm -rf "$DEMO" && mkdir -p "$DEMO"
(cd "$DEMO" || exit 1
 nohup tansu broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
   --storage-engine sqlite://demo-broker.db >broker.log 2>&1 &
 echo $! >broker.pid)
trap 'kill "$(cat "$DEMO/broker.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done

echo "== 1. a demo topic 'orders' with 3 partitions and 3000 records"
"$ROOT/target/debug/examples/demo_produce" "$BROKER" orders 3 3000

echo "== 2. backup"
"$KB" backup --bootstrap-servers "$BROKER" --topics orders --backup-id demo-backup \
  --storage "$DEMO/backups" --segment-max-records 500
"$KB" describe --storage "$DEMO/backups" --backup-id demo-backup

echo "== 3. dry run of the restore"
"$KB" restore --storage "$DEMO/backups" --backup-id demo-backup --source-topic orders \
  --target-topic orders-restored --bootstrap-servers "$BROKER" --create-topics --dry-run

echo "== 4. restore to orders-restored (embedded coordinator + 3 workers)"
"$KB" restore --storage "$DEMO/backups" --backup-id demo-backup --source-topic orders \
  --target-topic orders-restored --bootstrap-servers "$BROKER" --create-topics \
  --checkpoint-state "$DEMO/state" --workers 3 --progress

echo "== 5. back up the restored topic and compare"
"$KB" backup --bootstrap-servers "$BROKER" --topics orders-restored --backup-id check \
  --storage "$DEMO/backups" >/dev/null
"$KB" describe --storage "$DEMO/backups" --backup-id check
echo "demo finished: files in $DEMO"
