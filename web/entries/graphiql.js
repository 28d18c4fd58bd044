// What the GraphiQL page (crates/clacks-web/assets/graphiql/main.js) needs,
// bundled once with React in production mode.
import "graphiql/graphiql.css";

export { createElement } from "react";
export { createRoot } from "react-dom/client";
export { GraphiQL } from "graphiql";
export { createGraphiQLFetcher } from "@graphiql/toolkit";
export { createClient } from "graphql-ws";
