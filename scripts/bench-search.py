#!/usr/bin/env python3
"""Times full-text search over a 1,000,000-message channel (issue 13 item 5).

For each backend: starts BIN (a release `clacks`) on a fresh database,
creates a channel, loads MESSAGES messages into it directly with SQL (bulk
inserts: SQLite through Python's sqlite3 with the search triggers firing;
MariaDB multi-row INSERTs with the FULLTEXT index dropped during the load
and built after; PostgreSQL COPY), then times one-word searches through
`GET /api/v1/search?q=WORD&channel=ID&limit=20` (sequential, one client),
and prints p50/p99 per class of word:

- common: the 5 most frequent words (each in 16% to 60% of the messages:
  every match is ranked to find the best 20, the worst case);
- medium: words of rank ~100 (in about 1% of the messages);
- rare: words of rank ~10,000 (in about 100 messages).

Messages are 10 words drawn from a 50,000-word synthetic vocabulary with a
Zipf (1/rank) distribution, seeded, so every run and backend gets the same
text.

    cargo build --release -p clacks-server
    scripts/bench-search.py target/release/clacks sqlite mysql postgres

Env: MESSAGES (default 1000000), QUERIES (default 100 per class; common
gets a fifth of it). MariaDB on 127.0.0.1:3306 (root, no password) and
PostgreSQL on 127.0.0.1:5432 (trust). Standard library only.
"""

import itertools
import os
import random
import sqlite3
import statistics
import subprocess
import time
import urllib.parse

from benchlib import clacks, main

MESSAGES = int(os.environ.get("MESSAGES", "1000000"))
QUERIES = int(os.environ.get("QUERIES", "100"))
VOCABULARY = 50_000
WORDS_PER_MESSAGE = 10
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "to", "sa", "vi", "de", "po", "ga", "fe", "bu", "zo", "ri", "la"]


def word(rank):
    """A pronounceable word per rank (1-based), at least 6 letters: never
    an InnoDB stopword nor under its 3-character minimum."""
    n, out = rank + 256, []
    while n:
        n, digit = divmod(n, 16)
        out.append(SYLLABLES[digit])
    return "".join(out)


def messages(count):
    rng = random.Random(13)
    vocab = [word(r) for r in range(1, VOCABULARY + 1)]
    cum = list(itertools.accumulate(1.0 / r for r in range(1, VOCABULARY + 1)))
    for _ in range(count):
        yield " ".join(rng.choices(vocab, cum_weights=cum, k=WORDS_PER_MESSAGE))


def load(backend, url, tmp, channel):
    now = int(time.time() * 1000)
    rows = ((channel, seq, "alice", text, now) for seq, text in enumerate(messages(MESSAGES), 1))
    if backend == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite://"), timeout=60)
        db.execute("PRAGMA synchronous = OFF")
        with db:
            db.executemany(
                "INSERT INTO messages (channel_id, seq, sender, content, created_at) VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE channels SET last_seq = ? WHERE id = ?", (MESSAGES, channel))
        db.close()
        return
    if backend == "mysql":
        name = url.rsplit("/", 1)[1]
        mysql = subprocess.Popen(["mysql", "-h127.0.0.1", "-uroot", name], stdin=subprocess.PIPE, text=True)
        while batch := list(itertools.islice(rows, 5000)):
            values = ",".join(f"({c},{s},'{u}','{t}',{at})" for c, s, u, t, at in batch)
            mysql.stdin.write(f"INSERT INTO messages (channel_id, seq, sender, content, created_at) VALUES {values};\n")
        mysql.stdin.write(f"UPDATE channels SET last_seq = {MESSAGES} WHERE id = {channel};\n")
        mysql.stdin.close()
        assert mysql.wait() == 0
        return
    copy = subprocess.Popen(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
         "COPY messages (channel_id, seq, sender, content, created_at) FROM STDIN"],
        stdin=subprocess.PIPE, text=True)
    for c, s, u, t, at in rows:
        copy.stdin.write(f"{c}\t{s}\t{u}\t{t}\t{at}\n")
    copy.stdin.close()
    assert copy.wait() == 0
    subprocess.run(["psql", "-q", url, "-c", f"UPDATE channels SET last_seq = {MESSAGES} WHERE id = {channel}",
                    "-c", "VACUUM ANALYZE messages"], check=True)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(binary, backend):
    with clacks(binary, backend) as server:
        channel = server.manage("POST", "/channel", {"displayName": "big", "initialUsers": ["alice"]})["id"]
        started = time.perf_counter()
        load(backend, server.database_url, server.tmp, channel)
        loaded = time.perf_counter() - started
        rng = random.Random(7)
        classes = {
            "common": [word(r) for r in range(1, 6)],
            "medium": [word(r) for r in range(90, 111)],
            "rare": [word(r) for r in range(9_000, 11_001)],
        }
        results = []
        for name, words in classes.items():
            count = max(5, QUERIES // 5) if name == "common" else QUERIES
            # One untimed query first (caches, the server's pools).
            server.manage("GET", f"/search?q={words[0]}&channel={channel}&limit=20")
            times, hits = [], []
            for _ in range(count):
                q = urllib.parse.quote(rng.choice(words))
                t = time.perf_counter()
                page = server.manage("GET", f"/search?q={q}&channel={channel}&limit=20")
                times.append((time.perf_counter() - t) * 1000)
                hits.append(len(page["items"]))
            assert statistics.mean(hits) > 0, (name, hits)
            results.append(f"{name} ({count} queries): p50 {percentile(times, 50):.1f} ms, "
                           f"p99 {percentile(times, 99):.1f} ms")
        print(f"{backend}: {MESSAGES} messages loaded in {loaded:.0f} s; " + "; ".join(results), flush=True)


if __name__ == "__main__":
    main(__doc__, run)
