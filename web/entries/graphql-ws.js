// The graphql-ws client for the demo chat page.
export { createClient } from "graphql-ws";
