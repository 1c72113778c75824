"""The layers import downwards only: wire code needs no node, the cluster needs no chat."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["roomcast.protocol.socket_lines", "roomcast.protocol.websocket_events", "roomcast"],
)
def test_wire_code_and_the_package_import_neither_the_node_nor_its_dependencies(
    module: str,
) -> None:
    loaded = _modules_after_import(module)
    assert not {"roomcast.api", "roomcast.chat", "roomcast.cluster", "aiohttp", "redis"} & loaded


def test_the_cluster_layer_does_not_import_the_chat_layer() -> None:
    loaded = _modules_after_import("roomcast.cluster")
    assert not {m for m in loaded if m.startswith(("roomcast.chat", "roomcast.api"))}


def test_the_emitter_runs_no_node_code() -> None:
    loaded = _modules_after_import("roomcast.emitter")
    node_code = ("roomcast.chat", "roomcast.api", "roomcast.servers", "roomcast.config", "aiohttp")
    assert not {m for m in loaded if m.startswith(node_code)}
