// Minting Clacks tokens in your application's server (Node), with the
// `jsonwebtoken` package. Your server knows who the user is (its own
// session); Clacks trusts what the token says. Never mint in a browser:
// the secret signs tokens for anyone.

import jwt from "jsonwebtoken";

/**
 * Clacks' settings that tokens must match: the same values the server
 * runs with (JWT_SECRET, and CLACKS_JWT_ISSUER / CLACKS_JWT_AUDIENCE when
 * it checks them).
 */
export const clacks = {
  secret: process.env.JWT_SECRET,
  issuer: process.env.CLACKS_JWT_ISSUER || undefined,
  audience: process.env.CLACKS_JWT_AUDIENCE || undefined,
};

/**
 * A token for `userId`: HS256, `sub` (the user id), `nbf` (now) and `exp`
 * (required by Clacks), `iss`/`aud` when configured. `name` and any other
 * claims show up on the user's `me { name claims }`.
 */
export function mintToken(userId, { name, ttlSeconds = 3600, claims = {} } = {}) {
  const token = jwt.sign({ ...claims, ...(name && { name }) }, clacks.secret, {
    algorithm: "HS256",
    subject: userId,
    expiresIn: ttlSeconds,
    notBefore: 0,
    ...(clacks.issuer && { issuer: clacks.issuer }),
    ...(clacks.audience && { audience: clacks.audience }),
  });
  return { token, expiresAt: jwt.decode(token).exp };
}

/**
 * A request handler for `GET /clacks-token` in your app's server
 * (node:http here; the same three lines in Express or Fastify):
 * `currentUser(request)` is your session lookup, `null` when signed out.
 */
export function tokenHandler(currentUser) {
  return async (request, response) => {
    const user = await currentUser(request);
    if (!user) {
      response.writeHead(401).end();
      return;
    }
    const body = JSON.stringify(mintToken(user.id, { name: user.name }));
    response.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    response.end(body);
  };
}
