"""An example actions module: load it with ``roomcast start --actions examples/actions``."""

from roomcast import Action, ActionData, ChatMiddleware


class Greet(Action):
    name = "greet"
    description = "Say hello to someone."
    inputs = {
        "name": {"required": True, "formatter": str.strip},
        "times": {"default": 1, "formatter": int},
    }

    async def run(self, data: ActionData) -> None:
        hello = f"Hello, {data.params['name']}!"
        data.response["greeting"] = " ".join([hello] * data.params["times"])


def shout(connection, room, payload):
    """onSayReceive: upper-case every message said in the room "loud"."""
    if room == "loud":
        payload["message"] = str(payload["message"]).upper()
    return payload


# A room only some connections may join: see examples/private_room (a password checked
# by a "login" action, and a join middleware for the rooms named "private:*").


def initialize(api):
    """Runs once at start, after the actions of this module are registered."""
    api.chat_room.add_middleware(ChatMiddleware(name="shout", on_say_receive=shout))
