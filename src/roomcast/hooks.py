"""Calling user hooks that may be plain functions or coroutines."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


async def call_hook(hook: Callable[..., Any], *args: Any) -> Any:
    """Call ``hook(*args)``, awaiting the result when it is awaitable; return it."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
