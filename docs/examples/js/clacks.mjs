// What every Clacks client needs, whichever GraphQL library it uses: tokens
// from your application's server, a graphql-ws client that leaves
// reconnecting to us, a resume point per channel, and a loop that acts on
// each close code. Browser-ready (standard fetch and WebSocket); the
// Apollo, urql and graphql-ws examples next to it build on it.

import { createClient } from "graphql-ws";

/**
 * Tokens from your application's server, which signs them (see token.mjs).
 * `fetchToken()` resolves to `{ token, expiresAt }` (seconds) or throws
 * when the app will not give one (signed out, access revoked). A token is
 * reused until a minute before it expires.
 */
export function tokenSource(fetchToken) {
  let current = null;
  return {
    async get() {
      if (!current || current.expiresAt * 1000 - Date.now() < 60_000) {
        current = await fetchToken();
      }
      return current.token;
    },
    /** Drops the cached token: the next connection asks the app again. */
    forget() {
      current = null;
    },
  };
}

/** `fetchToken` for tokenSource: GET `url` on your app (with its cookies). */
export function fetchTokenFrom(url) {
  return async () => {
    const response = await fetch(url, { credentials: "include" });
    if (!response.ok) throw new TokenRefused(response.status);
    return response.json();
  };
}

/** Your application's server would not give a token. */
export class TokenRefused extends Error {
  constructor(status) {
    super(`the application's server refused a token (HTTP ${status})`);
    this.name = "TokenRefused";
    this.status = status;
  }
}

// #region websocket
/**
 * A graphql-ws client for Clacks, and the code of the last close.
 *
 * `retryAttempts: 0` on purpose: the library's own retry resubscribes
 * with the variables of the first subscribe, so every reconnect would
 * resume from the seqs of back then and replay events already handled.
 * followEvents reconnects instead, with the current resume points.
 */
export function clacksWebSocket({ url, tokens }) {
  let lastClose;
  const client = createClient({
    url,
    // Browsers cannot set headers on a WebSocket: the token goes in
    // connection_init. Asked for on every connect, so a fresh one
    // replaces an expired one.
    connectionParams: async () => ({ authorization: `Bearer ${await tokens.get()}` }),
    retryAttempts: 0,
    on: {
      connecting: () => {
        lastClose = undefined;
      },
      closed: (event) => {
        lastClose = event;
      },
    },
  });
  // A socket that failed before it opened (refused, HTTP 429/503) has no
  // close frame: 1006, as browsers report it.
  return { client, lastCloseCode: () => lastClose?.code ?? 1006 };
}
// #endregion

/**
 * One subscription ended because its socket closed with `code`. Libraries
 * report a close their own way; the examples read the code from
 * clacksWebSocket's `lastCloseCode()` instead.
 */
export class SocketClosed extends Error {
  constructor(code) {
    super(`WebSocket closed with ${code}`);
    this.name = "SocketClosed";
    this.code = code;
  }
}

/**
 * The seq of the last durable event handled in each channel, which is
 * where the next subscription resumes. Also drops what was handled
 * already, so a replay that overlaps cannot show a message twice.
 */
export class ResumePoints {
  #lastSeq = new Map();

  /** Starts from what the app has loaded: `channels { id lastSeq }`. */
  seed(channels) {
    for (const { id, lastSeq } of channels) {
      if (!this.#lastSeq.has(id)) this.#lastSeq.set(id, lastSeq);
    }
  }

  /** The `resume` variable of the next `events` subscription. */
  variables() {
    return [...this.#lastSeq].map(([channel, afterSeq]) => ({ channel, afterSeq }));
  }

  /** Whether `event` is new. Durable events move their channel's point. */
  accept(event) {
    if (!event.durable) return true; // typing, read receipts: never replayed
    const last = this.#lastSeq.get(event.channelId);
    if (last !== undefined && event.seq <= last) return false;
    this.#lastSeq.set(event.channelId, event.seq);
    return true;
  }
}

/**
 * What to do when the socket closed with `code` (the README's table),
 * after `attempt` failed attempts in a row, the last of which closed with
 * `previous`. "resume": reconnect after `delayMs` and resume; with
 * `newToken`, ask the app for a fresh token first. "stop": a bug, or a
 * decision to respect; retrying would not help.
 */
export function closeAction(code, attempt, previous) {
  const backoff = Math.min(30_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
  switch (code) {
    case 1001: // the node is shutting down: another one takes over
    case 4008: // this client fell behind; its resume points lose nothing
      return { action: "resume", delayMs: attempt === 0 ? 0 : backoff };
    case 4401: // the token expired
      return { action: "resume", newToken: true, delayMs: 0 };
    case 4001: // your app disconnected the user: the app decides, by
      // giving a new token or not (TokenRefused ends the loop)
      return { action: "resume", newToken: true, delayMs: backoff };
    case 4403: // token rejected: a new one; twice in a row means the
      // app signs them wrong (secret, iss, aud)
      return previous === 4403 ? { action: "stop" } : { action: "resume", newToken: true, delayMs: 0 };
    case 4029: // this user holds too many connections on that node
      return { action: "resume", delayMs: Math.max(backoff, 10_000) };
    case 1009: // a message over the server's size limit
    case 4400: // a malformed message
    case 4409: // an operation id already in use
    case 4429: // a second connection_init
      return { action: "stop" };
    default: // network, proxy, 4408 (init timeout): again, slower each time
      return { action: "resume", delayMs: backoff };
  }
}

/**
 * Follows every event of the user's channels until `signal` aborts or
 * something says stop; then rejects with why.
 *
 * `subscribeOnce(variables, onEvent)` runs one `events` subscription with
 * your GraphQL library and settles when it ends: resolves when the server
 * completed it, rejects with SocketClosed when the socket closed, or with
 * the array of GraphQL errors it ended with.
 */
export async function followEvents({ subscribeOnce, resume, tokens, onEvent, signal }) {
  let attempt = 0; // failed attempts in a row: an event resets it
  let previous; // the close code that ended the last of them
  while (!signal?.aborted) {
    let delayMs = 0;
    try {
      // Asked here rather than in connection_init only, so that a refusal
      // (TokenRefused) ends the loop instead of failing each connect.
      await tokens.get();
      await subscribeOnce({ resume: resume.variables() }, (event) => {
        attempt = 0;
        previous = undefined;
        if (resume.accept(event)) onEvent(event);
      });
      return; // completed by the server
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof SocketClosed) {
        const next = closeAction(error.code, attempt++, previous);
        previous = error.code;
        if (next.action === "stop") throw error;
        if (next.newToken) tokens.forget();
        delayMs = next.delayMs;
      } else if (error?.[0]?.extensions?.code === "RATE_LIMITED") {
        delayMs = error[0].extensions.retryAfterMs;
      } else {
        throw error; // TokenRefused, FORBIDDEN, a bug in the query...
      }
    }
    await sleep(delayMs, signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The subscription every example runs; `resume` comes from ResumePoints. */
export const EVENTS = `subscription Events($resume: [ResumeInput!]) {
  events(resume: $resume) {
    __typename channelId seq durable
    ... on MessageCreated { message { id seq content sender { id } } }
  }
}`;

export const CHANNELS = `query Channels { channels { id displayName lastSeq unreadCount } }`;

export const SEND = `mutation Send($channel: ID!, $content: String!, $clientMessageId: String) {
  createMessage(input: { channel: $channel, content: $content, clientMessageId: $clientMessageId }) { id seq }
}`;
