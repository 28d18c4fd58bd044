// End-to-end presence: the real `clacks` binary and the stock graphql-ws
// client. A member subscribed to a small channel sees another member come
// online when their client connects and go offline when it closes; the
// `presence` query lists the online members for members only; the
// management API answers `GET /users/{uid}/presence`.
//
// Starts target/debug/clacks on free ports with a temporary SQLite
// database (override the binary with CLACKS_BIN).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { useClacks, node, api, token, gql, inbox } from "./harness.mjs";


useClacks("presence");


/** A graphql-ws client, resolved once the server acknowledged it. */
function connected(tok) {
  return new Promise((resolve, reject) => {
    const c = createClient({
      url: `ws://${node.client}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${tok}` },
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: reject,
      on: { connected: () => resolve(c) },
    });
  });
}

/** The presence events of one user, as a queue you can await. */
function presenceOf(user) {
  return inbox((result) => {
    const event = result.data?.events;
    return event?.userId === user ? event : undefined;
  });
}

test("a member's client connecting and closing is seen live, by query and by the management API", async () => {
  const { id } = await api("POST", "/channel", { displayName: "presence", initialUsers: ["alice", "bob"] });
  const channel = String(id);
  const [alice, bob, mallory] = [await token("alice"), await token("bob"), await token("mallory")];

  assert.deepEqual(await api("GET", "/users/alice/presence"), { online: false, lastSeenAt: null });

  const b = await connected(bob);
  const aliceEvents = presenceOf("alice");
  const stop = b.subscribe(
    {
      query: `subscription($c: ID) { events(channel: $c, kinds: [PRESENCE_CHANGED]) {
        __typename durable ... on PresenceChanged { userId online lastSeenAt } } }`,
      variables: { c: channel },
    },
    { next: (r) => aliceEvents.push(r), error: (e) => assert.fail(JSON.stringify(e)), complete: () => {} },
  );
  await new Promise((r) => setTimeout(r, 300));

  const a = await connected(alice);
  let event = await aliceEvents.next();
  assert.equal(event.__typename, "PresenceChanged");
  assert.equal(event.durable, false);
  assert.equal(event.online, true);
  assert.equal((await api("GET", "/users/alice/presence")).online, true);
  const online = await gql(bob, "query($c: ID!) { presence(channel: $c) { id presence { online } } }", { c: channel });
  assert.deepEqual(online.data.presence, [
    { id: "alice", presence: { online: true } },
    { id: "bob", presence: { online: true } },
  ]);

  await a.dispose();
  event = await aliceEvents.next();
  assert.equal(event.online, false);
  assert.equal(typeof event.lastSeenAt, "number");
  const rest = await api("GET", "/users/alice/presence");
  assert.equal(rest.online, false);
  assert.equal(Math.floor(rest.lastSeenAt / 1000), event.lastSeenAt);

  const denied = await gql(mallory, "query($c: ID!) { presence(channel: $c) { id } }", { c: channel });
  assert.equal(denied.errors[0].extensions.code, "FORBIDDEN", JSON.stringify(denied));

  stop();
  await b.dispose();
});
