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

import os
import statistics
import time

from benchlib import clacks, main

MEMBERS = int(os.environ.get("MEMBERS", "100000"))
BATCH = int(os.environ.get("BATCH", "10000"))


def run(binary, backend):
    with clacks(binary, backend) as server:
        call = server.manage
        channel = call("POST", "/channel", {"displayName": "big"})["id"]
        users = [f"user{n:07d}" for n in range(MEMBERS)]
        started = time.perf_counter()
        per_call = []
        for i in range(0, MEMBERS, BATCH):
            t = time.perf_counter()
            answer = call("PATCH", f"/channel/{channel}/users", {"add": users[i:i + BATCH]})
            per_call.append(time.perf_counter() - t)
            assert answer["added"] == len(users[i:i + BATCH]), answer
        total = time.perf_counter() - started
        if os.environ.get("VERBOSE"):
            print(backend, " ".join(f"{t:.2f}" for t in per_call))
        # Every member exactly once.
        seen, after = [], None
        while True:
            path = f"/channel/{channel}/users?limit=200" + (f"&after={after}" if after else "")
            page = call("GET", path)
            seen.extend(m["uid"] for m in page["items"])
            after = page["nextAfter"]
            if after is None:
                break
        assert len(seen) == MEMBERS and len(set(seen)) == MEMBERS, len(seen)
        # Ack latency of a send in the big channel and in a 2-member one.
        small = call("POST", "/channel", {"displayName": "small", "initialUsers": [users[0], users[1]]})["id"]
        acks = {}
        for name, ch in (("2 members", small), (f"{MEMBERS} members", channel)):
            times = []
            for n in range(20):
                t = time.perf_counter()
                call("POST", f"/channel/{ch}/messages", {"senderId": users[0], "content": f"m{n}"})
                times.append(time.perf_counter() - t)
            acks[name] = statistics.median(times) * 1000
        print(f"{backend}: {MEMBERS} members in {MEMBERS // BATCH} calls of {BATCH}: "
              f"{total:.2f} s (per call min {min(per_call):.2f} s, max {max(per_call):.2f} s); "
              + "; ".join(f"send ack median {k}: {v:.1f} ms" for k, v in acks.items()))


if __name__ == "__main__":
    main(__doc__, run)
