"""Actions the cluster tests call to reach the chat-room API of a node from outside."""

from __future__ import annotations

from roomcast import Action, ActionData


class AddMember(Action):
    name = "addMember"
    description = "api.chat_room.add_member(connectionId, room) for a connection of any node."
    inputs = {"connectionId": {"required": True}, "room": {"required": True}}

    async def run(self, data: ActionData) -> None:
        params = data.params
        added = await data.api.chat_room.add_member(params["connectionId"], params["room"])
        data.response["added"] = added


class RemoveMember(Action):
    name = "removeMember"
    description = "api.chat_room.remove_member(connectionId, room) for any node's connection."
    inputs = {"connectionId": {"required": True}, "room": {"required": True}}

    async def run(self, data: ActionData) -> None:
        params = data.params
        removed = await data.api.chat_room.remove_member(params["connectionId"], params["room"])
        data.response["removed"] = removed


class RoomStatus(Action):
    name = "roomStatus"
    description = "api.chat_room.room_status(room), whether or not the caller is a member."
    inputs = {"room": {"required": True}}

    async def run(self, data: ActionData) -> None:
        data.response["status"] = await data.api.chat_room.room_status(data.params["room"])


class DestroyRoom(Action):
    name = "destroyRoom"
    description = "api.chat_room.destroy(room)."
    inputs = {"room": {"required": True}}

    async def run(self, data: ActionData) -> None:
        await data.api.chat_room.destroy(data.params["room"])
        data.response["destroyed"] = True
