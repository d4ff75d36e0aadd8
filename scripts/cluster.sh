#!/usr/bin/env bash
# The scaled topology on one machine, as plain processes (no Docker): the control-plane on
# PostgreSQL, 2 gateways, 2 ingest workers, a Kafka-protocol broker (tansu) and InfluxDB 1.x,
# with the settings of deploy/compose.yaml (the services there, the same SMARTSOLAR_*
# variables; loopback addresses instead of container names, and ports moved by a base so a
# cluster never collides with a `serve` or a test on the default ports).
#
#   scripts/cluster.sh up             # start everything (installing what is missing), wait until ready
#   scripts/cluster.sh down           # stop what `up` started (SIGTERM, then SIGKILL after 20 s)
#   scripts/cluster.sh down --purge   # ... and drop its database, InfluxDB database and directory
#   scripts/cluster.sh status         # which processes run, and the addresses
#   scripts/cluster.sh kill ROLE      # kill -9 one process (cp, gw1, gw2, ingest1, ingest2)
#   scripts/cluster.sh start ROLE     # start one process again and wait until it is ready
#
# Settings (environment):
#   SMARTSOLAR_BIN                the binary (default: build it with cargo, debug profile)
#   SMARTSOLAR_CLUSTER_DIR        logs, pid files, data dirs (default /tmp/smartsolar-cluster)
#   SMARTSOLAR_CLUSTER_PORT_BASE  ports (default 18000): API base+80, the cluster's Kafka broker
#                                 base+92, gw1 QUIC/TCP/HTTP
#                                 base+433/+434/+89, gw2 base+533/+534/+189, metrics
#                                 (/metrics, /ready) cp base+100, gw1 +101, gw2 +102,
#                                 ingest1 +103, ingest2 +104
#   SMARTSOLAR_CLUSTER_DB         PostgreSQL and InfluxDB database name (default smartsolar_cluster)
#   SMARTSOLAR_CLUSTER_PG_ADMIN   admin URL to create it (default postgres://postgres@127.0.0.1:5432/postgres)
#   SMARTSOLAR_ADMIN_USER / SMARTSOLAR_ADMIN_PASSWORD  the API's first admin
#                                 (default admin@example.com / admin-password)
#
# `up` prints the addresses as shell assignments (CLUSTER_API=..., CLUSTER_GW1_TCP=..., and
# CLUSTER_CERT, the gateways' certificate, which units pin), also kept in $DIR/addresses.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${SMARTSOLAR_CLUSTER_DIR:-/tmp/smartsolar-cluster}"
BASE="${SMARTSOLAR_CLUSTER_PORT_BASE:-18000}"
DB="${SMARTSOLAR_CLUSTER_DB:-smartsolar_cluster}"
PG_ADMIN="${SMARTSOLAR_CLUSTER_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_URL="${PG_ADMIN%/*}/$DB"
ROLES="cp gw1 gw2 ingest1 ingest2"
# The cluster's own Kafka-protocol broker (tansu, in memory), as compose runs its own Kafka: a
# cluster never shares topics or consumer groups with another cluster or an earlier run, whose
# group members (a gateway killed with kill -9, say) the broker would still remember.
BROKER="127.0.0.1:$((BASE + 92))"

log() { printf '== cluster: %s\n' "$*" >&2; }

metrics_port() {
  case "$1" in
    cp) echo $((BASE + 100)) ;; gw1) echo $((BASE + 101)) ;; gw2) echo $((BASE + 102)) ;;
    ingest1) echo $((BASE + 103)) ;; ingest2) echo $((BASE + 104)) ;;
    *) echo "unknown role $1 (one of: $ROLES)" >&2; return 1 ;;
  esac
}

binary() {
  if [ -n "${SMARTSOLAR_BIN:-}" ]; then echo "$SMARTSOLAR_BIN"; return; fi
  log "building smartsolar (debug)"
  cargo build -q --bin smartsolar >&2
  echo "${CARGO_TARGET_DIR:-target}/debug/smartsolar"
}

# The environment every process shares: deploy/compose.yaml's `x-smartsolar` block.
common_env() {
  export RUST_LOG="${RUST_LOG:-info}"
  export SMARTSOLAR_DATABASE_URL="$PG_URL"
  export SMARTSOLAR_BUS=kafka
  export SMARTSOLAR_KAFKA_BROKERS="$BROKER"
  export SMARTSOLAR_TSDB=influx
  export SMARTSOLAR_INFLUX_URL="$SMARTSOLAR_TEST_INFLUX_URL"
  export SMARTSOLAR_INFLUX_DB="$DB"
  # One data directory for all: the gateways share the certificate generated there (units
  # pin one certificate whichever gateway they reach), the control-plane its webhook key.
  export SMARTSOLAR_DATA_DIR="$DIR/data"
  export SMARTSOLAR_ADMIN_USER="${SMARTSOLAR_ADMIN_USER:-admin@example.com}"
  export SMARTSOLAR_ADMIN_PASSWORD="${SMARTSOLAR_ADMIN_PASSWORD:-admin-password}"
}

# start_role ROLE: starts one process in the background (its log in $DIR/ROLE.log).
start_role() {
  local role=$1 bin=$2 cmd
  local metrics; metrics=$(metrics_port "$role")
  (
    common_env
    export SMARTSOLAR_METRICS_ADDR="127.0.0.1:$metrics"
    case "$role" in
      cp)
        cmd=control-plane
        export SMARTSOLAR_HTTP_ADDR="127.0.0.1:$((BASE + 80))" ;;
      gw1|gw2)
        cmd=gateway
        local off=0; [ "$role" = gw2 ] && off=100
        export SMARTSOLAR_GATEWAY_NODE_ID="$role"
        export SMARTSOLAR_GATEWAY_QUIC_ADDR="127.0.0.1:$((BASE + 433 + off))"
        export SMARTSOLAR_GATEWAY_TCP_ADDR="127.0.0.1:$((BASE + 434 + off))"
        export SMARTSOLAR_GATEWAY_HTTP_ADDR="127.0.0.1:$((BASE + 89 + off))" ;;
      ingest1|ingest2) cmd=ingest ;;
    esac
    exec "$bin" "$cmd" >>"$DIR/$role.log" 2>&1
  ) &
  echo $! >"$DIR/$role.pid"
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

wait_ready() { # wait_ready ROLE: its /ready answers 200 within 90 s
  local role=$1 port; port=$(metrics_port "$role")
  for _ in $(seq 1 180); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/ready"; then return 0; fi
    if ! alive "$role"; then
      log "$role exited; the end of $DIR/$role.log:"; tail -20 "$DIR/$role.log" >&2; return 1
    fi
    sleep 0.5
  done
  log "$role not ready after 90 s: $(curl -s "http://127.0.0.1:$port/ready")"
  tail -20 "$DIR/$role.log" >&2
  return 1
}

addresses() {
  cat <<EOF
CLUSTER_API=http://127.0.0.1:$((BASE + 80))
CLUSTER_GW1_QUIC=127.0.0.1:$((BASE + 433))
CLUSTER_GW1_TCP=127.0.0.1:$((BASE + 434))
CLUSTER_GW1_HTTP=127.0.0.1:$((BASE + 89))
CLUSTER_GW2_QUIC=127.0.0.1:$((BASE + 533))
CLUSTER_GW2_TCP=127.0.0.1:$((BASE + 534))
CLUSTER_GW2_HTTP=127.0.0.1:$((BASE + 189))
CLUSTER_CERT=$DIR/data/gateway-cert.pem
CLUSTER_DB=$PG_URL
CLUSTER_KAFKA=$BROKER
EOF
}

services() {
  # shellcheck source=services.sh
  source scripts/services.sh
  influx_start
  # services.sh reads its settings when sourced: a subshell for the cluster's broker.
  ( export SMARTSOLAR_SERVICES_DIR="$DIR/broker" SMARTSOLAR_KAFKA_PORT=$((BASE + 92))
    # shellcheck source=services.sh
    source scripts/services.sh
    kafka_start )
}

broker_stop() {
  local pid_file="$DIR/broker/tansu.pid"
  [ -f "$pid_file" ] || return 0
  kill "$(cat "$pid_file")" 2>/dev/null || true
  rm -f "$pid_file"
}

up() {
  mkdir -p "$DIR/data"
  services
  if ! psql "$PG_ADMIN" -qtAc "select 1 from pg_database where datname = '$DB'" | grep -q 1; then
    log "creating database $DB"
    psql "$PG_ADMIN" -qtAc "create database \"$DB\"" >/dev/null
  fi
  local bin; bin=$(binary)
  log "migrating $DB"
  ( common_env; "$bin" migrate >>"$DIR/migrate.log" 2>&1 ) \
    || { tail -20 "$DIR/migrate.log" >&2; exit 1; }
  # The control-plane first (it creates the admin), then the rest side by side.
  for role in $ROLES; do
    if alive "$role"; then log "$role already runs"; else start_role "$role" "$bin"; fi
    [ "$role" = cp ] && wait_ready cp
  done
  for role in $ROLES; do wait_ready "$role"; done
  addresses | tee "$DIR/addresses"
  log "up: $ROLES (logs in $DIR)"
}

stop_role() { # stop_role ROLE SIGNAL
  local role=$1 sig=$2
  alive "$role" || { rm -f "$DIR/$role.pid"; return 0; }
  local pid; pid=$(cat "$DIR/$role.pid")
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$role did not stop after SIG$sig in 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$role.pid"
}

down() {
  for role in ingest1 ingest2 gw1 gw2 cp; do stop_role "$role" TERM; done
  broker_stop
  if [ "${1:-}" = --purge ]; then
    psql "$PG_ADMIN" -qtAc "drop database if exists \"$DB\" with (force)" >/dev/null || true
    curl -sf -o /dev/null -XPOST "$SMARTSOLAR_TEST_INFLUX_URL/query" \
      --data-urlencode "q=DROP DATABASE \"$DB\"" || true
    rm -rf "$DIR"
  fi
  log "down"
}

# The services' addresses (without starting them) for `down --purge`.
# shellcheck source=services.sh
source scripts/services.sh

case "${1:-}" in
  up) up ;;
  down) down "${2:-}" ;;
  status)
    for role in $ROLES; do
      if alive "$role"; then echo "$role running (pid $(cat "$DIR/$role.pid"))"; else echo "$role stopped"; fi
    done
    addresses ;;
  kill) metrics_port "${2:?role}" >/dev/null; stop_role "$2" KILL ;;
  start)
    metrics_port "${2:?role}" >/dev/null
    alive "$2" || start_role "$2" "$(binary)"
    wait_ready "$2" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
