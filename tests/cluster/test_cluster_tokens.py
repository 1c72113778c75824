"""Private rooms across the cluster: a remote ``add_member`` is decided by the token of the
connection, on the node that owns it."""

from __future__ import annotations

from cluster_support import CONFIG, Cluster

from tokens import SECRET, claims, hs256

AUTH = f"""
[auth]
jwt_secret = "{SECRET}"
private_rooms = ["vip-*"]
"""


def test_a_remote_add_member_to_a_private_room_follows_the_joiners_token(
    cluster: Cluster,
) -> None:
    cluster.config_path.write_text(CONFIG + AUTH)
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    assert alice.action("createChatRoom", name="vip-lounge")["didCreate"] is True

    refused = alice.action("addMember", connectionId=bob.id, room="vip-lounge")
    assert refused["error"] == "not authorized"
    assert bob.rooms() == []

    assert bob.action("authenticate", token=hs256(claims("bob", rooms=["vip-*"])))["user"] == "bob"
    assert alice.action("addMember", connectionId=bob.id, room="vip-lounge")["added"] is True
    assert bob.rooms() == ["vip-lounge"]
