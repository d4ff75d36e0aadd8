#!/usr/bin/env python3
"""Renders the measured section of docs/performance.md from the raw outputs that
scripts/perf-report.sh collected in one directory:

  criterion/<group>/<bench>/new/{estimates,benchmark}.json   criterion's own output
  load-<name>.json, load-<name>.args                         load-test summaries and arguments
  api.md                                                     scripts/perf-api.sh's wrk table

  loadavg, commit, quick                                      the machine's load before the run,
                                                             the commit measured, quick mode

Usage: perf-report.py <dir>   (markdown on stdout)

Every figure comes with the baseline measured in the same run, because this machine is
noisy: a criterion group's ratio is against the bench in the same group whose name starts
with `baseline` or `bus_only`; the API rows carry perf-api.sh's own baseline row.
"""
import datetime
import glob
import json
import os
import platform
import subprocess
import sys


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def read(dirname, name, default=""):
    path = os.path.join(dirname, name)
    return open(path).read().strip() if os.path.exists(path) else default


def machine(load):
    model = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor() or "unknown CPU"
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kib / 1024 / 1024:.0f} GiB, "
        f"Linux {platform.release()}; load average before the run: {load}"
    )


def fmt_time(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_rate(per_s):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= div:
            return f"{per_s / div:.3g} {unit}/s"
    return f"{per_s:.3g}/s"


def criterion(dirname):
    rows = {}
    for bench_json in glob.glob(os.path.join(dirname, "criterion", "**", "new", "benchmark.json"), recursive=True):
        est_json = os.path.join(os.path.dirname(bench_json), "estimates.json")
        if not os.path.exists(est_json):
            continue
        b = json.load(open(bench_json))
        e = json.load(open(est_json))
        group = b.get("group_id", "")
        name = b.get("function_id") or b.get("value_str") or group
        mean = e["mean"]["point_estimate"]
        elements = (b.get("throughput") or {}).get("Elements")
        rows.setdefault(group, []).append((name, mean, elements))
    out = ["| group | bench | mean | rate | time as a multiple of each same-run baseline |", "|---|---|---|---|---|"]
    for group in sorted(rows):
        benches = sorted(rows[group])
        bases = [(n, m) for n, m, _ in benches if n.startswith(("baseline", "bus_only"))]
        for name, mean, elements in benches:
            rate = fmt_rate(elements / mean * 1e9) if elements else ""
            if (name, mean) in bases:
                ratio = "baseline"
            else:
                ratio = "; ".join(f"{mean / m:.2f}× {n}" for n, m in bases)
            out.append(f"| {group} | {name} | {fmt_time(mean)} | {rate} | {ratio} |")
    return "\n".join(out)


def load(dirname, name):
    path = os.path.join(dirname, f"load-{name}.json")
    if not os.path.exists(path):
        return None, ""
    args = open(os.path.join(dirname, f"load-{name}.args")).read().strip()
    return json.load(open(path)), args


def gateway(dirname):
    out = []
    tcp, tcp_args = load(dirname, "idle_tcp")
    quic, quic_args = load(dirname, "idle_quic")
    mixed, mixed_args = load(dirname, "mixed_50k")
    real, real_args = load(dirname, "realistic")
    out.append("| figure | result | target | command (`load-test run …`) |")
    out.append("|---|---|---|---|")
    if mixed:
        asked = mixed["tcp_units"] + mixed["quic_units"]
        out.append(
            f"| connections held by one gateway ({mixed['tcp_units']:,} TCP + {mixed['quic_units']:,} QUIC) "
            f"| {mixed['connected']:,} of {asked:,} connected ({mixed['connect_failures']:,} gave up, "
            f"{mixed.get('first_attempt_failures', 0):,} needed a retry), "
            f"{mixed['held_at_end']:,} held at the end; connect phase {mixed['connect_secs']:.0f} s "
            f"| 50,000 | `{mixed_args}` |"
        )
        out.append(
            f"| memory per idle connection, mixed | {mixed['kib_per_idle_connection']:.1f} KiB "
            f"(RSS {mixed['rss_baseline_kib'] / 1024:.0f} → {mixed['rss_idle_kib'] / 1024:.0f} MiB) | < 20 KiB | same run |"
        )
    for label, s, args in (("TCP only", tcp, tcp_args), ("QUIC only", quic, quic_args)):
        if s:
            out.append(
                f"| memory per idle connection, {label} ({s['connected']:,}) | {s['kib_per_idle_connection']:.1f} KiB "
                f"(RSS {s['rss_baseline_kib'] / 1024:.0f} → {s['rss_idle_kib'] / 1024:.0f} MiB) | < 20 KiB | `{args}` |"
            )
    if mixed:
        out.append(
            f"| MO/s onto the bus, {mixed['mo_senders']} units back to back, all others held "
            f"| {mixed['mo_per_sec']:,.0f}/s ({mixed['mo_messages']:,} in {mixed['mo_secs']:.0f} s) | 50,000/s | same run |"
        )
        mt = mixed["mt"]
        out.append(
            f"| MT round trip (bus → unit → reply) at {mt['rate']:,.0f}/s "
            f"| p50 {mt['p50_ms']:.2f} ms, p90 {mt['p90_ms']:.2f} ms, p99 {mt['p99_ms']:.2f} ms, max {mt['max_ms']:.0f} ms; "
            f"{mt['answered']:,}/{mt['sent']:,} answered | p99 < 50 ms at 1,000/s | same run |"
        )
    if real:
        hs = real["handshake"]
        out.append(
            f"| realistic units: periodic status/telemetry/event logs, DCM, HTTP units, reconnect storm "
            f"| {real['connected']:,} connected; periodic {real['periodic_mo_per_sec']:,.0f} MO/s; burst {real['mo_per_sec']:,.0f} MO/s; "
            f"MT p99 {real['mt']['p99_ms']:.2f} ms; storm {real['storm_reconnected']:,}/{real['storm_units']:,} back in {real['storm_secs']:.1f} s "
            f"(handshake p99 {hs['p99_ms']:.0f} ms); HTTP p99 {real['http']['p99_ms']:.0f} ms; errors {json.dumps(real['errors'])} "
            f"| | `{real_args}` |"
        )
    if tcp and quic:
        out.append("")
        out.append(
            f"Same-run ratio: a QUIC connection costs {quic['kib_per_idle_connection'] / max(tcp['kib_per_idle_connection'], 0.001):.1f}× "
            "the memory of a TCP one."
        )
    return "\n".join(out)


def main():
    dirname = sys.argv[1]
    quick = os.path.exists(os.path.join(dirname, "quick"))
    rev = read(dirname, "commit", "unknown")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "## Measured by `scripts/perf-report.sh`",
        "",
        f"Generated {now} at commit `{rev}`{' in quick mode (a tenth of the units, short benches)' if quick else ''} "
        f"on {machine(read(dirname, 'loadavg', 'unknown'))}. Regenerate with `./scripts/perf-report.sh`; raw outputs are kept in the "
        "directory it prints. Load generator and gateway share the machine's cores.",
        "",
        "### Gateway (load test)",
        "",
        gateway(dirname),
        "",
        "### Criterion benches",
        "",
        criterion(dirname),
        "",
        "### Relational API (`scripts/perf-api.sh`)",
        "",
    ]
    api = os.path.join(dirname, "api.md")
    parts.append(open(api).read().strip() if os.path.exists(api) else "(not run)")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
