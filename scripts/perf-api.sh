#!/usr/bin/env bash
# Measures the relational API with wrk: GET /v1/home (baseline, no auth, no
# database), a single-row GET /v1/products/<imei> (random IMEIs of 10,000) and
# a filtered, ordered product list; on SQLite and on PostgreSQL.
#
#   ./scripts/perf-api.sh [seconds] [connections]
#
# Needs: a release build (cargo build --release), python3, psql; installs wrk when missing.
# Loopback only; each wrk run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
bin=${CARGO_TARGET_DIR:-target}/release/smartsolar
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
# shellcheck source=scripts/perf-lib.sh
. scripts/perf-lib.sh
perf_ensure_wrk
units=10000
port=18080
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/product.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/v1/products/35%013d", math.random(1, $units)))
end
LUA

seed_sqlite() {
  python3 - "$1" "$units" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
rows = [(f"35{i:013d}", f"SN-{i}", f"99{i:013d}", 6 + (i % 2), i % 3 == 0) for i in range(1, n + 1)]
db.executemany("""INSERT INTO product (product_imei, serial_number, imsi, product_type_id, current_enable_flag,
  desired_enable_flag, rtc_enabled_flag, dcm_enabled_flag, is_payg, created_at, created_by)
  VALUES (?, ?, ?, ?, ?, 0, 0, 0, 1, '2026-01-01T00:00:00.000000', 'perf')""", rows)
db.commit()
PY
}

seed_postgres() {
  psql "$1" -qc "INSERT INTO product (product_imei, serial_number, imsi, product_type_id, current_enable_flag,
    desired_enable_flag, rtc_enabled_flag, dcm_enabled_flag, is_payg, created_at, created_by)
    SELECT '35' || lpad(i::text, 13, '0'), 'SN-' || i, '99' || lpad(i::text, 13, '0'), 6 + (i % 2), i % 3 = 0,
      false, false, false, true, now(), 'perf' FROM generate_series(1, $units) i"
}

run() { # name url [wrk args]
  local name=$1; shift
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$@")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '| %-8s | %-34s | %10s | %8s | %8s |\n' "$backend" "$name" "$rps" "$p50" "$p99"
}

printf '| backend  | request                            |      req/s |      p50 |      p99 |\n'
printf '|---|---|---|---|---|\n'
for backend in sqlite postgres; do
  if [ $backend = sqlite ]; then
    url="sqlite://$work/perf.db"
  else
    pgadmin=${SMARTSOLAR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    psql "$pgadmin" -qc "DROP DATABASE IF EXISTS smartsolar_perf" -qc "CREATE DATABASE smartsolar_perf"
    url="${pgadmin%/*}/smartsolar_perf"
  fi
  SMARTSOLAR_DATABASE_URL=$url "$bin" migrate >/dev/null 2>&1
  if [ $backend = sqlite ]; then seed_sqlite "$work/perf.db"; else seed_postgres "$url"; fi
  SMARTSOLAR_DATABASE_URL=$url SMARTSOLAR_HTTP_ADDR=127.0.0.1:$port SMARTSOLAR_ADMIN_USER=perf@example.com \
    SMARTSOLAR_ADMIN_PASSWORD=perf-password SMARTSOLAR_DATA_DIR="$work/data" RUST_LOG=warn "$bin" control-plane &
  pid=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/v1/home" >/dev/null && break; sleep 0.2; done
  token=$(curl -s -d username=perf@example.com -d password=perf-password "http://127.0.0.1:$port/v1/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["login_successful"]["API_token"])')
  auth="Authorization: Token token=$token"
  q='{"filters":[{"name":"product_type_id","op":"eq","val":7},{"name":"current_enable_flag","op":"eq","val":true}],"order_by":[{"field":"serial_number","direction":"desc"}]}'
  qs=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$q")
  run "GET /v1/home (baseline)" "http://127.0.0.1:$port/v1/home"
  run "GET /v1/products/<imei>" -H "$auth" -s "$work/product.lua" "http://127.0.0.1:$port"
  run "GET /v1/products?q=<2 filters, order>" -H "$auth" "http://127.0.0.1:$port/v1/products?q=$qs"
  kill $pid; wait $pid 2>/dev/null || true
done
