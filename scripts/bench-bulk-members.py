#!/usr/bin/env python3
"""Times building a large channel with bulk membership calls (issue 14).

For each backend: starts BIN (a release `clacks`) on a fresh database,
creates a channel, adds MEMBERS users with `PATCH /channel/{id}/users` in
requests of BATCH users, checks every member is there (paged listing), and
prints the wall time of the adds. Then one message is posted as a member
and the same is timed in a 2-member channel (ack latency, median of 20).

    cargo build --release -p clacks-server
    scripts/bench-bulk-members.py target/release/clacks sqlite mysql postgres

Env: MEMBERS (default 100000), BATCH (default 10000). MariaDB on
127.0.0.1:3306 (root, no password) and PostgreSQL on 127.0.0.1:5432 (trust).
Standard library only.
"""

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MEMBERS = int(os.environ.get("MEMBERS", "100000"))
BATCH = int(os.environ.get("BATCH", "10000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def fresh_database(backend, tmp):
    name = "clacks_bulk_" + secrets.token_hex(4)
    if backend == "sqlite":
        return f"sqlite://{tmp}/bulk.db", lambda: None
    if backend == "mysql":
        subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e", f"CREATE DATABASE {name}"], check=True)
        drop = lambda: subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e", f"DROP DATABASE {name}"])
        return f"mysql://root@127.0.0.1:3306/{name}", drop
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    drop = lambda: subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", name])
    return f"postgres://postgres@127.0.0.1:5432/{name}", drop


def run(binary, backend):
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = fresh_database(backend, tmp)
        management = free_port()
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": url,
            "JWT_SECRET": secrets.token_hex(32),
            "CLACKS_CLIENT_ADDR": f"127.0.0.1:{free_port()}",
            "CLACKS_MANAGEMENT_ADDR": f"127.0.0.1:{management}",
            "CLACKS_LOG": "warn",
        })
        env.pop("CLACKS_MANAGEMENT_TOKEN", None)
        log = open(os.path.join(tmp, "clacks.log"), "w")
        server = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{management}/api/v1"
        try:
            for _ in range(300):
                try:
                    call(base, "GET", "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            channel = call(base, "POST", "/channel", {"displayName": "big"})["id"]
            users = [f"user{n:07d}" for n in range(MEMBERS)]
            started = time.perf_counter()
            per_call = []
            for i in range(0, MEMBERS, BATCH):
                t = time.perf_counter()
                answer = call(base, "PATCH", f"/channel/{channel}/users", {"add": users[i:i + BATCH]})
                per_call.append(time.perf_counter() - t)
                assert answer["added"] == len(users[i:i + BATCH]), answer
            total = time.perf_counter() - started
            if os.environ.get("VERBOSE"):
                print(backend, " ".join(f"{t:.2f}" for t in per_call))
            # Every member exactly once.
            seen, after = [], None
            while True:
                path = f"/channel/{channel}/users?limit=200" + (f"&after={after}" if after else "")
                page = call(base, "GET", path)
                seen.extend(m["uid"] for m in page["items"])
                after = page["nextAfter"]
                if after is None:
                    break
            assert len(seen) == MEMBERS and len(set(seen)) == MEMBERS, len(seen)
            # Ack latency of a send in the big channel and in a 2-member one.
            small = call(base, "POST", "/channel", {"displayName": "small", "initialUsers": [users[0], users[1]]})["id"]
            acks = {}
            for name, ch in (("2 members", small), (f"{MEMBERS} members", channel)):
                times = []
                for n in range(20):
                    t = time.perf_counter()
                    call(base, "POST", f"/channel/{ch}/messages", {"senderId": users[0], "content": f"m{n}"})
                    times.append(time.perf_counter() - t)
                acks[name] = statistics.median(times) * 1000
            print(f"{backend}: {MEMBERS} members in {MEMBERS // BATCH} calls of {BATCH}: "
                  f"{total:.2f} s (per call min {min(per_call):.2f} s, max {max(per_call):.2f} s); "
                  + "; ".join(f"send ack median {k}: {v:.1f} ms" for k, v in acks.items()))
        finally:
            server.terminate()
            server.wait(timeout=30)
            drop()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for backend in sys.argv[2:]:
        run(sys.argv[1], backend)


if __name__ == "__main__":
    main()
