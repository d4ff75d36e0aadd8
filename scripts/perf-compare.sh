#!/usr/bin/env bash
# Issue 20's comparison: our relational API against a Flask-Restless 0.17 + SQLAlchemy baseline
# (scripts/perf_flask_baseline.py, gunicorn with 5 sync workers) over the same tables and the
# same 10,000 seeded products, on SQLite and on PostgreSQL, interleaved (each operation runs on
# ours, then on the baseline, round after round), and writes the table into
# docs/performance.md between the `<!-- perf-compare:begin -->` / `end` markers.
#
#   ./scripts/perf-compare.sh [seconds per run] [rounds]      # defaults: 10 s, 2 rounds
#
# Env: BASELINE_TOKEN_CACHE (seconds, default 5; 0 = the baseline looks every token up),
#      PERF_COMPARE_BACKENDS (default "sqlite postgres"), PERF_COMPARE_OUT (default the doc),
#      SMARTSOLAR_TEST_POSTGRES_URL (an admin URL; a smartsolar_compare database is made there).
# Needs: a release build (cargo build --release), python3 with venv, psql; installs wrk (Debian)
# when missing and the baseline's pinned packages from PyPI into a virtualenv
# ($PERF_VENV, default /var/tmp/smartsolar-perf-venv). Loopback only; every wrk run is bounded
# by its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release/smartsolar
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }

# shellcheck source=scripts/perf-lib.sh
. scripts/perf-lib.sh
perf_ensure_wrk

# The baseline's stack, pinned. Flask-Restless 0.17.0 is the last 0.x release (the API the
# original SMARTSolar used); the rest are the newest releases that still run it.
venv=${PERF_VENV:-/var/tmp/smartsolar-perf-venv}
pins=(Flask-Restless==0.17.0 Flask==1.1.4 Werkzeug==1.0.1 Jinja2==2.11.3 MarkupSafe==2.0.1
  itsdangerous==1.1.0 click==7.1.2 Flask-SQLAlchemy==2.5.1 SQLAlchemy==1.3.24 mimerender==0.6.0
  python-mimeparse==2.0.0 python-dateutil==2.9.0.post0 gunicorn==21.2.0 psycopg2-binary==2.9.9)
if [ ! -x "$venv/bin/gunicorn" ] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx 'Flask-Restless==0.17.0'; then
  echo "== perf-compare: installing the baseline into $venv (PyPI, pinned)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
fi

exec python3 scripts/perf_compare.py --bin "$bin" --venv "$venv" --secs "$secs" --rounds "$rounds"
