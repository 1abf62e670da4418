#!/usr/bin/env bash
# Test servers for kafka-backup, all on loopback:
#   two tansu 0.6.0 brokers (SQLite engine; its memory engine answers ListOffsets wrongly)
#   and a moto S3 server.
# Usage: scripts/test-env.sh install | start | stop | env
# `start` prints nothing but errors; `env` prints the variables the tests read.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/.test-env"
BROKER1_PORT="${KB_TEST_BROKER1_PORT:-19092}"
BROKER2_PORT="${KB_TEST_BROKER2_PORT:-19093}"
# A third broker on tansu's memory engine: its group coordinator answers DescribeGroups
# (SQLite's fails on any known group), so the active-group refusal is tested against it.
BROKERMEM_PORT="${KB_TEST_BROKERMEM_PORT:-19094}"
MOTO_PORT="${KB_TEST_MOTO_PORT:-15000}"
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"

install() {
  if ! command -v tansu >/dev/null || ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "installing tansu $TANSU_VERSION (takes several minutes on 2 cores)..." >&2
    CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked \
      || CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql
  fi
  if ! python3 -c 'import moto.server' 2>/dev/null; then
    echo "installing moto[server] from PyPI..." >&2
    python3 -m pip install --quiet 'moto[server]'
  fi
  # Network namespaces and nftables, for the network-fault tests (tests/network_faults.rs).
  if ! command -v nft >/dev/null || ! command -v ip >/dev/null; then
    echo "installing nftables and iproute2 from Debian..." >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq nftables iproute2 >/dev/null \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq nftables iproute2 >/dev/null; }
  fi
  # A gRPC client that is not ours, for the health and reflection tests.
  if ! python3 -c 'import grpc_health.v1, grpc_reflection.v1alpha' 2>/dev/null; then
    echo "installing grpcio-health-checking and grpcio-reflection from PyPI..." >&2
    python3 -m pip install --quiet grpcio-health-checking grpcio-reflection
  fi
}

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$name did not start on 127.0.0.1:$port; see $DIR/$name.log" >&2
  exit 1
}

start_broker() {
  local name=$1 port=$2 engine=${3:-sqlite://$1.db}
  if [ -f "$DIR/$name.pid" ] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then return 0; fi
  rm -f "$DIR/$name.db" "$DIR/$name.db-"*
  (cd "$DIR" || exit 1
   nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$engine" >"$name.log" 2>&1 &
   echo $! >"$name.pid")
  wait_port "$port" "$name"
}

start_moto() {
  if [ -f "$DIR/moto.pid" ] && kill -0 "$(cat "$DIR/moto.pid")" 2>/dev/null; then return 0; fi
  (cd "$DIR" || exit 1
   nohup python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >moto.log 2>&1 &
   echo $! >moto.pid)
  wait_port "$MOTO_PORT" moto
}

stop() {
  for name in broker1 broker2 brokermem moto; do
    if [ -f "$DIR/$name.pid" ]; then
      local pid; pid="$(cat "$DIR/$name.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$DIR/$name.pid"
    fi
  done
}

print_env() {
  cat <<EOV
export KAFKA_BACKUP_TEST_BROKER=127.0.0.1:$BROKER1_PORT
export KAFKA_BACKUP_TEST_BROKER2=127.0.0.1:$BROKER2_PORT
export KAFKA_BACKUP_TEST_BROKER_MEM=127.0.0.1:$BROKERMEM_PORT
export KAFKA_BACKUP_TEST_S3_ENDPOINT=http://127.0.0.1:$MOTO_PORT
export KAFKA_BACKUP_TEST_TANSU=$(command -v tansu)
EOV
}

case "${1:-}" in
  install) install ;;
  start)
    install
    mkdir -p "$DIR"
    start_broker broker1 "$BROKER1_PORT"
    start_broker broker2 "$BROKER2_PORT"
    start_broker brokermem "$BROKERMEM_PORT" "memory://tansu/"
    start_moto
    ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
