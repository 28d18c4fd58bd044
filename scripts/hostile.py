#!/usr/bin/env python3
"""The hostile-input suite (issue 10): replays each attack on the client
port (and the management port) against a spawned `clacks` and checks that it
is refused as documented (README "Request limits", "Rate limits",
"Connection limits", the close-code table), quickly; then runs several
attackers at once while /healthz is probed and the server's RSS sampled.

Run by scripts/hostile.sh, which builds the release binary and installs
`websockets` into .venv. Standard library otherwise.

    hostile.py BIN [--rss-bound-mib 200] [--refusal-bound-ms 500]
               [--storm-seconds 10] [--json FILE]

Every figure printed is measured on this run: `time` is the wall time from
sending the offending request (or the frame, or the upgrade) to reading its
refusal; `cpu` is the server's CPU time (user + system, /proc/PID/stat)
spent meanwhile, setup excluded.
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

# websockets asks for `with connect(...)`; these sockets outlive a block.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="websockets")
warnings.filterwarnings("ignore", message="connect\\(\\) must be used")

JWT_SECRET = "hostile-suite-jwt-secret-0123456789abcdef"
ISSUER = "hostile-issuer"
AUDIENCE = "hostile-audience"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- the server under test ------------------------------------------------


class Server:
    """A `clacks serve` on free loopback ports over a fresh SQLite file."""

    def __init__(self, binary, workdir, name, env=None):
        self.name = name
        self.client_port = free_port()
        self.management_port = free_port()
        self.db = os.path.join(workdir, f"{name}.db")
        self.log_path = os.path.join(workdir, f"{name}.log")
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("CLACKS_") or k in ("DATABASE_URL", "JWT_SECRET"))
        }
        full_env.update(
            {
                "DATABASE_URL": f"sqlite://{self.db}",
                "CLACKS_CLIENT_ADDR": f"127.0.0.1:{self.client_port}",
                "CLACKS_MANAGEMENT_ADDR": f"127.0.0.1:{self.management_port}",
                "CLACKS_LOG": "info",
            }
        )
        full_env.update(env or {})
        self.env = full_env
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "serve"], env=full_env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.pid = self.process.pid

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Failure(f"{self.name} exited: {self.log_tail()}")
            try:
                status, _, _ = http_request(self.client_port, "GET", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise Failure(f"{self.name} did not serve /healthz within {timeout} s")

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    # management API (dev mode: loopback, no token)
    def manage(self, method, path, body=None, host=None):
        status, headers, data = http_request(
            self.management_port, method, "/api/v1" + path, body=body, host=host, timeout=10
        )
        return status, headers, data

    def token(self, uid):
        status, _, data = self.manage("GET", f"/jwt/{urllib.parse.quote(uid)}")
        check(status == 200, f"minting a token for {uid}: {status} {data[:200]!r}")
        parsed = json.loads(data)
        # The original `GET /jwt/{uid}` answers the token as a JSON string.
        return parsed if isinstance(parsed, str) else parsed["token"]

    def channel(self, name, users):
        status, _, data = self.manage(
            "POST", "/channel", {"displayName": name, "initialUsers": users}
        )
        check(status in (200, 201), f"creating channel {name}: {status} {data[:200]!r}")
        return json.loads(data)["id"]

    def post(self, channel, sender, content):
        status, _, data = self.manage(
            "POST", f"/channel/{channel}/messages", {"senderId": sender, "content": content}
        )
        check(status in (200, 201), f"posting to {channel}: {status} {data[:200]!r}")
        return json.loads(data)


def http_request(port, method, path, body=None, headers=None, host=None, timeout=10, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        if host is not None:
            conn.putrequest(method, path, skip_host=True)
            conn.putheader("Host", host)
        else:
            conn.putrequest(method, path)
        payload = None
        if raw is not None:
            payload = raw
        elif body is not None:
            payload = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if payload is not None:
            all_headers["Content-Length"] = str(len(payload))
        for k, v in all_headers.items():
            conn.putheader(k, v)
        conn.endheaders(payload)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def graphql(server, query, token=None, variables=None, batch=None, timeout=10):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = batch if batch is not None else {"query": query, "variables": variables or {}}
    status, _, data = http_request(
        server.client_port, "POST", "/graphql", body=body, headers=headers, timeout=timeout
    )
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return status, parsed, len(data)


def first_error(body):
    if isinstance(body, list):
        body = body[0] if body else {}
    errors = (body or {}).get("errors") or []
    return errors[0] if errors else {}


def error_code(body):
    return (first_error(body).get("extensions") or {}).get("code")


def jwt(claims, secret=JWT_SECRET):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


# ----- WebSocket helpers ------------------------------------------------------


def ws_open(server, token=None, extra_headers=None, init=True):
    ws = ws_connect(
        f"ws://127.0.0.1:{server.client_port}/graphql",
        subprotocols=["graphql-transport-ws"],
        additional_headers=extra_headers,
        max_size=None,
        open_timeout=10,
        close_timeout=2,
    )
    if init:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        message = json.loads(ws.recv(timeout=10))
        check(message["type"] == "connection_ack", f"connection_init answered {message}")
    return ws


def close_code(ws, timeout=5):
    """Reads until the server closes; returns its close code."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return None


def recv_for(ws, op_id, timeout=5):
    """The first `next`/`error`/`complete` message of operation `op_id`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nothing for operation {op_id}")
        message = json.loads(ws.recv(timeout=left))
        if message.get("id") == op_id:
            return message


def raw_upgrade(port, headers=None):
    """Sends a WebSocket upgrade on a plain socket and reads the status line;
    returns (status, socket) with the socket left open (the place held)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [
        "GET /graphql HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol: graphql-transport-ws",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 else 0
    return status, s, data


def ws_frame(payload: bytes, opcode=0x1):
    """One masked client frame."""
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


# ----- the record -------------------------------------------------------------


class Report:
    def __init__(self, refusal_bound_ms):
        self.rows = []
        self.failures = []
        self.refusal_bound_ms = refusal_bound_ms
        self.only = []

    def attack(self, name, server, run):
        """Runs `run(measure)`; `measure(fn)` times the offending step and
        returns its result. `run` returns the refusal seen (a string)."""
        if self.only and not any(word in name for word in self.only):
            return
        timings = []

        def measure(fn):
            cpu0 = server.cpu_seconds()
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                timings.append((time.perf_counter() - t0, server.cpu_seconds() - cpu0))

        try:
            refusal = run(measure)
            worst = max((t for t, _ in timings), default=0.0)
            if isinstance(refusal, tuple):
                refusal, worst = refusal
            cpu = sum(c for _, c in timings)
            ok = worst * 1000 <= self.refusal_bound_ms
            row = {
                "attack": name,
                "refusal": refusal,
                "ms": round(worst * 1000, 1),
                "cpu_ms": round(cpu * 1000),
                "ok": ok,
            }
            if not ok:
                self.failures.append(f"{name}: answered in {worst * 1000:.0f} ms")
        except Exception as error:  # noqa: BLE001 - reported, then the run fails
            row = {"attack": name, "refusal": f"FAILED: {error}", "ms": None, "cpu_ms": None, "ok": False}
            self.failures.append(f"{name}: {error}")
        self.rows.append(row)
        mark = "ok " if row["ok"] else "BAD"
        ms = "-" if row["ms"] is None else f"{row['ms']:.0f} ms"
        print(f"  {mark} {name}: {row['refusal']} ({ms})", flush=True)

    def skip(self, name, why):
        self.rows.append({"attack": name, "refusal": f"skipped: {why}", "ms": None, "cpu_ms": None, "ok": True})
        print(f"  --  {name}: skipped: {why}", flush=True)

    def table(self):
        width = max(len(r["attack"]) for r in self.rows)
        rwidth = min(max(len(r["refusal"]) for r in self.rows), 70)
        print()
        print(f"{'attack':<{width}}  {'refusal':<{rwidth}}  {'time':>8}  {'cpu':>7}")
        print(f"{'-' * width}  {'-' * rwidth}  {'-' * 8}  {'-' * 7}")
        for r in self.rows:
            ms = "-" if r["ms"] is None else f"{r['ms']:.0f} ms"
            cpu = "-" if r["cpu_ms"] is None else f"{r['cpu_ms']} ms"
            flag = "" if r["ok"] else "  <-- FAILED"
            print(f"{r['attack']:<{width}}  {r['refusal'][:rwidth]:<{rwidth}}  {ms:>8}  {cpu:>7}{flag}")


def expect_limit(body, limit):
    error = first_error(body)
    ext = error.get("extensions") or {}
    check(ext.get("code") == "LIMIT_EXCEEDED", f"expected LIMIT_EXCEEDED, got {error or body}")
    if limit is not None:
        check(ext.get("limit") == limit, f"expected limit {limit}, got {ext}")
    return f"LIMIT_EXCEEDED {ext.get('limit')} {ext.get('actual')} > {ext.get('max')}"


def expect_rate_limited(error, what):
    ext = (error or {}).get("extensions") or {}
    check(ext.get("code") == "RATE_LIMITED", f"{what}: expected RATE_LIMITED, got {error}")
    check(isinstance(ext.get("retryAfterMs"), int), f"{what}: no retryAfterMs in {ext}")
    return ext["retryAfterMs"]


# ----- the attacks ------------------------------------------------------------


def fragment_explosion(spreads=60):
    names = "ABCDE"
    parts = ["query{...A}"]
    for level in range(4):
        inner = " ".join(f"...{names[level + 1]}" for _ in range(spreads))
        parts.append(f"fragment {names[level]} on Query{{{inner}}}")
    parts.append("fragment E on Query{__typename}")
    return " ".join(parts)


INTROSPECTION_FRAGMENT = (
    "fragment I on __Schema{types{name kind description fields{name description "
    "args{name type{name kind ofType{name kind}}} type{name kind ofType{name kind ofType{name}}}}}}"
)


def aliased_introspection(aliases):
    fields = " ".join(f"a{i}:__schema{{...I}}" for i in range(aliases))
    return f"query{{{fields}}} {INTROSPECTION_FRAGMENT}"


def history_aliases(aliases, limit=200):
    fields = " ".join(
        f"a{i}:channels{{history(limit:{limit}){{seenBy{{userId seenAt}} channel{{id displayName}}}}}}"
        for i in range(aliases)
    )
    return f"query{{{fields}}}"


def metrics_lines(server):
    status, _, data = http_request(server.management_port, "GET", "/metrics")
    check(status == 200, f"/metrics answered {status}")
    return [line for line in data.decode().splitlines() if line and not line.startswith("#")]


def attacks_on_the_document(report, a, tok):
    def explosion(measure):
        doc = fragment_explosion(60)
        status, body, _ = measure(lambda: graphql(a, doc))
        return f"{expect_limit(body, 'inlinedSelections')} (HTTP {status}, {len(doc)} B document)"

    report.attack("fragment explosion, 60 spreads x 4 levels, no token", a, explosion)

    def big_batch(measure):
        batch = [{"query": aliased_introspection(90)} for _ in range(50)]
        status, body, size = measure(lambda: graphql(a, None, batch=batch))
        return f"{expect_limit(body, 'batch')} (HTTP {status}, {size} B answered)"

    report.attack("batch of 50 ops x 90 aliased introspections, no token", a, big_batch)

    def huge_batch(measure):
        batch = [{"query": "{__typename}"}] * 20000
        status, body, _ = measure(lambda: graphql(a, None, batch=batch))
        return f"{expect_limit(body, 'batch')} (HTTP {status}, {len(json.dumps(batch)) // 1024} KiB body)"

    report.attack("batch of 20,000 ops, no token", a, huge_batch)

    def huge_body(measure):
        raw = json.dumps({"query": "{__typename}", "variables": {"pad": "x" * (3 * 1024 * 1024)}}).encode()
        status, _, _ = measure(
            lambda: http_request(a.client_port, "POST", "/graphql", raw=raw, headers={"Content-Type": "application/json"})
        )
        check(status == 413, f"answered {status}")
        return f"HTTP {status} (3 MiB body)"

    report.attack("3 MiB POST body, no token", a, huge_body)

    def long_document(measure):
        doc = "{" + " ".join(["__typename"] * 4000) + "}"
        status, body, _ = measure(lambda: graphql(a, doc))
        return f"{expect_limit(body, 'documentBytes')} (HTTP {status})"

    report.attack("44 KB document, no token", a, long_document)

    def deep(measure):
        doc = "query{channels{" * 40 + "id" + "}" * 40 + "}"
        status, body, _ = measure(lambda: graphql(a, doc))
        return f"{expect_limit(body, 'depth')} (HTTP {status})"

    report.attack("selections nested 40 deep, no token", a, deep)

    def introspection_no_token(measure):
        status, body, _ = measure(lambda: graphql(a, "{__schema{types{name}}}"))
        check(error_code(body) == "UNAUTHENTICATED", f"introspection without a token: {body}")
        return f"UNAUTHENTICATED (HTTP {status})"

    report.attack("introspection, no token", a, introspection_no_token)

    def aliased_no_token(measure):
        status, body, _ = measure(lambda: graphql(a, aliased_introspection(90)))
        return f"{expect_limit(body, 'inlinedSelections')} (HTTP {status})"

    report.attack("one op, 90 aliased introspections, no token", a, aliased_no_token)

    def aliases(measure):
        fields = " ".join(f"t{i}:__typename" for i in range(40))
        status, body, _ = measure(lambda: graphql(a, f"{{{fields}}}"))
        return f"{expect_limit(body, 'aliases')} (HTTP {status})"

    report.attack("one op, 40 aliases of __typename, no token", a, aliases)

    def root_fields(measure):
        status, body, _ = measure(lambda: graphql(a, aliased_introspection(15), token=tok))
        return f"{expect_limit(body, 'rootFields')} (HTTP {status})"

    report.attack("one op, 15 aliased introspections, token", a, root_fields)

    def widest_allowed(measure):
        # The most a token holder may ask in one POST: a full batch, each
        # operation just under the cost limit (a `types` list costs 1,000).
        # Answered, and bounded: the query budget pays for two or three of
        # them, the rest are RATE_LIMITED. A user of its own, so that the
        # budget it spends is not the next attacks' (mallory's).
        introspector = a.token("introspector")
        batch = [{"query": aliased_introspection(9)} for _ in range(10)]
        status, body, size = measure(lambda: graphql(a, None, batch=batch, token=introspector, timeout=30))
        check(status == 200 and isinstance(body, list), f"HTTP {status}: {str(body)[:200]}")
        codes = sorted({error_code(item) or "data" for item in body})
        return f"answered ({'/'.join(codes)}), {size / 1e6:.1f} MB (HTTP {status})"

    report.attack("batch of 10 ops x 9 aliased introspections, token", a, widest_allowed)

    def suggestions(measure):
        status, body, _ = measure(lambda: graphql(a, "{chanels{id}}"))
        message = first_error(body).get("message", "")
        check("did you mean" not in message.lower(), f"suggestion to a stranger: {message}")
        _, body2, _ = graphql(a, "{chanels{id}}", token=tok)
        with_token = "did you mean" in first_error(body2).get("message", "").lower()
        return f"no 'Did you mean' (HTTP {status}; with a token: {'one' if with_token else 'none'})"

    report.attack("misspelt field, no token (suggestions)", a, suggestions)

    def invented_methods(measure):
        # One invented method on a route and off any route first, so the
        # fixed series they fall into (`other`, `unmatched`) exist, and
        # /metrics once, for its own series.
        http_request(a.client_port, "BREW", "/graphql")
        http_request(a.client_port, "BREW", "/no-such-path")
        metrics_lines(a)
        lines = metrics_lines(a)
        before = len(lines)
        statuses = set()

        def flood():
            for i in range(60):
                method = f"X{i}{os.urandom(3).hex().upper()}"
                path = f"/r{os.urandom(4).hex()}"
                status, _, _ = http_request(a.client_port, method, path if i % 2 else "/graphql")
                statuses.add(status)

        measure(flood)
        grown = metrics_lines(a)
        after = len(grown)
        added = sorted(set(line.rsplit(" ", 1)[0] for line in grown) - set(line.rsplit(" ", 1)[0] for line in lines))
        check(after == before, f"/metrics grew from {before} to {after} lines: {added[:5]}")
        return f"HTTP {'/'.join(map(str, sorted(statuses)))}; /metrics {before} -> {after} lines after 60 invented methods and paths"

    report.attack("invented HTTP methods and paths vs /metrics", a, invented_methods)


def attacks_on_rows(report, a, tok, lobby):
    def history(measure):
        status, body, _ = measure(lambda: graphql(a, history_aliases(10), token=tok))
        return f"{expect_limit(body, 'cost')} (HTTP {status})"

    report.attack("10 aliases of channels{history(limit:200){seenBy channel}}", a, history)

    def history_many(measure):
        status, body, _ = measure(lambda: graphql(a, history_aliases(40), token=tok))
        return f"{expect_limit(body, None)} (HTTP {status})"

    report.attack("40 aliases of the same", a, history_many)

    def fetches(measure):
        # Within the cost estimate (one channel, a page of 200, `channel`
        # per message) but over the database fetch budget: the backstop.
        pages = " ".join(f"p{i}:history(limit:200){{channel{{displayName}}}}" for i in range(3))
        query = f"query($c:ID!){{channel(id:$c){{{pages}}}}}"
        status, body, _ = measure(lambda: graphql(a, query, token=tok, variables={"c": lobby}))
        return f"{expect_limit(body, 'databaseFetches')} (HTTP {status})"

    report.attack("3 pages x 200 messages x channel (fetch budget)", a, fetches)


def spam_until_refused(a, tok, query, variables_for, attempts):
    """Sends `query` over one keep-alive connection until it is refused;
    returns (index, error, seconds of the refused request)."""
    conn = http.client.HTTPConnection("127.0.0.1", a.client_port, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {tok}"}
    try:
        for i in range(attempts):
            payload = json.dumps({"query": query, "variables": variables_for(i)})
            t0 = time.perf_counter()
            conn.request("POST", "/graphql", payload, headers)
            body = json.loads(conn.getresponse().read())
            elapsed = time.perf_counter() - t0
            error = first_error(body)
            if error:
                return i, error, elapsed
        return attempts, None, 0.0
    finally:
        conn.close()


def attacks_on_rates(report, a, tokens, channels, messages):
    def limited(name, user, query, variables_for, attempts, burst):
        def run(measure):
            i, error, refused_in = measure(
                lambda: spam_until_refused(a, tokens[user], query, variables_for, attempts)
            )
            check(error is not None, f"{attempts} calls, none refused")
            retry = expect_rate_limited(error, name)
            check(i >= burst, f"refused after {i} calls, before the burst of {burst}")
            # The time is the refused call's; the CPU, all the calls'.
            return f"RATE_LIMITED after {i} calls, retryAfterMs {retry}", refused_in

        report.attack(name, a, run)

    limited(
        "createMessage past its rate (burst 30)",
        "sender",
        "mutation($c:ID!,$t:String!){createMessage(input:{channel:$c,content:$t}){id}}",
        lambda i: {"c": channels["lobby"], "t": f"spam {i}"},
        200,
        30,
    )
    limited(
        "editMessage past its rate (burst 20)",
        "editor",
        "mutation($id:ID!,$t:String!){editMessage(id:$id,content:$t){id}}",
        lambda i: {"id": str(messages["editor"][0]), "t": f"edit {i}"},
        200,
        20,
    )
    limited(
        "deleteMessage past its rate (burst 20)",
        "deleter",
        "mutation($id:ID!){deleteMessage(id:$id){id}}",
        lambda i: {"id": str(messages["deleter"][i % len(messages["deleter"])])},
        len(messages["deleter"]),
        20,
    )
    limited(
        "markRead past its rate (burst 100)",
        "reader",
        "mutation($c:ID!,$s:Int!){markRead(channel:$c,seq:$s){lastReadSeq}}",
        lambda i: {"c": channels["lobby"], "s": 1},
        500,
        100,
    )
    typist_channels = channels["typist"]
    limited(
        "setTyping past its rate (burst 20)",
        "typist",
        "mutation($c:ID!){setTyping(channel:$c)}",
        lambda i: {"c": typist_channels[i % len(typist_channels)]},
        len(typist_channels),
        20,
    )
    limited(
        "queries past the query-cost rate (burst 20,000 units)",
        "querier",
        "{channels{history(limit:180){id}}}",
        lambda i: {},
        100,
        2,
    )

    def churn(measure):
        # Each subscription is completed as soon as it is sent: what costs
        # the server a parse, a task and a registration, however short.
        ws = ws_open(a, tokens["churner"])
        query = "subscription($c:ID!){events(channel:$c){seq}}"
        pairs = 150

        def run():
            for i in range(pairs):
                op = f"s{i}"
                ws.send(json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": {"c": channels["lobby"]}}}))
                ws.send(json.dumps({"id": op, "type": "complete"}))
            # A live subscription answers nothing: the first message is the
            # first refusal.
            return json.loads(ws.recv(timeout=2))

        try:
            message = measure(run)
            check(message.get("type") == "error", f"{pairs} subscriptions opened and closed: {message}")
            retry = expect_rate_limited(message["payload"][0], "subscribe")
            i = int(message["id"][1:])
            check(i >= 100, f"refused at {i + 1}, before the burst of 100")
            return f"RATE_LIMITED at subscription {i + 1} of {pairs} subscribe+complete pairs, retryAfterMs {retry}"
        except TimeoutError:
            raise Failure(f"{pairs} subscribe+complete pairs, none refused") from None
        finally:
            ws.close()

    report.attack("subscription churn past its rate (burst 100)", a, churn)


def attacks_on_sockets(report, a, b, tokens, channels):
    def per_user(measure):
        held = [ws_open(a, tokens["hoarder"]) for _ in range(32)]
        try:
            def extra():
                ws = ws_open(a, init=False)
                ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {tokens['hoarder']}"}}))
                return close_code(ws)

            code = measure(extra)
            check(code == 4029, f"33rd connection of one user closed with {code}")
            return f"close {code} on the 33rd connection of one user"
        finally:
            for ws in held:
                ws.close()

    report.attack("33 connections of one user", a, per_user)

    def per_address(measure):
        headers = {"X-Forwarded-For": "203.0.113.7"}
        held = []
        try:
            for _ in range(1000):
                status, s, _ = raw_upgrade(a.client_port, headers)
                held.append(s)
                check(status == 101, f"upgrade {len(held)} answered {status}")
            status, s, data = measure(lambda: raw_upgrade(a.client_port, headers))
            held.append(s)
            check(status == 429, f"upgrade 1001 answered {status}")
            body = data.split(b"\r\n\r\n", 1)[1][:200].decode("latin-1")
            return f"HTTP {status} on upgrade 1001 from one address {body[:60]}"
        finally:
            for s in held:
                s.close()

    report.attack("1001 upgrades from one address (via a trusted proxy)", a, per_address)

    def total(measure):
        held = []
        try:
            for _ in range(4):
                status, s, _ = raw_upgrade(b.client_port)
                held.append(s)
                check(status == 101, f"upgrade {len(held)} answered {status}")
            status, s, _ = measure(lambda: raw_upgrade(b.client_port))
            held.append(s)
            check(status == 503, f"upgrade 5 answered {status}")
            return f"HTTP {status} on upgrade 5 (CLACKS_MAX_CONNECTIONS=4)"
        finally:
            for s in held:
                s.close()

    report.attack("connections past the node's total", b, total)

    def long_id(measure):
        ws = ws_open(a, tokens["mallory"])

        def run():
            ws.send(json.dumps({"id": "x" * 129, "type": "subscribe", "payload": {"query": "subscription{events{seq}}"}}))
            return close_code(ws)

        code = measure(run)
        check(code == 4400, f"closed with {code}")
        return f"close {code}"

    report.attack("operation id of 129 bytes", a, long_id)

    def oversized(measure):
        ws = ws_open(a, tokens["mallory"])

        def run():
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{me{id}}", "pad": "x" * (300 * 1024)}}))
            return close_code(ws)

        code = measure(run)
        check(code == 1009, f"closed with {code}")
        return f"close {code} (300 KiB message, limit 256 KiB)"

    report.attack("oversized WebSocket message", a, oversized)


def replay_attacks(report, a, tokens, channels, backlog):
    def resume_list(measure):
        ws = ws_open(a, tokens["resumer"])
        try:
            points = [{"channel": str(i), "afterSeq": 0} for i in range(1, 1002)]
            query = "subscription($r:[ResumeInput!]){events(resume:$r){seq}}"

            def run():
                ws.send(json.dumps({"id": "r", "type": "subscribe", "payload": {"query": query, "variables": {"r": points}}}))
                return recv_for(ws, "r")

            message = measure(run)
            check(message["type"] == "error", f"answered {message}")
            code = (message["payload"][0].get("extensions") or {}).get("code")
            check(code == "BAD_USER_INPUT", f"answered {message}")
            return f"{code}: {message['payload'][0]['message'][:60]}"
        finally:
            ws.close()

    report.attack("resume list of 1001 channels", a, resume_list)

    def far_behind(measure):
        # One socket opens 100 subscriptions that each resume the backlog
        # from seq 0, and never reads: the replay must not be loaded whole
        # (pages, at the client's pace), and the replay budget refuses most.
        rss0 = a.rss_kib()
        s = None
        status, s, _ = raw_upgrade(a.client_port)
        check(status == 101, f"upgrade answered {status}")
        try:
            s.sendall(ws_frame(json.dumps({"type": "connection_init", "payload": {"token": tokens["replayer"]}}).encode()))
            query = "subscription($c:ID!){events(channel:$c,afterSeq:0){seq ...on MessageCreated{message{content}}}}"
            ws = ws_open(a, tokens["replayer"])
            for i in range(60):
                s.sendall(ws_frame(json.dumps({"id": f"b{i}", "type": "subscribe", "payload": {"query": query, "variables": {"c": channels["backlog"]}}}).encode()))
            # The budget refills 2,000 units a second: ask again before a
            # replay's worth has come back.
            time.sleep(0.3)
            try:
                def first():
                    ws.send(json.dumps({"id": "f", "type": "subscribe", "payload": {"query": query, "variables": {"c": channels["backlog"]}}}))
                    return recv_for(ws, "f")

                message = measure(first)
            finally:
                ws.close()
            check(message["type"] == "error", f"a 61st replay of {backlog} events was not refused: {str(message)[:200]}")
            retry = expect_rate_limited(message["payload"][0], "replay")
            time.sleep(1.7)
            rss1 = a.rss_kib()
            growth = (rss1 - rss0) / 1024
            check(growth < 64, f"RSS grew {growth:.0f} MiB")
            return f"RATE_LIMITED (retryAfterMs {retry}); 60 unread replays of {backlog} events: RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB"
        finally:
            s.close()

    report.attack(f"60 subscriptions replaying {backlog} events, unread", a, far_behind)

    def reader(measure):
        ws = ws_open(a, tokens["patient"])
        try:
            query = "subscription($c:ID!){events(channel:$c,afterSeq:0){seq}}"

            def first():
                ws.send(json.dumps({"id": "p", "type": "subscribe", "payload": {"query": query, "variables": {"c": channels["backlog"]}}}))
                return recv_for(ws, "p")

            message = measure(first)
            check(message["type"] == "next", f"answered {str(message)[:200]}")
            seq = message["payload"]["data"]["events"]["seq"]
            return f"first replayed event (seq {seq}) of {backlog}, streamed in pages"
        finally:
            ws.close()

    report.attack(f"replay of {backlog} events from seq 0 (time to first)", a, reader)


def attacks_on_the_rest(report, binary, workdir, a, b):
    def foreign_host(measure):
        status, headers, data = measure(lambda: a.manage("GET", "/jwt/alice", host="rebind.attacker.example"))
        check(status == 421, f"answered {status}")
        check(headers.get("content-type") == "application/problem+json", f"content type {headers}")
        ok, _, _ = a.manage("GET", "/jwt/alice", host=f"localhost:{a.management_port}")
        check(ok == 200, f"a loopback Host answered {ok}")
        return f"HTTP {status} problem+json (a loopback Host: {ok})"

    report.attack("management API under a foreign Host (DNS rebinding)", a, foreign_host)

    def jwt_claims(measure):
        now = int(time.time())
        base = {"sub": "eve", "exp": now + 600, "nbf": now - 10}
        cases = {
            "no iss/aud": dict(base),
            "aud 1": dict(base, iss=ISSUER, aud=1),
            "iss 1": dict(base, iss=1, aud=AUDIENCE),
            "other aud": dict(base, iss=ISSUER, aud="someone-else"),
            "no aud": dict(base, iss=ISSUER),
        }
        codes = {}
        for name, claims in cases.items():
            status, body, _ = measure(lambda claims=claims: graphql(b, "{me{id}}", token=jwt(claims)))
            codes[name] = error_code(body)
            check(codes[name] == "UNAUTHENTICATED", f"{name}: answered {status} {body}")
        # The same token over WebSocket: connection_init refused.
        ws = ws_open(b, init=False)
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": jwt(cases["no iss/aud"])}}))
        ws_code = measure(lambda: close_code(ws))
        check(ws_code == 4403, f"WebSocket init closed with {ws_code}")
        good = dict(base, iss=ISSUER, aud=AUDIENCE)
        status, body, _ = graphql(b, "{me{id}}", token=jwt(good))
        check(body.get("data", {}).get("me", {}).get("id") == "eve", f"a good token: {body}")
        return f"UNAUTHENTICATED x{len(cases)} over HTTP, close {ws_code} over WS (iss+aud: accepted)"

    report.attack("JWT without the configured iss/aud", b, jwt_claims)

    report.skip(
        "forged / unsigned NATS messages",
        "needs two nodes on NATS: cargo test -p clacks-server --test cluster forged_and_unsigned_nats_messages_are_dropped_and_counted",
    )

    def help_secrets(measure):
        secrets = {
            "DATABASE_URL": "postgres://clacks:DbPassw0rdSecret@db.internal/clacks",
            "JWT_SECRET": "JwtSecretValue-0123456789abcdef0123",
            "CLACKS_MANAGEMENT_TOKEN": "ManagementTokenSecret-42",
            "CLACKS_NATS_URL": "nats://clacks:NatsPassw0rdSecret@nats.internal:4222",
            "CLACKS_CLUSTER_KEY": "ClusterKeySecret-0123456789abcdef0123",
        }
        env = dict(os.environ, **secrets)
        out = measure(lambda: subprocess.run([binary, "--help"], env=env, capture_output=True, timeout=10))
        text = (out.stdout + out.stderr).decode()
        check(out.returncode == 0, f"--help exited {out.returncode}")
        needles = ["DbPassw0rdSecret", "JwtSecretValue", "ManagementTokenSecret", "NatsPassw0rdSecret", "ClusterKeySecret"]
        leaked = [n for n in needles if n in text]
        check(not leaked, f"--help prints {leaked}")
        return f"none of {len(needles)} secret values in --help ({len(text)} B)"

    report.attack("secrets in `clacks --help`", a, help_secrets)

    def log_secrets(measure):
        # A NATS URL with a password that cannot connect: the error is
        # logged (or the start refused) without the password.
        dead = free_port()
        c = Server(binary, workdir, "c", {"CLACKS_NATS_URL": f"nats://clacks:NatsLogSecret77@127.0.0.1:{dead}"})
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and c.process.poll() is None:
                time.sleep(0.1)
        finally:
            c.stop()
        text = c.log_text()
        check("NatsLogSecret77" not in text, "the NATS password is in the log")
        check("127.0.0.1" in text, f"no NATS error logged at all: {text[-300:]}")
        return f"password absent from {len(text.splitlines())} log lines (NATS unreachable)"

    report.attack("NATS password in the logs", a, log_secrets)

    def file_modes(measure):
        modes = {}
        for suffix in ("", "-wal", "-shm"):
            path = a.db + suffix
            if os.path.exists(path):
                modes[os.path.basename(path)] = stat.S_IMODE(os.stat(path).st_mode)
        check(modes, "no SQLite file")
        loose = {k: oct(v) for k, v in modes.items() if v & 0o077}
        check(not loose, f"readable by others: {loose}")
        return ", ".join(f"{k} {oct(v)[2:]}" for k, v in modes.items())

    report.attack("SQLite file (holds the generated JWT secret) mode", a, file_modes)


# ----- several attackers at once ------------------------------------------------


def storm(a, tokens, channels, seconds, rss_samples):
    """Runs attackers in threads for `seconds` while /healthz is probed;
    returns (health latencies in ms, health failures, attacker counts)."""
    stop = threading.Event()
    counts = {}
    errors = []

    def attacker(name, step):
        def loop():
            n = 0
            try:
                while not stop.is_set():
                    step()
                    n += 1
            except Exception as error:  # noqa: BLE001
                errors.append(f"{name}: {error!r}")
            counts[name] = n

        return threading.Thread(target=loop, name=name, daemon=True)

    explosion = fragment_explosion(60)
    big_batch = [{"query": aliased_introspection(90)} for _ in range(50)]
    wide_batch = [{"query": aliased_introspection(9)} for _ in range(10)]
    rows = history_aliases(10)

    def churn_sockets():
        ws = ws_open(a, tokens["stormer"])
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "subscription{events{seq}}"}}))
        ws.close()

    def oversized():
        ws = ws_open(a, tokens["stormer"])
        ws.send("x" * (300 * 1024))
        close_code(ws)

    def invented():
        http_request(a.client_port, f"Z{os.urandom(3).hex().upper()}", f"/{os.urandom(4).hex()}")

    def replay_hog():
        status, s, _ = raw_upgrade(a.client_port)
        try:
            s.sendall(ws_frame(json.dumps({"type": "connection_init", "payload": {"token": tokens["hog"]}}).encode()))
            query = "subscription($c:ID!){events(channel:$c,afterSeq:0){seq ...on MessageCreated{message{content}}}}"
            for i in range(100):
                s.sendall(ws_frame(json.dumps({"id": f"h{i}", "type": "subscribe", "payload": {"query": query, "variables": {"c": channels["backlog"]}}}).encode()))
            stop.wait(3)
        finally:
            s.close()

    attackers = [
        attacker("fragment explosion", lambda: graphql(a, explosion)),
        attacker("batch of 50", lambda: graphql(a, None, batch=big_batch)),
        attacker("widest batch with a token", lambda: graphql(a, None, batch=wide_batch, token=tokens["stormer"], timeout=30)),
        attacker("history aliases", lambda: graphql(a, rows, token=tokens["stormer"])),
        attacker(
            "send spam",
            lambda: graphql(a, "mutation($c:ID!){createMessage(input:{channel:$c,content:\"storm\"}){id}}", token=tokens["stormer"], variables={"c": channels["lobby"]}),
        ),
        attacker("socket churn", churn_sockets),
        attacker("oversized frames", oversized),
        attacker("invented methods", invented),
        attacker("unread replays", replay_hog),
    ]
    latencies = []
    failures = []

    def probe():
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status, _, _ = http_request(a.client_port, "GET", "/healthz", timeout=5)
                if status != 200:
                    failures.append(status)
            except OSError as error:
                failures.append(repr(error))
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    cpu0 = a.cpu_seconds()
    for thread in attackers:
        thread.start()
    prober.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rss_samples.append(a.rss_kib())
        time.sleep(0.1)
    stop.set()
    for thread in attackers:
        thread.join(timeout=30)
    prober.join(timeout=10)
    cpu = a.cpu_seconds() - cpu0
    return latencies, failures, counts, errors, cpu


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def sampler(server, samples, stop):
    while not stop.is_set():
        try:
            samples.append(server.rss_kib())
        except OSError:
            return
        stop.wait(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--rss-bound-mib", type=float, default=200)
    parser.add_argument("--refusal-bound-ms", type=float, default=500)
    parser.add_argument("--health-p99-bound-ms", type=float, default=250)
    parser.add_argument("--storm-seconds", type=float, default=10)
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--only", action="append", default=[], help="run the attacks whose name contains this (repeatable)")
    args = parser.parse_args()

    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="clacks-hostile-")
    # A: every default (no JWT_SECRET: generated, kept in the SQLite file),
    # the loopback peer declared a proxy so X-Forwarded-For names clients.
    a = Server(args.binary, workdir, "a", {"CLACKS_TRUSTED_PROXIES": "127.0.0.1"})
    # B: iss/aud configured, and a tiny node-wide connection limit.
    b = Server(
        args.binary,
        workdir,
        "b",
        {
            "JWT_SECRET": JWT_SECRET,
            "CLACKS_JWT_ISSUER": ISSUER,
            "CLACKS_JWT_AUDIENCE": AUDIENCE,
            "CLACKS_MAX_CONNECTIONS": "4",
        },
    )
    report = Report(args.refusal_bound_ms)
    report.only = args.only
    rss_samples = []
    stop_sampling = threading.Event()
    status = 1
    try:
        a.wait_ready()
        b.wait_ready()
        threading.Thread(target=sampler, args=(a, rss_samples, stop_sampling), daemon=True).start()
        print(f"[hostile] {args.binary}: A pid {a.pid} client :{a.client_port}, B pid {b.pid}; logs in {workdir}", flush=True)

        users = [
            "mallory", "sender", "editor", "deleter", "reader", "typist", "querier", "churner",
            "hoarder", "replayer", "resumer", "patient", "stormer", "hog",
        ]
        tokens = {u: a.token(u) for u in users}
        channels = {"lobby": a.channel("lobby", users)}
        channels["backlog"] = a.channel("backlog", ["replayer", "patient", "hog"])
        channels["typist"] = [a.channel(f"typing-{i}", ["typist"]) for i in range(40)]
        messages = {}
        with ThreadPoolExecutor(8) as pool:
            messages["editor"] = [a.post(channels["lobby"], "editor", "to edit")["id"]]
            messages["deleter"] = list(pool.map(lambda i: a.post(channels["lobby"], "deleter", f"to delete {i}")["id"], range(40)))
            list(pool.map(lambda i: a.post(channels["lobby"], "mallory", f"lobby {i}"), range(250)))
            list(pool.map(lambda i: a.post(channels["backlog"], "replayer", f"backlog {i} " + "x" * 200), range(args.backlog)))
        print(f"[hostile] data ready after {time.monotonic() - started:.1f} s", flush=True)

        print("[hostile] attacks, one at a time:", flush=True)
        attacks_on_the_document(report, a, tokens["mallory"])
        attacks_on_rows(report, a, tokens["mallory"], channels["lobby"])
        attacks_on_rates(report, a, tokens, channels, messages)
        replay_attacks(report, a, tokens, channels, args.backlog)
        attacks_on_sockets(report, a, b, tokens, channels)
        attacks_on_the_rest(report, args.binary, workdir, a, b)

        print(f"[hostile] several attackers at once for {args.storm_seconds:.0f} s, /healthz probed:", flush=True)
        rss_before = a.rss_kib() / 1024
        latencies, failures, counts, errors, storm_cpu = storm(a, tokens, channels, args.storm_seconds, rss_samples)
        stop_sampling.set()
        report.table()

        peak = max(rss_samples) / 1024
        p50, p99, worst = (percentile(latencies, p) for p in (50, 99, 100))
        print()
        print("attackers at once (requests each): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        print(f"server CPU during the {args.storm_seconds:.0f} s storm: {storm_cpu:.1f} s")
        print(f"/healthz during the storm: {len(latencies)} probes, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms, {len(failures)} failed")
        print(f"server RSS: {rss_before:.1f} MiB before the storm, peak {peak:.1f} MiB over the whole run (bound {args.rss_bound_mib:.0f} MiB)")
        if errors:
            report.failures.extend(f"storm attacker {e}" for e in errors)
        if failures:
            report.failures.append(f"/healthz failed {len(failures)} times: {failures[:3]}")
        if p99 > args.health_p99_bound_ms:
            report.failures.append(f"/healthz p99 {p99:.0f} ms over {args.health_p99_bound_ms:.0f} ms")
        if peak > args.rss_bound_mib:
            report.failures.append(f"peak RSS {peak:.0f} MiB over {args.rss_bound_mib:.0f} MiB")
        for server in (a, b):
            log = server.log_text()
            if "panicked" in log:
                report.failures.append(f"server {server.name} panicked: see {server.log_path}")
            # No attack may make the server fail inside (a database error,
            # an operation that panicked): refusals are not errors.
            error_lines = [line for line in log.splitlines() if " ERROR " in re.sub(r"\x1b\[[0-9;]*m", "", line)]
            if error_lines:
                report.failures.append(f"server {server.name} logged {len(error_lines)} errors, first: {error_lines[0][-200:]}")
            if server.process.poll() is not None:
                report.failures.append(f"server {server.name} exited with {server.process.returncode}")
        elapsed = time.monotonic() - started
        print(f"total {elapsed:.0f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "rows": report.rows,
                        "health_ms": {"p50": p50, "p99": p99, "max": worst, "probes": len(latencies)},
                        "peak_rss_mib": peak,
                        "rss_before_storm_mib": rss_before,
                        "storm_cpu_s": storm_cpu,
                        "storm_counts": counts,
                        "elapsed_s": elapsed,
                    },
                    f,
                    indent=1,
                )
        if report.failures:
            print("\nFAILED:\n  " + "\n  ".join(report.failures))
        else:
            print("\nevery attack refused as documented")
            status = 0
            shutil.rmtree(workdir, ignore_errors=True)
    except Failure as error:
        print(f"\nFAILED: {error}")
    finally:
        stop_sampling.set()
        a.stop()
        b.stop()
        if status != 0:
            for server in (a, b):
                print(f"--- {server.name} log tail ({server.log_path}):\n{server.log_tail(20)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
