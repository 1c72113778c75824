"""``roomcast new DIR``: a project that starts with ``roomcast start --config roomcast.toml``
and passes its own tests at once.

The files are templates shipped with the package (``project/``, each ending in ``.tmpl``);
``{{name}}`` in them becomes the project's name (the directory's).
"""

from __future__ import annotations

import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO

SUFFIX = ".tmpl"


class ScaffoldError(Exception):
    """The project cannot be written there; the message says why."""


def _templates(root: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(root.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            found.extend(_templates(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(SUFFIX):
            found.append((prefix + entry.name.removesuffix(SUFFIX), entry))
    return found


def create_project(directory: str | Path) -> list[Path]:
    """Write a new project into ``directory`` (created; it must not hold anything yet).

    Returns the files written. Raises :class:`ScaffoldError` when ``directory`` is a file
    or not empty: nothing of the user's is ever overwritten.
    """
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} already exists and is not an empty directory")
    name = target.resolve().name
    written = []
    for relative, template in _templates(resources.files(__package__) / "project"):
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.read_text(encoding="utf-8").replace("{{name}}", name))
        written.append(path)
    return written


def main(directory: str, out: TextIO = sys.stdout) -> int:
    """Run ``roomcast new DIR``: 0 with the next steps printed, or 2 with the reason."""
    try:
        written = create_project(directory)
    except (ScaffoldError, OSError) as error:
        print(f"roomcast: {error}", file=sys.stderr)
        return 2
    for path in written:
        out.write(f"created {path}\n")
    out.write(
        f"\nNext:\n  cd {directory}\n  pip install pytest pytest-asyncio\n"
        "  python -m pytest\n  roomcast start --config roomcast.toml\n"
    )
    return 0
