// The graphql-ws library in a browser, no framework: queries and
// mutations over HTTP with fetch, events over the WebSocket, resumed
// after every reconnect. Import it from your bundle (or map "graphql-ws"
// in an import map) like any npm dependency.

import {
  CHANNELS,
  EVENTS,
  ResumePoints,
  SEND,
  SocketClosed,
  clacksWebSocket,
  fetchTokenFrom,
  followEvents,
  tokenSource,
} from "./clacks.mjs";

/**
 * Signs in to Clacks with a token from your app (`tokenUrl`), loads the
 * user's channels, and calls `onMessage(message, channelId)` for every
 * new message of every channel, once each, in order, across reconnects.
 * `following` settles when it stops for good (see followEvents).
 */
export async function startChat({ graphqlUrl, wsUrl, tokenUrl, onMessage, signal }) {
  const tokens = tokenSource(fetchTokenFrom(tokenUrl));
  const ws = clacksWebSocket({ url: wsUrl, tokens });

  async function request(query, variables) {
    const response = await fetch(graphqlUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${await tokens.get()}`,
      },
      body: JSON.stringify({ query, variables }),
    });
    const { data, errors } = await response.json();
    if (errors) throw errors;
    return data;
  }

  const resume = new ResumePoints();
  resume.seed((await request(CHANNELS)).channels);

  const following = followEvents({
    resume,
    tokens,
    signal,
    subscribeOnce: (variables, onEvent) =>
      new Promise((resolve, reject) => {
        const unsubscribe = ws.client.subscribe(
          { query: EVENTS, variables },
          {
            next: ({ data }) => onEvent(data.events),
            // An array of GraphQL errors, or a close (or error) event.
            error: (error) =>
              reject(Array.isArray(error) ? error : new SocketClosed(ws.lastCloseCode())),
            complete: resolve,
          },
        );
        signal?.addEventListener("abort", unsubscribe);
      }),
    onEvent: (event) => {
      if (event.__typename === "MessageCreated") onMessage(event.message, event.channelId);
    },
  });

  return {
    following,
    // The same clientMessageId on a retry returns the message stored the
    // first time instead of storing it twice.
    send: (channel, content, clientMessageId = crypto.randomUUID()) =>
      request(SEND, { channel, content, clientMessageId }),
    close: () => ws.client.dispose(),
  };
}
