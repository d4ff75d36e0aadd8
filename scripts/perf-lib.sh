# Shared by the API benchmarks (perf-api.sh, perf-compare.sh); sourced, runs nothing itself.

# Installs Debian's wrk when missing (as scripts/services.sh installs its services).
perf_ensure_wrk() {
  command -v wrk >/dev/null && return
  echo "== installing wrk (apt-get)" >&2
  # shellcheck source=scripts/services.sh
  . scripts/services.sh # defines svc_as_root, runs nothing
  svc_as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive svc_as_root apt-get install -y -qq wrk >/dev/null \
    || { echo "cannot install wrk (apt-get install wrk)" >&2; exit 1; }
}
