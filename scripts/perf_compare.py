"""Runs issue 20's side-by-side comparison; started by scripts/perf-compare.sh (read it first).

For each backend: a fresh database migrated by our binary, 10,000 products seeded, our server
and the Flask-Restless baseline (gunicorn, 5 sync workers) both started on it, one token from
our /v1/auth/login used by both. Then, round after round, every operation runs with wrk on ours
and straight after on the baseline, so both see the same machine load. The table (mean req/s
and mean p99 over the rounds, ratios ours/baseline) replaces the part of docs/performance.md
between the perf-compare markers.
"""

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

UNITS = 10_000
OURS_PORT, BASE_PORT = 18090, 18091
ADMIN, PASSWORD = "perf@example.com", "perf-password"
LIST_Q = json.dumps(
    {
        "filters": [
            {"name": "product_type_id", "op": "eq", "val": 7},
            {"name": "current_enable_flag", "op": "eq", "val": True},
        ],
        "order_by": [{"field": "serial_number", "direction": "desc"}],
    }
)
# (label, connections, kind)
OPERATIONS = [
    ("GET one product", 16, "one"),
    ("GET one product", 64, "one"),
    ("GET list, 2 filters + order_by, 10 per page", 16, "list"),
    ("GET list, 2 filters + order_by, 10 per page", 64, "list"),
    ("POST an entity", 16, "post"),
    ("POST an entity", 64, "post"),
]
BEGIN, END = "<!-- perf-compare:begin -->", "<!-- perf-compare:end -->"

LUA = {
    "one": f"""
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/v1/products/35%013d", math.random(1, {UNITS})))
end
""",
    # Unique names across threads, rounds and servers: the tag is set per run.
    "post": """
local counter, id, headers = 0, 0, {}
local tag = os.getenv("PERF_TAG") or "x"
local threads = {}
setup = function(thread) thread:set("id", #threads); table.insert(threads, thread) end
init = function()
  id = wrk.thread:get("id")
  -- Headers given to wrk.format replace the -H ones (the token): copy them.
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/json"
end
request = function()
  counter = counter + 1
  local body = string.format('{"name":"perf-%s-%d-%d","bboxx_company_flag":false}', tag, id, counter)
  return wrk.format("POST", "/v1/entities", headers, body)
end
""",
}


def log(msg):
    print(f"== perf-compare: {msg}", file=sys.stderr, flush=True)


def seed(backend, url, work):
    rows = [
        (f"35{i:013d}", f"SN-{i}", f"99{i:013d}", 6 + (i % 2), i % 3 == 0)
        for i in range(1, UNITS + 1)
    ]
    if backend == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        db.executemany(
            """INSERT INTO product (product_imei, serial_number, imsi, product_type_id,
               current_enable_flag, desired_enable_flag, rtc_enabled_flag, dcm_enabled_flag,
               is_payg, created_at, created_by)
               VALUES (?, ?, ?, ?, ?, 0, 0, 0, 1, '2026-01-01T00:00:00.000000', 'perf')""",
            rows,
        )
        db.commit()
        db.execute("ANALYZE")
        db.close()
    else:
        subprocess.run(
            ["psql", url, "-qc", f"""INSERT INTO product (product_imei, serial_number, imsi,
              product_type_id, current_enable_flag, desired_enable_flag, rtc_enabled_flag,
              dcm_enabled_flag, is_payg, created_at, created_by)
              SELECT '35' || lpad(i::text, 13, '0'), 'SN-' || i, '99' || lpad(i::text, 13, '0'),
                6 + (i % 2), i % 3 = 0, false, false, false, true, '2026-01-01', 'perf'
              FROM generate_series(1, {UNITS}) i""",
             # VACUUM too, as autovacuum does soon after a bulk load: it sets the visibility
             # map, so COUNTs read the index alone (both stacks query the same table).
             "-qc", "VACUUM ANALYZE product"],
            check=True,
        )


def wait_http(url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering, even if with 401
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency '{text}'")
    return float(m[1]) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[m[2]]


def wrk(port, kind, conns, secs, token, work, tag):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-H",
           f"Authorization: Token token={token}"]
    if kind in LUA:
        script = os.path.join(work, f"{kind}.lua")
        with open(script, "w") as f:
            f.write(LUA[kind])
        cmd += ["-s", script, f"http://127.0.0.1:{port}"]
    else:
        q = urllib.parse.quote(LIST_Q)
        cmd.append(f"http://127.0.0.1:{port}/v1/products?q={q}&results_per_page=10")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "PERF_TAG": tag}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        # An overloaded server drops or times out connections; reported, not fatal.
        log(f"port {port} ({kind}, {conns} conns): {errors[0]}")
    non_2xx = int(bad[1]) if bad else 0
    if non_2xx:
        # Counted and shown in the table (a row with any is not met), not fatal: one bad
        # answer must not throw away the rest of a long run. What they were is told by
        # one more, short run that prints the first few.
        log(f"port {port} ({kind}, {conns} conns): {non_2xx} non-2xx answers; a sample:")
        sample_errors(port, kind, conns, token, work, tag)
    return rps, p99, non_2xx


def sample_errors(port, kind, conns, token, work, tag):
    """Runs the operation for 2 s more with a response hook that prints the first five
    non-2xx answers (status and body) to stderr."""
    hook = """
local shown = 0
response = function(status, headers, body)
  if status >= 300 and shown < 5 then
    shown = shown + 1
    io.stderr:write(string.format("  %d %s\\n", status, body))
  end
end
"""
    script = os.path.join(work, f"{kind}-sample.lua")
    with open(script, "w") as f:
        f.write(LUA.get(kind, "") + hook)
    target = f"http://127.0.0.1:{port}"
    if kind not in LUA:
        target += f"/v1/products?q={urllib.parse.quote(LIST_Q)}&results_per_page=10"
    subprocess.run(["wrk", "-t1", f"-c{conns}", "-d2s", "-H",
                    f"Authorization: Token token={token}", "-s", script, target],
                   stdout=subprocess.DEVNULL, env={**os.environ, "PERF_TAG": f"{tag}-sample"})


def start_servers(backend, url, args, work, procs):
    env = {**os.environ, "SMARTSOLAR_DATABASE_URL": url, "RUST_LOG": "warn"}
    subprocess.run([args.bin, "migrate"], env=env, check=True, capture_output=True)
    seed(backend, url, work)
    ours = subprocess.Popen(
        [args.bin, "control-plane"],
        env={**env, "SMARTSOLAR_HTTP_ADDR": f"127.0.0.1:{OURS_PORT}",
             "SMARTSOLAR_ADMIN_USER": ADMIN, "SMARTSOLAR_ADMIN_PASSWORD": PASSWORD,
             "SMARTSOLAR_DATA_DIR": os.path.join(work, "data")},
    )
    base_url = url.replace("sqlite://", "sqlite:///") if backend == "sqlite" else url
    base = subprocess.Popen(
        [os.path.join(args.venv, "bin", "gunicorn"), "-w", "5", "-b", f"127.0.0.1:{BASE_PORT}",
         "--chdir", os.path.dirname(os.path.abspath(__file__)), "--log-level", "warning",
         "perf_flask_baseline:app"],
        env={**os.environ, "BASELINE_DATABASE_URL": base_url,
             "BASELINE_TOKEN_CACHE": os.environ.get("BASELINE_TOKEN_CACHE", "5")},
    )
    procs += [ours, base]
    wait_http(f"http://127.0.0.1:{OURS_PORT}/v1/home")
    wait_http(f"http://127.0.0.1:{BASE_PORT}/v1/products/x")
    login = urllib.parse.urlencode({"username": ADMIN, "password": PASSWORD}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{OURS_PORT}/v1/auth/login", login) as r:
        token = json.load(r)["message"]["login_successful"]["API_token"]
    check_same_answers(token)
    return token


def check_same_answers(token):
    """Both servers must answer the measured requests with the same rows, or the
    comparison is not of the same work."""
    def get(port, path):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Token token={token}"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    path = f"/v1/products?q={urllib.parse.quote(LIST_Q)}&results_per_page=10"
    ours, base = get(OURS_PORT, path), get(BASE_PORT, path)
    key = lambda body: ([o["product_imei"] for o in body["objects"]], body["num_results"],
                        body["total_pages"])
    if key(ours) != key(base):
        raise SystemExit(f"the list differs:\nours {key(ours)}\nbaseline {key(base)}")
    one = "/v1/products/350000000000042"
    if get(OURS_PORT, one)["serial_number"] != get(BASE_PORT, one)["serial_number"]:
        raise SystemExit("GET one differs")


def render(results, args, loadavg, commit):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Compared with Flask-Restless (`scripts/perf-compare.sh`, issue 20)",
        "",
        f"Generated {now} at commit `{commit}` by `./scripts/perf-compare.sh {args.secs} "
        f"{args.rounds}`: wrk with 2 threads, {args.secs} s per run, {args.rounds} interleaved "
        f"rounds (each operation on ours, then straight after on the baseline); {UNITS:,} "
        "products seeded identically; figures are the mean over the rounds. Baseline: "
        "Flask-Restless 0.17.0 + SQLAlchemy 1.3 under gunicorn with 5 sync workers, token "
        f"cache {os.environ.get('BASELINE_TOKEN_CACHE', '5')} s, on the same database. "
        f"The machine has {os.cpu_count()} cores shared by wrk, both servers and other "
        f"people's builds (load average before the run: {loadavg}): absolute figures are "
        "noisy, the same-run ratios are the figures to compare.",
        "",
        "| backend | operation | conns | ours req/s | ours p99 | baseline req/s | baseline p99 "
        "| req/s ratio | p99 ratio (baseline/ours) | non-2xx (ours/baseline) "
        "| target (≥ 10×, p99 ≤ 1/10, no errors) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (backend, label, conns), r in results.items():
        o_rps, o_p99 = statistics.mean(r["ours"][0]), statistics.mean(r["ours"][1])
        b_rps, b_p99 = statistics.mean(r["base"][0]), statistics.mean(r["base"][1])
        o_bad, b_bad = sum(r["ours"][2]), sum(r["base"][2])
        met = o_rps >= 10 * b_rps and o_p99 * 10 <= b_p99 and o_bad == 0
        lines.append(
            f"| {backend} | {label} | {conns} | {o_rps:,.0f} | {o_p99:.1f} ms | {b_rps:,.0f} "
            f"| {b_p99:.1f} ms | {o_rps / b_rps:.1f}× | {b_p99 / o_p99:.1f}× | {o_bad}/{b_bad} "
            f"| {'met' if met else '**missed**'} |"
        )
    lines += ["", END]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3])
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    backends = os.environ.get("PERF_COMPARE_BACKENDS", "sqlite postgres").split()
    results = {}
    with tempfile.TemporaryDirectory(prefix="smartsolar-compare.") as work:
        for backend in backends:
            if backend == "sqlite":
                url = f"sqlite://{work}/compare.db"
            else:
                admin = os.environ.get("SMARTSOLAR_TEST_POSTGRES_URL",
                                       "postgres://postgres@127.0.0.1:5432/postgres")
                subprocess.run(["psql", admin, "-qc", "DROP DATABASE IF EXISTS smartsolar_compare",
                                "-qc", "CREATE DATABASE smartsolar_compare"], check=True)
                url = admin.rsplit("/", 1)[0] + "/smartsolar_compare"
            procs = []
            try:
                token = start_servers(backend, url, args, work, procs)
                for rnd in range(args.rounds):
                    for label, conns, kind in OPERATIONS:
                        r = results.setdefault((backend, label, conns),
                                               {"ours": ([], [], []), "base": ([], [], [])})
                        for side, port in (("ours", OURS_PORT), ("base", BASE_PORT)):
                            rps, p99, non_2xx = wrk(port, kind, conns, args.secs, token,
                                                    work, f"{side}{rnd}c{conns}")
                            r[side][0].append(rps)
                            r[side][1].append(p99)
                            r[side][2].append(non_2xx)
                            log(f"{backend} round {rnd + 1} {side:4} {label} c{conns}: "
                                f"{rps:,.0f} req/s, p99 {p99:.1f} ms")
            finally:
                for p in procs:
                    p.terminate()
                    p.wait()
    table = render(results, args, loadavg, commit)
    out = os.environ.get("PERF_COMPARE_OUT", "docs/performance.md")
    doc = open(out).read() if os.path.exists(out) else ""
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + table + doc[doc.index(END) + len(END) + 1:]
    else:
        doc = doc + ("\n" if doc else "") + table
    with open(out, "w") as f:
        f.write(doc)
    print(table)


if __name__ == "__main__":
    main()
