"""What the node logs when user code misbehaves or loads."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from roomcast import ChatMiddleware
from roomcast.testing import TestConnection, TestNode


async def test_a_failing_say_middleware_is_logged_and_skips_only_that_recipient(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestNode() as node:
        alice = await node.connect()
        bob = await node.connect()

        def picky(connection: TestConnection, room: str, payload: dict[str, object]) -> None:
            if connection is bob:
                raise ValueError("bob may not read this")

        node.api.chat_room.add_middleware(ChatMiddleware(name="picky", say=picky))
        for member in (alice, bob):
            await member.verb("roomAdd", room="defaultRoom")
        with caplog.at_level(logging.WARNING, logger="roomcast"):
            await alice.verb("say", room="defaultRoom", message="hi")
        assert [m["message"] for m in alice.chat_messages()] == ["hi"]
        assert bob.chat_messages() == []
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "picky" in warnings[0] and bob.id in warnings[0]
        assert "bob may not read this" in warnings[0]


async def test_loading_actions_logs_each_files_own_actions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(
            textwrap.dedent(f"""
            from roomcast import Action


            class {name.title()}(Action):
                name = "{name}"

                async def run(self, data):
                    pass
            """)
        )
    with caplog.at_level(logging.INFO, logger="roomcast.actions"):
        async with TestNode(actions=[str(tmp_path)]):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "roomcast.actions"]
    assert "loaded first.py (first)" in lines
    assert "loaded second.py (second)" in lines
