"""What the benchmark scripts share: a fresh database per backend, a
release `clacks` started on free ports over it, and JSON calls to it.
Standard library only."""

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method, body=None, headers=None):
    """One JSON request; the decoded answer (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    with urllib.request.urlopen(req, timeout=300) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def fresh_database(backend, tmp, prefix="clacks_bench_"):
    """A database URL nobody else uses, and how to drop it afterwards."""
    name = prefix + secrets.token_hex(4)
    if backend == "sqlite":
        return f"sqlite://{tmp}/bench.db", lambda: None
    if backend == "mysql":
        subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e", f"CREATE DATABASE {name}"], check=True)
        drop = lambda: subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e", f"DROP DATABASE {name}"])
        return f"mysql://root@127.0.0.1:3306/{name}", drop
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    drop = lambda: subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", name])
    return f"postgres://postgres@127.0.0.1:5432/{name}", drop


class Server:
    """A running server: `management` and `graphql` are its base URLs,
    `database_url` its database and `tmp` a directory of the run's own."""

    def __init__(self, management, graphql, database_url, tmp):
        self.management = management
        self.graphql = graphql
        self.database_url = database_url
        self.tmp = tmp

    def manage(self, method, path, body=None):
        return call(self.management + path, method, body)

    def query(self, token, document, variables=None):
        answer = call(self.graphql, "POST", {"query": document, "variables": variables or {}},
                      {"authorization": f"Bearer {token}"})
        if answer.get("errors"):
            raise RuntimeError(answer["errors"])
        return answer["data"]

    def token(self, user):
        return self.manage("GET", f"/jwt/{user}")


@contextlib.contextmanager
def clacks(binary, backend, extra_env=None):
    """BIN on a fresh database of BACKEND, until the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = fresh_database(backend, tmp)
        management, client = free_port(), free_port()
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": url,
            "JWT_SECRET": secrets.token_hex(32),
            "CLACKS_CLIENT_ADDR": f"127.0.0.1:{client}",
            "CLACKS_MANAGEMENT_ADDR": f"127.0.0.1:{management}",
            "CLACKS_LOG": "warn",
        })
        env.update(extra_env or {})
        env.pop("CLACKS_MANAGEMENT_TOKEN", None)
        log = open(os.path.join(tmp, "clacks.log"), "w")
        server = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
        running = Server(f"http://127.0.0.1:{management}/api/v1", f"http://127.0.0.1:{client}/graphql", url, tmp)
        try:
            for _ in range(300):
                try:
                    running.manage("GET", "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            yield running
        finally:
            server.terminate()
            server.wait(timeout=30)
            drop()


def main(doc, run):
    """`SCRIPT BIN BACKEND...`: `run(BIN, BACKEND)` for each backend named,
    or the script's documentation when called without them."""
    if len(sys.argv) < 3:
        sys.exit(doc)
    for backend in sys.argv[2:]:
        run(sys.argv[1], backend)
