#!/usr/bin/env bash
# Issue 16's gateway targets in one run, so every baseline is same-run:
#   - acknowledged MO/s through one gateway onto the durable disk bus (shipped defaults: group
#     commit, fsync on) against today's in-process bus (version-1 units, MO/s onto the bus) and
#     against version-2 units on the in-process bus (acknowledged MO/s);
#   - MT round trip p99 at 1,000 commands/s on the disk bus;
#   - idle memory per unit, version 2 on the disk bus against version 1 on the in-process bus;
#   - then the gateway process's CPU per MO in the MO phase, each way (where the time goes).
# Each configuration runs ROUNDS times, interleaved (A B C A B C …), so drift in the machine's
# load hits all of them alike. The disk bus lives under BUS_DIR (default /var/tmp: a real
# disk; /tmp may be tmpfs, where fsync costs nothing).
#
#   scripts/perf-ack.sh                       # 5,000 TCP + 5,000 QUIC, 200 senders, 2 rounds
#   TCP=1000 QUIC=1000 ROUNDS=1 scripts/perf-ack.sh
#   LT=/var/tmp/load-test-before ROUNDS=1 scripts/perf-ack.sh   # a binary copied aside
set -euo pipefail
cd "$(dirname "$0")/.."

TCP=${TCP:-5000}
QUIC=${QUIC:-5000}
SENDERS=${SENDERS:-200}
MO_SECS=${MO_SECS:-10}
MT_RATE=${MT_RATE:-1000}
MT_SECS=${MT_SECS:-10}
ROUNDS=${ROUNDS:-2}
BUS_DIR=${BUS_DIR:-/var/tmp}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/perf-ack.XXXXXX")}
mkdir -p "$OUT"

# LT=<binary> measures that build instead (e.g. one copied aside before a change, for a
# same-run before/after); otherwise the tree is built.
if [ -z "${LT:-}" ]; then
  nice -n 5 cargo build --release -q -p smartsolar-load-test
  LT="$TARGET_DIR/release/load-test"
fi

shape=(--tcp "$TCP" --quic "$QUIC" --periodic-secs 0 --mo-senders "$SENDERS" --mo-secs "$MO_SECS"
       --mt-rate "$MT_RATE" --mt-secs "$MT_SECS" --connect-concurrency 512 --quiet)
echo "shape: ${shape[*]}; rounds $ROUNDS; outputs in $OUT" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/conditions.txt"
git rev-parse --short HEAD >>"$OUT/conditions.txt" 2>/dev/null || true
echo "binary: $LT" >>"$OUT/conditions.txt"

run() { # name round args…
  local name=$1 round=$2
  shift 2
  echo "== $name (round $round)" >&2
  "$LT" run "${shape[@]}" "$@" --out "$OUT/$name-$round.json" >"$OUT/$name-$round.log" 2>&1 \
    || { echo "$name failed, see $OUT/$name-$round.log" >&2; exit 1; }
}

for round in $(seq 1 "$ROUNDS"); do
  run v1-memory "$round" --protocol 1 --bus memory
  run v2-memory "$round" --protocol 2 --bus memory
  dir="$BUS_DIR/perf-ack-bus-$$-$round"
  run v2-disk "$round" --protocol 2 --bus disk --data-dir "$dir"
  rm -rf "$dir"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/conditions.txt"

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {n: [json.load(open(f"{out}/{n}-{r}.json")) for r in range(1, rounds + 1)]
        for n in ("v1-memory", "v2-memory", "v2-disk")}
def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
def col(n, f):
    return [f(s) for s in runs[n]]
# "MO/s" of a configuration: acknowledged per second for version 2, onto the bus for version 1
# (no acknowledgement exists there: today's figure).
mo = {n: col(n, (lambda s: s["mo_acked_per_sec"]) if n.startswith("v2") else (lambda s: s["mo_per_sec"]))
      for n in runs}
onbus = {n: col(n, lambda s: s["mo_per_sec"]) for n in runs}
mt99 = {n: col(n, lambda s: s["mt"]["p99_ms"]) for n in runs}
kib = {n: col(n, lambda s: s["kib_per_idle_connection"]) for n in runs}
errs = {n: col(n, lambda s: sum(s["errors"].values())) for n in runs}
print(f"| figure | {' | '.join(runs)} |")
print("|---|" + "---|" * len(runs))
def row(label, d, fmt):
    print(f"| {label} | " + " | ".join(", ".join(fmt(x) for x in d[n]) for n in runs) + " |")
row("MO/s (v1: onto the bus; v2: acknowledged)", mo, lambda x: f"{x:,.0f}")
row("MO/s onto the bus (consumed)", onbus, lambda x: f"{x:,.0f}")
row("MT round trip p99 (ms)", mt99, lambda x: f"{x:.2f}")
row("KiB per idle unit", kib, lambda x: f"{x:.2f}")
row("errors", errs, str)
batches = [(s["mo_messages"], s.get("mo_bus_batches") or 0, s["mo_secs"]) for s in runs["v2-disk"]]
print()
for m, b, secs in batches:
    if b:
        print(f"disk bus, MO phase: {m:,} MO in {b:,} synced batches = {m / b:.0f} per batch, "
              f"{b / secs:.0f} batches (fdatasync) per second")
base, v2m, disk = med(mo["v1-memory"]), med(mo["v2-memory"]), med(mo["v2-disk"])
print()
print(f"acknowledged MO/s on the disk bus (median {disk:,.0f}) / today's in-process bus, v1 "
      f"(median {base:,.0f}) = {disk / base:.2f}; / v2 on the in-process bus (median {v2m:,.0f}) "
      f"= {disk / v2m:.2f}; target 100,000/s: {'met' if disk >= 100_000 else 'MISSED'}")
p99 = med(mt99["v2-disk"])
print(f"MT p99 on the disk bus at {runs['v2-disk'][0]['mt']['rate']:.0f}/s: median {p99:.2f} ms "
      f"(v1 in-process {med(mt99['v1-memory']):.2f} ms); target < 50 ms: {'met' if p99 < 50 else 'MISSED'}")
k1, k2 = med(kib["v1-memory"]), med(kib["v2-disk"])
print(f"KiB per idle unit: v2 on the disk bus {k2:.2f} / v1 in-process {k1:.2f} = {k2 / k1:.3f}; "
      f"target within 10%: {'met' if abs(k2 / k1 - 1) <= 0.10 else 'MISSED'}")
EOF

# Where the time goes: the gateway process's CPU per MO in the MO phase (utime + stime of
# `load-test serve` from /proc, sampled every second; the 10 s with the most CPU are the MO
# phase). Smaller shape, no MT phase.
cpu_probe() { # name args…
  local name=$1
  shift
  "$LT" run --tcp 2000 --quic 2000 --periodic-secs 0 --mo-senders "$SENDERS" --mo-secs 10 --mt-secs 0 \
    --quiet "$@" --out "$OUT/cpu-$name.json" >"$OUT/cpu-$name.log" 2>&1 &
  local runner=$! serve=""
  while [ -z "$serve" ] && kill -0 "$runner" 2>/dev/null; do
    sleep 0.2
    # The child is `<LT> serve …`, whatever LT's file name (a binary copied aside may be renamed).
    serve=$(pgrep -P "$runner" -f " serve( |$)" | head -1 || true)
  done
  : >"$OUT/cpu-$name.ticks"
  while [ -n "$serve" ] && kill -0 "$serve" 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '{print $14+$15}' "/proc/$serve/stat" 2>/dev/null)" >>"$OUT/cpu-$name.ticks"
    sleep 1
  done
  wait "$runner"
}
echo "== CPU per MO" >&2
cpu_probe v1-memory --protocol 1 --bus memory
cpu_probe v2-memory --protocol 2 --bus memory
dir="$BUS_DIR/perf-ack-bus-$$-cpu"
cpu_probe v2-disk --protocol 2 --bus disk --data-dir "$dir"
rm -rf "$dir"
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
hz = 100  # /proc/<pid>/stat ticks per second (USER_HZ)
for name in ("v1-memory", "v2-memory", "v2-disk"):
    s = json.load(open(f"{out}/cpu-{name}.json"))
    rows = (l.split() for l in open(f"{out}/cpu-{name}.ticks"))
    t = [(float(r[0]), int(r[1])) for r in rows if len(r) == 2]
    if len(t) <= 10:
        sys.exit(f"{name}: only {len(t)} CPU samples of the gateway process (need > 10): "
                 f"was `serve` found? see {out}/cpu-{name}.log")
    cores = max((t[i + 10][1] - t[i][1]) / hz / (t[i + 10][0] - t[i][0]) for i in range(len(t) - 10))
    mo = s["mo_per_sec"]
    print(f"{name}: {mo:,.0f} MO/s onto the bus ({s['mo_acked_per_sec']:,.0f} acknowledged/s); "
          f"gateway CPU {cores:.2f} cores = {cores / mo * 1e6:.1f} µs per MO")
EOF
cat "$OUT/conditions.txt"
