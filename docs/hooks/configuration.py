"""MkDocs hook: ``configuration.md`` is generated from ``roomcast.config.settings_reference()``
at every build, so the reference lists every setting the code reads, with its help text.

``render()`` needs no MkDocs; the tests call it to check the page.
"""

from __future__ import annotations

import json
from typing import Any

from roomcast.config import SettingInfo, settings_reference

PAGE = "configuration.md"

INTRO = """\
# Configuration

Every setting of a node, generated from the code (`roomcast.config.settings_reference()`).
A setting is read, from strongest to weakest, from:

1. a command-line flag of `roomcast start` (`--socket-port 6000`), where it has one;
2. an environment variable (`ROOMCAST_SOCKET_PORT=6000`), where it has one;
3. the TOML file given with `--config roomcast.toml` (or `ROOMCAST_CONFIG=roomcast.toml`):
   top-level keys for the flags (`socket_port = 6000`), the other settings in their tables
   (`[limits]`, `[web]`, …);
4. the default.

```toml
id = "node-a"
socket_port = 5000
redis_url = "redis://127.0.0.1:6379/0"

[chat]
starting_chat_rooms = ["defaultRoom", "lobby"]

[limits]
say_rate = 20
```

Settings are checked at start: an unknown key, a value of the wrong type, a count or
duration that is not positive (0 is allowed where the table says it turns a setting off),
and the checks listed under [limits and security](limits-and-security.md#settings-checked-at-start)
stop `roomcast start` with exit status 2 and `roomcast: <reason>`; `Api.start()` raises
`roomcast.config.ConfigError` for the same. A `--actions` flag may be repeated; its
variable holds directories separated by `:`. `roomcast start --help` describes every flag
with the texts of this page.
"""


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return f"{value.replace('<', '&lt;')}, computed at start"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _table_title(table: str) -> str:
    return "Top-level settings" if not table else f"`[{table}]`"


def render(reference: list[SettingInfo] | None = None) -> str:
    """The whole page, as Markdown."""
    settings = settings_reference() if reference is None else reference
    tables: dict[str, list[SettingInfo]] = {}
    for setting in settings:
        tables.setdefault(setting.table, []).append(setting)
    parts = [INTRO]
    for table, rows in tables.items():
        parts.append(f"\n## {_table_title(table)}\n")
        if table:
            parts.append(f"\nIn the TOML file under `[{table}]`; no flag or variable.\n")
            parts.append("\n| key | default | meaning |\n|---|---|---|\n")
        else:
            parts.append(
                "\nTOML key, then the `roomcast start` flag and the environment variable.\n"
                "\n| setting | default | meaning |\n|---|---|---|\n"
            )
        for s in rows:
            names = [f"`{s.key}`", *(f"`{n}`" for n in (s.flag, s.env) if n)]
            meaning = s.help.replace("|", "\\|")
            parts.append(f"| {'<br>'.join(names)} | {_default(s.default)} | {meaning} |\n")
    return "".join(parts)


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
