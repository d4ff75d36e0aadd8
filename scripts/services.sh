#!/usr/bin/env bash
# Services the ingest tests talk to, on loopback only:
#   - tansu, a Kafka-protocol broker (crates.io), on 127.0.0.1:9092, in-memory storage;
#   - InfluxDB 1.x (Debian's `influxdb`), on 127.0.0.1:8086, data under /tmp.
#
#   scripts/services.sh start      # install what is missing, start, wait until ready (idempotent)
#   scripts/services.sh stop       # stop what this script started
#   scripts/services.sh kafka|influx   # one of them
#
# Sourcing this file defines the functions without running anything.
# Exports for the tests: SMARTSOLAR_TEST_KAFKA_BROKERS, SMARTSOLAR_TEST_INFLUX_URL.

SERVICES_DIR="${SMARTSOLAR_SERVICES_DIR:-/tmp/smartsolar-services}"
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${SMARTSOLAR_KAFKA_PORT:-9092}"
INFLUX_HOST=127.0.0.1
INFLUX_PORT="${SMARTSOLAR_INFLUX_PORT:-8086}"
export SMARTSOLAR_TEST_KAFKA_BROKERS="${SMARTSOLAR_TEST_KAFKA_BROKERS:-$KAFKA_HOST:$KAFKA_PORT}"
export SMARTSOLAR_TEST_INFLUX_URL="${SMARTSOLAR_TEST_INFLUX_URL:-http://$INFLUX_HOST:$INFLUX_PORT}"

svc_log() { printf '== services: %s\n' "$*" >&2; }
svc_have() { command -v "$1" >/dev/null 2>&1; }
svc_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
svc_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
svc_wait() { # svc_wait SECONDS CMD... : retry CMD each second
  local n=$1; shift
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 1; done
  return 1
}

# --- tansu (Kafka protocol) -------------------------------------------------
tansu_install() {
  svc_have tansu && return 0
  [ -x "$HOME/.cargo/bin/tansu" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
  svc_log "installing tansu from crates.io (about 10 minutes)"
  # Its own target dir, so it neither reuses nor pollutes the workspace's.
  CARGO_TARGET_DIR="$SERVICES_DIR/tansu-target" \
    cargo install tansu --locked --features dynostore >"$SERVICES_DIR/tansu-install.log" 2>&1 \
    || { tail -20 "$SERVICES_DIR/tansu-install.log" >&2; return 1; }
  # The build tree is several GB and of no further use.
  rm -rf "$SERVICES_DIR/tansu-target"
  export PATH="$HOME/.cargo/bin:$PATH"
}

kafka_start() {
  mkdir -p "$SERVICES_DIR"
  if svc_port_open "$KAFKA_HOST" "$KAFKA_PORT"; then return 0; fi
  tansu_install || return 1
  svc_log "starting tansu on $KAFKA_HOST:$KAFKA_PORT"
  nohup tansu broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine "memory://tansu/" \
    >"$SERVICES_DIR/tansu.log" 2>&1 &
  echo $! >"$SERVICES_DIR/tansu.pid"
  svc_wait 60 svc_port_open "$KAFKA_HOST" "$KAFKA_PORT" \
    || { svc_log "tansu did not open $KAFKA_PORT"; tail -20 "$SERVICES_DIR/tansu.log" >&2; return 1; }
}

# --- InfluxDB 1.x -------------------------------------------------------------
influx_ping() { curl -sf -o /dev/null "http://$INFLUX_HOST:$INFLUX_PORT/ping"; }

influx_install() {
  svc_have influxd && return 0
  svc_log "installing Debian's influxdb"
  svc_as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive svc_as_root apt-get install -y -qq influxdb >/dev/null
}

influx_start() {
  mkdir -p "$SERVICES_DIR/influxdb"
  if influx_ping; then return 0; fi
  influx_install || return 1
  local dir="$SERVICES_DIR/influxdb"
  cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "$INFLUX_HOST:$((INFLUX_PORT + 2))"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "$INFLUX_HOST:$INFLUX_PORT"
  log-enabled = false
CONF
  svc_log "starting influxd on $INFLUX_HOST:$INFLUX_PORT"
  nohup influxd -config "$dir/influxdb.conf" >"$dir/influxd.log" 2>&1 &
  echo $! >"$SERVICES_DIR/influxd.pid"
  svc_wait 60 influx_ping \
    || { svc_log "influxd did not answer /ping"; tail -20 "$dir/influxd.log" >&2; return 1; }
}

services_stop() {
  local f
  for f in "$SERVICES_DIR/tansu.pid" "$SERVICES_DIR/influxd.pid"; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

services_start() { kafka_start && influx_start; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
    start) services_start ;;
    kafka) kafka_start ;;
    influx) influx_start ;;
    stop) services_stop ;;
    *) echo "usage: $0 [start|stop|kafka|influx]" >&2; exit 2 ;;
  esac
fi
