"""A room's channel stays subscribed a moment after its last local member leaves.

Nothing said meanwhile reaches a member who left, a member who comes back hears the room
again, and every channel nobody wants is unsubscribed in the end.
"""

from __future__ import annotations

import time

from cluster_support import PREFIX, Cluster, subscriber_channels, wait_until

from roomcast.cluster.bus import UNSUBSCRIBE_AFTER

# How long a test listens for what must not arrive, after a fence message.
NOTHING_MORE_WITHIN = 0.3


def _numsub(cluster: Cluster, room: str) -> int:
    channel = f"{PREFIX}chat:{room}"
    with cluster.redis() as redis:
        return int(dict(redis.pubsub_numsub(channel))[channel])


def test_a_member_who_left_gets_nothing_said_while_the_channel_lingers(
    cluster: Cluster,
) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("linger")
    bob.join("linger")
    wait_until(lambda: _numsub(cluster, "linger") == 2, message="both nodes subscribed")

    bob.leave("linger")
    alice.say("linger", "after bob left")
    alice.say("linger", "fence")
    alice.wait_chat(lambda m: m["message"] == "fence")
    # node b still listens (the channel lingers) but has no member to deliver to
    assert _numsub(cluster, "linger") == 2
    bob.drain(NOTHING_MORE_WITHIN)
    assert bob.chat("linger") == []
    assert [m["message"] for m in alice.chat("linger")] == ["after bob left", "fence"]


def test_a_channel_left_empty_is_unsubscribed_after_the_delay(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    with cluster.redis() as redis:
        base_b = subscriber_channels(redis, "b")
        alice.join("emptied")
        bob.join("emptied")
        wait_until(lambda: _numsub(cluster, "emptied") == 2, message="both nodes subscribed")
        assert subscriber_channels(redis, "b") == base_b + 1

        bob.leave("emptied")
        wait_until(
            lambda: _numsub(cluster, "emptied") == 1,
            timeout=4 * UNSUBSCRIBE_AFTER + 5,
            message="node b unsubscribed once the room stayed empty there",
        )
        assert subscriber_channels(redis, "b") == base_b


def test_a_member_back_before_the_delay_hears_the_room_and_keeps_it_subscribed(
    cluster: Cluster,
) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("back")
    bob.join("back")
    wait_until(lambda: _numsub(cluster, "back") == 2, message="both nodes subscribed")

    with cluster.redis() as redis:
        redis.config_resetstat()
        bob.leave("back")
        bob.join("back")
        # past the delay: the channel was wanted again, so it was never unsubscribed
        time.sleep(UNSUBSCRIBE_AFTER * 2)
        calls = redis.info("commandstats")
    assert "cmdstat_unsubscribe" not in calls, calls
    assert _numsub(cluster, "back") == 2
    alice.say("back", "welcome back")
    assert bob.wait_chat(lambda m: m["room"] == "back")["message"] == "welcome back"


def test_rooms_joined_and_left_over_and_over_leave_no_subscription_behind(
    cluster: Cluster,
) -> None:
    cluster.start("a")
    cluster.start("b")
    clients = [cluster.client("b") for _ in range(4)]
    rooms = [f"churn-{n}" for n in range(12)]
    with cluster.redis() as redis:
        base_b = subscriber_channels(redis, "b")
        for turn in range(3):
            for i, client in enumerate(clients):
                room = rooms[(turn * 5 + i * 3) % len(rooms)]
                client.join(room)
                client.say(room, f"turn {turn}")
                client.leave(room)
        last = clients[0]
        last.join(rooms[0])
        last.quit()  # leaves by closing
        wait_until(
            lambda: subscriber_channels(redis, "b") == base_b,
            timeout=4 * UNSUBSCRIBE_AFTER + 5,
            message="every room channel of node b unsubscribed",
        )
        for room in rooms:
            assert _numsub(cluster, room) == 0, room


def _subscribe_calls(cluster: Cluster) -> int:
    with cluster.redis() as redis:
        stats = redis.info("commandstats")
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))


def test_rooms_joined_in_one_burst_are_subscribed_in_few_commands(cluster: Cluster) -> None:
    rooms = [f"burst-{i}" for i in range(40)]
    cluster.start("a")
    cluster.start("b")
    alice = cluster.client("a")
    for room in rooms:
        alice.join(room)
    members = [cluster.client("b") for _ in rooms]
    with cluster.redis() as redis:
        redis.config_resetstat()
    for member, room in zip(members, rooms, strict=True):
        member.send(f"roomAdd {room}")
    for member in members:
        assert member.reply()["status"] == "OK"
    # one SUBSCRIBE per channel would be 40; the joins of a tick share one
    assert _subscribe_calls(cluster) <= 10
    wait_until(
        lambda: all(_numsub(cluster, room) == 2 for room in rooms),
        message="node b subscribed to every room",
    )
    for room in rooms:
        alice.say(room, f"hello {room}")
    for member, room in zip(members, rooms, strict=True):
        expected = f"hello {room}"
        member.wait_chat(lambda m, expected=expected: m["message"] == expected)  # type: ignore[misc]
        assert [m["message"] for m in member.chat(room)] == [f"hello {room}"]
