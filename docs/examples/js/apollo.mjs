// Apollo Client 4: queries and mutations over HTTP, subscriptions over
// graphql-ws (GraphQLWsLink), events resumed after every reconnect.
// React apps pass the same client to <ApolloProvider>.

import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
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

export function createApollo({ graphqlUrl, wsUrl, tokens }) {
  const ws = clacksWebSocket({ url: wsUrl, tokens });
  const http = new SetContextLink(async ({ headers }) => ({
    headers: { ...headers, authorization: `Bearer ${await tokens.get()}` },
  })).concat(new HttpLink({ uri: graphqlUrl }));
  const isSubscription = ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  };
  const apollo = new ApolloClient({
    link: ApolloLink.split(isSubscription, new GraphQLWsLink(ws.client), http),
    cache: new InMemoryCache(),
  });
  return { apollo, ws };
}

/** The same chat as graphql-ws.mjs, through Apollo Client. */
export async function startChat({ graphqlUrl, wsUrl, tokenUrl, onMessage, signal }) {
  const tokens = tokenSource(fetchTokenFrom(tokenUrl));
  const { apollo, ws } = createApollo({ graphqlUrl, wsUrl, tokens });

  const resume = new ResumePoints();
  const { data } = await apollo.query({ query: gql(CHANNELS), fetchPolicy: "network-only" });
  resume.seed(data.channels);

  const following = followEvents({
    resume,
    tokens,
    signal,
    subscribeOnce: (variables, onEvent) =>
      new Promise((resolve, reject) => {
        // Events are a stream, not cache entries: "no-cache" also spares
        // the cache from matching fragments on the ChannelEvent interface.
        const subscription = apollo
          .subscribe({ query: gql(EVENTS), variables, fetchPolicy: "no-cache" })
          .subscribe({
            // Apollo 4 reports errors in the result, then completes.
            next: ({ data, error }) => {
              if (!error) onEvent(data.events);
              else if (CombinedGraphQLErrors.is(error)) reject(error.errors);
              else reject(new SocketClosed(ws.lastCloseCode()));
            },
            complete: resolve,
          });
        signal?.addEventListener("abort", () => {
          subscription.unsubscribe();
          resolve();
        });
      }),
    onEvent: (event) => {
      if (event.__typename === "MessageCreated") onMessage(event.message, event.channelId);
    },
  });

  return {
    following,
    send: async (channel, content, clientMessageId = crypto.randomUUID()) =>
      (await apollo.mutate({ mutation: gql(SEND), variables: { channel, content, clientMessageId } })).data,
    close: () => ws.client.dispose(),
  };
}
