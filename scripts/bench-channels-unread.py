#!/usr/bin/env python3
"""Times the `channels` query with unread counts for a user in many
channels (issue 14: p99 under 50 ms for a user in 1,000 channels).

For each backend: starts BIN (a release `clacks`) on a fresh database,
puts `reader` and `writer` in CHANNELS channels, has `writer` post
MESSAGES messages in each (mentioning `reader` in the last one of every
third channel), has `reader` mark every other channel read up to its
first message, then asks `channels { unreadCount unreadMentionCount
lastMessage }` as `reader` REPEATS times, one request at a time, checks
every count against what was posted, and prints p50, p99 and max.

    cargo build --release -p clacks-server
    scripts/bench-channels-unread.py target/release/clacks sqlite mysql postgres

Env: CHANNELS (default 1000), MESSAGES (default 3), REPEATS (default 200).
MariaDB on 127.0.0.1:3306 (root, no password) and PostgreSQL on
127.0.0.1:5432 (trust). Standard library only.
"""

import os
import statistics
import time

from benchlib import clacks, main

CHANNELS = int(os.environ.get("CHANNELS", "1000"))
MESSAGES = int(os.environ.get("MESSAGES", "3"))
REPEATS = int(os.environ.get("REPEATS", "200"))

CHANNELS_QUERY = "{ channels { id unreadCount unreadMentionCount lastMessage { seq content } } }"
MARK_READ = "mutation($c: ID!, $s: Int!) { markRead(channel: $c, seq: $s) { unreadCount } }"


def run(binary, backend):
    # The query is one user's many requests in a row; the default per-user
    # budgets are for clients, not for a benchmark.
    budgets = {"CLACKS_QUERY_COST_RATE": "1000000", "CLACKS_QUERY_COST_BURST": "1000000",
               "CLACKS_MARK_READ_RATE": "1000000", "CLACKS_MARK_READ_BURST": "1000000"}
    with clacks(binary, backend, budgets) as server:
        started = time.perf_counter()
        expected = {}
        for n in range(CHANNELS):
            channel = server.manage("POST", "/channel", {
                "displayName": f"c{n}", "initialUsers": ["reader", "writer"]})["id"]
            seqs = []
            for m in range(MESSAGES):
                mention = m == MESSAGES - 1 and n % 3 == 0
                body = {"senderId": "writer", "content": f"message {m} in {n}"}
                if mention:
                    body["mentions"] = ["reader"]
                seqs.append(server.manage("POST", f"/channel/{channel}/messages", body)["seq"])
            expected[str(channel)] = [seqs, n % 3 == 0]
        reader = server.token("reader")
        for n, (channel, (seqs, mentioned)) in enumerate(expected.items()):
            if n % 2 == 0:
                server.query(reader, MARK_READ, {"c": channel, "s": seqs[0]})
                expected[channel] = (MESSAGES - 1, 1 if mentioned and MESSAGES > 1 else 0, seqs[-1])
            else:
                expected[channel] = (MESSAGES, 1 if mentioned else 0, seqs[-1])
        setup = time.perf_counter() - started

        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            channels = server.query(reader, CHANNELS_QUERY)["channels"]
            times.append((time.perf_counter() - t) * 1000)
            got = {c["id"]: (c["unreadCount"], c["unreadMentionCount"], c["lastMessage"]["seq"]) for c in channels}
            assert got == expected, "unread counts differ from what was posted"
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"{backend}: channels query for a user in {CHANNELS} channels ({MESSAGES} messages each, "
              f"set up in {setup:.1f} s), {REPEATS} requests: p50 {statistics.median(times):.1f} ms, "
              f"p99 {p99:.1f} ms, max {times[-1]:.1f} ms")


if __name__ == "__main__":
    main(__doc__, run)
