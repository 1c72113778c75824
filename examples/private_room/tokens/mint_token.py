"""Mint a token for the private rooms of ``roomcast.toml`` (beside this file), with PyJWT.

    python examples/private_room/tokens/mint_token.py ada 'private:*'
    python examples/private_room/tokens/mint_token.py bob private:lounge --ttl 600

prints a JWT for user ``ada`` that may join every ``private:*`` room, signed with the
``[auth] jwt_secret`` of the node's settings file (``--config`` to read another). In your
app, :func:`mint_token` is the whole recipe: sign ``sub``, ``rooms`` and ``exp``.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

import jwt

CONFIG = Path(__file__).with_name("roomcast.toml")


def mint_token(
    secret: str, user: str, rooms: list[str], *, ttl: int = 3600, audience: str = ""
) -> str:
    """A token for ``user`` that may join the private rooms matching the globs ``rooms``,
    valid for ``ttl`` seconds; with ``aud`` when the node checks an audience."""
    claims: dict[str, object] = {"sub": user, "rooms": rooms, "exp": int(time.time()) + ttl}
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mint a token for roomcast's private rooms.")
    parser.add_argument("user", help="who the token is for (its sub claim)")
    parser.add_argument("rooms", nargs="*", help="globs of the private rooms it may join")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds it is valid (3600)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the node's TOML settings")
    args = parser.parse_args(argv)
    auth = tomllib.loads(args.config.read_text())["auth"]
    token = mint_token(
        auth["jwt_secret"], args.user, args.rooms, ttl=args.ttl, audience=auth.get("audience", "")
    )
    print(token)


if __name__ == "__main__":
    main()
