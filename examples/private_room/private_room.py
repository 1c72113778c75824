"""A private room: only connections that logged in with the room's password may join
the rooms named ``private:*``.

Run it with ``PRIVATE_ROOM_PASSWORD=change-this roomcast start --actions examples/private_room``.
"""

import hmac
import logging
import os

from roomcast import Action, ActionData, ChatMiddleware

log = logging.getLogger("roomcast.examples.private_room")

#: Rooms whose names start with this are private.
PRIVATE_PREFIX = "private:"
#: A private room that exists from the start.
LOUNGE = "private:lounge"


def room_password() -> str | None:
    """The password from the node's environment; None (nobody may log in) when unset."""
    return os.environ.get("PRIVATE_ROOM_PASSWORD") or None


class Login(Action):
    # Not "authenticate": that name is kept for roomcast's own token action.
    name = "login"
    description = "Unlock the private:* rooms for this connection with the room password."
    inputs = {"password": {"required": True, "formatter": str}}

    async def run(self, data: ActionData) -> None:
        expected = room_password()
        given = data.params["password"]
        # compare_digest takes as long whatever the first wrong character: no timing hint.
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise PermissionError("wrong password")
        data.connection.authenticated = True
        data.response["authenticated"] = True


def private_rooms_need_login(connection, room):
    """join: a private room admits only connections that logged in."""
    if room.startswith(PRIVATE_PREFIX) and not getattr(connection, "authenticated", False):
        raise PermissionError("not authorized")


async def initialize(api):
    """Runs once at start: install the join check and create the lounge."""
    if room_password() is None:
        log.warning("PRIVATE_ROOM_PASSWORD is not set: nobody can log in to the private rooms")
    api.chat_room.add_middleware(
        ChatMiddleware(name="private rooms", join=private_rooms_need_login)
    )
    await api.chat_room.add(LOUNGE)
