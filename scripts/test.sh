#!/usr/bin/env bash
# The test command: starts the services the tests talk to (installing them on
# a fresh Debian machine), then runs the whole workspace's tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -p smartsolar-codec   # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_ready=""
apt_install() {
  [ -n "$apt_ready" ] || { as_root apt-get update -qq; apt_ready=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------
export SMARTSOLAR_TEST_POSTGRES_URL="${SMARTSOLAR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  log "starting PostgreSQL"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
# The tests connect as postgres over TCP; make sure that works without a password.
if ! psql "$SMARTSOLAR_TEST_POSTGRES_URL" -qtAc 'select 1' >/dev/null 2>&1; then
  log "allowing local trust auth for the test role"
  hba=$(as_root su postgres -c "psql -qtAc 'show hba_file'")
  as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
  as_root su postgres -c "psql -qtAc 'select pg_reload_conf()'" >/dev/null
fi

# Each PostgreSQL test creates its own database; drop those of earlier runs.
for db in $(psql "$SMARTSOLAR_TEST_POSTGRES_URL" -qtAc "select datname from pg_database where datname like 'smartsolar_test_%'"); do
  psql "$SMARTSOLAR_TEST_POSTGRES_URL" -qtAc "drop database if exists \"$db\"" >/dev/null || true
done

# --- Kafka-protocol broker (tansu) and InfluxDB 1.x --------------------------
log "starting tansu and InfluxDB (scripts/services.sh)"
# shellcheck source=services.sh
source scripts/services.sh
services_start

log "deployment files (promtool, metric names)"
./scripts/check-deploy.sh

# --- Headless Chromium and the console's browser-test packages --------------
# control-plane/tests/console.rs drives Debian's chromium through
# playwright-core (control-plane/console/e2e, versions pinned by its lock file).
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (console browser tests)"
  apt_install chromium chromium-driver
fi
if ! have node || ! have npm; then
  log "installing Node.js and npm (console browser tests)"
  apt_install nodejs npm
fi
e2e=control-plane/console/e2e
if [ ! -d "$e2e/node_modules/playwright-core" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules/.package-lock.json" ]; then
  log "npm ci in $e2e"
  (cd "$e2e" && npm ci --no-audit --no-fund --silent)
fi

# --- Python tools for the OpenAPI tests -------------------------------------
# control-plane/tests/openapi.rs runs openapi-spec-validator, schemathesis and
# openapi-python-client from a virtualenv, every package pinned.
reqs=control-plane/tests/openapi/requirements.txt
export SMARTSOLAR_OPENAPI_VENV="${SMARTSOLAR_OPENAPI_VENV:-/var/tmp/smartsolar-openapi-venv}"
if ! cmp -s "$reqs" "$SMARTSOLAR_OPENAPI_VENV/requirements.txt"; then
  log "creating the OpenAPI test virtualenv in $SMARTSOLAR_OPENAPI_VENV"
  if ! have python3 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  rm -rf "$SMARTSOLAR_OPENAPI_VENV"
  python3 -m venv "$SMARTSOLAR_OPENAPI_VENV"
  "$SMARTSOLAR_OPENAPI_VENV/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$SMARTSOLAR_OPENAPI_VENV/requirements.txt"
fi

# --- Tests ------------------------------------------------------------------
log "cargo test"
cargo test --workspace --all-targets --no-fail-fast "$@"
