// End-to-end: the client guides' examples (docs/examples/), run as
// written against the real `clacks` binary. Each one gets its token
// through the token examples, loads its channels, sends, follows the
// events, and must show every message of the channel exactly once, in
// seq order, across forced disconnects (POST /users/{uid}/disconnect)
// with messages sent while it was away: the printed stream is compared
// with the channel's history as the server stored it.
//
// Run by guides.sh, which installs the npm and PyPI packages. Starts
// target/debug/clacks (or CLACKS_BIN) on free ports over a temporary
// SQLite database, with an issuer, an audience and a management token
// configured, as a production server would run.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import jwt from "jsonwebtoken";

const here = dirname(fileURLToPath(import.meta.url));
const examples = join(here, "..", "docs", "examples");
// Relative to the repository, like scripts/deploy-check.sh's.
const BIN = resolve(here, "..", process.env.CLACKS_BIN ?? "target/debug/clacks");
const PYTHON = process.env.GUIDES_PYTHON ?? join(here, ".venv", "bin", "python");

// What token.mjs and clacks_token.py read: the server's own settings.
const settings = {
  JWT_SECRET: "guides-secret-0123456789abcdef0123456789",
  CLACKS_JWT_ISSUER: "https://app.example.com",
  CLACKS_JWT_AUDIENCE: "clacks",
};
Object.assign(process.env, settings);
const { mintToken, tokenHandler } = await import(join(examples, "js", "token.mjs"));

const MANAGEMENT_TOKEN = "guides-management-token";
let server;
let dir;
let clientAddr;
let managementAddr;

function listen(handler) {
  return new Promise((resolve, reject) => {
    const http = createServer(handler);
    http.once("error", reject);
    http.listen(0, "127.0.0.1", () => resolve(http));
  });
}

async function freePort() {
  const probe = await listen(() => {});
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function eventually(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "clacks-guides-"));
  clientAddr = `127.0.0.1:${await freePort()}`;
  managementAddr = `127.0.0.1:${await freePort()}`;
  server = spawn(BIN, ["serve"], {
    env: {
      ...process.env,
      ...settings,
      DATABASE_URL: `sqlite://${join(dir, "clacks.db")}`,
      CLACKS_CLIENT_ADDR: clientAddr,
      CLACKS_MANAGEMENT_ADDR: managementAddr,
      CLACKS_MANAGEMENT_TOKEN: MANAGEMENT_TOKEN,
      CLACKS_LOG: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await eventually("the server's /healthz", async () => (await fetch(`http://${clientAddr}/healthz`)).ok, 30_000);
});

after(async () => {
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function api(method, path, body) {
  const response = await fetch(`http://${managementAddr}/api/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${MANAGEMENT_TOKEN}`,
      ...(body && { "content-type": "application/json" }),
    },
    body: body && JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** The channel's messages as stored, oldest first. */
async function history(channel) {
  const messages = [];
  let after = 0;
  for (;;) {
    const page = await api("GET", `/channel/${channel}/messages?after=${after}&limit=100`);
    messages.push(...page.items);
    if (page.nextAfter === null) return messages;
    after = page.nextAfter;
  }
}

/**
 * The scenario every example goes through. `seen` is what the example
 * showed so far, `[{ seq, content, sender }]`; `expected` are contents
 * that must have shown before moving on.
 */
async function exercise({ channel, user, seen, expectSeen }) {
  const post = async (content) => api("POST", `/channel/${channel}/messages`, { senderId: "bob", content });
  for (const content of ["one", "two", "three"]) await post(content);
  await expectSeen(["one", "two", "three"]);
  // Forced off twice, with messages sent while the example is away.
  for (const round of ["first", "second"]) {
    const { closed } = await api("POST", `/users/${encodeURIComponent(user)}/disconnect`);
    assert.ok(closed >= 1, `the ${round} disconnect closed ${closed} connections`);
    const sent = [`${round} gap a`, `${round} gap b`];
    for (const content of sent) await post(content);
    await expectSeen(sent);
  }
  // Anything replayed twice would arrive within this time.
  await new Promise((r) => setTimeout(r, 500));
  const stored = (await history(channel)).map(({ seq, content, senderId }) => ({ seq, content, sender: senderId }));
  assert.deepEqual(seen, stored, "the example showed the channel's messages exactly once, in order");
}

/** Waits until each of `contents` was shown. */
const waitFor = (seen) => (contents) =>
  eventually(`the example to show ${JSON.stringify(contents)}`, () =>
    contents.every((c) => seen.some((m) => m.content === c)),
  );

for (const library of ["graphql-ws", "apollo", "urql"]) {
  test(`${library}: tokens from the app, query, send, subscribe, resume after forced disconnects`, async () => {
    const { startChat } = await import(join(examples, "js", `${library}.mjs`));
    const user = `reader-${library}`;
    const { id } = await api("POST", "/channel", { displayName: library, initialUsers: [user, "bob"] });
    const channel = String(id);

    // The application's server: the user is signed in until `signedIn`
    // turns false; counts the tokens it gave.
    let signedIn = true;
    let minted = 0;
    const app = await listen(
      tokenHandler(() => {
        if (!signedIn) return null;
        minted += 1;
        return { id: user, name: "Reader" };
      }),
    );
    const tokenUrl = `http://127.0.0.1:${app.address().port}/clacks-token`;

    const seen = [];
    const stop = new AbortController();
    const chat = await startChat({
      graphqlUrl: `http://${clientAddr}/graphql`,
      wsUrl: `ws://${clientAddr}/graphql`,
      tokenUrl,
      signal: stop.signal,
      onMessage: (message, channelId) => {
        assert.equal(channelId, channel);
        seen.push({ seq: message.seq, content: message.content, sender: message.sender?.id ?? null });
      },
    });
    try {
      const sent = await chat.send(channel, `hello from ${library}`);
      assert.equal(sent.createMessage.seq, 1);
      await waitFor(seen)([`hello from ${library}`]);
      await exercise({ channel, user, seen, expectSeen: waitFor(seen) });
      assert.ok(minted >= 3, `a fresh token after each forced disconnect (${minted} minted)`);

      // Signed out in the app: after the next disconnect the example asks
      // for a token, is refused, and stops instead of retrying forever.
      signedIn = false;
      await api("POST", `/users/${encodeURIComponent(user)}/disconnect`);
      const why = await Promise.race([
        chat.following.then(
          () => "completed",
          (error) => error.name,
        ),
        new Promise((r) => setTimeout(() => r("still following after 10 s"), 10_000)),
      ]);
      assert.equal(why, "TokenRefused");
    } finally {
      stop.abort();
      await chat.close();
      app.close();
    }
  });
}

test("graphql-ws: a token that expires while connected (4401) is replaced, and nothing is lost", async () => {
  const { startChat } = await import(join(examples, "js", "graphql-ws.mjs"));
  const user = "reader-expiring";
  const { id } = await api("POST", "/channel", { displayName: "expiring", initialUsers: [user, "bob"] });
  const channel = String(id);
  // The app gives tokens that live 2 s: each connection is closed with 4401.
  let minted = 0;
  const app = await listen((_, response) => {
    minted += 1;
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify(mintToken(user, { ttlSeconds: 2 })));
  });
  const seen = [];
  const stop = new AbortController();
  const chat = await startChat({
    graphqlUrl: `http://${clientAddr}/graphql`,
    wsUrl: `ws://${clientAddr}/graphql`,
    tokenUrl: `http://127.0.0.1:${app.address().port}/`,
    signal: stop.signal,
    onMessage: (message) => seen.push({ seq: message.seq, content: message.content, sender: message.sender?.id ?? null }),
  });
  try {
    const post = (content) => api("POST", `/channel/${channel}/messages`, { senderId: "bob", content });
    await post("before expiry");
    await waitFor(seen)(["before expiry"]);
    const before = minted;
    // The server closes the socket when the token expires; the client
    // takes a new one and resumes.
    await eventually("a fresh token after 4401", () => minted > before, 15_000);
    await post("after expiry");
    await waitFor(seen)(["after expiry"]);
    const stored = (await history(channel)).map(({ seq, content, senderId }) => ({ seq, content, sender: senderId }));
    assert.deepEqual(seen, stored);
  } finally {
    stop.abort();
    await chat.close();
    app.close();
  }
});

test("gql (Python): a bot that mints its own tokens, echoes, and resumes after forced disconnects", async () => {
  const user = "echo-bot";
  const { id } = await api("POST", "/channel", { displayName: "python", initialUsers: [user, "bob"] });
  const channel = String(id);
  const bot = spawn(PYTHON, [join(examples, "python", "echo_bot.py")], {
    env: {
      ...process.env,
      CLACKS_WS_URL: `ws://${clientAddr}/graphql`,
      CLACKS_BOT_USER: user,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => bot.once("exit", (code, signal) => resolve({ code, signal })));
  const seen = [];
  let following;
  createInterface({ input: bot.stdout }).on("line", (line) => {
    const { seq, content, sender, following: channels } = JSON.parse(line);
    if (channels) following = channels;
    else seen.push({ seq, content, sender });
  });
  try {
    // What is sent before the bot loaded its channels is not for it.
    await eventually("the bot to load its channels", () => following?.includes(channel));
    // The bot answers "!echo X" with "X", exactly once even when the
    // command is replayed to it after a reconnect.
    await api("POST", `/channel/${channel}/messages`, { senderId: "bob", content: "!echo hello from gql" });
    await waitFor(seen)(["hello from gql"]);
    await exercise({ channel, user, seen, expectSeen: waitFor(seen) });
    const echoes = seen.filter((m) => m.sender === user);
    assert.deepEqual(echoes.map((m) => m.content), ["hello from gql"]);
  } finally {
    bot.kill("SIGTERM");
    const { code, signal } = await exited;
    assert.ok(code === 0 || signal === "SIGTERM", `the bot exited with ${code ?? signal}`);
  }
});

test("the token examples mint what the server accepts; other tokens are refused", async () => {
  const query = async (token) =>
    (
      await fetch(`http://${clientAddr}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: "{ me { id name } }" }),
      })
    ).json();

  const node = mintToken("ada", { name: "Ada", ttlSeconds: 60 });
  assert.deepEqual((await query(node.token)).data.me, { id: "ada", name: "Ada" });
  assert.ok(node.expiresAt > Date.now() / 1000 + 50 && node.expiresAt <= Date.now() / 1000 + 60);

  const python = await new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(examples, "python", "clacks_token.py"), "grace", "--name", "Grace"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}`))));
  });
  assert.deepEqual((await query(python)).data.me, { id: "grace", name: "Grace" });

  // Signed with another key, or without the configured issuer and audience.
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: "mallory", nbf: now, exp: now + 60 };
  const refused = [
    jwt.sign({ ...claims, iss: settings.CLACKS_JWT_ISSUER, aud: settings.CLACKS_JWT_AUDIENCE }, "another-key-0123456789abcdef0123"),
    jwt.sign(claims, settings.JWT_SECRET),
  ];
  for (const token of refused) {
    assert.equal((await query(token)).errors[0].extensions.code, "UNAUTHENTICATED");
  }
});
