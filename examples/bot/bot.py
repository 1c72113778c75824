"""A chat bot on the Python client: it sits in a room and answers ``!time``.

    python examples/bot/bot.py --url ws://127.0.0.1:8080/ws --room defaultRoom

Say ``!time`` in the room (``say defaultRoom !time`` over telnet) and the bot answers
``the time is 2026-12-01T12:00:00Z`` (UTC). It ignores its own messages and stops on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
from typing import Any

from roomcast.client import WebSocketClient


def answer(text: Any) -> str | None:
    """The bot's reply to a chat message's text, or None when it has nothing to say."""
    if isinstance(text, str) and text.strip() == "!time":
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return f"the time is {now.isoformat().replace('+00:00', 'Z')}"
    return None


async def run(url: str, room: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WebSocketClient(url) as client:
        me = (await client.details_view())["id"]

        async def on_say(message: dict[str, Any]) -> None:
            if message["room"] != room or message["from"] == me:
                return
            reply = answer(message["message"])
            if reply is not None:
                await client.say(room, reply)

        client.on_say(on_say)
        await client.room_add(room)
        print(f"bot ready in {room} as {me}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A roomcast bot that answers !time.")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the node's /ws URL")
    parser.add_argument("--room", default="defaultRoom", help="the room to sit in")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.room))


if __name__ == "__main__":
    main()
