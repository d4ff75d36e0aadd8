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
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --from) from=$2; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# --from renders an earlier run: its folder must hold that run's outputs, or the report
# would be rendered empty over the one in docs/performance.md.
if [ -n "$from" ] && ! ls "$from"/load-*.json >/dev/null 2>&1 && [ ! -d "$from/criterion" ]; then
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
fi # measuring

# --- render ------------------------------------------------------------------------------------
log "rendering"
section="$work/report.md"
python3 scripts/perf-report.py "$work" >"$section"
if [ -n "$out" ]; then
  cp "$section" "$out"
  log "written to $out"
else
  python3 - "$doc" "$section" <<'PY'
import sys
doc, section = sys.argv[1], open(sys.argv[2]).read()
begin, end = "<!-- perf-report:begin -->", "<!-- perf-report:end -->"
text = open(doc).read()
block = f"{begin}\n{section.rstrip()}\n{end}\n"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1].lstrip("\n")
else:
    text = text.rstrip("\n") + "\n\n" + block
open(doc, "w").write(text)
PY
  log "docs/performance.md updated (raw outputs in $work)"
fi
