// What the end-to-end test files share: the real `clacks` binary started
// on free ports over a temporary SQLite database for the file's tests
// (override the binary with CLACKS_BIN), and plain HTTP calls to its two
// APIs. Not a test file itself (node --test runs *.test.mjs).

import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CLACKS_BIN ?? join(here, "..", "target", "debug", "clacks");
const SECRET = "e2e-secret-0123456789abcdef0123456789";

/** Where the file's server listens: `client` and `mgmt` are host:port. */
export const node = { client: undefined, mgmt: undefined };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(url) {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

/** Starts a server before the calling file's tests and stops it after. */
export function useClacks(label) {
  let server;
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `clacks-e2e-${label}-`));
    const [c, m] = [await freePort(), await freePort()];
    node.client = `127.0.0.1:${c}`;
    node.mgmt = `127.0.0.1:${m}`;
    server = spawn(BIN, [], {
      env: {
        ...process.env,
        DATABASE_URL: `sqlite://${join(dir, "clacks.db")}?mode=rwc`,
        JWT_SECRET: SECRET,
        CLACKS_CLIENT_ADDR: node.client,
        CLACKS_MANAGEMENT_ADDR: node.mgmt,
        CLACKS_LOG: "warn",
      },
      stdio: ["ignore", "inherit", "inherit"],
    });
    await waitFor(`http://${node.client}/healthz`);
    await waitFor(`http://${node.mgmt}/healthz`);
  });
  after(async () => {
    if (server) {
      server.kill("SIGTERM");
      await new Promise((r) => server.once("exit", r));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
}

/** A management API call that must succeed; its JSON answer. */
export async function api(method, path, body) {
  const res = await fetch(`http://${node.mgmt}/api/v1${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

/** A token from the management API (the original `GET /jwt/{uid}`). */
export const token = (uid) => api("GET", `/jwt/${encodeURIComponent(uid)}`);

/** A GraphQL request over HTTP as the holder of `tok`; the whole answer. */
export async function gql(tok, query, variables = {}) {
  const res = await fetch(`http://${node.client}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${tok}` },
    body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

/**
 * Collects the results of a subscription into a queue you can await.
 * `accept` turns a result into the item to queue, or `undefined` to skip it.
 */
export function inbox(accept = (result) => result) {
  const items = [];
  const waiters = [];
  return {
    push(result) {
      const item = accept(result);
      if (item === undefined) return;
      const w = waiters.shift();
      if (w) w(item);
      else items.push(item);
    },
    next(ms = 5000) {
      if (items.length) return Promise.resolve(items.shift());
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("timed out waiting for an event")), ms);
        waiters.push((item) => {
          clearTimeout(t);
          resolve(item);
        });
      });
    },
    /** Nothing more arrives within `ms`. */
    async quiet(ms = 400) {
      await new Promise((r) => setTimeout(r, ms));
      assert.deepEqual(items, [], `unexpected events: ${JSON.stringify(items)}`);
    },
  };
}
