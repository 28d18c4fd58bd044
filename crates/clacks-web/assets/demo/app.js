// The Clacks demo chat: a small client of the public GraphQL API, written
// the way the README recommends for real ones.
//
// - Queries and mutations go over HTTP with `Authorization: Bearer`.
// - One `events` subscription (graphql-transport-ws) follows every channel
//   of the user. Each channel remembers the seq of the last durable event
//   handled; every (re)connection resumes from those seqs, so nothing is
//   lost or repeated across reconnects, server restarts and reloads.
// - Messages are sent with a clientMessageId, so a retry after a network
//   failure never posts twice.
// - Dev mode only: /demo/login mints a token for any user id and
//   /demo/join joins (or creates) a channel by name. Elsewhere the page
//   takes a pasted token, and channels come from the application's server.
//
// The session lives in sessionStorage: each tab is its own user, and a
// reload keeps it.
import { createClient } from "/assets/vendor/graphql-ws.js";

const HTTP_URL = new URL("/graphql", location.href).href;
const WS_URL = HTTP_URL.replace(/^http/, "ws");
const SESSION_KEY = "clacks.demo.session";
const OPEN_CHANNEL_KEY = "clacks.demo.channel";
const PAGE_SIZE = 30;
// The server broadcasts at most one typing event per user and channel
// every 2 s; a draft being written is announced a little less often, and
// shown by the others until a while after the last announcement.
const TYPING_SHOWN_MS = 5000;
const TYPING_SENT_EVERY_MS = 2500;
const MAX_RETRY_DELAY_MS = 10000;
const RESEND_AFTER_MS = 2000;

const MESSAGE_FIELDS = `fragment MessageFields on Message {
  id seq content senderId system sentAt editedAt deleted clientMessageId
}`;
const CHANNEL_FIELDS = `fragment ChannelFields on Channel {
  id displayName lastSeq unreadCount lastReadSeq members { userId lastReadSeq }
}`;
const EVENTS = `subscription Follow($resume: [ResumeInput!]) {
  events(resume: $resume) {
    __typename channelId seq durable
    ... on MessageCreated { message { ...MessageFields } }
    ... on MessageEdited { message { ...MessageFields } }
    ... on MessageDeleted { message { ...MessageFields } }
    ... on ReadReceipt { userId lastReadSeq }
    ... on Typing { userId }
    ... on MemberJoined { userId }
    ... on MemberLeft { userId }
    ... on MembersJoined { userIds truncated }
    ... on MembersLeft { userIds truncated }
    ... on ChannelUpdated { displayName }
  }
}
${MESSAGE_FIELDS}`;

const $ = (selector) => document.querySelector(selector);

/** The signed-in user: { token, userId, name, dev } (dev: minted by /demo/login). */
let session = null;
/** Channel id -> state of that channel (see addChannel). */
const channels = new Map();
/** Id of the channel on screen. */
let openId = null;
/** The live subscription: bumped to stop the current one. */
let follow = { generation: 0, stop: () => {} };

class RequestError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

// ----- talking to the server ----------------------------------------------

async function graphql(query, variables = {}) {
  const token = await freshToken();
  const response = await fetch(HTTP_URL, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) {
    const [first] = body.errors;
    throw new RequestError(first.message, first.extensions?.code);
  }
  return body.data;
}

async function postJson(path, payload, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(payload) });
  if (response.status === 404) throw new RequestError("not available", "DEV_MODE_OFF");
  const body = await response.json();
  if (!response.ok) throw new RequestError(body.error ?? response.statusText, String(response.status));
  return body;
}

function tokenExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).exp * 1000;
  } catch {
    return 0;
  }
}

/** The token to send: a dev session gets a new one shortly before expiry. */
async function freshToken() {
  if (session.dev && tokenExpiry(session.token) - Date.now() < 60_000) {
    const minted = await postJson("/demo/login", { userId: session.userId, name: session.name });
    saveSession({ ...session, token: minted.token });
  }
  return session.token;
}

function saveSession(next) {
  session = next;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  $("#open-graphiql").href = `/graphiql#token=${encodeURIComponent(session.token)}`;
}

// ----- channel state ------------------------------------------------------

function addChannel(c) {
  const members = new Map(c.members.map((m) => [m.userId, m.lastReadSeq]));
  const channel = {
    id: c.id,
    displayName: c.displayName,
    unread: c.unreadCount,
    lastReadSeq: c.lastReadSeq,
    // Seq of the last durable event handled: where a reconnect resumes.
    resumeSeq: c.lastSeq,
    members,
    messages: new Map(), // seq -> message
    pending: new Map(), // clientMessageId -> { content, state, error }
    typing: new Map(), // userId -> timer
    historyLoaded: false,
    historyDone: false,
    marking: null,
  };
  channels.set(c.id, channel);
  return channel;
}

async function loadChannels() {
  const data = await graphql(`query Start { me { id name } channels { ...ChannelFields } } ${CHANNEL_FIELDS}`);
  channels.clear();
  for (const c of data.channels) addChannel(c);
  $("#me").textContent = data.me.name ? `${data.me.name} (${data.me.id})` : data.me.id;
}

async function loadHistory(channel) {
  const oldest = channel.historyLoaded ? Math.min(...channel.messages.keys()) : null;
  const data = await graphql(
    `query History($id: ID!, $before: Int, $limit: Int) {
      channel(id: $id) { history(before: $before, limit: $limit) { ...MessageFields } }
    } ${MESSAGE_FIELDS}`,
    { id: channel.id, before: Number.isFinite(oldest) ? oldest : null, limit: PAGE_SIZE },
  );
  const page = data.channel.history;
  // An entry already here came from an event, which is newer than this page.
  for (const m of page) if (!channel.messages.has(m.seq)) channel.messages.set(m.seq, m);
  channel.historyLoaded = true;
  channel.historyDone = page.length < PAGE_SIZE;
}

/** Moves the read watermark to the newest entry (one call at a time). */
async function markRead(channel) {
  if (channel.marking) {
    channel.marking.again = true;
    return;
  }
  const newest = Math.max(channel.resumeSeq, ...channel.messages.keys());
  if (newest <= channel.lastReadSeq && channel.unread === 0) return;
  channel.marking = { again: false };
  try {
    const { markRead: state } = await graphql(
      `mutation Read($channel: ID!, $seq: Int!) { markRead(channel: $channel, seq: $seq) { lastReadSeq unreadCount } }`,
      { channel: channel.id, seq: newest },
    );
    channel.lastReadSeq = Math.max(channel.lastReadSeq, state.lastReadSeq);
    channel.members.set(session.userId, channel.lastReadSeq);
    channel.unread = state.unreadCount;
  } catch (error) {
    console.warn("markRead failed", error);
  } finally {
    const again = channel.marking.again;
    channel.marking = null;
    renderChannels();
    if (again) markRead(channel);
  }
}

function readingNow(channel) {
  return channel.id === openId && document.visibilityState === "visible";
}

// ----- the event stream ---------------------------------------------------

/** Applies one event; returns a promise only when it had to ask the server. */
function apply(event) {
  const channel = channels.get(event.channelId);
  if (!channel) {
    if (event.__typename === "MemberJoined" && event.userId === session.userId) {
      return joinedElsewhere(event.channelId);
    }
    // The all-channels stream brings a channel's events only once this
    // user is in it: a bulk add of an unknown channel included them.
    if (event.__typename === "MembersJoined") return joinedElsewhere(event.channelId);
    return;
  }
  if (event.durable) {
    // Replayed and live events meet exactly once per seq; anything at or
    // below the resume point is already on screen.
    if (event.seq <= channel.resumeSeq) return;
    channel.resumeSeq = event.seq;
  }
  switch (event.__typename) {
    case "MessageCreated": {
      const m = event.message;
      channel.messages.set(m.seq, m);
      if (m.clientMessageId) channel.pending.delete(m.clientMessageId);
      clearTyping(channel, m.senderId);
      if (m.senderId !== session.userId && m.seq > channel.lastReadSeq) {
        if (readingNow(channel)) markRead(channel);
        else channel.unread += 1;
      }
      break;
    }
    case "MessageEdited":
      channel.messages.set(event.message.seq, event.message);
      break;
    case "MessageDeleted": {
      const m = event.message;
      const wasUnread = m.senderId !== session.userId && m.seq > channel.lastReadSeq;
      if (wasUnread && channel.unread > 0) channel.unread -= 1;
      channel.messages.set(m.seq, m);
      break;
    }
    case "ReadReceipt":
      channel.members.set(event.userId, Math.max(channel.members.get(event.userId) ?? 0, event.lastReadSeq));
      if (event.userId === session.userId && event.lastReadSeq > channel.lastReadSeq) {
        // Read on another device or tab.
        channel.lastReadSeq = event.lastReadSeq;
        return refreshUnread(channel);
      }
      break;
    case "Typing":
      if (event.userId !== session.userId) showTyping(channel, event.userId);
      break;
    case "MemberJoined":
      if (!channel.members.has(event.userId)) channel.members.set(event.userId, 0);
      break;
    case "MemberLeft":
      if (event.userId === session.userId) return forget(channel);
      channel.members.delete(event.userId);
      break;
    // A bulk request: the users are listed up to 100; beyond that only
    // counted (truncated), and the member list is read again.
    case "MembersJoined":
      if (event.truncated) return refetchMembers(channel);
      for (const user of event.userIds) if (!channel.members.has(user)) channel.members.set(user, 0);
      break;
    case "MembersLeft":
      if (event.truncated) return refetchMembers(channel);
      if (event.userIds.includes(session.userId)) return forget(channel);
      for (const user of event.userIds) channel.members.delete(user);
      break;
    case "ChannelUpdated":
      channel.displayName = event.displayName;
      break;
    case "ChannelDeleted":
      return forget(channel);
  }
  render();
}

async function refreshUnread(channel) {
  const { channel: c } = await graphql(
    `query Unread($id: ID!) { channel(id: $id) { unreadCount lastReadSeq } }`,
    { id: channel.id },
  );
  channel.unread = c.unreadCount;
  channel.lastReadSeq = Math.max(channel.lastReadSeq, c.lastReadSeq);
  render();
}

/** Someone (the application, or this user in another tab) added us. */
async function joinedElsewhere(id) {
  const { channel: c } = await graphql(`query Joined($id: ID!) { channel(id: $id) { ...ChannelFields } } ${CHANNEL_FIELDS}`, { id });
  // Everything up to c.lastSeq is in its unread count and history already.
  if (!channels.has(id)) addChannel(c);
  render();
}

/** Reads a channel's members again; forgets it when no longer a member. */
async function refetchMembers(channel) {
  let c = null;
  try {
    ({ channel: c } = await graphql(`query Members($id: ID!) { channel(id: $id) { ...ChannelFields } } ${CHANNEL_FIELDS}`, { id: channel.id }));
  } catch (error) {
    // Refused: this user was among the members removed.
    if (!(error instanceof RequestError)) throw error;
  }
  if (!c || !c.members.some((m) => m.userId === session.userId)) return forget(channel);
  channel.members = new Map(c.members.map((m) => [m.userId, m.lastReadSeq]));
  render();
}

function forget(channel) {
  channels.delete(channel.id);
  if (openId === channel.id) openId = null;
  render();
}

function setStatus(state, text = state) {
  const status = $("#status");
  status.dataset.state = state;
  status.textContent = text;
  $("#reconnect").hidden = state !== "disconnected";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follows every channel until stopped, reconnecting with backoff. Each
 * attempt opens a new connection and subscribes with the current resume
 * points (rather than letting the client library resubscribe with the
 * ones it started with).
 */
function startFollowing() {
  follow.stop();
  const generation = follow.generation + 1;
  let stopRequested = () => {};
  const stopped = new Promise((resolve) => (stopRequested = resolve));
  follow = { generation, stop: stopRequested };
  const current = () => follow.generation === generation;

  (async () => {
    let delay = 1000;
    while (current()) {
      setStatus("connecting", "connecting…");
      const client = createClient({
        url: WS_URL,
        connectionParams: async () => ({ authorization: `Bearer ${await freshToken()}` }),
        retryAttempts: 0,
        on: {
          connected: () => {
            delay = 1000;
            setStatus("live");
          },
        },
      });
      const resume = [...channels.values()].map((c) => ({ channel: c.id, afterSeq: c.resumeSeq }));
      const events = client.iterate({ query: EVENTS, variables: { resume } });
      let outcome = "ended";
      try {
        const next = async () => {
          for await (const result of events) {
            if (result.errors?.length) {
              const [first] = result.errors;
              throw new RequestError(first.message, first.extensions?.code);
            }
            await apply(result.data.events);
            if (!current()) break;
          }
        };
        await Promise.race([next(), stopped]);
      } catch (error) {
        outcome = error;
      } finally {
        events.return?.();
        client.dispose();
      }
      if (!current()) return;
      const code = outcome?.code;
      if (code === 4403 || code === 4401 || code === "UNAUTHENTICATED") {
        // Token rejected or expired: a dev session gets a new one (in
        // freshToken); a pasted token needs the user.
        if (!session.dev) return signOut("Your token expired or was refused; paste a new one.");
        saveSession({ ...session, token: "" });
      } else if (code === 4001) {
        // The application disconnected this user on purpose.
        setStatus("disconnected", "disconnected by the application");
        await new Promise((resolve) => $("#reconnect").addEventListener("click", resolve, { once: true }));
        continue;
      } else if (code === "BAD_USER_INPUT" || code === "FORBIDDEN") {
        // Too far behind to resume, or a channel went away: start over.
        await sleep(delay);
        if (current()) begin(session);
        return;
      }
      setStatus("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s…`);
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
    }
  })();
}

// ----- sending ------------------------------------------------------------

function newClientMessageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "demo-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function send(channel, content) {
  const clientMessageId = newClientMessageId();
  channel.pending.set(clientMessageId, { content, state: "sending" });
  render({ scroll: true });
  await deliver(channel, clientMessageId);
}

async function deliver(channel, clientMessageId) {
  const pending = channel.pending.get(clientMessageId);
  if (!pending) return;
  pending.state = "sending";
  try {
    const { createMessage: m } = await graphql(
      `mutation Send($input: CreateMessageInput) { createMessage(input: $input) { ...MessageFields } } ${MESSAGE_FIELDS}`,
      { input: { channel: channel.id, content: pending.content, clientMessageId } },
    );
    channel.pending.delete(clientMessageId);
    channel.messages.set(m.seq, m);
  } catch (error) {
    if (error instanceof RequestError) {
      pending.state = "failed";
      pending.error = error.message;
    } else {
      // No answer: it may or may not be stored. Sending again with the
      // same clientMessageId is safe either way.
      pending.state = "waiting";
      setTimeout(() => deliver(channel, clientMessageId), RESEND_AFTER_MS);
    }
  }
  render({ scroll: true });
}

let lastTypingSent = 0;
let typingLater = null;
/** Tells the others at most every TYPING_SENT_EVERY_MS while there is a draft. */
function typed() {
  const channel = channels.get(openId);
  if (!channel || !$("#composer").content.value) return;
  const wait = lastTypingSent + TYPING_SENT_EVERY_MS - Date.now();
  if (wait > 0) {
    typingLater ??= setTimeout(() => {
      typingLater = null;
      typed();
    }, wait);
    return;
  }
  lastTypingSent = Date.now();
  graphql(`mutation Typing($channel: ID!) { setTyping(channel: $channel) }`, { channel: channel.id }).catch(() => {});
}

function showTyping(channel, userId) {
  clearTimeout(channel.typing.get(userId));
  channel.typing.set(userId, setTimeout(() => clearTyping(channel, userId), TYPING_SHOWN_MS));
}

function clearTyping(channel, userId) {
  if (!channel.typing.has(userId)) return;
  clearTimeout(channel.typing.get(userId));
  channel.typing.delete(userId);
  render();
}

// ----- rendering ----------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** scroll: to the newest message; keepTop: older messages went in above. */
function render({ scroll = false, keepTop = false } = {}) {
  renderChannels();
  renderConversation(scroll, keepTop);
}

function renderChannels() {
  const list = $("#channels");
  list.replaceChildren(
    ...[...channels.values()].map((c) =>
      el(
        "li",
        { "data-channel-id": c.id, class: c.id === openId ? "open" : "" },
        el(
          "button",
          { type: "button", onclick: () => openChannel(c.id).catch((error) => console.warn("opening the channel failed", error)) },
          el("span", { class: "name" }, `# ${c.displayName}`),
          c.unread > 0 ? el("span", { class: "badge", title: "unread" }, String(c.unread)) : null,
        ),
      ),
    ),
  );
}

function time(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderConversation(scroll, keepTop) {
  const channel = channels.get(openId);
  $("#no-channel").hidden = Boolean(channel);
  $("#channel-view").hidden = !channel;
  if (!channel) return;
  $("#channel-title").textContent = `# ${channel.displayName}`;
  $("#members").textContent = [...channel.members.keys()].join(", ");

  const box = $("#messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const messages = [...channel.messages.values()].sort((a, b) => a.seq - b.seq);

  // Each other member's read watermark is shown under the newest message
  // it covers (not under their own messages: they saw those).
  const seenAt = new Map();
  for (const [userId, lastRead] of channel.members) {
    if (userId === session.userId) continue;
    const covered = messages.filter((m) => m.seq <= lastRead && m.senderId !== userId);
    const last = covered[covered.length - 1];
    if (last) seenAt.set(last.seq, [...(seenAt.get(last.seq) ?? []), userId]);
  }

  const items = messages.map((m) => {
    const mine = m.senderId === session.userId;
    const seenBy = seenAt.get(m.seq);
    return el(
      "li",
      { class: `message${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`, "data-seq": m.seq },
      el("span", { class: "sender" }, m.system ? "system" : m.senderId),
      el("span", { class: "time" }, time(m.sentAt)),
      el("p", { class: "content" }, m.deleted ? "(deleted)" : m.content),
      m.editedAt && !m.deleted ? el("span", { class: "edited" }, "(edited)") : null,
      seenBy ? el("span", { class: "receipt" }, `Seen by ${seenBy.join(", ")}`) : null,
    );
  });
  for (const [id, pending] of channel.pending) {
    const label = { sending: "sending…", waiting: "waiting for the connection…", failed: `not sent: ${pending.error}` }[pending.state];
    items.push(
      el(
        "li",
        { class: `message mine pending ${pending.state}`, "data-client-id": id },
        el("span", { class: "sender" }, session.userId),
        el("p", { class: "content" }, pending.content),
        el("span", { class: "receipt" }, label),
        pending.state === "failed" ? el("button", { type: "button", onclick: () => deliver(channel, id) }, "Retry") : null,
      ),
    );
  }
  const heightBefore = box.scrollHeight;
  const topBefore = box.scrollTop;
  $("#message-list").replaceChildren(...items);
  $("#older").hidden = !channel.historyLoaded || channel.historyDone;
  $("#history-start").hidden = !channel.historyDone;
  if (keepTop) box.scrollTop = topBefore + box.scrollHeight - heightBefore;
  else if (scroll || nearBottom) box.scrollTop = box.scrollHeight;

  const typing = [...channel.typing.keys()];
  $("#typing").textContent =
    typing.length === 0 ? "" : `${typing.join(", ")} ${typing.length === 1 ? "is" : "are"} typing…`;
}

// ----- screens and controls -----------------------------------------------

async function openChannel(id) {
  const channel = channels.get(id);
  if (!channel) return;
  openId = id;
  sessionStorage.setItem(OPEN_CHANNEL_KEY, id);
  render({ scroll: true });
  if (!channel.historyLoaded) {
    await loadHistory(channel);
    render({ scroll: true });
  }
  if (readingNow(channel)) markRead(channel);
}

let loadingOlder = false;
async function loadOlder() {
  const channel = channels.get(openId);
  if (!channel || loadingOlder || !channel.historyLoaded || channel.historyDone) return;
  loadingOlder = true;
  try {
    await loadHistory(channel);
    render({ keepTop: true });
  } finally {
    loadingOlder = false;
  }
}

function showScreen(name) {
  $("#login").hidden = name !== "login";
  $("#chat").hidden = name !== "chat";
  $("#sign-out").hidden = name !== "chat";
}

function signOut(message = "") {
  follow.stop();
  follow = { generation: follow.generation + 1, stop: () => {} };
  session = null;
  channels.clear();
  openId = null;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(OPEN_CHANNEL_KEY);
  $("#me").textContent = "";
  setStatus("offline");
  $("#token-login .error").textContent = message;
  showScreen("login");
}

/** Loads everything from scratch, then follows from there. */
async function resync() {
  await loadChannels();
  const wanted = sessionStorage.getItem(OPEN_CHANNEL_KEY);
  openId = null;
  showScreen("chat");
  startFollowing();
  const first = channels.has(wanted) ? wanted : channels.keys().next().value;
  if (first) await openChannel(first);
  else render();
}

/** Starts a session; retries while the server cannot be reached. */
async function begin(next) {
  saveSession(next);
  let delay = 1000;
  while (session?.userId === next.userId) {
    try {
      await resync();
      return;
    } catch (error) {
      if (error instanceof RequestError) {
        return signOut(error.code === "UNAUTHENTICATED" ? `This token was refused: ${error.message}` : error.message);
      }
      setStatus("reconnecting", `server unreachable, retrying in ${Math.round(delay / 1000)} s…`);
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
    }
  }
}

$("#dev-login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const userId = form.userId.value.trim();
  const name = form.name.value.trim() || null;
  const error = form.querySelector(".error");
  error.textContent = "";
  try {
    const minted = await postJson("/demo/login", { userId, name });
    await begin({ token: minted.token, userId: minted.userId, name, dev: true });
  } catch (e) {
    error.textContent =
      e.code === "DEV_MODE_OFF"
        ? "Dev login is off here: the management API has a token or is not on loopback, or this browser is not on the server's machine. Paste a token instead."
        : e.message;
  }
});

$("#token-login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = event.currentTarget.token.value.trim();
  event.currentTarget.querySelector(".error").textContent = "";
  let userId = "";
  try {
    userId = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub;
  } catch {
    event.currentTarget.querySelector(".error").textContent = "That is not a JWT.";
    return;
  }
  await begin({ token, userId, name: null, dev: false });
});

$("#join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const hint = event.currentTarget.querySelector(".hint");
  hint.textContent = "";
  try {
    const joined = await postJson("/demo/join", { channel: event.currentTarget.channel.value.trim() }, await freshToken());
    if (!channels.has(joined.id)) {
      const { channel: c } = await graphql(`query Joined($id: ID!) { channel(id: $id) { ...ChannelFields } } ${CHANNEL_FIELDS}`, { id: joined.id });
      if (!channels.has(joined.id)) addChannel(c);
      // A new subscription includes the channel from its current seq on.
      startFollowing();
    }
    await openChannel(joined.id);
  } catch (e) {
    hint.textContent =
      e.code === "DEV_MODE_OFF"
        ? "Joining by name needs dev mode. Ask your application's server to add you (PUT /api/v1/channel/{id}/users)."
        : e.message;
  }
});

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.currentTarget.content;
  const content = input.value;
  const channel = channels.get(openId);
  if (!channel || !content.trim()) return;
  input.value = "";
  send(channel, content);
});
$("#composer").content.addEventListener("input", typed);
$("#older").addEventListener("click", loadOlder);
$("#messages").addEventListener("scroll", (event) => {
  if (event.currentTarget.scrollTop < 40) loadOlder();
});
$("#sign-out").addEventListener("click", () => signOut());
document.addEventListener("visibilitychange", () => {
  const channel = channels.get(openId);
  if (channel && readingNow(channel)) markRead(channel);
});

const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
if (saved) begin(saved);
else signOut();
