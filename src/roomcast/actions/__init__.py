"""Actions: request/response handlers callable from every transport."""

from roomcast.actions.action import Action, ActionData
from roomcast.actions.errors import ActionError
from roomcast.actions.middleware import ActionMiddleware
from roomcast.actions.processor import Actions

__all__ = ["Action", "ActionData", "ActionError", "ActionMiddleware", "Actions"]
