#!/usr/bin/env bash
# Benchmark gate: the hot paths (codec decode/encode, telemetry → points, tsdb batch encoding
# and write, filter compilation, shard routing) counted in instructions under valgrind and
# compared with bench/baseline.json; fails when a case is more than 25% worse.
#
#   scripts/bench-gate.sh              # check (CI)
#   scripts/bench-gate.sh --update     # re-measure and write bench/baseline.json (commit it)
#   scripts/bench-gate.sh --only shard_routing --threshold 0.10
#
# Instruction counts depend on the compiler: update the baseline in the same commit as a Rust
# toolchain or dependency upgrade, and whenever a change makes a hot path slower on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq valgrind >/dev/null
fi
# Release profile, only this binary (no Kafka/QuestDB clients).
cargo build --release -q -p smartsolar-bench --bin bench-gate
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/bench-gate" gate "$@"
