"""An action that answers with the address the node recorded for its connection."""

from __future__ import annotations

from roomcast import Action, ActionData


class WhoAmI(Action):
    name = "whoami"
    description = "The remote address of this connection."

    async def run(self, data: ActionData) -> None:
        data.response["remoteIP"] = data.connection.remote_ip
