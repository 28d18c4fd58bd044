// urql (@urql/core; React, Vue and Svelte bindings take the same client):
// queries and mutations over HTTP, subscriptions over graphql-ws through
// subscriptionExchange, events resumed after every reconnect.

import { Client, fetchExchange, subscriptionExchange } from "@urql/core";
import { onEnd, pipe, subscribe } from "wonka";
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

export function createUrql({ graphqlUrl, wsUrl, tokens }) {
  const ws = clacksWebSocket({ url: wsUrl, tokens });
  const urql = new Client({
    url: graphqlUrl,
    // fetchOptions cannot wait for a token; a fetch wrapper can.
    fetch: async (url, init) =>
      fetch(url, {
        ...init,
        headers: { ...init.headers, authorization: `Bearer ${await tokens.get()}` },
      }),
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.client.subscribe(request, sink) }),
        }),
      }),
    ],
  });
  return { urql, ws };
}

/** The same chat as graphql-ws.mjs, through urql. */
export async function startChat({ graphqlUrl, wsUrl, tokenUrl, onMessage, signal }) {
  const tokens = tokenSource(fetchTokenFrom(tokenUrl));
  const { urql, ws } = createUrql({ graphqlUrl, wsUrl, tokens });

  const resume = new ResumePoints();
  const channels = await urql.query(CHANNELS, {}, { requestPolicy: "network-only" }).toPromise();
  if (channels.error) throw channels.error;
  resume.seed(channels.data.channels);

  const following = followEvents({
    resume,
    tokens,
    signal,
    subscribeOnce: (variables, onEvent) =>
      new Promise((resolve, reject) => {
        const { unsubscribe } = pipe(
          urql.subscription(EVENTS, variables),
          onEnd(resolve),
          subscribe(({ data, error }) => {
            if (!error) return onEvent(data.events);
            // urql reports errors as a result; this subscription is over.
            reject(error.graphQLErrors.length ? error.graphQLErrors : new SocketClosed(ws.lastCloseCode()));
            unsubscribe();
          }),
        );
        signal?.addEventListener("abort", unsubscribe);
      }),
    onEvent: (event) => {
      if (event.__typename === "MessageCreated") onMessage(event.message, event.channelId);
    },
  });

  return {
    following,
    send: async (channel, content, clientMessageId = crypto.randomUUID()) => {
      const result = await urql.mutation(SEND, { channel, content, clientMessageId }).toPromise();
      if (result.error) throw result.error;
      return result.data;
    },
    close: () => ws.client.dispose(),
  };
}
