#!/usr/bin/env bash
# Checks the deployment files: promtool on the Prometheus config and alert rules (installing
# Debian's `prometheus` package, which provides promtool, when missing), then the metric-name
# checks of load-test/tests/deploy.rs (code ↔ docs/metrics.md ↔ dashboards and alerts).
#
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  echo "== installing promtool (Debian package prometheus)"
  as_root apt-get update -qq
  # Only the tool is needed: do not start the Prometheus server the package ships.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
echo "== promtool check rules / test rules / config"
(cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml && promtool check config prometheus.yml)
echo "== metric names: code, docs/metrics.md, dashboards, alerts"
SMARTSOLAR_REQUIRE_PROMTOOL=1 cargo test -q -p smartsolar-load-test --test deploy
