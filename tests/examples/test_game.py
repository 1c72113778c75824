"""examples/game: server ticks carry the game state to the room, moves are actions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import LineClient, NodeProcess, start_node

GAME = Path(__file__).resolve().parents[2] / "examples" / "game"
MIDDLE = {"x": 10, "y": 10}


@pytest.fixture(scope="module")
def game_node() -> Iterator[NodeProcess]:
    node = start_node("--actions", str(GAME))
    yield node
    node.stop()


@pytest.fixture
def player(game_node: NodeProcess) -> Iterator[tuple[LineClient, str]]:
    """A TCP client that joined the game room, and its connection id."""
    client = LineClient(game_node.socket_port)
    client.read()  # welcome
    assert client.request("roomAdd game")["status"] == "OK"
    me = client.request("detailsView")["data"]["id"]
    yield client, me
    client.close()


def tick_where(client: LineClient, test: Any) -> dict[str, Any]:
    """Read ticks until one's state satisfies ``test(players)``; return that tick."""
    message: dict[str, Any] = client.read_until(
        lambda m: (
            isinstance(m, dict)
            and m.get("context") == "user"
            and m.get("room") == "game"
            and test(m["message"]["players"])
        )
    )
    return message


def test_a_joined_player_appears_in_the_ticks_from_the_server(
    player: tuple[LineClient, str],
) -> None:
    client, me = player
    tick = tick_where(client, lambda players: me in players)
    assert tick["from"] == 0
    assert tick["message"]["players"][me] == MIDDLE
    assert isinstance(tick["message"]["tick"], int)


def test_a_move_answers_the_new_position_and_the_next_ticks_show_it(
    player: tuple[LineClient, str],
) -> None:
    client, me = player
    reply = client.request('{"action":"move","params":{"direction":"right"}}')
    assert reply["position"] == {"x": 11, "y": 10}
    tick_where(client, lambda players: players.get(me) == {"x": 11, "y": 10})


def test_a_move_in_an_unknown_direction_is_refused(player: tuple[LineClient, str]) -> None:
    client, _ = player
    reply = client.request('{"action":"move","params":{"direction":"sideways"}}')
    assert reply["error"] == "direction must be one of up, down, left, right"


def test_a_move_before_joining_the_game_is_refused(game_node: NodeProcess) -> None:
    client = LineClient(game_node.socket_port)
    try:
        client.read()
        reply = client.request('{"action":"move","params":{"direction":"up"}}')
        assert reply["error"] == "join the room game first"
    finally:
        client.close()


def test_players_cannot_chat_in_the_game_room(player: tuple[LineClient, str]) -> None:
    client, _ = player
    reply = client.request("say game hello")
    assert reply["status"] == "the game room carries game state only: use the move action"


def test_leaving_the_room_removes_the_player_from_the_ticks(
    game_node: NodeProcess, player: tuple[LineClient, str]
) -> None:
    client, me = player
    watcher = LineClient(game_node.socket_port)
    try:
        watcher.read()
        assert watcher.request("roomAdd game")["status"] == "OK"
        tick_where(watcher, lambda players: me in players)
        assert client.request("roomLeave game")["status"] == "OK"
        tick_where(watcher, lambda players: me not in players)
    finally:
        watcher.close()
