"""Actions on an in-process node: inputs, middleware, limits, loading, built-ins."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from roomcast import Action, ActionData, ActionMiddleware
from roomcast.testing import TestNode


class Echo(Action):
    name = "echo"
    description = "Returns its params."
    inputs: ClassVar = {
        "text": {"required": True},
        "times": {"default": 1, "formatter": int},
        "mood": {"default": lambda: "calm"},
        "age": {"formatter": int, "validator": lambda v: _at_least_18(v)},
    }

    async def run(self, data: ActionData) -> None:
        data.response["params"] = dict(data.params)


def _at_least_18(value: int) -> None:
    if value < 18:
        raise ValueError("age must be at least 18")


class Boom(Action):
    name = "boom"

    async def run(self, data: ActionData) -> None:
        raise RuntimeError("it blew up")


class Guarded(Action):
    name = "guarded"
    middleware: ClassVar = ["auth"]

    async def run(self, data: ActionData) -> None:
        data.response["ran"] = True


class Slow(Action):
    name = "slow"

    async def run(self, data: ActionData) -> None:
        await asyncio.sleep(0.3)
        data.response["done"] = True


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode(simultaneous_actions=2) as running:
        for action in (Echo, Boom, Guarded, Slow):
            running.api.actions.add(action)
        yield running


# inputs ---------------------------------------------------------------------------------


async def test_action_response_is_returned(node: TestNode) -> None:
    alice = await node.connect()
    response = await alice.run_action("echo", text="hi")
    assert response == {"params": {"text": "hi", "times": 1, "mood": "calm", "action": "echo"}}


async def test_missing_required_input_is_refused(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("echo") == {
        "error": "text is a required parameter for this action"
    }


async def test_empty_required_input_counts_as_missing(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("echo", text="") == {
        "error": "text is a required parameter for this action"
    }


async def test_default_fills_an_absent_input(node: TestNode) -> None:
    alice = await node.connect()
    assert (await alice.run_action("echo", text="x"))["params"]["times"] == 1


async def test_callable_default_is_called(node: TestNode) -> None:
    alice = await node.connect()
    assert (await alice.run_action("echo", text="x"))["params"]["mood"] == "calm"


async def test_given_value_wins_over_the_default(node: TestNode) -> None:
    alice = await node.connect()
    assert (await alice.run_action("echo", text="x", mood="glad"))["params"]["mood"] == "glad"


async def test_formatter_returns_the_value_to_use(node: TestNode) -> None:
    alice = await node.connect()
    assert (await alice.run_action("echo", text="x", times="3"))["params"]["times"] == 3


async def test_formatter_failure_is_an_error_naming_the_input(node: TestNode) -> None:
    alice = await node.connect()
    response = await alice.run_action("echo", text="x", times="many")
    assert response["error"].startswith("times: ")


async def test_validator_rejects_by_raising_with_its_message(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("echo", text="x", age="12") == {
        "error": "age must be at least 18"
    }


async def test_validator_sees_the_formatted_value(node: TestNode) -> None:
    alice = await node.connect()
    assert (await alice.run_action("echo", text="x", age="30"))["params"]["age"] == 30


async def test_params_that_are_not_inputs_are_dropped(node: TestNode) -> None:
    alice = await node.connect()
    params = (await alice.run_action("echo", text="x", sneaky="1"))["params"]
    assert "sneaky" not in params


async def test_an_exception_in_run_becomes_the_error(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("boom") == {"error": "it blew up"}


async def test_unknown_action_is_refused(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("nope") == {"error": "unknown action or invalid apiVersion"}


async def test_actions_count_total_and_pending(node: TestNode) -> None:
    alice = await node.connect()
    await alice.run_action("echo", text="x")
    await alice.run_action("nope")
    assert alice.total_actions == 2
    assert alice.pending_actions == 0


# action middleware ----------------------------------------------------------------------


async def test_global_pre_and_post_run_around_every_action(node: TestNode) -> None:
    calls: list[str] = []
    node.api.actions.add_middleware(
        ActionMiddleware(
            "log",
            global_=True,
            pre=lambda d: calls.append(f"pre {d.action_name}"),
            post=lambda d: calls.append(f"post {d.action_name}"),
        )
    )
    alice = await node.connect()
    await alice.run_action("echo", text="x")
    await alice.run_action("guarded")
    assert calls == ["pre echo", "post echo", "pre guarded", "post guarded"]


async def test_named_middleware_runs_only_for_actions_that_list_it(node: TestNode) -> None:
    calls: list[str] = []
    node.api.actions.add_middleware(
        ActionMiddleware("auth", pre=lambda d: calls.append(d.action_name))
    )
    alice = await node.connect()
    await alice.run_action("echo", text="x")
    await alice.run_action("guarded")
    assert calls == ["guarded"]


async def test_pre_raising_stops_the_action_with_its_message(node: TestNode) -> None:
    def deny(data: ActionData) -> None:
        raise PermissionError("not logged in")

    node.api.actions.add_middleware(ActionMiddleware("auth", pre=deny))
    alice = await node.connect()
    assert await alice.run_action("guarded") == {"error": "not logged in"}


async def test_post_can_change_the_response(node: TestNode) -> None:
    async def post(data: ActionData) -> None:
        data.response["stamped"] = True

    node.api.actions.add_middleware(ActionMiddleware("stamp", global_=True, post=post))
    alice = await node.connect()
    assert await alice.run_action("guarded") == {"ran": True, "stamped": True}


async def test_action_middleware_runs_in_priority_order(node: TestNode) -> None:
    calls: list[str] = []
    actions = node.api.actions
    actions.add_middleware(
        ActionMiddleware("late", priority=300, global_=True, pre=lambda d: calls.append("late"))
    )
    actions.add_middleware(
        ActionMiddleware("early", priority=5, global_=True, pre=lambda d: calls.append("early"))
    )
    actions.add_middleware(
        ActionMiddleware("auth", priority=100, pre=lambda d: calls.append("auth"))
    )
    alice = await node.connect()
    await alice.run_action("guarded")
    assert calls == ["early", "auth", "late"]


async def test_removed_action_middleware_no_longer_runs(node: TestNode) -> None:
    calls: list[str] = []
    node.api.actions.add_middleware(
        ActionMiddleware("log", global_=True, pre=lambda d: calls.append("x"))
    )
    node.api.actions.remove_middleware("log")
    alice = await node.connect()
    await alice.run_action("guarded")
    assert calls == []


# simultaneous actions -------------------------------------------------------------------


async def test_too_many_pending_actions_are_refused(node: TestNode) -> None:
    alice = await node.connect()
    responses = await asyncio.gather(*(alice.run_action("slow") for _ in range(3)))
    assert responses == [
        {"done": True},
        {"done": True},
        {"error": "you have too many pending requests"},
    ]


async def test_pending_limit_is_per_connection(node: TestNode) -> None:
    alice = await node.connect()
    bob = await node.connect()
    responses = await asyncio.gather(
        alice.run_action("slow"), alice.run_action("slow"), bob.run_action("slow")
    )
    assert list(responses) == [{"done": True}] * 3


async def test_default_simultaneous_actions_limit_is_5() -> None:
    async with TestNode() as running:
        running.api.actions.add(Slow)
        alice = await running.connect()
        responses = await asyncio.gather(*(alice.run_action("slow") for _ in range(6)))
    assert responses == [{"done": True}] * 5 + [{"error": "you have too many pending requests"}]


# built-in actions -----------------------------------------------------------------------


async def test_status_reports_node_id_uptime_and_counts(node: TestNode) -> None:
    alice = await node.connect()
    await node.api.chat_room.add_member(alice.id, "defaultRoom")
    response = await alice.run_action("status")
    assert response["id"] == node.api.id
    assert isinstance(response["uptime"], int) and response["uptime"] >= 0
    assert response["connections"] == 1
    assert response["rooms"] == 1


async def test_create_chat_room_creates_the_room(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("createChatRoom", name="made") == {"didCreate": True}
    assert await node.api.chat_room.exists("made") is True


async def test_create_chat_room_of_an_existing_room_says_room_exists(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("createChatRoom", name="defaultRoom") == {"error": "room exists"}


async def test_create_chat_room_requires_a_name(node: TestNode) -> None:
    alice = await node.connect()
    assert await alice.run_action("createChatRoom") == {
        "error": "name is a required parameter for this action"
    }


async def test_documentation_lists_every_action_with_its_inputs(node: TestNode) -> None:
    docs = node.api.actions.documentation()
    assert set(docs) == {
        "status",
        "createChatRoom",
        "authenticate",
        "echo",
        "boom",
        "guarded",
        "slow",
    }
    assert docs["createChatRoom"]["inputs"] == {"name": {"required": True}}
    assert docs["echo"]["inputs"]["times"] == {"required": False, "default": 1}
    assert docs["echo"]["description"] == "Returns its params."


# loading from a directory ---------------------------------------------------------------


ACTION_MODULE = """
import roomcast

class Greet(roomcast.Action):
    name = "greet"
    description = "Says hello."
    inputs = {"who": {"required": True}}

    async def run(self, data):
        data.response["greeting"] = f"hello {data.params['who']}"

class Helper:  # not an action: ignored
    name = "helper"

async def initialize(api):
    await api.chat_room.add("loaded-room")
    api.greeted_by_initialize = True
"""


async def test_actions_directory_modules_are_loaded_and_initialized(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(textwrap.dedent(ACTION_MODULE))
    async with TestNode(actions=[str(tmp_path)]) as running:
        alice = await running.connect()
        assert await alice.run_action("greet", who="bob") == {"greeting": "hello bob"}
        assert await running.api.chat_room.exists("loaded-room") is True
        assert vars(running.api)["greeted_by_initialize"] is True
        assert "helper" not in running.api.actions.names()


async def test_sync_initialize_hook_runs(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("def initialize(api):\n    api.plain_ran = True\n")
    async with TestNode(actions=[str(tmp_path)]) as running:
        assert vars(running.api)["plain_ran"] is True


async def test_missing_actions_directory_fails_start(tmp_path: Path) -> None:
    node = TestNode(actions=[str(tmp_path / "absent")])
    with pytest.raises(FileNotFoundError):
        await node.api.start()
    await node.api.stop()
