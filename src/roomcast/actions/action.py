"""What an action is: the ``Action`` base class and the data each call carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.connection import Connection


@dataclass
class ActionData:
    """One call of an action: what ``run`` and action middleware read and write."""

    api: Api
    connection: Connection
    action_name: str
    params: dict[str, Any]
    response: dict[str, Any] = field(default_factory=dict)
    action: Action | None = None


class Action:
    """Subclass with ``name``, ``description``, ``inputs`` and ``async def run(self, data)``.

    ``inputs`` maps a param name to a dict with optional keys ``required`` (bool),
    ``default`` (value), ``formatter`` (value -> value) and ``validator`` (value -> None,
    raising to reject). ``middleware`` names action middleware this action opts into.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[dict[str, dict[str, Any]]] = {}
    middleware: ClassVar[list[str]] = []

    async def run(self, data: ActionData) -> None:
        """Do the work; write the reply into ``data.response``; raise to fail."""
        raise NotImplementedError

    @classmethod
    def documentation(cls) -> dict[str, Any]:
        inputs = {
            key: {
                "required": bool(spec.get("required", False)),
                **({"default": spec["default"]} if "default" in spec else {}),
            }
            for key, spec in cls.inputs.items()
        }
        return {"name": cls.name, "description": cls.description, "inputs": inputs}
