// End-to-end: reactions, replies/threads and mentions as a client app
// uses them, over the real graphql-ws client (and the legacy
// subscriptions-transport-ws client for a live thread stream), against
// the real `clacks` binary.
//
// Starts target/debug/clacks on free ports with a temporary SQLite
// database (override the binary with CLACKS_BIN). Each test makes its own
// channel over the management API.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import pkg from "subscriptions-transport-ws";
import { useClacks, node, api, token, gql, inbox } from "./harness.mjs";

const { SubscriptionClient } = pkg;

useClacks("features");

/** A new channel with these members; its id as a string. */
async function channelWith(name, members) {
  const { id } = await api("POST", "/channel", { displayName: name, initialUsers: members });
  return String(id);
}


/** `gql` that must succeed: returns `data`. */
async function ok(tok, query, variables = {}) {
  const res = await gql(tok, query, variables);
  assert.equal(res.errors, undefined, JSON.stringify(res));
  return res.data;
}

/** `gql` that must fail: returns the first error's `extensions.code`. */
async function refused(tok, query, variables = {}) {
  const res = await gql(tok, query, variables);
  assert.ok(res.errors?.length, `expected an error: ${JSON.stringify(res)}`);
  return res.errors[0].extensions?.code;
}


// Both clients are closed when the test `t` ends, passed or failed (an
// open client would keep the process alive after a failure).
function modern(t, tok) {
  const c = createClient({
    url: `ws://${node.client}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${tok}` },
    retryAttempts: 0,
    lazy: false,
  });
  t.after(() => c.dispose());
  return c;
}

function legacy(t, tok) {
  const c = new SubscriptionClient(
    `ws://${node.client}/graphql`,
    { connectionParams: { token: tok }, reconnect: false },
    WebSocket,
  );
  t.after(() => c.close());
  return c;
}

const EVENTS = `subscription($c: ID, $after: Int, $thread: ID) {
  events(channel: $c, afterSeq: $after, thread: $thread) {
    __typename seq channelId durable
    ... on MessageCreated { message { id seq content parentId sender { id } } }
    ... on ReactionAdded { messageId parentId userId key count }
    ... on ReactionRemoved { messageId parentId userId key count }
  }
}`;

/** Subscribes to `events` over graphql-ws; returns the inbox of events and a stop. */
function follow(ws, variables) {
  const seen = inbox();
  const stop = ws.subscribe(
    { query: EVENTS, variables },
    {
      next: (r) => seen.push(r.errors ? { errors: r.errors } : r.data.events),
      error: (e) => seen.push({ error: e }),
      complete: () => {},
    },
  );
  return { seen, stop };
}

/** The next event, which must be a (non-error) event. */
async function nextEvent(seen) {
  const e = await seen.next();
  assert.ok(e.__typename, `expected an event, got ${JSON.stringify(e)}`);
  return e;
}


const SEND = `mutation($c: ID!, $text: String!, $parent: ID, $mentions: [ID!]) {
  createMessage(input: {channel: $c, content: $text, parentId: $parent, mentions: $mentions}) {
    id seq parentId sentAt mentions { id }
  }
}`;
const send = async (tok, c, text, extra = {}) =>
  (await ok(tok, SEND, { c, text, ...extra })).createMessage;

const REACT = (op) => `mutation($m: ID!, $k: String!) {
  ${op}(messageId: $m, key: $k) { id reactions { key count reactedByMe } }
}`;
const react = async (tok, m, k) => (await ok(tok, REACT("addReaction"), { m, k })).addReaction;
const unreact = async (tok, m, k) => (await ok(tok, REACT("removeReaction"), { m, k })).removeReaction;

const reactionsOf = async (tok, m) =>
  (await ok(tok, "query($m: ID!) { message(id: $m) { reactions { key count reactedByMe } } }", { m })).message
    .reactions;

test("reactions: live durable events with counts, per-user views, idempotence, refusals", async (t) => {
  const channel = await channelWith("reactions", ["alice", "bob", "carol"]);
  const [alice, bob, carol, mallory] = await Promise.all(
    ["alice", "bob", "carol", "mallory"].map(token),
  );

  const a = modern(t, alice);
  // `afterSeq: 0` on a new channel: no race between subscribing and the
  // first send, as an app that keeps its last seq would do.
  const { seen } = follow(a, { c: channel, after: 0 });

  const msg = await send(alice, channel, "lunch at noon?");
  let e = await nextEvent(seen);
  assert.equal(e.__typename, "MessageCreated");
  assert.equal(e.message.id, msg.id);
  assert.equal(e.seq, msg.seq);

  // Bob reacts: Alice sees a durable event with its own seq and the new count.
  const afterBob = await react(bob, msg.id, "👍");
  assert.equal(afterBob.id, msg.id);
  assert.deepEqual(afterBob.reactions, [{ key: "👍", count: 1, reactedByMe: true }]);
  e = await nextEvent(seen);
  assert.deepEqual(
    { ...e },
    {
      __typename: "ReactionAdded",
      seq: msg.seq + 1,
      channelId: channel,
      durable: true,
      messageId: msg.id,
      parentId: null,
      userId: "bob",
      key: "👍",
      count: 1,
    },
  );

  // Each user sees the count, and whether they reacted.
  assert.deepEqual(await reactionsOf(alice, msg.id), [{ key: "👍", count: 1, reactedByMe: false }]);
  assert.deepEqual(await reactionsOf(bob, msg.id), [{ key: "👍", count: 1, reactedByMe: true }]);

  // Reacting twice is idempotent: same state, no event.
  assert.deepEqual((await react(bob, msg.id, "👍")).reactions, [{ key: "👍", count: 1, reactedByMe: true }]);
  await seen.quiet();

  // Carol adds the same key and a second one (a short key); keys keep the
  // order they were first used in.
  await react(carol, msg.id, "👍");
  e = await nextEvent(seen);
  assert.equal(e.__typename, "ReactionAdded");
  assert.equal(e.seq, msg.seq + 2);
  assert.equal(e.userId, "carol");
  assert.equal(e.count, 2);
  await react(carol, msg.id, "+1");
  e = await nextEvent(seen);
  assert.deepEqual([e.seq, e.key, e.count], [msg.seq + 3, "+1", 1]);
  assert.deepEqual(await reactionsOf(alice, msg.id), [
    { key: "👍", count: 2, reactedByMe: false },
    { key: "+1", count: 1, reactedByMe: false },
  ]);
  assert.deepEqual(await reactionsOf(carol, msg.id), [
    { key: "👍", count: 2, reactedByMe: true },
    { key: "+1", count: 1, reactedByMe: true },
  ]);

  // Bob takes his back: the count comes down, live and on the message.
  assert.deepEqual((await unreact(bob, msg.id, "👍")).reactions, [
    { key: "👍", count: 1, reactedByMe: false },
    { key: "+1", count: 1, reactedByMe: false },
  ]);
  e = await nextEvent(seen);
  assert.deepEqual(
    [e.__typename, e.seq, e.durable, e.userId, e.key, e.count],
    ["ReactionRemoved", msg.seq + 4, true, "bob", "👍", 1],
  );
  // Taking back a reaction that is not there changes and publishes nothing.
  await unreact(bob, msg.id, "👍");
  await seen.quiet();
  // The last one gone, the key disappears.
  await unreact(carol, msg.id, "+1");
  e = await nextEvent(seen);
  assert.deepEqual([e.__typename, e.key, e.count], ["ReactionRemoved", "+1", 0]);
  assert.deepEqual(await reactionsOf(bob, msg.id), [{ key: "👍", count: 1, reactedByMe: false }]);

  // Invalid keys are bad input.
  for (const bad of ["", "thumbs up", "a".repeat(65), "x\u0000y", "\u202e"]) {
    assert.equal(await refused(bob, REACT("addReaction"), { m: msg.id, k: bad }), "BAD_USER_INPUT", JSON.stringify(bad));
  }
  // A non-member is refused, and learns nothing: same as a message that does not exist.
  assert.equal(await refused(mallory, REACT("addReaction"), { m: msg.id, k: "👍" }), "FORBIDDEN");
  assert.equal(await refused(mallory, REACT("removeReaction"), { m: msg.id, k: "👍" }), "FORBIDDEN");
  assert.equal(await refused(bob, REACT("addReaction"), { m: "999999", k: "👍" }), "FORBIDDEN");
  await seen.quiet();
  assert.deepEqual(await reactionsOf(alice, msg.id), [{ key: "👍", count: 1, reactedByMe: false }]);

});

test("replies and threads: live parent ids, counts, paging, and resume after a disconnect", async (t) => {
  const channel = await channelWith("threads", ["alice", "bob"]);
  const [alice, bob] = await Promise.all(["alice", "bob"].map(token));

  // Alice follows the channel on graphql-ws; Bob follows the thread only,
  // once it exists (from the seq he knows), on subscriptions-transport-ws.
  let a = modern(t, alice);
  let { seen, stop } = follow(a, { c: channel, after: 0 });

  const root = await send(alice, channel, "who's in for friday?");
  const other = await send(alice, channel, "unrelated");
  assert.equal((await nextEvent(seen)).message.id, root.id);
  assert.equal((await nextEvent(seen)).message.id, other.id);

  const b = legacy(t, bob);
  const bobSees = inbox();
  b.request({ query: EVENTS, variables: { c: channel, thread: root.id, after: other.seq } }).subscribe({
    next: (r) => bobSees.push(r.errors ? { errors: r.errors } : r.data.events),
    error: (e) => bobSees.push({ error: e }),
  });

  // Bob replies; Alice's stream carries the parent id.
  const r1 = await send(bob, channel, "me", { parent: root.id });
  assert.equal(r1.parentId, root.id);
  let e = await nextEvent(seen);
  assert.equal(e.__typename, "MessageCreated");
  assert.deepEqual(
    { id: e.message.id, seq: e.message.seq, parentId: e.message.parentId, sender: e.message.sender.id },
    { id: r1.id, seq: r1.seq, parentId: root.id, sender: "bob" },
  );
  let te = await nextEvent(bobSees);
  assert.deepEqual([te.__typename, te.message.id, te.message.parentId], ["MessageCreated", r1.id, root.id]);

  // A reaction on a reply carries the thread too.
  await react(alice, r1.id, "🎉");
  e = await nextEvent(seen);
  assert.deepEqual([e.__typename, e.messageId, e.parentId, e.count], ["ReactionAdded", r1.id, root.id, 1]);
  te = await nextEvent(bobSees);
  assert.deepEqual([te.__typename, te.messageId, te.parentId, te.seq], ["ReactionAdded", r1.id, root.id, e.seq]);

  // The thread stream leaves out the rest of the channel.
  const plain = await send(alice, channel, "not in the thread");
  assert.equal((await nextEvent(seen)).message.id, plain.id);
  await react(bob, other.id, "👀");
  assert.equal((await nextEvent(seen)).messageId, other.id);

  const r2 = await send(alice, channel, "me too", { parent: root.id });
  assert.equal((await nextEvent(seen)).message.parentId, root.id);
  te = await nextEvent(bobSees);
  assert.equal(te.message.id, r2.id, "the thread stream skipped the channel's other events");
  await bobSees.quiet(200);

  // Threads are one level deep; a parent from another channel is refused.
  assert.equal(await refused(bob, SEND, { c: channel, text: "nested", parent: r1.id }), "BAD_USER_INPUT");
  const elsewhere = await channelWith("elsewhere", ["alice", "bob"]);
  const foreign = await send(alice, elsewhere, "over here");
  assert.equal(await refused(bob, SEND, { c: channel, text: "cross", parent: foreign.id }), "BAD_USER_INPUT");

  // Alice drops off after seeing r2; while she is away Bob replies and reacts.
  const lastSeen = r2.seq;
  stop();
  await a.dispose();
  const r3 = await send(bob, channel, "count me in", { parent: root.id });
  await react(bob, r2.id, "👍");
  await react(bob, root.id, "❤️");

  // The root counts its replies; the thread pages by seq.
  const parent = (
    await ok(alice, "query($m: ID!) { message(id: $m) { replyCount lastReplyAt parentId } }", { m: root.id })
  ).message;
  assert.equal(parent.replyCount, 3);
  assert.equal(parent.lastReplyAt, r3.sentAt);
  assert.equal(parent.parentId, null);
  assert.equal(
    (await ok(alice, "query($m: ID!) { message(id: $m) { replyCount } }", { m: other.id })).message.replyCount,
    0,
  );
  const THREAD = `query($p: ID!, $before: Int, $after: Int, $limit: Int) {
    thread(parent: $p, before: $before, after: $after, limit: $limit) { id seq content parentId }
  }`;
  const newest = (await ok(bob, THREAD, { p: root.id })).thread;
  assert.deepEqual(newest.map((m) => m.id), [r3.id, r2.id, r1.id]);
  assert.ok(newest.every((m) => m.parentId === root.id));
  let page = (await ok(bob, THREAD, { p: root.id, after: 0, limit: 2 })).thread;
  assert.deepEqual(page.map((m) => m.content), ["me", "me too"]);
  page = (await ok(bob, THREAD, { p: root.id, after: page.at(-1).seq, limit: 2 })).thread;
  assert.deepEqual(page.map((m) => m.content), ["count me in"]);
  page = (await ok(bob, THREAD, { p: root.id, before: r3.seq, limit: 1 })).thread;
  assert.deepEqual(page.map((m) => m.id), [r2.id]);

  // Alice comes back and resumes after the last seq she saw: the missed
  // reply and reactions come in order, no duplicate, then live ones.
  a = modern(t, alice);
  ({ seen, stop } = follow(a, { c: channel, after: lastSeen }));
  const missed = [await nextEvent(seen), await nextEvent(seen), await nextEvent(seen)];
  assert.deepEqual(
    missed.map((m) => [m.__typename, m.seq, m.message?.id ?? m.messageId, m.message?.parentId ?? m.parentId]),
    [
      ["MessageCreated", r3.seq, r3.id, root.id],
      ["ReactionAdded", r3.seq + 1, r2.id, root.id],
      ["ReactionAdded", r3.seq + 2, root.id, null],
    ],
  );
  assert.ok(missed.every((m) => m.durable));
  const live = await send(bob, channel, "see you there", { parent: root.id });
  e = await nextEvent(seen);
  assert.deepEqual([e.__typename, e.seq, e.message.id], ["MessageCreated", r3.seq + 3, live.id]);
  assert.equal(live.seq, r3.seq + 3);
  await seen.quiet(200);

  // Bob's thread stream, live throughout, got the same: the thread is the
  // root and its replies, and their reactions.
  const bobRest = [await nextEvent(bobSees), await nextEvent(bobSees), await nextEvent(bobSees), await nextEvent(bobSees)];
  assert.deepEqual(
    bobRest.map((m) => m.seq),
    [r3.seq, r3.seq + 1, r3.seq + 2, r3.seq + 3],
  );
});

test("mentions: the mentioned member's unread mention count, cleared by markRead", async (t) => {
  const channel = await channelWith("mentions", ["alice", "bob"]);
  const [alice, bob] = await Promise.all(["alice", "bob"].map(token));

  // Bob watches the channel with the original subscription and `mentionedMe`.
  const b = modern(t, bob);
  const bobSees = inbox();
  b.subscribe(
    {
      query: "subscription($c: ID) { message(channel: $c, afterSeq: 0) { id content mentionedMe } }",
      variables: { c: channel },
    },
    { next: (r) => bobSees.push(r), error: (e) => bobSees.push({ error: e }), complete: () => {} },
  );

  const plain = await send(alice, channel, "morning all");
  const m = await send(alice, channel, "@bob can you look?", { mentions: ["bob", "bob"] });
  assert.deepEqual(m.mentions, [{ id: "bob" }]);
  assert.deepEqual((await bobSees.next()).data.message, { id: plain.id, content: "morning all", mentionedMe: false });
  assert.deepEqual((await bobSees.next()).data.message, { id: m.id, content: "@bob can you look?", mentionedMe: true });

  const COUNTS = "{ channels { id unreadCount unreadMentionCount lastReadSeq } }";
  const mine = async (tok) => (await ok(tok, COUNTS)).channels.find((c) => c.id === channel);
  let bobs = await mine(bob);
  assert.equal(bobs.unreadCount, 2);
  assert.equal(bobs.unreadMentionCount, 1);
  // The sender's own messages are not unread to her.
  const alices = await mine(alice);
  assert.deepEqual([alices.unreadCount, alices.unreadMentionCount], [0, 0]);
  const viewed = (await ok(alice, "query($m: ID!) { message(id: $m) { mentionedMe mentions { id } } }", { m: m.id })).message;
  assert.deepEqual(viewed, { mentionedMe: false, mentions: [{ id: "bob" }] });

  // Mentioning someone outside the channel is bad input.
  assert.equal(await refused(alice, SEND, { c: channel, text: "@mallory", mentions: ["mallory"] }), "BAD_USER_INPUT");

  // Reading up to the mention clears it.
  const read = (
    await ok(bob, "mutation($c: ID!, $s: Int!) { markRead(channel: $c, seq: $s) { lastReadSeq unreadCount unreadMentionCount } }", {
      c: channel,
      s: m.seq,
    })
  ).markRead;
  assert.deepEqual(read, { lastReadSeq: m.seq, unreadCount: 0, unreadMentionCount: 0 });
  bobs = await mine(bob);
  assert.deepEqual([bobs.unreadCount, bobs.unreadMentionCount, bobs.lastReadSeq], [0, 0, m.seq]);

});
