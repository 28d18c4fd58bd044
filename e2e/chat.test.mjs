// End-to-end: the real `clacks` binary, the real graphql-ws and
// subscriptions-transport-ws clients. Two members chat in one channel,
// one client on each WebSocket protocol; each sees the other's messages
// live; unread counts and read receipts update; a non-member is refused.
//
// Starts target/debug/clacks on free ports with a temporary SQLite
// database (override the binary with CLACKS_BIN).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import pkg from "subscriptions-transport-ws";
import { useClacks, node, api, token, gql, inbox } from "./harness.mjs";

const { SubscriptionClient } = pkg;

useClacks("chat");



const modern = (tok) =>
  createClient({
    url: `ws://${node.client}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${tok}` },
    retryAttempts: 0,
    lazy: false,
  });

const legacy = (tok) =>
  new SubscriptionClient(
    `ws://${node.client}/graphql`,
    { connectionParams: { token: tok }, reconnect: false },
    WebSocket,
  );

const settle = () => new Promise((r) => setTimeout(r, 300));

test("two members chat, one on each protocol, with the original and the new operations", async () => {
  const { id } = await api("POST", "/channel", { displayName: "e2e", initialUsers: ["alice", "bob"] });
  const channel = String(id);
  const [alice, bob, mallory] = [await token("alice"), await token("bob"), await token("mallory")];

  // Alice: graphql-ws, the original `message` subscription.
  const a = modern(alice);
  const aliceSees = inbox();
  const stopA = a.subscribe(
    { query: "subscription($c: ID) { message(channel: $c) { content sender { id } sent_at } }", variables: { c: channel } },
    { next: (r) => aliceSees.push(r), error: (e) => aliceSees.push({ error: e }), complete: () => {} },
  );
  // Bob: subscriptions-transport-ws, the rich event stream.
  const b = legacy(bob);
  const bobSees = inbox();
  const subB = b
    .request({
      query: `subscription($c: ID) { events(channel: $c) { __typename seq channelId
        ... on MessageCreated { message { content sender { id } } }
        ... on ReadReceipt { userId lastReadSeq } } }`,
      variables: { c: channel },
    })
    .subscribe({ next: (r) => bobSees.push(r), error: (e) => bobSees.push({ error: e }) });
  await settle();

  // The original mutation from Alice; Bob sees it live.
  const sent = await gql(alice, `mutation($c: ID!) { createMessage(input: {content: "hi bob", channel: $c}) { id sent_at } }`, { c: channel });
  assert.equal(sent.errors, undefined, JSON.stringify(sent));
  let event = (await bobSees.next()).data.events;
  assert.equal(event.__typename, "MessageCreated");
  assert.equal(event.message.content, "hi bob");
  assert.equal(event.message.sender.id, "alice");
  assert.equal(event.seq, 1);
  assert.equal((await aliceSees.next()).data.message.content, "hi bob");

  // Bob answers with the new operation (clientMessageId); Alice sees it.
  const answer = await gql(bob, `mutation($c: ID!) { createMessage(input: {content: "hi alice", channel: $c, clientMessageId: "b-1"}) { seq } }`, { c: channel });
  assert.equal(answer.data.createMessage.seq, 2);
  const got = (await aliceSees.next()).data.message;
  assert.equal(got.content, "hi alice");
  assert.equal(got.sender.id, "bob");
  assert.equal((await bobSees.next()).data.events.seq, 2);

  // Unread counts and read receipts.
  let unread = await gql(alice, "{ channels { id unreadCount lastReadSeq } unread_messages { content } }");
  assert.equal(unread.data.channels[0].unreadCount, 1);
  assert.deepEqual(unread.data.unread_messages.map((m) => m.content), ["hi alice"]);
  const marked = await gql(alice, "mutation($c: ID!) { markRead(channel: $c, seq: 2) { lastReadSeq unreadCount } }", { c: channel });
  assert.deepEqual(marked.data.markRead, { lastReadSeq: 2, unreadCount: 0 });
  event = (await bobSees.next()).data.events;
  assert.equal(event.__typename, "ReadReceipt");
  assert.equal(event.userId, "alice");
  assert.equal(event.lastReadSeq, 2);
  const seen = await gql(bob, "query($c: ID!) { channel(id: $c) { history(limit: 1) { seenBy { userId } } message_view(user_id: \"alice\", last: 0, count: 5) { seen } } }", { c: channel });
  assert.deepEqual(seen.data.channel.history[0].seenBy, [{ userId: "alice" }]);
  assert.deepEqual(seen.data.channel.message_view.map((v) => v.seen), [true, true]);

  // A third user who is not a member is refused everywhere.
  const denied = await gql(mallory, `mutation($c: ID!) { createMessage(input: {content: "let me in", channel: $c}) { id } }`, { c: channel });
  assert.equal(denied.errors[0].extensions.code, "FORBIDDEN");
  const read = await gql(mallory, "query($c: ID!) { channel(id: $c) { displayName } }", { c: channel });
  assert.equal(read.errors[0].extensions.code, "FORBIDDEN");
  for (const connect of [modern, legacy]) {
    const m = connect(mallory);
    const errors = await new Promise((resolve) => {
      if (connect === modern) {
        m.subscribe({ query: "subscription($c: ID) { message(channel: $c) { content } }", variables: { c: channel } }, {
          next: (r) => resolve(r.errors),
          error: (e) => resolve(e),
          complete: () => {},
        });
      } else {
        m.request({ query: "subscription($c: ID) { message(channel: $c) { content } }", variables: { c: channel } }).subscribe({
          next: (r) => resolve(r.errors),
          error: (e) => resolve(Array.isArray(e) ? e : [e]),
        });
      }
    });
    assert.equal(errors[0].extensions.code, "FORBIDDEN", JSON.stringify(errors));
    connect === modern ? await m.dispose() : m.close();
  }

  stopA();
  subB.unsubscribe();
  await a.dispose();
  b.close();
});

test("a rejected token is refused by both clients", async () => {
  const closed = await new Promise((resolve) => {
    const c = createClient({
      url: `ws://${node.client}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { token: "not-a-token" },
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: () => {},
      on: { closed: (e) => resolve(e.code) },
    });
  });
  assert.equal(closed, 4403);
  const error = await new Promise((resolve) => {
    const c = new SubscriptionClient(
      `ws://${node.client}/graphql`,
      {
        connectionParams: { token: "not-a-token" },
        reconnect: false,
        connectionCallback: (e) => {
          resolve(e);
          c.close();
        },
      },
      WebSocket,
    );
  });
  assert.equal(error.extensions.code, "UNAUTHENTICATED", JSON.stringify(error));
});
