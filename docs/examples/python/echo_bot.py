"""A Clacks bot with the Python `gql` library, over one WebSocket.

It follows every channel it is a member of, prints the channels, then
each message, as JSON lines, and answers "!echo TEXT" with TEXT: once per command, even
when a reconnect replays events to it. A bot runs next to your
application's server and holds the secret, so it mints its own tokens
(clacks_token.py); an app on a user's device would fetch them instead.

    JWT_SECRET=... CLACKS_WS_URL=ws://127.0.0.1:8000/graphql python echo_bot.py
"""

import asyncio
import json
import os
import random

from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportError, TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from clacks_token import mint_token

URL = os.environ.get("CLACKS_WS_URL", "ws://127.0.0.1:8000/graphql")
BOT = os.environ.get("CLACKS_BOT_USER", "echo-bot")

CHANNELS = "query Channels { channels { id lastSeq } }"
EVENTS = """subscription Events($resume: [ResumeInput!]) {
  events(resume: $resume) {
    __typename channelId seq durable
    ... on MessageCreated { message { id seq content sender { id } } }
  }
}"""
SEND = """mutation Send($channel: ID!, $content: String!, $clientMessageId: String) {
  createMessage(input: { channel: $channel, content: $content, clientMessageId: $clientMessageId }) { seq }
}"""


class ResumePoints:
    """The seq of the last durable event handled in each channel, where the
    next subscription resumes; also tells what was handled already."""

    def __init__(self):
        self.last_seq = {}

    def seed(self, channels):
        for channel in channels:
            self.last_seq.setdefault(channel["id"], channel["lastSeq"])

    def variables(self):
        return [{"channel": c, "afterSeq": seq} for c, seq in self.last_seq.items()]

    def is_new(self, event):
        last = self.last_seq.get(event["channelId"])
        # Typing and read receipts are never replayed: always new.
        return not event["durable"] or last is None or event["seq"] > last

    def handled(self, event):
        if event["durable"]:
            self.last_seq[event["channelId"]] = event["seq"]


def close_code(error):
    """The WebSocket close code behind a gql error; 1006 when the
    connection dropped (or never opened) without one."""
    while error is not None:
        if isinstance(error, ConnectionClosed):
            return error.rcvd.code if error.rcvd else 1006
        error = error.__cause__ or error.__context__
    return 1006


def close_action(code, attempt, previous):
    """(reconnect?, delay in seconds, new token?) for a close with `code`,
    after `attempt` failed attempts in a row, the last of which closed with
    `previous`: the README's table."""
    backoff = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
    if code in (1001, 4008):  # node shutting down; this bot fell behind
        return True, 0.0 if attempt == 0 else backoff, False
    if code in (4401, 4001):  # token expired; the app disconnected us
        return True, backoff if code == 4001 else 0.0, True
    if code == 4403:  # token rejected: a new one; twice in a row, a bug
        return previous != 4403, 0.0, True
    if code == 4029:  # too many connections for this user on that node
        return True, max(backoff, 10.0), False
    if code in (1009, 4400, 4409, 4429):  # bugs: retrying would not help
        return False, 0.0, False
    return True, backoff, False  # network, proxy, init timeout


async def on_event(session, event):
    if event["__typename"] != "MessageCreated":
        return
    message = event["message"]
    sender = message["sender"]["id"] if message["sender"] else None
    print(json.dumps({"seq": message["seq"], "content": message["content"], "sender": sender}), flush=True)
    if sender != BOT and message["content"].startswith("!echo "):
        # Keyed by the command: a retry, or a second bot process after a
        # crash, gets the stored reply back instead of a second one.
        request = GraphQLRequest(SEND, variable_values={
            "channel": event["channelId"],
            "content": message["content"].removeprefix("!echo "),
            "clientMessageId": f"echo-{message['id']}",
        })
        await session.execute(request)


async def run():
    resume = ResumePoints()
    token = None
    attempt = 0  # failed attempts in a row: an event resets it
    previous = None  # the close code that ended the last of them
    while True:
        if token is None:
            token, _ = mint_token(BOT, name="Echo bot")
        transport = WebsocketsTransport(
            url=URL,
            init_payload={"authorization": f"Bearer {token}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        try:
            async with Client(transport=transport) as session:
                channels = (await session.execute(GraphQLRequest(CHANNELS)))["channels"]
                resume.seed(channels)
                print(json.dumps({"following": [c["id"] for c in channels]}), flush=True)
                request = GraphQLRequest(EVENTS, variable_values={"resume": resume.variables()})
                async for data in session.subscribe(request):
                    attempt, previous = 0, None
                    event = data["events"]
                    if resume.is_new(event):
                        await on_event(session, event)
                        # Only now: an event whose handling failed (say
                        # the answer was RATE_LIMITED) comes back after
                        # the reconnect, and its answer is retried.
                        resume.handled(event)
            return  # completed by the server
        except TransportQueryError as error:  # GraphQL errors
            extensions = (error.errors or [{}])[0].get("extensions", {})
            if extensions.get("code") != "RATE_LIMITED":
                raise
            delay = extensions["retryAfterMs"] / 1000
        except (TransportError, OSError, asyncio.TimeoutError) as error:  # closed, or no connection
            code = close_code(error)
            again, delay, new_token = close_action(code, attempt, previous)
            attempt, previous = attempt + 1, code
            if not again:
                raise
            if new_token:
                token = None
        await asyncio.sleep(delay)


if __name__ == "__main__":
    asyncio.run(run())
