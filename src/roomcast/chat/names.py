"""Which room names are accepted: a pure check, run before any Redis work."""

from __future__ import annotations

import re

from roomcast.chat.errors import InvalidRoomName, RoomRequired

# Unicode category Cc is exactly C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F); a lone
# surrogate (U+D800-U+DFFF, which JSON can carry) has no UTF-8 form at all.
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_room_name(name: str, max_length: int) -> None:
    """Return when ``name`` may name a room; raise otherwise.

    An empty name raises :class:`RoomRequired`; a name with a control character or a
    lone surrogate, or one longer than ``max_length`` bytes of UTF-8 (0: no length
    limit), raises :class:`InvalidRoomName`.
    """
    if not name:
        raise RoomRequired()
    if not isinstance(name, str):
        raise InvalidRoomName()
    # A printable name has neither control characters nor surrogates: the regular
    # expression is only for names with other non-printable characters (such as U+200D).
    if not name.isprintable() and _REFUSED.search(name) is not None:
        raise InvalidRoomName()
    # A character is at most 4 bytes of UTF-8: a short name needs no encoding to measure.
    if max_length and len(name) * 4 > max_length and len(name.encode("utf-8")) > max_length:
        raise InvalidRoomName()
