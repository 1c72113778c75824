"""Log output of a node: readable text, or one JSON object a line for log collectors."""

from __future__ import annotations

import datetime
import logging

import orjson


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"time", "level", "logger", "message", "node"}`` (and
    ``exception`` when there is one), one line each."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node_id,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: str, node_id: str) -> None:
    """Send every ``roomcast`` log line to stderr at ``level``, as text or JSON."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
