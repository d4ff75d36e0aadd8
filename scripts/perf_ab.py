"""Same-run A/B of two `smartsolar` release binaries on the relational API (ours only, no
baseline): one database seeded as scripts/perf_compare.py seeds it (10,000 products), each
binary's `control-plane` started on it in turn, the issue-20 operations run with wrk, rounds
interleaved (A, B, A, B, ...) so both see the same machine. For a change's effect on the API;
the comparison with Flask-Restless is scripts/perf-compare.sh.

    python3 scripts/perf_ab.py BIN_A BIN_B [--backend postgres|sqlite] [--secs 8] [--rounds 2]

Env: SMARTSOLAR_TEST_POSTGRES_URL (an admin URL; a smartsolar_ab database is made there).
Needs wrk (scripts/perf-lib.sh installs it) and psql for PostgreSQL.
"""

import argparse
import json
import os
import subprocess
import tempfile
import urllib.parse
import urllib.request

import perf_compare as pc

PORT = 18095
OPERATIONS = [("one", 16), ("list", 16), ("post", 16), ("one", 64), ("list", 64), ("post", 64)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="perf-ab-")
    if args.backend == "postgres":
        admin = os.environ.get("SMARTSOLAR_TEST_POSTGRES_URL",
                               "postgres://postgres@127.0.0.1:5432/postgres")
        subprocess.run(["psql", admin, "-qc", "DROP DATABASE IF EXISTS smartsolar_ab"], check=True)
        subprocess.run(["psql", admin, "-qc", "CREATE DATABASE smartsolar_ab"], check=True)
        url = admin.rsplit("/", 1)[0] + "/smartsolar_ab"
    else:
        url = f"sqlite://{work}/ab.db"
    env = {**os.environ, "SMARTSOLAR_DATABASE_URL": url, "RUST_LOG": "error"}
    subprocess.run([args.a, "migrate"], env=env, check=True, capture_output=True)
    pc.seed(args.backend, url, work)
    results = {}
    for r in range(args.rounds):
        for name, binary in (("A", args.a), ("B", args.b)):
            server = subprocess.Popen([binary, "control-plane"], env={
                **env, "SMARTSOLAR_HTTP_ADDR": f"127.0.0.1:{PORT}",
                "SMARTSOLAR_ADMIN_USER": pc.ADMIN, "SMARTSOLAR_ADMIN_PASSWORD": pc.PASSWORD,
                "SMARTSOLAR_DATA_DIR": os.path.join(work, f"data-{name}")})
            try:
                pc.wait_http(f"http://127.0.0.1:{PORT}/v1/home")
                login = urllib.parse.urlencode(
                    {"username": pc.ADMIN, "password": pc.PASSWORD}).encode()
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/auth/login", login) as resp:
                    token = json.load(resp)["message"]["login_successful"]["API_token"]
                for kind, conns in OPERATIONS:
                    # The tag keeps POSTed names unique across runs (a repeat would be a 4xx).
                    rps, p99, bad = pc.wrk(PORT, kind, conns, args.secs, token, work,
                                           f"ab-{name}{r}c{conns}")
                    results.setdefault((kind, conns, name), []).append((rps, p99, bad))
                    print(f"round {r} {name} {kind} c{conns}: {rps:,.0f} req/s, p99 {p99:.1f} ms,"
                          f" non-2xx {bad}", flush=True)
            finally:
                server.terminate()
                server.wait()
    print(f"\n{args.backend}: mean over {args.rounds} rounds; A = {args.a}, B = {args.b}")
    for kind, conns in OPERATIONS:
        a, b = results[(kind, conns, "A")], results[(kind, conns, "B")]
        mean = lambda xs, i: sum(x[i] for x in xs) / len(xs)
        print(f"{kind:5} c{conns}: A {mean(a, 0):8,.0f} req/s p99 {mean(a, 1):6.1f} ms | "
              f"B {mean(b, 0):8,.0f} req/s p99 {mean(b, 1):6.1f} ms | "
              f"B/A {mean(b, 0) / mean(a, 0):.2f} (non-2xx {sum(x[2] for x in a)}/{sum(x[2] for x in b)})")


if __name__ == "__main__":
    main()
