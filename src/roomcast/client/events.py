"""What the client tells ``on_disconnect`` and ``on_reconnect`` handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection went down (or the client stopped trying to bring it back).

    ``will_reconnect`` is True while the client keeps trying by itself; False after
    ``disconnect()``, when reconnecting is off, or once it gave up.
    """

    url: str
    reason: str
    will_reconnect: bool


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The client is connected again (to ``url``) and re-joined ``rooms``.

    ``failed_rooms`` maps each room it could not re-join to the server's error, e.g.
    ``room does not exist`` after a restart of a node with an embedded store; those rooms
    are no longer in ``client.rooms``.
    """

    url: str
    attempt: int
    rooms: tuple[str, ...]
    failed_rooms: Mapping[str, str] = field(default_factory=dict)
