"""The schemathesis check of scripts/graphql-fuzz.sh (loaded through
SCHEMATHESIS_HOOKS). schemathesis' own `not_a_server_error` counts every
resolver error of a GraphQL answer as a server failure, FORBIDDEN or
NOT_FOUND included, which are Clacks' documented answers to a stranger's
ids; this check fails on what is a server failure here: a 5xx, an answer
that is not JSON, an error with `extensions.code = INTERNAL`, or an error
without a code (README: every error carries `extensions.code`)."""

import json

import schemathesis


@schemathesis.check
def no_internal_error(ctx, response, case):
    """No 5xx, no `INTERNAL` (a bug: a panic caught, an unexpected state),
    and no error without a code."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.content[:200]!r}")
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        raise AssertionError(f"not JSON (HTTP {response.status_code}): {response.content[:200]!r}") from None
    for item in body if isinstance(body, list) else [body]:
        for error in (item or {}).get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            if code is None:
                raise AssertionError(f"an error without extensions.code: {error}")
            if code == "INTERNAL":
                raise AssertionError(f"INTERNAL: {error}")
