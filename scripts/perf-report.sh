#!/usr/bin/env bash
# Regenerates the measured part of docs/performance.md in one command: the criterion benches
# (every bench in bench/, with each group's same-run baseline as a ratio), the load-test runs
# against the gateway targets, and the API figures (scripts/perf-api.sh). What it writes goes
# between the `<!-- perf-report:begin -->` / `<!-- perf-report:end -->` markers at the end of
# docs/performance.md; the hand-written analysis above them is left alone.
#
#   ./scripts/perf-report.sh            # full sizes: 50,000 units; about 12 minutes on 2 cores once
#                                       # built (the release and bench builds add 20+ minutes cold)
#   ./scripts/perf-report.sh --quick    # a tenth of the units, short benches; about 8 minutes
#   ./scripts/perf-report.sh --out F    # write the report section to F instead
#   ./scripts/perf-report.sh --from D   # render again from the raw outputs of an earlier run in D
#   ./scripts/perf-report.sh --e2e-only [--units N] [--no-baseline] [--no-cluster]
#                            [--baseline-bin FILE]
#                                       # only the end-to-end part (below), at N units;
#                                       # --baseline-bin: the baseline is FILE (another build
#                                       # of `smartsolar`, e.g. the commit before a change)
#                                       # under the same load, instead of [runtime] 0/0
#
# The end-to-end part: `smartsolar serve` (release, embedded defaults: SQLite, the embedded
# time-series store, the disk bus) in a temporary directory, and `load-test run` in target
# mode against it: units provisioned through the API, 60 s of realistic traffic (telemetry
# every 15 s, status every 60 s, event logs), then an MO burst with MT through the API at
# 1,000/s during it (`--mt-during-mo`), then the verification that every acknowledged MO is
# stored once. `perf record` samples `serve` during the burst. Then the same run again as the
# baseline (unless --no-baseline): ingest and the API on the gateway's runtime
# (`[runtime]` threads 0), as before they had their own. Full size 50,000 units,
# --quick 5,000. It goes between its own markers (`perf-report-e2e:begin/end`), so
# --e2e-only leaves the rest of the report alone.
#
# Needs: cargo, python3, wrk and a reachable PostgreSQL for the API rows (perf-api.sh). The raw
# outputs (criterion JSON, load-test summaries, wrk table) stay in $work for inspection.
# Loopback only; every run is bounded by its own duration and unit count.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
doc=docs/performance.md
out=""
from=""
e2e_only=""
e2e_units=""
no_baseline=""
no_cluster=""
baseline_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --from) from=$2; shift ;;
    --e2e-only) e2e_only=1 ;;
    --units) e2e_units=$2; shift ;;
    --no-baseline) no_baseline=1 ;;
    --no-cluster) no_cluster=1 ;;
    --baseline-bin) baseline_bin=$2; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The `smartsolar` an end-to-end run starts (the baseline run may swap it, --baseline-bin).
serve_bin="$CARGO_TARGET_DIR/release/smartsolar"
if [ -n "$baseline_bin" ] && [ ! -x "$baseline_bin" ]; then
  echo "--baseline-bin $baseline_bin: not an executable" >&2
  exit 2
fi
# --from renders an earlier run: its folder must hold that run's outputs, or the report
# would be rendered empty over the one in docs/performance.md.
# (Each checked alone: `ls` fails when any of its arguments is missing.)
if [ -n "$from" ] && ! ls "$from"/load-*.json >/dev/null 2>&1 \
  && [ ! -f "$from/e2e/summary.json" ] && [ ! -d "$from/criterion" ]; then
  echo "--from $from: no earlier run's outputs there (load-*.json or criterion/)" >&2
  exit 2
fi
work=${from:-${SMARTSOLAR_PERF_DIR:-$(mktemp -d /tmp/smartsolar-perf.XXXXXX)}}
mkdir -p "$work"
log() { printf '\n== perf-report: %s\n' "$*" >&2; }
log "raw outputs in $work"

if [ -z "$from" ]; then
# The machine's own load before anything starts, for the report.
cut -d' ' -f1-3 /proc/loadavg >"$work/loadavg"
git rev-parse --short HEAD >"$work/commit" 2>/dev/null || true
[ -n "$quick" ] && touch "$work/quick"

log "release build (smartsolar, load-test)"
cargo build --release -p smartsolar -p smartsolar-load-test >&2
lt="$CARGO_TARGET_DIR/release/load-test"

# --- end to end: serve + load-test in target mode ----------------------------------------------
# The load of an end-to-end run at UNITS units: 30% TLS-TCP (at most the open-file limit less
# 4,000: a TLS-TCP unit is a socket on both sides, QUIC units share UDP sockets), the rest QUIC
# but 1% legacy HTTP, as the gateway-only 50,000-unit run; a fifth of the framed units send in
# the burst (the gateway reads a unit at 20 MO/s at most: 10,000 senders allow 200,000 MO/s).
# The verification waits up to 900 s: the burst acknowledges MO faster than ingest stores them,
# and at 300 s a 5,000-unit run's backlog was still draining (counted as lost at the deadline).
e2e_args() {
  local units=$1 nofile tcp_units framed
  nofile=$(ulimit -Sn)
  [ "$nofile" = unlimited ] && nofile=1048576
  framed=$((units - units / 100))
  tcp_units=$((framed * 3 / 10))
  [ "$tcp_units" -gt $((nofile - 4000)) ] && tcp_units=$((nofile - 4000))
  echo "--tcp $tcp_units --quic $((framed - tcp_units)) --http $((units / 100))
    --connect-concurrency 256 --provision-concurrency 32
    --periodic-secs 60 --telemetry-secs 15 --status-secs 60 --event-secs 300
    --mo-senders $((framed / 5)) --mo-secs 20 --mt-rate 1000 --mt-secs 10 --mt-during-mo
    --storm-percent 0 --lag-probes 8 --verify-secs 900 --max-secs 2400" | tr -s ' \n' ' '
}

# e2e_drive DIR PID METRICS_URLS -- LOAD-TEST-ARGS...: runs the load test against a running
# deployment (PID: the process profiled and whose RSS is read), reading the stored-MO counter
# of every ingest process each second (METRICS_URLS, space-separated) into DIR/ingested.txt.
e2e_drive() {
  local dir=$1 pid=$2 metrics=$3
  shift 4
  cut -d' ' -f1-3 /proc/loadavg >"$dir/loadavg"
  # The profile: during the burst (it starts when the phase file says Burst).
  (
    for _ in $(seq 1 3600); do
      grep -qs Burst "$dir/phase" && break
      sleep 0.2
    done
    grep -qs Burst "$dir/phase" || exit 0
    # After 2 s of ramp, 12 s of the 20 s burst.
    sleep 2
    cut -d' ' -f1-3 /proc/loadavg >"$dir/loadavg-burst"
    perf record -e cpu-clock -F 499 -g -p "$pid" -o "$dir/perf.data" -- sleep 12 \
      >"$dir/perf-record.log" 2>&1 || true
  ) &
  local profiler=$!
  # The servers' own count of MO their ingest sinks stored, each second (Unix ms, count).
  (
    while kill -0 "$pid" 2>/dev/null; do
      # A missed reading (a server busy past 2 s) is skipped, not written as 0.
      local total=0 ok=1 url body
      for url in $metrics; do
        if body=$(curl -sf -m 2 "$url"); then
          total=$((total + $(awk '$1 ~ /^smartsolar_ingest_messages_total(\{|$)/ {s += $2} END {printf "%d", s}' <<<"$body")))
        else
          ok=""
        fi
      done
      [ -n "$ok" ] && echo "$(date +%s%3N) $total" >>"$dir/ingested.txt"
      sleep 1
    done
  ) &
  local args; args=$(cat "$dir/args")
  # shellcheck disable=SC2086 # the arguments are words on purpose
  "$lt" run $args "$@" --server-pid "$pid" --units-csv "$dir/units.csv" \
    --phase-file "$dir/phase" --chart "$dir/chart.html" --quiet --out "$dir/summary.json" >&2 \
    || { wait "$profiler" || true; return 1; }
  wait "$profiler" || true
  if [ -f "$dir/perf.data" ]; then
    # Samples with their whole stacks: perf-report.py files each under the parts it passes.
    perf script -i "$dir/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null | gzip >"$dir/perf-script.txt.gz"
  fi
}

# e2e UNITS [NAME [VAR=VALUE...]]: one end-to-end run against `serve` into $work/NAME
# (default e2e), with the variables given set for serve.
e2e() {
  local units=$1 name=${2:-e2e}
  shift $(($# < 2 ? $# : 2))
  local dir="$work/$name"
  rm -rf "$dir"
  mkdir -p "$dir/serve"
  # Ports below the ephemeral range, away from the defaults and the tests' 10000-17999. The
  # defaults but for the metrics listener, which the stored-MO rate is read from.
  local api=19080 tcp=19443 quic=19444 legacy=19089 metrics=19090
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  SMARTSOLAR_HTTP_ADDR=127.0.0.1:$api \
  SMARTSOLAR_DATABASE_URL="sqlite://$dir/serve/db.sqlite" \
  SMARTSOLAR_DATA_DIR="$dir/serve/data" \
  SMARTSOLAR_GATEWAY_TCP_ADDR=127.0.0.1:$tcp \
  SMARTSOLAR_GATEWAY_QUIC_ADDR=127.0.0.1:$quic \
  SMARTSOLAR_GATEWAY_HTTP_ADDR=127.0.0.1:$legacy \
  SMARTSOLAR_METRICS_ADDR=127.0.0.1:$metrics \
  SMARTSOLAR_ADMIN_USER=admin@example.com SMARTSOLAR_ADMIN_PASSWORD=admin-password \
  RUST_LOG=error env "$@" "$serve_bin" serve >"$dir/serve.log" 2>&1 &
  local pid=$!
  # shellcheck disable=SC2064 # the pid now
  trap "kill $pid 2>/dev/null || true" EXIT
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$api/ready" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/serve.log" >&2; return 1; }
    sleep 0.5
  done
  e2e_args "$units" >"$dir/args"
  echo "$units" >"$dir/units"
  echo "$*" >"$dir/serve-env"
  log "end to end: $units units against serve (pid $pid) $*"
  e2e_drive "$dir" "$pid" "http://127.0.0.1:$metrics/metrics" -- \
    --api "http://127.0.0.1:$api" --api-user admin@example.com --api-password admin-password \
    --gateway-tcp 127.0.0.1:$tcp --gateway-quic 127.0.0.1:$quic \
    --gateway-http "http://127.0.0.1:$legacy" --ca-cert "$dir/serve/data/gateway-cert.pem" \
    || { kill "$pid"; return 1; }
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  trap - EXIT
}

# e2e_cluster UNITS: the same load against the scaled topology (scripts/cluster.sh: the
# control-plane on PostgreSQL, 2 gateways, 2 ingest workers, tansu, InfluxDB) into
# $work/e2e-cluster. TLS-TCP and HTTP units on gateway 1, QUIC units on gateway 2; the profile
# and RSS are gateway 1's; the stored-MO counter is both ingest workers'.
e2e_cluster() {
  local units=$1 dir="$work/e2e-cluster"
  rm -rf "$dir"
  mkdir -p "$dir"
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  export SMARTSOLAR_BIN="$CARGO_TARGET_DIR/release/smartsolar" \
    SMARTSOLAR_CLUSTER_DIR="$dir/cluster" SMARTSOLAR_CLUSTER_PORT_BASE=20000 \
    SMARTSOLAR_CLUSTER_DB=smartsolar_perf
  trap "RUST_LOG=error scripts/cluster.sh down --purge >/dev/null 2>&1 || true" EXIT
  RUST_LOG=error scripts/cluster.sh down --purge >/dev/null 2>&1 || true
  RUST_LOG=error scripts/cluster.sh up >"$dir/addresses" || return 1
  # shellcheck disable=SC1091 # written just now
  source "$dir/addresses"
  e2e_args "$units" >"$dir/args"
  echo "$units" >"$dir/units"
  log "end to end: $units units against the scaled topology"
  e2e_drive "$dir" "$(cat "$dir/cluster/gw1.pid")" \
    "http://127.0.0.1:20103/metrics http://127.0.0.1:20104/metrics" -- \
    --api "$CLUSTER_API" --api-user admin@example.com --api-password admin-password \
    --gateway-tcp "$CLUSTER_GW1_TCP" --gateway-quic "$CLUSTER_GW2_QUIC" \
    --gateway-http "http://$CLUSTER_GW1_HTTP" --ca-cert "$CLUSTER_CERT" \
    || { cp "$dir"/cluster/*.log "$dir"/ 2>/dev/null; return 1; }
  # The processes' logs outlive `down --purge`, which deletes the cluster's directory.
  RUST_LOG=error scripts/cluster.sh down >/dev/null 2>&1 || true
  cp "$dir"/cluster/*.log "$dir"/ 2>/dev/null || true
  RUST_LOG=error scripts/cluster.sh down --purge >/dev/null 2>&1 || true
  trap - EXIT
}

# The end-to-end runs: as shipped, then the same-run baseline (unless --no-baseline): the same
# binary with ingest and the API on the gateway's runtime, as before they had their own.
e2e_runs() {
  local units=${e2e_units:-$([ -n "$quick" ] && echo 5000 || echo 50000)}
  e2e "$units" e2e
  [ -n "$no_baseline" ] && return 0
  if [ -n "$baseline_bin" ]; then
    log "end to end, baseline: $baseline_bin ($("$baseline_bin" --version 2>/dev/null || echo 'version unknown'))"
    serve_bin=$baseline_bin e2e "$units" e2e-previous
    echo "$baseline_bin" >"$work/e2e-previous/binary"
  else
    log "end to end, baseline: ingest and the API on the gateway's runtime"
    e2e "$units" e2e-shared SMARTSOLAR_RUNTIME__INGEST_THREADS=0 SMARTSOLAR_RUNTIME__API_THREADS=0
  fi
  [ -n "$no_cluster" ] && return 0
  e2e_cluster "$units"
}
if [ -n "$e2e_only" ]; then
  e2e_runs
fi
fi # measuring
if [ -z "$from" ] && [ -z "$e2e_only" ]; then

# --- criterion ------------------------------------------------------------------------------
log "criterion benches"
rm -rf "$CARGO_TARGET_DIR/criterion"
if [ -n "$quick" ]; then
  cargo bench -p smartsolar-bench --benches -- --warm-up-time 0.5 --measurement-time 1 >&2
else
  cargo bench -p smartsolar-bench --benches -- --warm-up-time 1 --measurement-time 3 >&2
fi
cp -r "$CARGO_TARGET_DIR/criterion" "$work/criterion"

# --- load test --------------------------------------------------------------------------------
# name|arguments. Full sizes are issue 6's targets; --quick divides the unit counts by 10.
scale=1
[ -n "$quick" ] && scale=10
n() { echo $(($1 / scale)); }
runs=(
  "idle_tcp|--tcp $(n 10000) --quic 0 --periodic-secs 0 --mo-secs 0 --mt-secs 0"
  "idle_quic|--tcp 0 --quic $(n 10000) --periodic-secs 0 --mo-secs 0 --mt-secs 0"
  "mixed_50k|--tcp $(n 15000) --quic $(n 35000) --connect-concurrency 512 --periodic-secs 0 --mo-senders 200 --mo-secs 10 --mt-rate 1000 --mt-secs 10"
  "realistic|--tcp $(n 8000) --quic $(n 4000) --http 100 --periodic-secs 20 --mo-senders 200 --mo-secs 5 --mt-rate 1000 --mt-secs 5 --storm-percent 20"
)
for r in "${runs[@]}"; do
  name=${r%%|*}
  args=${r#*|}
  log "load test $name: $args"
  # shellcheck disable=SC2086 # the arguments are words on purpose
  "$lt" run $args --out "$work/load-$name.json" >&2
  echo "$args" >"$work/load-$name.args"
done

# --- API ---------------------------------------------------------------------------------------
log "API (wrk)"
# Only the table: the servers' own log lines go to the same stream.
if [ -n "$quick" ]; then
  ./scripts/perf-api.sh 3 32 | grep '^|' >"$work/api.md"
else
  ./scripts/perf-api.sh 10 32 | grep '^|' >"$work/api.md"
fi

e2e_runs
fi # measuring

# --- render ------------------------------------------------------------------------------------
log "rendering"
section="$work/report.md"
e2e_section="$work/report-e2e.md"
python3 scripts/perf-report.py "$work" >"$section"
python3 scripts/perf-report.py --e2e "$work" >"$e2e_section"
if [ -n "$out" ]; then
  if [ -z "$e2e_only" ]; then cat "$section" "$e2e_section" >"$out"; else cp "$e2e_section" "$out"; fi
  log "written to $out"
else
  # Each part between its own markers: --e2e-only replaces the end-to-end one only.
  parts=()
  [ -z "$e2e_only" ] && parts+=("perf-report:$section")
  [ -f "$work/e2e/summary.json" ] && parts+=("perf-report-e2e:$e2e_section")
  for part in "${parts[@]}"; do
  python3 - "$doc" "${part#*:}" "${part%%:*}" <<'PY'
import sys
doc, section, name = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
text = open(doc).read()
block = f"{begin}\n{section.rstrip()}\n{end}\n"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1].lstrip("\n")
else:
    text = text.rstrip("\n") + "\n\n" + block
open(doc, "w").write(text)
PY
  done
  log "docs/performance.md updated (raw outputs in $work)"
fi
