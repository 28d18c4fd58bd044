// The Docker deployment, checked without Docker (run by
// scripts/deploy-check.sh):
// - docker-compose.yml resolves (Debian's docker-compose), refuses to run
//   without its secrets, and its parts agree with each other;
// - the image's ENTRYPOINT + CMD and HEALTHCHECK, read from the Dockerfile,
//   run against the release binary;
// - the compose file's HAProxy and NATS configurations, and its nodes'
//   settings, run here: two nodes on a fresh MariaDB database, fanning out
//   over NATS, behind HAProxy, and behind nginx (deploy/nginx.conf.template).
//   Through each balancer, a WebSocket client on node B sees what another
//   sent through node A, and per-address limits count the client the
//   balancer forwards for; the management API answers through HAProxy to
//   the Host the compose file allows.
//
// Only addresses, the volume's path and HAProxy's MAXCONN differ from the
// containers: each substitution below says what it replaces.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { request as httpRequest } from "node:http";
import { randomBytes } from "node:crypto";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = resolve(root, process.env.CLACKS_BIN ?? "target/release/clacks");
// As deploy/env.example says: hex after a letter (NATS reads a password
// that starts with digits as a number).
const secret = () => `s${randomBytes(16).toString("hex")}`;
const secrets = {
  JWT_SECRET: secret(),
  CLACKS_MANAGEMENT_TOKEN: secret(),
  MARIADB_PASSWORD: secret(),
  NATS_PASSWORD: secret(),
};

/** This environment minus what Clacks reads: each process gets only what the deployment gives it. */
function cleanEnv() {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith("CLACKS_") || name === "DATABASE_URL" || name === "JWT_SECRET") delete env[name];
  }
  return env;
}

let work;
const children = [];
let database;

function start(name, command, args, options) {
  const log = createWriteStream(join(work, `${name}.log`));
  const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  child.output = () => readFileSync(join(work, `${name}.log`), "utf8");
  child.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  children.push(child);
  return child;
}

async function stop(child, signal = "SIGTERM") {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  return child.exited;
}

function portFree(host, port) {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}

/** A port free on every one of `hosts`. */
async function freePort(...hosts) {
  for (;;) {
    const port = await new Promise((resolve) => {
      const probe = createServer();
      probe.listen(0, hosts[0], () => {
        const { port } = probe.address();
        probe.close(() => resolve(port));
      });
    });
    const free = await Promise.all(hosts.slice(1).map((h) => portFree(h, port)));
    if (free.every(Boolean)) return port;
  }
}

function tcpOpen(host, port) {
  return new Promise((resolve) => {
    const socket = connect(port, host, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Waits until `check()` is true; a failed assertion in it fails at once. */
async function eventually(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      if (error instanceof assert.AssertionError) throw error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function httpStatus(url) {
  return (await fetch(url)).status;
}

/** docker-compose.yml as Debian's docker-compose resolves it, as an object. */
function composeConfig(env) {
  // An empty env file: a developer's .env must not answer for the test.
  const envFile = join(work, "empty.env");
  writeFileSync(envFile, "");
  const result = spawnSync("docker-compose", ["--env-file", envFile, "-f", join(root, "docker-compose.yml"), "config"], {
    env,
    encoding: "utf8",
  });
  if (result.status !== 0) return { error: result.stderr };
  // PyYAML comes with docker-compose, in the system's Python.
  const json = execFileSync(
    "/usr/bin/python3",
    ["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
    { input: result.stdout, encoding: "utf8" },
  );
  return { config: JSON.parse(json) };
}

let compose;

before(() => {
  work = mkdtempSync(join(tmpdir(), "clacks-deploy-"));
  const resolved = composeConfig({ ...cleanEnv(), ...secrets });
  assert.equal(resolved.error, undefined, `docker-compose config failed: ${resolved.error}`);
  compose = resolved.config;
});

after(async () => {
  for (const child of children.reverse()) await stop(child);
  if (database) {
    spawnSync("mariadb", ["-h", "127.0.0.1", "-u", "root", "-e", `DROP DATABASE IF EXISTS \`${database}\``]);
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test("docker-compose.yml resolves, needs its secrets, and its parts agree", () => {
  const missing = composeConfig(cleanEnv());
  assert.match(missing.error ?? "", /set it in \.env/, "without secrets, docker-compose must refuse");

  const { services, networks } = compose;
  const [one, two] = [services["clacks-1"], services["clacks-2"]];
  assert.deepEqual(one.environment, two.environment, "both nodes run with the same settings");
  assert.equal(one.environment.JWT_SECRET, secrets.JWT_SECRET);
  assert.equal(one.environment.CLACKS_MANAGEMENT_TOKEN, secrets.CLACKS_MANAGEMENT_TOKEN);

  // Published: HAProxy's client port, and its management port on loopback only.
  for (const [name, service] of Object.entries(services)) {
    if (name !== "haproxy") assert.equal(service.ports, undefined, `${name} publishes nothing`);
  }
  const published = services.haproxy.ports.map((p) => (typeof p === "string" ? p : `${p.published}:${p.target}`));
  assert.deepEqual(published, ["8000:8000", "127.0.0.1:7999:7999/tcp"]);
  assert.equal(networks.private.internal, true, "the nodes' network has no way out");

  // The nodes trust the balancer's address, and answer to its name.
  const balancer = services.haproxy.networks.private;
  assert.equal(one.environment.CLACKS_TRUSTED_PROXIES, balancer.ipv4_address);
  const allowed = one.environment.CLACKS_MANAGEMENT_ALLOWED_HOSTS.split(",");
  for (const name of [...balancer.aliases, "clacks-1", "clacks-2"]) assert.ok(allowed.includes(name), `${name} allowed`);
  assert.deepEqual(
    [services.haproxy.environment.NODE1, services.haproxy.environment.NODE2],
    ["clacks-1", "clacks-2"],
  );

  // What the containers mount is what CI runs below.
  const mounted = (service) => service.volumes.map((v) => (typeof v === "string" ? v.split(":")[0] : v.source));
  assert.deepEqual(mounted(services.haproxy), [join(root, "deploy", "haproxy.cfg")]);
  assert.deepEqual(mounted(services.nats), [join(root, "deploy", "nats.conf")]);
  assert.equal(services.nats.environment.NATS_PASSWORD, secrets.NATS_PASSWORD);
});

/** The last stage's instructions, continuation lines joined. */
function dockerfile() {
  const text = readFileSync(join(root, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const lines = text.split("\n").filter((l) => l.trim() && !l.trimStart().startsWith("#"));
  const lastStage = lines.slice(lines.findLastIndex((l) => /^FROM\s/i.test(l)));
  const instructions = {};
  const env = {};
  for (const line of lastStage) {
    const [, keyword, rest] = line.match(/^(\w+)\s+(.*)$/);
    const name = keyword.toUpperCase();
    if (name === "ENV") {
      for (const [, key, value] of rest.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(\S+)/g)) env[key] = value;
    } else {
      instructions[name] = rest.trim();
    }
  }
  const exec = (name, text) => {
    const argv = JSON.parse(text);
    assert.ok(Array.isArray(argv), `${name} must be in exec form (a JSON array)`);
    return argv;
  };
  const health = instructions.HEALTHCHECK.match(/^((?:--\S+\s+)*)CMD\s+(.*)$/);
  const options = Object.fromEntries([...health[1].matchAll(/--([\w-]+)=(\S+)/g)].map(([, k, v]) => [k, v]));
  return {
    env,
    workdir: instructions.WORKDIR,
    command: [...exec("ENTRYPOINT", instructions.ENTRYPOINT), ...exec("CMD", instructions.CMD)],
    healthcheck: exec("HEALTHCHECK", health[2]),
    healthTimeoutMs: parseInt(options.timeout, 10) * 1000,
    startPeriodMs: parseInt(options["start-period"], 10) * 1000,
    stopSignal: instructions.STOPSIGNAL,
    user: instructions.USER,
  };
}

test("the image's ENTRYPOINT, CMD and HEALTHCHECK run the release binary", async () => {
  const image = dockerfile();
  assert.equal(image.command[0], "/usr/local/bin/clacks");
  assert.match(image.user ?? "root", /^[1-9]\d*:[1-9]\d*$/, "the image runs as an unprivileged user and group");
  assert.equal(image.workdir, "/data");
  // The volume is a scratch directory here; the ports are what `docker run -p` maps.
  const volume = mkdtempSync(join(work, "data-"));
  const [client, management] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
  const env = { ...cleanEnv() };
  for (const [key, value] of Object.entries(image.env)) env[key] = value.replaceAll("/data", volume);
  assert.equal(image.env.CLACKS_CLIENT_ADDR, "0.0.0.0:8000");
  env.CLACKS_CLIENT_ADDR = `127.0.0.1:${client}`;
  env.CLACKS_MANAGEMENT_ADDR = `127.0.0.1:${management}`;

  const healthy = () => {
    const [command, ...args] = image.healthcheck;
    const run = spawnSync(command, args, { env, cwd: volume, timeout: image.healthTimeoutMs });
    return run.status === 0;
  };
  assert.equal(healthy(), false, "the health check fails while nothing listens");

  const server = start("image", BIN, image.command.slice(1), { env, cwd: volume });
  await eventually("the image's HEALTHCHECK to pass", () => healthy(), image.startPeriodMs);
  assert.ok(readFileSync(join(volume, "clacks.db")).length > 0, "SQLite lives in the volume");
  const firstLine = server.output().split("\n")[0];
  assert.doesNotThrow(() => JSON.parse(firstLine), `JSON logs (CLACKS_LOG_FORMAT): ${firstLine}`);

  const signal = image.stopSignal;
  assert.equal(signal, "SIGTERM");
  assert.deepEqual(await stop(server, signal), { code: 0, signal: null }, server.output());
  assert.equal(healthy(), false, "the health check fails once the server stopped");
});

const NODES = ["127.0.0.2", "127.0.0.3"];
let cluster;

/**
 * Starts nats-server with the deployment's config on a free port; returns
 * the port. A port found free can be taken before the server binds it (an
 * outgoing connection's local port, from the same range): then it exits,
 * and another port is tried.
 */
async function startNats() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort("127.0.0.1");
    const nats = start(`nats-${attempt}`, "nats-server", ["--config", join(root, "deploy", "nats.conf"), "-a", "127.0.0.1", "-p", String(port)], {
      env: { ...cleanEnv(), NATS_PASSWORD: compose.services.nats.environment.NATS_PASSWORD },
    });
    let exited = false;
    try {
      await eventually("NATS", async () => {
        exited = nats.exitCode !== null || nats.signalCode !== null;
        if (exited) throw new assert.AssertionError({ message: "nats-server exited" });
        return tcpOpen("127.0.0.1", port);
      });
      return port;
    } catch (error) {
      error.message += `\nnats-server on port ${port} (exit ${nats.exitCode ?? nats.signalCode}), its log:\n${nats.output()}`;
      if (!exited || attempt === 3) throw error;
    }
  }
}

async function startCluster() {
  const nodeEnv = compose.services["clacks-1"].environment;
  const haproxyEnv = compose.services.haproxy.environment;
  const [clientPort, managementPort] = [await freePort(...NODES), await freePort(...NODES)];
  database = `clacks_deploy_${randomBytes(4).toString("hex")}`;
  execFileSync("mariadb", ["-h", "127.0.0.1", "-u", "root", "-e", `CREATE DATABASE \`${database}\``]);
  const natsPort = await startNats();

  // The compose file's node settings, with local addresses for the ones
  // that name containers.
  const substituted = {
    DATABASE_URL: `mysql://root@127.0.0.1:3306/${database}`,
    CLACKS_NATS_URL: `nats://clacks:${compose.services.nats.environment.NATS_PASSWORD}@127.0.0.1:${natsPort}`,
    // The balancer's address as the nodes see it here.
    CLACKS_TRUSTED_PROXIES: "127.0.0.1",
  };
  for (const key of Object.keys(substituted)) assert.ok(key in nodeEnv, `docker-compose.yml sets ${key} on the nodes`);
  assert.equal(nodeEnv.CLACKS_MANAGEMENT_ADDR, `0.0.0.0:${haproxyEnv.NODE_MANAGEMENT_PORT}`);
  const nodes = NODES.map((ip, i) =>
    start(`node${i + 1}`, BIN, ["serve"], {
      env: {
        ...cleanEnv(),
        ...nodeEnv,
        ...substituted,
        CLACKS_CLIENT_ADDR: `${ip}:${clientPort}`,
        CLACKS_MANAGEMENT_ADDR: `${ip}:${managementPort}`,
        // Not in the compose file: one connection per client address and
        // node, so that the test below sees which address a node counts.
        CLACKS_MAX_CONNECTIONS_PER_ADDRESS: "1",
      },
    }),
  );
  for (const [i, ip] of NODES.entries()) {
    await eventually(`node ${i + 1}'s /readyz`, async () => {
      assert.equal(nodes[i].exitCode, null, `node ${i + 1} exited:\n${nodes[i].output()}`);
      return (await httpStatus(`http://${ip}:${managementPort}/readyz`)) === 200;
    });
  }

  const [publicPort, managementBindPort] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
  const haproxyEnvHere = {
    ...cleanEnv(),
    ...haproxyEnv,
    PUBLIC_BIND: `127.0.0.1:${publicPort}`,
    MANAGEMENT_BIND: `127.0.0.1:${managementBindPort}`,
    NODE1: NODES[0],
    NODE2: NODES[1],
    NODE_CLIENT_PORT: String(clientPort),
    NODE_MANAGEMENT_PORT: String(managementPort),
    // The compose file raises the container's file limit for its MAXCONN;
    // CI's limit is whatever this host gives.
    MAXCONN: "1000",
  };
  const cfg = join(root, "deploy", "haproxy.cfg");
  const checked = spawnSync("haproxy", ["-c", "-f", cfg], { env: haproxyEnvHere, encoding: "utf8" });
  assert.equal(checked.status, 0, `haproxy -c: ${checked.stdout}${checked.stderr}`);
  const haproxy = start("haproxy", "haproxy", ["-f", cfg, "-db"], { env: haproxyEnvHere });
  // Every server passed its health checks: /healthz and /readyz.
  await eventually("HAProxy's health checks of the four servers", () => {
    const passed = haproxy.output().match(/Health check for server \S+ succeeded/g) ?? [];
    return new Set(passed).size === 4;
  });

  // nginx: its template, filled in as envsubst would, inside the smallest
  // main configuration around it.
  const nginxPort = await freePort("127.0.0.1");
  const values = { PUBLIC_BIND: `127.0.0.1:${nginxPort}`, NODE1: NODES[0], NODE2: NODES[1], NODE_CLIENT_PORT: String(clientPort) };
  const template = readFileSync(join(root, "deploy", "nginx.conf.template"), "utf8");
  const rendered = template.replace(/\$\{(\w+)\}/g, (whole, name) => {
    assert.ok(name in values, `deploy/nginx.conf.template uses \${${name}}, which this check does not fill in`);
    return values[name];
  });
  const nginxDir = mkdtempSync(join(work, "nginx-"));
  writeFileSync(join(nginxDir, "clacks.conf"), rendered);
  writeFileSync(
    join(nginxDir, "nginx.conf"),
    `pid ${nginxDir}/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path ${nginxDir}/body;
    proxy_temp_path ${nginxDir}/proxy;
    include ${nginxDir}/clacks.conf;
}
`,
  );
  const nginxArgs = ["-p", nginxDir, "-c", join(nginxDir, "nginx.conf"), "-g", "daemon off;"];
  const tested = spawnSync("nginx", ["-t", ...nginxArgs], { encoding: "utf8" });
  assert.equal(tested.status, 0, `nginx -t: ${tested.stdout}${tested.stderr}`);
  start("nginx", "nginx", nginxArgs, { env: cleanEnv() });
  await eventually("nginx", async () => (await httpStatus(`http://127.0.0.1:${nginxPort}/healthz`)) === 200);

  return {
    nodeManagement: NODES.map((ip) => `http://${ip}:${managementPort}`),
    balancers: { HAProxy: `127.0.0.1:${publicPort}`, nginx: `127.0.0.1:${nginxPort}` },
    management: `http://127.0.0.1:${managementBindPort}`,
    managementHost: compose.services.haproxy.networks.private.aliases[0],
    token: nodeEnv.CLACKS_MANAGEMENT_TOKEN,
  };
}

/**
 * A management call through the balancer, by the name the compose file
 * gives it. node:http, as fetch drops a Host header it is given.
 */
function manage(method, path, { body, host = cluster.managementHost, token = cluster.token } = {}) {
  const payload = body && JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${cluster.management}/api/v1${path}`, {
      method,
      headers: {
        host,
        ...(token && { authorization: `Bearer ${token}` }),
        ...(payload && { "content-type": "application/json" }),
      },
    });
    request.once("error", reject);
    request.once("response", (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode, body: JSON.parse(text) }));
    });
    request.end(payload);
  });
}

/** `clacks_connections` on each node. */
async function connectionsPerNode() {
  return Promise.all(
    cluster.nodeManagement.map(async (base) => {
      const text = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${cluster.token}` } })).text();
      return Number(text.match(/^clacks_connections (\d+)/m)?.[1]);
    }),
  );
}

function wsClient(balancer, token) {
  let connected;
  const ready = new Promise((resolve) => (connected = resolve));
  const client = createClient({
    url: `ws://${balancer}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    lazy: false,
    retryAttempts: 0,
    on: { connected },
  });
  return { client, ready };
}

test("the cluster starts: two nodes, NATS, HAProxy (health checks passed) and nginx", async () => {
  cluster = await startCluster();
});

for (const name of ["HAProxy", "nginx"]) {
  test(`two nodes behind ${name}: a message sent through node A reaches a subscriber on node B`, async () => {
    assert.ok(cluster, "the cluster started");
    const balancer = cluster.balancers[name];
    const created = await manage("POST", "/channel", { body: { displayName: name, initialUsers: ["alice", "bob"] } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const channel = String(created.body.id);
    const alice = wsClient(balancer, (await manage("GET", "/jwt/alice")).body);
    await alice.ready;
    const received = new Promise((resolve, reject) => {
      alice.client.subscribe(
        {
          query: `subscription($c: ID!) { events(channel: $c, afterSeq: 0) {
            __typename ... on MessageCreated { message { content sender { id } } } } }`,
          variables: { c: channel },
        },
        {
          next: ({ data }) => data.events.__typename === "MessageCreated" && resolve(data.events.message),
          error: reject,
          complete: () => {},
        },
      );
    });
    const bob = wsClient(balancer, (await manage("GET", "/jwt/bob")).body);
    await bob.ready;
    // Balanced by open connections: one on each node.
    await eventually("one connection on each node", async () => (await connectionsPerNode()).join() === "1,1", 5_000);

    const sent = await new Promise((resolve, reject) => {
      bob.client.subscribe(
        {
          query: `mutation($c: ID!) { createMessage(input: {channel: $c, content: "through ${name}"}) { seq } }`,
          variables: { c: channel },
        },
        { next: resolve, error: reject, complete: () => {} },
      );
    });
    assert.equal(sent.data.createMessage.seq, 1);
    const message = await Promise.race([
      received,
      new Promise((_, reject) => setTimeout(() => reject(new Error("alice saw nothing in 10 s")), 10_000)),
    ]);
    assert.deepEqual(message, { content: `through ${name}`, sender: { id: "bob" } });
    await alice.client.dispose();
    await bob.client.dispose();
  });

  test(`per-address limits behind ${name} count the client it forwards for, not ${name}`, async () => {
    assert.ok(cluster, "the cluster started");
    const address = Object.values(networkInterfaces())
      .flat()
      .find((i) => i.family === "IPv4" && !i.internal)?.address;
    assert.ok(address, "this check needs a non-loopback IPv4 address to connect from");
    await eventually("no connection left on the nodes", async () => (await connectionsPerNode()).join() === "0,0", 5_000);
    // Limit 1 per address and node: one socket lands on each node, the
    // third finds both taken. Were the balancer's own address counted (a
    // loopback peer, never limited), all three would open.
    const outcomes = [];
    const sockets = [];
    for (let i = 0; i < 3; i++) {
      outcomes.push(
        await new Promise((resolve) => {
          const socket = new WebSocket(`ws://${cluster.balancers[name]}/graphql`, "graphql-transport-ws", {
            localAddress: address,
          });
          sockets.push(socket);
          socket.once("open", () => resolve("open"));
          socket.once("unexpected-response", (_, response) => {
            let body = "";
            response.on("data", (chunk) => (body += chunk));
            response.on("end", () => resolve(`${response.statusCode} ${JSON.parse(body).errors[0].extensions.code}`));
          });
          socket.once("error", (e) => resolve(`error ${e.message}`));
        }),
      );
    }
    for (const socket of sockets) socket.terminate();
    assert.deepEqual(outcomes, ["open", "open", "429 TOO_MANY_CONNECTIONS"]);
  });
}

test("the management API answers through HAProxy to the allowed Host, with the token", async () => {
  assert.ok(cluster, "the cluster started");
  assert.equal(cluster.managementHost, "clacks-management");
  assert.equal((await manage("GET", "/channel")).status, 200);
  assert.equal((await manage("GET", "/channel", { host: `${cluster.managementHost}:7999` })).status, 200);
  assert.equal((await manage("GET", "/channel", { token: null })).status, 401);
  const misdirected = await manage("GET", "/channel", { host: "evil.example" });
  assert.equal(misdirected.status, 421, JSON.stringify(misdirected.body));
});
