// Browser test: Debian's chromium, driven by playwright-core, against the
// real clacks binary (target/debug/clacks, or CLACKS_BIN) on free ports
// with a temporary SQLite database.
//
// - Two browser contexts, two users, one channel on the demo page: a
//   message typed in one appears in the other, the unread badge and the
//   read receipt update, typing shows, a reload and a server restart lose
//   and repeat nothing, history pages back to the first message.
// - CORS: a page on another origin calls /graphql: allowed in dev mode
//   (loopback) and when configured, blocked otherwise.
// - Outside dev mode the demo's login is refused and a pasted token works.
// - GraphiQL loads, runs a query with a token, and receives a
//   subscription event.
//
// Screenshots go to output/ (gitignored).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CLACKS_BIN ?? join(here, "..", "..", "target", "debug", "clacks");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OUTPUT = join(here, "output");
const SECRET = "browser-e2e-secret-0123456789abcdef012345";
const MANAGEMENT_TOKEN = "browser-e2e-management-token";
// Generous: two cores shared with builds and other suites.
const WAIT_MS = 20_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createTcpServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** One clacks process; stop() and start() again keep its ports and database. */
class Clacks {
  constructor(name, env = {}) {
    this.name = name;
    this.env = env;
  }

  async start() {
    if (!this.dir) {
      this.dir = mkdtempSync(join(tmpdir(), `clacks-browser-${this.name}-`));
      this.clientPort = await freePort();
      this.managementPort = await freePort();
    }
    this.process = spawn(BIN, [], {
      env: {
        ...process.env,
        DATABASE_URL: `sqlite://${join(this.dir, "clacks.db")}?mode=rwc`,
        JWT_SECRET: SECRET,
        CLACKS_CLIENT_ADDR: `127.0.0.1:${this.clientPort}`,
        CLACKS_MANAGEMENT_ADDR: `127.0.0.1:${this.managementPort}`,
        CLACKS_SHUTDOWN_GRACE: "2",
        CLACKS_LOG: "warn",
        ...this.env,
      },
      stdio: ["ignore", "inherit", "inherit"],
    });
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.exited = exited;
    for (let i = 0; i < 200; i++) {
      const up = await fetch(`${this.base}/healthz`).then((r) => r.ok, () => false);
      if (up) return;
      if (this.process.exitCode !== null) throw new Error(`${this.name}: clacks exited with ${this.process.exitCode}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${this.name}: clacks did not come up`);
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    this.process.kill("SIGTERM");
    await this.exited;
  }

  async remove() {
    await this.stop();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  get base() {
    return `http://127.0.0.1:${this.clientPort}`;
  }

  async api(method, path, body) {
    const headers = body ? { "content-type": "application/json" } : {};
    if (this.env.CLACKS_MANAGEMENT_TOKEN) headers.authorization = `Bearer ${this.env.CLACKS_MANAGEMENT_TOKEN}`;
    const response = await fetch(`http://127.0.0.1:${this.managementPort}/api/v1${path}`, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
}

/** A page on another origin, to call clacks from (CORS). */
async function otherOrigin() {
  const server = createHttpServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end("<!doctype html><title>another origin</title><p>another origin</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

let browser;
let dev; // the server in dev mode, where the demo chat runs
let locked; // a server with a management token and configured CORS origins
const origins = [];
const problems = []; // CSP violations and uncaught errors, on any page

async function newPage(name, viewport = { width: 1100, height: 640 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (error) => problems.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
      problems.push(`${name}: ${message.text()}`);
    }
  });
  return page;
}

/** Waits until `predicate(arg)`, evaluated in the page, is true. */
async function until(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 100 });
  } catch (error) {
    throw new Error(`waiting for ${what}: ${error.message.split("\n")[0]}`);
  }
}

/** The confirmed messages of the open channel, oldest first. */
const shownMessages = (page) =>
  page.locator("#message-list .message:not(.pending) .content").allTextContents();

async function signIn(page, base, userId, name) {
  await page.goto(`${base}/demo`);
  await page.fill("#dev-login [name=userId]", userId);
  await page.fill("#dev-login [name=name]", name);
  await page.click("#dev-login button");
  await until(page, `${userId} to be live`, () => document.querySelector("#status").dataset.state === "live");
}

async function joinChannel(page, channel) {
  await page.fill("#join [name=channel]", channel);
  await page.click("#join button");
  await until(page, `#${channel} to open`, (c) => document.querySelector("#channel-title").textContent === `# ${c}`, channel);
}

async function open(page, channel) {
  await page.locator("#channels li", { hasText: `# ${channel}` }).locator("button").click();
  await until(page, `#${channel} to open`, (c) => document.querySelector("#channel-title").textContent === `# ${c}`, channel);
}

async function send(page, text) {
  await page.fill("#composer [name=content]", text);
  await page.press("#composer [name=content]", "Enter");
}

async function waitForMessages(page, who, expected) {
  await until(
    page,
    `${who} to show ${JSON.stringify(expected)}`,
    (texts) => {
      const shown = [...document.querySelectorAll("#message-list .message:not(.pending) .content")].map((e) => e.textContent);
      return JSON.stringify(shown) === JSON.stringify(texts);
    },
    expected,
  );
}

/** Puts PNG screenshots next to each other in one PNG. */
async function sideBySide(pngs, path) {
  const page = await browser.newPage({ viewport: { width: 760 * pngs.length + 16 * (pngs.length + 1), height: 520 + 32 } });
  const images = pngs.map((png) => `<img src="data:image/png;base64,${png.toString("base64")}">`).join("");
  await page.setContent(
    `<body style="margin:0;padding:16px;display:flex;gap:16px;background:#c9ced6">${images.replaceAll("<img", '<img style="box-shadow:0 2px 8px #0003"')}</body>`,
  );
  await page.screenshot({ path });
  await page.close();
}

const badge = (page, channel) => page.locator("#channels li", { hasText: `# ${channel}` }).locator(".badge");

before(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  dev = new Clacks("dev");
  await dev.start();
});

after(async () => {
  await browser?.close();
  await dev?.remove();
  await locked?.remove();
  for (const { server } of origins) server.close();
});

let alice;
let bob;
const general = [];

test("two people chat on the demo page", async () => {
  // Small windows: the two side by side make the README's screenshot.
  alice = await newPage("alice", { width: 760, height: 520 });
  bob = await newPage("bob", { width: 760, height: 520 });
  await signIn(alice, dev.base, "alice", "Alice");
  await signIn(bob, dev.base, "bob", "Bob");
  // Alice creates both channels by joining them; Bob joins the same.
  await joinChannel(alice, "random");
  await joinChannel(alice, "general");
  await joinChannel(bob, "general");
  await joinChannel(bob, "random");
  await until(alice, "Bob in #general's members", () => document.querySelector("#members").textContent.includes("bob"));

  // Bob looks at #random while Alice writes in #general: a badge.
  await send(alice, "hello bob");
  general.push("hello bob");
  await waitForMessages(alice, "alice", general);
  await badge(bob, "general").waitFor();
  assert.equal(await badge(bob, "general").textContent(), "1");
  assert.equal(await alice.locator(".receipt", { hasText: "Seen by bob" }).count(), 0);

  // Bob opens it: he sees the message, his badge goes, Alice sees he read it.
  await open(bob, "general");
  await waitForMessages(bob, "bob", general);
  await badge(bob, "general").waitFor({ state: "detached" });
  await alice.locator(".message", { hasText: "hello bob" }).locator(".receipt", { hasText: "Seen by bob" }).waitFor();

  // Bob types: Alice sees it; then his reply arrives.
  await bob.type("#composer [name=content]", "hi al", { delay: 30 });
  await until(alice, "the typing indicator", () => document.querySelector("#typing").textContent === "bob is typing…");
  await bob.fill("#composer [name=content]", "");
  await send(bob, "hi alice");
  general.push("hi alice");
  await waitForMessages(alice, "alice", general);
  await waitForMessages(bob, "bob", general);
  await until(bob, "Alice's receipt of Bob's reply", () =>
    [...document.querySelectorAll(".message")].some((m) => m.textContent.includes("hi alice") && m.textContent.includes("Seen by alice")),
  );
  assert.equal(await badge(alice, "general").count(), 0);

  // A message elsewhere, from the application: a badge on Alice's #random.
  const randomId = await alice.locator("#channels li", { hasText: "# random" }).getAttribute("data-channel-id");
  await dev.api("POST", `/channel/${randomId}/messages`, { senderId: "bob", content: "lunch?" });
  await badge(alice, "random").waitFor();
  assert.equal(await badge(alice, "random").textContent(), "1");

  await send(alice, "typing shows, receipts show");
  general.push("typing shows, receipts show");
  await bob.type("#composer [name=content]", "nice", { delay: 30 });
  await until(alice, "the typing indicator", () => document.querySelector("#typing").textContent === "bob is typing…");
  const shots = [await alice.screenshot({ path: join(OUTPUT, "demo-alice.png") }), await bob.screenshot({ path: join(OUTPUT, "demo-bob.png") })];
  await sideBySide(shots, join(OUTPUT, "demo-two-people.png"));
  await bob.fill("#composer [name=content]", "");
});

test("a reload resumes without loss or repeat", async () => {
  const reloading = bob.reload();
  for (const text of ["sent during the reload 1", "sent during the reload 2", "sent during the reload 3"]) {
    await send(alice, text);
    general.push(text);
  }
  await reloading;
  await until(bob, "bob to be live again", () => document.querySelector("#status").dataset.state === "live");
  await waitForMessages(bob, "bob after reload", general);
  await waitForMessages(alice, "alice", general);
  assert.deepEqual(await shownMessages(bob), general);
});

test("a server restart loses and repeats nothing", async () => {
  const channelId = await alice.locator("#channels li", { hasText: "# general" }).getAttribute("data-channel-id");
  await dev.stop();
  await until(bob, "bob to notice", () => document.querySelector("#status").dataset.state !== "live");
  await until(alice, "alice to notice", () => document.querySelector("#status").dataset.state !== "live");
  // Sent while the server is down: kept, and sent once it is back.
  await send(alice, "sent while the server was down");
  await alice.locator(".message.pending", { hasText: "sent while the server was down" }).waitFor();
  await dev.start();
  await dev.api("POST", `/channel/${channelId}/messages`, { senderId: "alice", content: "posted by the application" });
  await until(bob, "bob to be live again", () => document.querySelector("#status").dataset.state === "live");
  await until(alice, "alice to be live again", () => document.querySelector("#status").dataset.state === "live");
  await until(bob, "both messages", (n) => document.querySelectorAll("#message-list .message:not(.pending)").length >= n, general.length + 2);
  const shown = await shownMessages(bob);
  assert.deepEqual(shown.slice(0, general.length), general);
  assert.deepEqual(
    shown.slice(general.length).sort(),
    ["posted by the application", "sent while the server was down"],
    "each message exactly once",
  );
  general.push(...shown.slice(general.length));
  await waitForMessages(alice, "alice", general);
  assert.equal(await alice.locator(".message.pending").count(), 0);
});

test("history pages back to the first message", async () => {
  const { id } = await dev.api("POST", "/channel", { displayName: "archive", initialUsers: ["alice"] });
  const all = [];
  for (let i = 1; i <= 75; i++) {
    const content = `archived ${i}`;
    await dev.api("POST", `/channel/${id}/messages`, { senderId: "alice", content });
    all.push(content);
  }
  // Added by the application: Bob's page learns of it live.
  await dev.api("PUT", `/channel/${id}/users`, { uid: "bob" });
  await bob.locator("#channels li", { hasText: "# archive" }).waitFor();
  await open(bob, "archive");
  await waitForMessages(bob, "the newest page", all.slice(-30));
  while (await bob.locator("#history-start").isHidden()) {
    const before = (await shownMessages(bob)).length;
    await bob.locator("#messages").evaluate((box) => {
      box.scrollTop = 0;
      box.dispatchEvent(new Event("scroll"));
    });
    await until(bob, "an older page", (n) => document.querySelectorAll("#message-list .message").length > n || !document.querySelector("#history-start").hidden, before);
  }
  assert.deepEqual(await shownMessages(bob), all);
});

test("CORS: another origin's page may call /graphql only when allowed", async () => {
  for (let i = 0; i < 2; i++) origins.push(await otherOrigin());
  const [allowed, refused] = origins;
  locked = new Clacks("locked", {
    CLACKS_MANAGEMENT_TOKEN: MANAGEMENT_TOKEN,
    CLACKS_CORS_ORIGINS: allowed.url,
  });
  await locked.start();
  const call = (page, base, token) =>
    page.evaluate(
      async ({ base, token }) => {
        try {
          const response = await fetch(`${base}/graphql`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
            body: JSON.stringify({ query: "{ me { id } }" }),
          });
          return { ok: true, body: await response.json() };
        } catch (error) {
          return { ok: false, error: String(error) };
        }
      },
      { base, token },
    );
  const page = await newPage("cors");

  // Dev mode lets any loopback origin through.
  await page.goto(refused.url);
  const devToken = await dev.api("GET", "/jwt/carol");
  assert.deepEqual(await call(page, dev.base, devToken), { ok: true, body: { data: { me: { id: "carol" } } } });

  // Outside dev mode only the configured origin passes.
  const lockedToken = await locked.api("GET", "/jwt/carol");
  await page.goto(allowed.url);
  assert.deepEqual(await call(page, locked.base, lockedToken), { ok: true, body: { data: { me: { id: "carol" } } } });
  await page.goto(refused.url);
  const blocked = await call(page, locked.base, lockedToken);
  assert.equal(blocked.ok, false, JSON.stringify(blocked));
  assert.match(blocked.error, /Failed to fetch/);
});

test("outside dev mode the demo takes a pasted token", async () => {
  const page = await newPage("carol");
  await page.goto(`${locked.base}/demo`);
  await page.fill("#dev-login [name=userId]", "carol");
  await page.click("#dev-login button");
  await page.locator("#dev-login .error", { hasText: "Dev login is off here" }).waitFor();

  const { id } = await locked.api("POST", "/channel", { displayName: "support", initialUsers: ["carol"] });
  await locked.api("POST", `/channel/${id}/messages`, { content: "welcome, carol" });
  await page.fill("#token-login [name=token]", await locked.api("GET", "/jwt/carol"));
  await page.click("#token-login button");
  await until(page, "carol to be live", () => document.querySelector("#status").dataset.state === "live");
  await open(page, "support");
  await waitForMessages(page, "carol", ["welcome, carol"]);
  await page.fill("#join [name=channel]", "elsewhere");
  await page.click("#join button");
  await page.locator("#join .hint", { hasText: "needs dev mode" }).waitFor();
});

test("GraphiQL runs a query and a subscription with a token", async () => {
  const page = await newPage("graphiql");
  await page.goto(`${dev.base}/graphiql`);
  await page.locator(".graphiql-container").waitFor();
  const token = await dev.api("GET", "/jwt/alice");
  await page.fill("#token", token);
  await page.press("#token", "Tab");
  await until(page, "the token to be taken", () => document.querySelector("#who").textContent.startsWith("alice"));

  // Types into GraphiQL's editor, then waits until GraphiQL has parsed
  // the new operation (it runs what it parsed, and tells a subscription
  // from a query by it).
  const setQuery = async (operationName, query) => {
    await page.evaluate((q) => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(q), query);
    await until(
      page,
      `GraphiQL to parse ${operationName}`,
      (name) =>
        document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.operationName === name &&
        // With several operations the button opens a menu instead.
        !document.querySelector(".graphiql-execute-button").hasAttribute("aria-haspopup"),
      operationName,
    );
  };
  const result = () => page.evaluate(() => document.querySelector(".result-window .CodeMirror")?.CodeMirror.getValue() ?? "");

  await setQuery("Me", "query Me { me { id } channels { displayName } }");
  await page.click(".graphiql-execute-button");
  await until(page, "the query's result", () =>
    (document.querySelector(".result-window .CodeMirror")?.CodeMirror.getValue() ?? "").includes('"id": "alice"'),
  );
  assert.match(await result(), /"displayName": "general"/);

  await setQuery("Live", "subscription Live { events(kinds: [MESSAGE_CREATED]) { __typename ... on MessageCreated { message { content } } } }");
  const channelId = await alice.locator("#channels li", { hasText: "# general" }).getAttribute("data-channel-id");
  await page.click(".graphiql-execute-button");
  // The subscription starts asynchronously: post until one event shows.
  for (let i = 1; !(await result()).includes("from the application"); i++) {
    assert.ok(i <= 20, `no subscription event in GraphiQL: ${await result()}`);
    await dev.api("POST", `/channel/${channelId}/messages`, { content: `from the application ${i}` });
    await page.waitForTimeout(500);
  }
  assert.match(await result(), /"__typename": "MessageCreated"/);
  await page.screenshot({ path: join(OUTPUT, "graphiql.png") });
});

test("no page broke its Content Security Policy or threw", () => {
  assert.deepEqual(problems, []);
});
