"""Running actions: lookup, limits, inputs, middleware; and loading user action modules."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roomcast.actions.action import Action, ActionData
from roomcast.actions.errors import (
    InvalidParam,
    MissingParam,
    ShuttingDown,
    TooManyPending,
    UnknownAction,
)
from roomcast.actions.middleware import ActionMiddleware
from roomcast.hooks import call_hook

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.connection import Connection

log = logging.getLogger("roomcast.actions")


class Actions:
    """The node's actions (``api.actions``): registry, middleware and the processor."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._actions: dict[str, Action] = {}
        self._middleware: list[ActionMiddleware] = []
        self.shutting_down = False

    # registry ----------------------------------------------------------------------------

    def add(self, action: type[Action] | Action) -> None:
        """Register an action class (or instance) under its ``name``."""
        instance = action() if isinstance(action, type) else action
        if not instance.name:
            raise ValueError(f"action {instance!r} has no name")
        self._actions[instance.name] = instance

    def get(self, name: str) -> Action | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return sorted(self._actions)

    def add_middleware(self, middleware: ActionMiddleware) -> None:
        self._middleware = [m for m in self._middleware if m.name != middleware.name]
        self._middleware.append(middleware)
        self._middleware.sort(key=lambda m: m.priority)

    def remove_middleware(self, name: str) -> None:
        self._middleware = [m for m in self._middleware if m.name != name]

    def documentation(self) -> dict[str, Any]:
        """What the ``documentation`` verb returns: every action's name, text and inputs."""
        return {name: self._actions[name].documentation() for name in self.names()}

    # running -----------------------------------------------------------------------------

    async def run(
        self, connection: Connection, name: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Run an action for ``connection``; return its response (with ``error`` on failure).

        The raised error, if any, is also returned as ``response["error"]``; call
        :meth:`run_or_raise` to get the exception instead.
        """
        try:
            data = await self.run_or_raise(connection, name, params)
        except Exception as error:
            return {"error": str(error) or type(error).__name__}
        return data.response

    async def run_or_raise(
        self, connection: Connection, name: str | None, params: dict[str, Any]
    ) -> ActionData:
        """Run an action; raise its error (``ActionError`` or the action's own exception)."""
        connection.total_actions += 1
        connection.pending_actions += 1
        try:
            if connection.pending_actions > self.api.config.simultaneous_actions:
                raise TooManyPending()
            if self.shutting_down:
                raise ShuttingDown()
            action = self._actions.get(name or "")
            if action is None:
                raise UnknownAction()
            data = ActionData(
                api=self.api,
                connection=connection,
                action_name=action.name,
                params=self._reduce_params(action, params),
                action=action,
            )
            middleware = [m for m in self._middleware if m.global_ or m.name in action.middleware]
            for m in middleware:
                if m.pre is not None:
                    await call_hook(m.pre, data)
            try:
                await action.run(data)
            finally:
                for m in middleware:
                    if m.post is not None:
                        await call_hook(m.post, data)
            return data
        finally:
            connection.pending_actions -= 1

    @staticmethod
    def _reduce_params(action: Action, params: dict[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in params.items() if k in action.inputs}
        given["action"] = action.name
        for key, spec in action.inputs.items():
            if given.get(key) is None and "default" in spec:
                default = spec["default"]
                given[key] = default() if callable(default) else default
            if key in given and given[key] is not None and "formatter" in spec:
                try:
                    given[key] = spec["formatter"](given[key])
                except Exception as error:
                    raise InvalidParam(f"{key}: {error}") from error
            if key in given and given[key] is not None and "validator" in spec:
                try:
                    spec["validator"](given[key])
                except Exception as error:
                    raise InvalidParam(str(error) or f"{key} is invalid") from error
            if spec.get("required") and given.get(key) in (None, ""):
                raise MissingParam(key)
        return given

    # loading -----------------------------------------------------------------------------

    async def load_directory(self, directory: str | Path) -> list[str]:
        """Import every ``*.py`` in ``directory``; register its actions, run ``initialize(api)``."""
        loaded: list[str] = []
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"actions directory not found: {folder}")
        for path in sorted(folder.glob("*.py")):
            module_name = f"roomcast_user.{path.stem}_{abs(hash(str(path.resolve()))):x}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            here: list[str] = []
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, Action)
                    and value is not Action
                    and value.name
                    and value.__module__ == module_name
                ):
                    self.add(value)
                    here.append(value.name)
            loaded.extend(here)
            initialize = getattr(module, "initialize", None)
            if callable(initialize):
                await call_hook(initialize, self.api)
            log.info("loaded %s (%s)", path.name, ", ".join(here) or "no actions")
        return loaded
