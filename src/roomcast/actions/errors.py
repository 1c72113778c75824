"""Errors of the action processor; ``status`` is the HTTP status that goes with each."""

from __future__ import annotations


class ActionError(Exception):
    """An action call failed before or while running; ``str()`` is the wire text."""

    status = 400


class UnknownAction(ActionError):
    status = 404

    def __init__(self) -> None:
        super().__init__("unknown action or invalid apiVersion")


class MissingParam(ActionError):
    status = 422

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is a required parameter for this action")


class InvalidParam(ActionError):
    status = 422


class TooManyPending(ActionError):
    status = 429

    def __init__(self) -> None:
        super().__init__("you have too many pending requests")


class ShuttingDown(ActionError):
    status = 503

    def __init__(self) -> None:
        super().__init__("the server is shutting down")
