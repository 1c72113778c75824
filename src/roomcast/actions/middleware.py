"""Action middleware: ``pre`` and ``post`` hooks around actions, global or opted into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomcast.actions.action import ActionData

Hook = Callable[[ActionData], Any]


@dataclass
class ActionMiddleware:
    """``pre(data)`` runs before the action (raise to stop it), ``post(data)`` after.

    A ``global_`` middleware runs for every action; otherwise only for actions that list
    its name in ``Action.middleware``. Lower ``priority`` runs first.
    """

    name: str
    priority: int = 100
    global_: bool = False
    pre: Hook | None = None
    post: Hook | None = None
