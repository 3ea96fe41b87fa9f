#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine for fault tests: nodes amqprpc-c1..3 on
# 127.0.0.1:11811..11813 (distinct node names, AMQP and distribution ports, one shared private
# cookie), c2 and c3 joined to c1.
#   scripts/cluster.sh start|stop|status
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AMQPRPC_BROKER_COOKIE="${AMQPRPC_BROKER_COOKIE:-amqprpc-cluster-test}"
NODES=(1 2 3)

node() { # N ARGS... -> broker.sh for node N
  local n=$1
  shift
  AMQPRPC_BROKER_NAME="amqprpc-c$n" AMQPRPC_BROKER_PORT="$((11810 + n))" "$ROOT/scripts/broker.sh" "$@"
}

case "${1:-}" in
start)
  pids=()
  for n in "${NODES[@]}"; do
    node "$n" start >/dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for n in 2 3; do
    if node "$n" ctl cluster_status 2>/dev/null | grep -q "amqprpc-c1@localhost"; then continue; fi
    node "$n" ctl stop_app >/dev/null
    node "$n" ctl join_cluster amqprpc-c1@localhost >/dev/null
    node "$n" ctl start_app >/dev/null
  done
  node 1 ctl cluster_status | grep -A4 "Running Nodes" >&2
  for n in "${NODES[@]}"; do node "$n" url; done
  ;;
stop)
  for n in 3 2 1; do node "$n" stop || true; done
  # The nodes' data knows the cluster; start afresh next time.
  for n in "${NODES[@]}"; do node "$n" clean >/dev/null 2>&1 || true; done
  ;;
status)
  for n in "${NODES[@]}"; do node "$n" status || true; done
  ;;
*)
  echo "usage: scripts/cluster.sh start|stop|status" >&2
  exit 2
  ;;
esac
