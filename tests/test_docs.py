"""The configuration page of the docs is generated from the code: it lists every setting
with its flag, variable, default and description.

That every setting has a description at all is checked where the settings are
(``test_settings_checks.py``); here, that the page shows each one. The page is rendered
by the MkDocs hook itself (``docs/hooks/configuration.py``), without MkDocs.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from roomcast.config import SettingInfo, settings_reference

HOOK = Path(__file__).resolve().parent.parent / "docs" / "hooks" / "configuration.py"


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("roomcast_docs_configuration", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_sections(page: str) -> dict[str, list[list[str]]]:
    """Each ``## `` section's table rows, split into cells."""
    sections: dict[str, list[list[str]]] = {}
    current = ""
    for line in page.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current and line.startswith("| `"):  # a row, not the header or the rule
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            sections[current].append(cells)
    return sections


def row_of(page: str, setting: SettingInfo) -> list[str]:
    title = f"`[{setting.table}]`" if setting.table else "Top-level settings"
    rows = page_sections(page)[title]
    matches = [row for row in rows if row[0].split("<br>")[0] == f"`{setting.key}`"]
    assert len(matches) == 1, f"{title} {setting.key}: {matches}"
    return matches[0]


@pytest.fixture(scope="module")
def page() -> str:
    rendered: str = load_hook().render()
    return rendered


@pytest.mark.parametrize(
    "setting", settings_reference(), ids=lambda s: f"{s.table or 'top'}.{s.key}"
)
def test_the_configuration_page_lists_the_setting_with_its_description(
    page: str, setting: SettingInfo
) -> None:
    names, default, meaning = row_of(page, setting)
    assert meaning == setting.help.replace("|", "\\|")
    assert names.split("<br>") == [
        f"`{name}`" for name in (setting.key, setting.flag, setting.env) if name
    ]
    if setting.default is None:
        assert default == "none"
    elif not str(setting.default).startswith("<"):
        assert default == f"`{json.dumps(setting.default, ensure_ascii=False)}`"


def test_the_configuration_page_tells_how_to_give_a_config_file(page: str) -> None:
    assert "--config roomcast.toml" in page
    assert "ROOMCAST_CONFIG" in page
