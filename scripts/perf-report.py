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


# Parts of `serve` a profiled sample can pass through, by the frames of its stack: (name,
# substrings of a frame's symbol or object). A sample counts for each part any of its frames
# belongs to (inclusive share), so the shares add up to more than 100%.
PARTS = [
    ("SQLite (the library)", ("sqlite3",)),
    ("sqlx (SQLite driver, its worker thread)", ("sqlx_sqlite", "sqlx_core")),
    ("time-series store (ingest::tsdb)", ("ingest::tsdb",)),
    ("ingest sink (ingest, not tsdb)", ("ingest::",)),
    ("control-plane (API, directory, presence)", ("control_plane::",)),
    ("bus (disk bus)", ("bus::",)),
    ("gateway", ("gateway::",)),
    ("QUIC (quinn)", ("quinn",)),
    ("TLS (rustls, ring)", ("rustls", "ring::", "ring_core")),
    ("tokio runtime", ("tokio::",)),
    ("memory allocator (mimalloc, libc)", ("mi_", "malloc", "cfree", "_int_free", "realloc")),
    ("kernel", ("[kernel.kallsyms]",)),
]
# Parts that do work for another (the kernel, the allocator, the runtime): a sample is
# attributed to the first frame from the leaf up that belongs to none of them.
SERVICE = {"kernel", "memory allocator (mimalloc, libc)", "tokio runtime"}


def parts_of(frame):
    hit = [name for name, keys in PARTS if any(k in frame for k in keys)]
    if "time-series store (ingest::tsdb)" in hit:
        hit.remove("ingest sink (ingest, not tsdb)")
    return hit


def profile(path):
    """Inclusive, leaf and attributed shares per part, from `perf script` output (gzip):
    samples are separated by blank lines, the first line the thread, then one frame per line
    from the leaf up."""
    import gzip
    samples, inclusive, leaf, owner, threads = 0, {}, {}, {}, {}
    frames, head = [], None

    def flush():
        nonlocal samples
        if head is None:
            return
        samples += 1
        comm = head.split()[0] if head.split() else "?"
        threads[comm] = threads.get(comm, 0) + 1
        hit, owned = set(), None
        for i, f in enumerate(frames):
            names = parts_of(f)
            hit.update(names)
            if i == 0:
                for name in names:
                    leaf[name] = leaf.get(name, 0) + 1
            if owned is None:
                owned = next((n for n in names if n not in SERVICE), None)
        for name in hit:
            inclusive[name] = inclusive.get(name, 0) + 1
        owned = owned or "(no frame of a part above: kernel, allocator, runtime, libc)"
        owner[owned] = owner.get(owned, 0) + 1

    with gzip.open(path, "rt", errors="replace") as f:
        for line in f:
            if not line.strip():
                flush()
                frames, head = [], None
            elif head is None:
                head = line
            else:
                frames.append(line.strip())
    flush()
    return samples, inclusive, leaf, owner, threads


def e2e_run(d):
    """One end-to-end run's summary and the stored-MO rates read from the server's counter:
    (summary, stored MO/s over the burst, (seconds to drain, median drain rate, peak)), or None."""
    path = os.path.join(d, "summary.json")
    if not os.path.exists(path):
        return None
    s = json.load(open(path))
    # Stored MO/s from the server's own counter (smartsolar_ingest_messages_total, read each
    # second) over the burst window, and until the store had caught up with the burst.
    stored_burst, caught_up = None, None
    samples = []
    ing = os.path.join(d, "ingested.txt")
    if os.path.exists(ing):
        for line in open(ing):
            parts = line.split()
            if len(parts) == 2:
                samples.append((int(parts[0]) / 1000.0, int(parts[1])))
    window = s.get("burst_window_s")
    if samples and window and s.get("t0_unix_ms"):
        t0 = s["t0_unix_ms"] / 1000.0
        b0, b1 = t0 + window[0], t0 + window[1]

        def at(t):  # the counter at time t (the last reading before it)
            before = [n for (ts, n) in samples if ts <= t]
            return before[-1] if before else samples[0][1]

        inside = [(ts, n) for (ts, n) in samples if b0 <= ts <= b1]
        if len(inside) >= 2:
            (ta, na), (tb, nb) = inside[0], inside[-1]
            stored_burst = (nb - na) / max(tb - ta, 1e-9)
        # After the burst the sink drains what the gateway acknowledged during it: the
        # median rate over the readings after the burst, while it stays above a tenth of
        # the highest (the drain, before the periodic trickle), and when that ended.
        after = [(ts, n) for (ts, n) in samples if ts > b1]
        # Over 10-second windows: a reading a second apart can straddle a stall of the
        # readings (the server busy) and would end the drain early.
        after = after[::10]
        rates = [((tb, (nb - na) / max(tb - ta, 1e-9))) for (ta, na), (tb, nb) in zip(after, after[1:])]
        if rates:
            top = max(r for _, r in rates)
            drain = []
            for t, r in rates:
                if r < top / 10 and drain:
                    break
                if r >= top / 10:
                    drain.append((t, r))
            if drain:
                mid = sorted(r for _, r in drain)[len(drain) // 2]
                caught_up = (drain[-1][0] - b1, mid, top)
    return s, stored_burst, caught_up


def e2e_figures(run):
    """(name, value, higher is better) of one end-to-end run, for the comparisons."""
    s, stored, drain = run
    lag = s.get("ingest_lag_by_phase", {})
    window = s.get("mt_window_s")
    mt_secs = (window[1] - window[0]) if window else None
    return [
        ("MO/s acknowledged in the burst", s["burst_mo_per_sec"], True),
        ("messages/s stored in the burst (ingest counter: MO and MT replies)", stored, True),
        ("messages/s stored draining the backlog after the burst (median)", drain[1] if drain else None, True),
        ("seconds to drain the backlog after the burst", drain[0] if drain else None, False),
        ("ingest lag p99, realistic load (ms)", (lag.get("Periodic") or {}).get("p99_ms"), False),
        ("ingest lag p99, during the burst (ms)", (lag.get("Burst") or {}).get("p99_ms"), False),
        ("MT commands/s through the API (accepted ÷ MT phase)", s["mt_accepted"] / mt_secs if mt_secs else None, True),
        ("MT p99 through the API (ms)", s["mt_latency"]["p99_ms"], False),
        ("MO lost / duplicated", f"{s['mo_lost']} / {s['mo_duplicated']}", None),
        ("server RSS peak (MiB)", s["rss_peak_kib"] / 1024, False),
    ]


def e2e_compare(a_run, b_run, a_name, b_name):
    """Rows comparing two end-to-end runs figure by figure, with a ÷ b."""
    def cell(v):
        if v is None:
            return "(none)"
        return v if isinstance(v, str) else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"

    rows = [f"| figure | {a_name} | {b_name} | ratio |", "|---|---|---|---|"]
    for (name, a, more), (_, b, _) in zip(e2e_figures(a_run), e2e_figures(b_run)):
        ratio = f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else ""
        better = "" if more is None or not ratio else (" (higher is better)" if more else " (lower is better)")
        rows.append(f"| {name}{better} | {cell(a)} | {cell(b)} | {ratio} |")
    return rows


def e2e(dirname):
    d = os.path.join(dirname, "e2e")
    run = e2e_run(d)
    if run is None:
        return None
    s, stored_burst, caught_up = run
    args = read(d, "args")
    units = s["tcp_units"] + s["quic_units"] + s["http_units"]
    mt_ok = s.get("mt_during_mo")
    lag = s.get("ingest_lag_by_phase", {})
    per = lag.get("Periodic")
    burst_lag = lag.get("Burst")
    mt = s["mt_latency"]
    rows = [
        "| figure | result | target |",
        "|---|---|---|",
        f"| units (provisioned through the API; connected framed) | {units:,} ({s['tcp_units']:,} TLS-TCP, {s['quic_units']:,} QUIC, "
        f"{s['http_units']:,} legacy HTTP); {s['connected']:,} framed connected in {s['connect_secs']:.0f} s; "
        f"provisioning {s['provision_secs']:.0f} s | 50,000 |",
        f"| MO/s acknowledged in the burst ({args.split('--mo-senders')[1].split()[0]} senders) | {s['burst_mo_per_sec']:,.0f}/s | |",
        "| messages/s stored in the burst (server's ingest counter over the burst: MO and MT replies) | "
        + (f"{stored_burst:,.0f}/s" if stored_burst is not None else "(not read)")
        + (f"; after the burst the sink drained its backlog at {caught_up[1]:,.0f}/s (median; peak {caught_up[2]:,.0f}/s) "
           f"for {caught_up[0]:.0f} s" if caught_up else "")
        + " | ≥ 100,000/s |",
        "| ingest lag at the realistic load (telemetry sent in the periodic phase) | "
        + (f"p50 {per['p50_ms']:.0f} ms, p99 {per['p99_ms']:.0f} ms, max {per['max_ms']:.0f} ms ({per['count']} probes)" if per else "(no probe)")
        + " | < 2 s |",
        "| ingest lag during the burst | "
        + (f"p50 {burst_lag['p50_ms']:.0f} ms, p99 {burst_lag['p99_ms']:.0f} ms, max {burst_lag['max_ms']:.0f} ms ({burst_lag['count']} probes)" if burst_lag else "(no probe)")
        + " | |",
        f"| MT through the API {'during the MO burst' if mt_ok else 'after the MO burst'} ({s['mt_accepted']:,} accepted, "
        f"{s['mt_delivered']:,} delivered, {s['mt_lost']:,} lost) | p50 {mt['p50_ms']:.1f} ms, p99 {mt['p99_ms']:.1f} ms, max {mt['max_ms']:.0f} ms "
        "| p99 < 50 ms at 1,000/s |",
        f"| server RSS (peak) | {s['rss_peak_kib'] / 1024:,.0f} MiB | |",
        f"| MO sent / acknowledged / stored / lost / duplicated | {s['mo_sent']:,} / {s['mo_acknowledged']:,} / {s['mo_stored']:,} / "
        f"**{s['mo_lost']:,}** / **{s['mo_duplicated']:,}** (unacknowledged {s.get('mo_unacknowledged', 0):,}) | 0 lost, 0 duplicated |",
        f"| telemetry acknowledged / stored / lost | {s['telemetry_acknowledged']:,} / {s['telemetry_stored']:,} / {s['telemetry_lost']:,} | |",
        f"| errors | {json.dumps(s['errors'])} | |",
        f"| run / verification | {s['total_secs']:.0f} s / {s['verify_secs']:.0f} s | |",
    ]
    out = [
        f"Load average before the run: {read(d, 'loadavg', 'unknown')}; at the burst: {read(d, 'loadavg-burst', 'unknown')}. "
        "`serve` (release build, embedded defaults: SQLite, the embedded time-series store, the disk bus; "
        "metrics listener on) and the load generator share the machine's cores.",
        "",
        "\n".join(rows),
        "",
        f"Command: `load-test run {args} --api … --gateway-tcp … --gateway-quic … --gateway-http … --ca-cert … --server-pid … "
        "--units-csv … --phase-file … --chart … --out summary.json` (see `e2e()` in scripts/perf-report.sh).",
    ]
    baseline = e2e_run(os.path.join(dirname, "e2e-shared"))
    if baseline:
        out += [
            "",
            "Against the same-run baseline: the same binary and load right after, with ingest and the API on the "
            "gateway's runtime (`SMARTSOLAR_RUNTIME__INGEST_THREADS=0 SMARTSOLAR_RUNTIME__API_THREADS=0`), as "
            f"before they had runtimes of their own. Load average before the baseline: {read(os.path.join(dirname, 'e2e-shared'), 'loadavg', 'unknown')}.",
            "",
            "\n".join(e2e_compare(run, baseline, "shipped (own runtimes)", "baseline (one runtime)")),
        ]
    previous = e2e_run(os.path.join(dirname, "e2e-previous"))
    if previous:
        pdir = os.path.join(dirname, "e2e-previous")
        out += [
            "",
            f"Against the same-run baseline: another build of `smartsolar` ({read(pdir, 'binary', 'unknown')}, "
            "`perf-report.sh --baseline-bin`) under the same load right after. Load average before it: "
            f"{read(pdir, 'loadavg', 'unknown')}.",
            "",
            "\n".join(e2e_compare(run, previous, "this build", "baseline build")),
        ]
    cluster = e2e_run(os.path.join(dirname, "e2e-cluster"))
    if cluster:
        c = cluster[0]
        out += [
            "",
            "The scaled topology (`scripts/cluster.sh`: the control-plane on PostgreSQL, 2 gateways, 2 ingest "
            "workers, tansu as the Kafka-protocol broker, InfluxDB; release build) under the same load, right after, "
            "on the same 2 cores (TLS-TCP and HTTP units on gateway 1, QUIC units on gateway 2; RSS and profile are "
            f"gateway 1's; stored MO summed over both ingest workers). Load average before it: "
            f"{read(os.path.join(dirname, 'e2e-cluster'), 'loadavg', 'unknown')}. MO sent / acknowledged / stored / lost / "
            f"duplicated: {c['mo_sent']:,} / {c['mo_acknowledged']:,} / {c['mo_stored']:,} / **{c['mo_lost']:,}** / "
            f"**{c['mo_duplicated']:,}**; MT accepted / delivered / lost: {c['mt_accepted']:,} / {c['mt_delivered']:,} / "
            f"{c['mt_lost']:,}; errors {json.dumps(c['errors'])}. Target: ≥ 50,000 MO/s stored with two ingest workers.",
            "",
            "\n".join(e2e_compare(cluster, run, "scaled topology", "serve (shipped)")),
        ]
    script = os.path.join(d, "perf-script.txt.gz")
    if os.path.exists(script):
        n, inclusive, leaf, owner, threads = profile(script)
        if n:
            out += [
                "",
                f"Where `serve`'s CPU goes during the burst: `perf record -e cpu-clock -F 499 -g -p <serve pid> -- sleep 12` "
                f"from 2 s into the burst, {n:,} samples. The release build has no frame pointers, so the call graphs "
                "are mostly cut a few frames above the leaf: inclusive shares are lower bounds, the leaf share is exact, "
                "and *attributed* files a sample under the first frame from the leaf up that is not the kernel, the "
                "allocator or the runtime.",
                "",
                "| part | inclusive share | leaf share | attributed |",
                "|---|---|---|---|",
            ]
            names = [p[0] for p in PARTS] + [k for k in owner if k not in dict(PARTS)]
            for name in sorted(names, key=lambda k: -(inclusive.get(k, 0) + owner.get(k, 0))):
                out.append(
                    f"| {name} | {100 * inclusive.get(name, 0) / n:.1f}% | {100 * leaf.get(name, 0) / n:.1f}% "
                    f"| {100 * owner.get(name, 0) / n:.1f}% |"
                )
            top = sorted(threads.items(), key=lambda kv: -kv[1])[:8]
            out += ["", "By thread: " + ", ".join(f"{c} {100 * k / n:.1f}%" for c, k in top) + "."]
    return "\n".join(out)


def main():
    if sys.argv[1] == "--e2e":
        dirname = sys.argv[2]
        body = e2e(dirname)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print("\n".join([
            "## End to end: `smartsolar serve` under `load-test run` in target mode (`scripts/perf-report.sh`)",
            "",
            f"Generated {now} at commit `{read(dirname, 'commit', 'unknown')}` on {machine(read(dirname, 'loadavg', 'unknown'))}.",
            "",
            body or "(not run)",
        ]))
        return
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
