"""Minting Clacks tokens in your application's server (Python), with PyJWT.

Your server knows who the user is (its own session); Clacks trusts what
the token says. Never mint on a user's device: the secret signs tokens
for anyone.

    python clacks_token.py alice --name Alice --ttl 3600   # prints a token
"""

import argparse
import os
import time

import jwt

# Clacks' settings that tokens must match: the values the server runs with.
SECRET = os.environ.get("JWT_SECRET")
ISSUER = os.environ.get("CLACKS_JWT_ISSUER") or None
AUDIENCE = os.environ.get("CLACKS_JWT_AUDIENCE") or None


def mint_token(user_id, *, name=None, ttl_seconds=3600, claims=None):
    """A token for `user_id` and when it expires (seconds since the epoch).

    HS256, `sub` (the user id), `nbf` and `exp` (required by Clacks),
    `iss`/`aud` when configured. `name` and any other claims show up on
    the user's `me { name claims }`.
    """
    if not SECRET:
        raise RuntimeError("set JWT_SECRET to the key Clacks runs with")
    now = int(time.time())
    payload = {**(claims or {}), "sub": user_id, "nbf": now, "exp": now + ttl_seconds}
    if name:
        payload["name"] = name
    if ISSUER:
        payload["iss"] = ISSUER
    if AUDIENCE:
        payload["aud"] = AUDIENCE
    return jwt.encode(payload, SECRET, algorithm="HS256"), payload["exp"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print a Clacks token for a user.")
    parser.add_argument("user_id")
    parser.add_argument("--name")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args()
    token, _ = mint_token(args.user_id, name=args.name, ttl_seconds=args.ttl)
    print(token)
