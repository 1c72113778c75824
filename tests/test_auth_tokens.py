"""TokenVerifier and the [auth] checks at start, without a node: tokens in, claims out."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomcast.auth import (
    InvalidToken,
    TokenVerifier,
    load_public_key,
    rooms_claim_allows,
    token_in_query,
)
from roomcast.config import AuthSettings, Config, ConfigError, validate
from tokens import AUDIENCE, SECRET, KeyPair, claims, hs256, hs256_with_key, unsigned


@pytest.fixture(scope="module")
def rsa_pair() -> KeyPair:
    return KeyPair("rsa")


def refusal(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert str(caught.value) == "invalid token"
    return caught.value


def test_a_valid_hs256_token_gives_all_its_claims() -> None:
    token = hs256(claims("alice", rooms=["team-*"]))
    assert TokenVerifier(secret=SECRET).verify(token)["rooms"] == ["team-*"]


def test_an_expired_token_is_invalid() -> None:
    refusal(TokenVerifier(secret=SECRET), hs256(claims(ttl=-60)))


def test_a_token_without_exp_is_invalid() -> None:
    refusal(TokenVerifier(secret=SECRET), hs256({"sub": "alice"}))


def test_a_token_without_sub_is_invalid() -> None:
    refusal(TokenVerifier(secret=SECRET), hs256({"exp": claims()["exp"]}))


def test_a_token_signed_with_another_secret_is_invalid() -> None:
    refusal(TokenVerifier(secret=SECRET), hs256(claims(), secret="x" * 40))


def test_a_token_for_another_audience_is_invalid() -> None:
    verifier = TokenVerifier(secret=SECRET, audience=AUDIENCE)
    refusal(verifier, hs256(claims(aud="someone-else")))


def test_a_token_without_aud_is_invalid_when_an_audience_is_set() -> None:
    refusal(TokenVerifier(secret=SECRET, audience=AUDIENCE), hs256(claims()))


def test_aud_is_not_checked_when_no_audience_is_set() -> None:
    assert TokenVerifier(secret=SECRET).verify(hs256(claims(aud="anyone")))["sub"] == "alice"


def test_the_none_algorithm_is_refused() -> None:
    error = refusal(TokenVerifier(secret=SECRET), unsigned(claims()))
    assert "none" in error.reason


def test_a_malformed_token_is_invalid() -> None:
    refusal(TokenVerifier(secret=SECRET), "not.a.jwt")


def test_an_rs256_token_passes_the_rsa_public_key(rsa_pair: KeyPair, tmp_path: Path) -> None:
    key, algorithm = load_public_key(rsa_pair.write_public(tmp_path / "public.pem"))
    assert algorithm == "RS256"
    assert TokenVerifier(public_key=key).verify(rsa_pair.sign(claims("bob")))["sub"] == "bob"


def test_an_es256_token_passes_the_p256_public_key(tmp_path: Path) -> None:
    pair = KeyPair("ec")
    key, algorithm = load_public_key(pair.write_public(tmp_path / "public.pem"))
    assert algorithm == "ES256"
    assert TokenVerifier(public_key=key).verify(pair.sign(claims("carol")))["sub"] == "carol"


def test_an_hs256_token_keyed_with_the_public_key_pem_is_refused(
    rsa_pair: KeyPair, tmp_path: Path
) -> None:
    key, _ = load_public_key(rsa_pair.write_public(tmp_path / "public.pem"))
    forged = hs256_with_key(claims(), rsa_pair.public_pem)
    refusal(TokenVerifier(public_key=key), forged)


def test_an_rs256_token_is_refused_by_a_secret_only_verifier(rsa_pair: KeyPair) -> None:
    refusal(TokenVerifier(secret=SECRET), rsa_pair.sign(claims()))


def test_with_both_keys_each_checks_only_its_own_algorithm(
    rsa_pair: KeyPair, tmp_path: Path
) -> None:
    key, _ = load_public_key(rsa_pair.write_public(tmp_path / "public.pem"))
    verifier = TokenVerifier(secret=SECRET, public_key=key)
    assert verifier.algorithms == ["HS256", "RS256"]
    assert verifier.verify(hs256(claims("a")))["sub"] == "a"
    assert verifier.verify(rsa_pair.sign(claims("b")))["sub"] == "b"
    refusal(verifier, hs256_with_key(claims(), rsa_pair.public_pem))


def test_a_private_key_file_is_not_a_public_key(rsa_pair: KeyPair, tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(rsa_pair.private_pem())
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key(path)


def test_rooms_claim_globs_match_room_names() -> None:
    token_claims = {"rooms": ["team-*", "lobby"]}
    assert rooms_claim_allows(token_claims, "team-red")
    assert rooms_claim_allows(token_claims, "lobby")
    assert not rooms_claim_allows(token_claims, "lobby-2")
    assert not rooms_claim_allows({"rooms": "team-*"}, "other")
    assert rooms_claim_allows({"rooms": "team-*"}, "team-blue")
    assert not rooms_claim_allows({}, "team-red")
    assert not rooms_claim_allows(None, "team-red")


def test_token_in_query_finds_the_token_parameter() -> None:
    assert token_in_query(b"a=1&token=abc.def.ghi") == "abc.def.ghi"
    assert token_in_query("room=x") is None
    assert token_in_query("") is None


def test_validate_names_the_setting_of_an_unreadable_key_file(tmp_path: Path) -> None:
    config = Config(auth=AuthSettings(jwt_public_key=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match=r"cannot read the \[auth\] jwt_public_key file"):
        validate(config)


def test_validate_refuses_a_key_file_that_is_no_pem_key(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"\[auth\] jwt_public_key .*not a PEM public key"):
        validate(Config(auth=AuthSettings(jwt_public_key=str(path))))


def test_validate_refuses_required_tokens_without_a_key() -> None:
    with pytest.raises(ConfigError, match=r"\[auth\] required = true needs jwt_secret"):
        validate(Config(auth=AuthSettings(required=True)))


def test_validate_warns_about_a_short_secret() -> None:
    warnings = validate(Config(auth=AuthSettings(jwt_secret="short")))
    assert any("jwt_secret is shorter than 32 bytes" in warning for warning in warnings)
