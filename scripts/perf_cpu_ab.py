"""CPU time per request of our server and of its PostgreSQL backends, for several
`smartsolar` release binaries on one seeded database (as scripts/perf_compare.py seeds it),
interleaved round after round. Read from /proc (utime + stime of our process and of every
backend of the database) around a wrk run, divided by the requests served: on a machine
shared with other work this moves far less than req/s does, and it says where a request's
time goes (our process or the database's). Issue 20's list and POST at 16 connections.

    python3 scripts/perf_cpu_ab.py BIN [BIN ...]        # env: SECS (8), ROUNDS (2)

A "binary" may be a wrapper script that execs one (e.g. to change SMARTSOLAR_DATABASE_URL).
Env: SMARTSOLAR_TEST_POSTGRES_URL (an admin URL; a smartsolar_cpu database is made there).
Needs wrk and psql.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import perf_compare as pc

PORT = 18097
HZ = os.sysconf("SC_CLK_TCK")
admin = os.environ.get("SMARTSOLAR_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
db = "smartsolar_cpu"
url = admin.rsplit("/", 1)[0] + "/" + db
bins = sys.argv[1:]
secs = int(os.environ.get("SECS", "8"))
rounds = int(os.environ.get("ROUNDS", "2"))
ops = [("list", 16), ("post", 16)]
work = tempfile.mkdtemp()
subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=True)
subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {db}"], check=True)
env = {**os.environ, "SMARTSOLAR_DATABASE_URL": url, "RUST_LOG": "error"}
subprocess.run([bins[0], "migrate"], env=env, check=True, capture_output=True)
pc.seed("postgres", url, work)

def ticks(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except OSError:
        return None

def backends():
    out = subprocess.run(["psql", admin, "-Atc", f"select pid from pg_stat_activity where datname='{db}'"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]

res = {}
for r in range(rounds):
    for i, b in enumerate(bins):
        server = subprocess.Popen([b, "control-plane"], env={**env, "SMARTSOLAR_HTTP_ADDR": f"127.0.0.1:{PORT}",
            "SMARTSOLAR_ADMIN_USER": pc.ADMIN, "SMARTSOLAR_ADMIN_PASSWORD": pc.PASSWORD,
            "SMARTSOLAR_DATA_DIR": os.path.join(work, f"d{i}")})
        try:
            pc.wait_http(f"http://127.0.0.1:{PORT}/v1/home")
            login = urllib.parse.urlencode({"username": pc.ADMIN, "password": pc.PASSWORD}).encode()
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/auth/login", login) as resp:
                token = json.load(resp)["message"]["login_successful"]["API_token"]
            # A wrapper execs the binary, so this is the server's pid; its stat counts every thread.
            spid = server.pid
            for kind, conns in ops:
                # Warm up, so the connections are open before counting.
                pc.wrk(PORT, kind, conns, 2, token, work, f"w{r}{i}{kind}")
                pids = backends()
                before = {p: ticks(p) for p in pids}
                s0 = ticks(spid)
                t0 = time.time()
                cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "-H", f"Authorization: Token token={token}"]
                script = os.path.join(work, f"{kind}.lua")
                if kind in pc.LUA:
                    open(script, "w").write(pc.LUA[kind])
                    cmd += ["-s", script, f"http://127.0.0.1:{PORT}"]
                else:
                    q = urllib.parse.quote(pc.LIST_Q)
                    cmd.append(f"http://127.0.0.1:{PORT}/v1/products?q={q}&results_per_page=10")
                out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PERF_TAG": f"c{r}{i}{kind}"}).stdout
                s1 = ticks(spid)
                pids2 = backends()
                pg = sum((ticks(p) or 0) - (before.get(p) or 0) for p in set(pids) | set(pids2) if ticks(p) is not None)
                reqs = int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
                ours_us = (s1 - s0) / HZ * 1e6 / reqs
                pg_us = pg / HZ * 1e6 / reqs
                print(f"round {r} bin {i} {kind} c{conns}: {reqs/secs:,.0f} req/s, ours {ours_us:.0f} us/req, pg {pg_us:.0f} us/req, backends {len(pids2)}", flush=True)
                res.setdefault((i, kind), []).append((reqs / secs, ours_us, pg_us))
        finally:
            server.terminate(); server.wait()
for (i, kind), v in sorted(res.items()):
    n = len(v)
    print(f"bin {i} {kind}: {sum(x[0] for x in v)/n:,.0f} req/s, ours {sum(x[1] for x in v)/n:.0f} us/req, pg {sum(x[2] for x in v)/n:.0f} us/req, total {sum(x[1]+x[2] for x in v)/n:.0f}  ({bins[i]})")
