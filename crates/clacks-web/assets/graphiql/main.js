// GraphiQL for Clacks: queries and mutations over HTTP, subscriptions over
// graphql-transport-ws (the graphql-ws client). The token field's value is
// sent as `Authorization: Bearer` over HTTP and in `connection_init` over
// WebSocket (browsers cannot set headers on a WebSocket), and kept in
// localStorage. A token can also be handed over in the URL fragment
// (`/graphiql#token=...`, as the demo page does); it is moved to the field
// and removed from the address bar.
import {
  createElement,
  createRoot,
  GraphiQL,
  createGraphiQLFetcher,
  createClient,
} from "/assets/vendor/graphiql.js";

const TOKEN_KEY = "clacks.graphiql.token";
const httpUrl = new URL("/graphql", location.href).href;
const wsUrl = httpUrl.replace(/^http/, "ws");

const DEFAULT_QUERY = `# Clacks GraphQL API. Put a client token in the field above: from your
# application's server, from the management API (GET /api/v1/jwt/{uid} on
# the management port), or from the demo page's "Open in GraphiQL".
# Several operations: pick one with the run button.

query Me {
  me { id name }
  channels {
    id displayName unreadCount lastReadSeq
    lastMessage { seq content sentAt sender { id } }
  }
}

mutation Send($channel: ID!, $content: String!) {
  createMessage(input: { channel: $channel, content: $content }) { id seq }
}

# Runs over WebSocket until you stop it; resume with
# events(resume: [{ channel: "1", afterSeq: 42 }]).
subscription Events {
  events {
    __typename channelId seq durable
    ... on MessageCreated { message { seq content sender { id } } }
    ... on ReadReceipt { userId lastReadSeq }
    ... on Typing { userId }
  }
}
`;

const field = document.getElementById("token");
const who = document.getElementById("who");
const root = createRoot(document.getElementById("graphiql"));

const handedOver = new URLSearchParams(location.hash.slice(1)).get("token");
if (handedOver) {
  localStorage.setItem(TOKEN_KEY, handedOver);
  history.replaceState(null, "", location.pathname + location.search);
}
field.value = localStorage.getItem(TOKEN_KEY) ?? "";

// Who the token speaks for, for display only: the server checks it.
function describe(token) {
  if (!token) return "no token";
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    const expires = new Date(claims.exp * 1000);
    const state = expires < new Date() ? "expired" : "expires";
    return `${claims.sub} · ${state} ${expires.toLocaleString()}`;
  } catch {
    return "not a JWT";
  }
}

let wsClient = null;

// A new token means a new fetcher: GraphiQL then fetches the schema again
// (introspection needs a token too), and subscriptions use a new socket.
function mount() {
  const token = field.value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  who.textContent = describe(token);
  wsClient?.dispose();
  wsClient = createClient({
    url: wsUrl,
    connectionParams: () => (token ? { authorization: `Bearer ${token}` } : {}),
    // GraphiQL shows a failed subscription; the user runs it again.
    retryAttempts: 0,
  });
  const fetcher = createGraphiQLFetcher({
    url: httpUrl,
    wsClient,
    // Headers typed in GraphiQL's header editor take precedence.
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  root.render(
    createElement(GraphiQL, {
      fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultEditorToolsVisibility: true,
    }),
  );
}

field.addEventListener("change", mount);
mount();
