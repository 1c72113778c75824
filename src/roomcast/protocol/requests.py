"""What a client asked for, whatever wire it came over: frozen request events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Verb names of the wire (beside ``quit``/``exit`` and ``file``, which each transport
#: answers itself); :mod:`roomcast.verbs` runs them.
VERBS = frozenset(
    {
        "paramAdd",
        "paramView",
        "paramDelete",
        "paramsView",
        "paramsDelete",
        "roomAdd",
        "roomLeave",
        "roomView",
        "roomHistory",
        "detailsView",
        "documentation",
        "say",
    }
)


@dataclass(frozen=True, slots=True)
class VerbRequest:
    """A verb such as ``roomAdd`` with its named arguments (``room``, ``message``, ``key``…)."""

    verb: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """Run ``action``; ``params`` None means "use the connection's sticky params"."""

    action: str | None
    params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FileRequest:
    path: str


@dataclass(frozen=True, slots=True)
class QuitRequest:
    pass


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """The client sent something we cannot act on; ``error`` says what, for the reply."""

    error: str


Request = VerbRequest | ActionRequest | FileRequest | QuitRequest | InvalidRequest
