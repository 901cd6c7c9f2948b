"""A token's subject is a user id: 1..128 printable characters, checked once, in the runtime.

A signed token whose subject breaks the rule is TOKEN_INVALID, and the error never echoes
it; minting refuses what verifying would refuse, with a one-line ValueError.
"""

from __future__ import annotations

import time

import jwt
import pytest

from geoplex.servers._runtime.auth import MAX_SUBJECT_LENGTH, TokenVerifier, mint_token
from geoplex.servers._runtime.errors import Unauthenticated

SECRET = "a-test-secret-that-is-32-bytes-or-longer"


def _signed(subject: object) -> str:
    """A correctly signed, unexpired token with any subject (mint_token refuses bad ones)."""
    now = int(time.time())
    return jwt.encode({"sub": subject, "iss": "geoplex", "iat": now, "exp": now + 600},
                      SECRET, algorithm="HS256")


def _subject(token: str) -> str:
    return TokenVerifier(SECRET).subject([("authorization", f"Bearer {token}")])


def test_subject_limit_is_that_of_a_user_id() -> None:
    assert MAX_SUBJECT_LENGTH == 128


@pytest.mark.parametrize("subject", ["u", "user-7", "x" * 128, "Zoë Ünïcode", "a b"])
def test_printable_subject_up_to_128_characters_verifies(subject: str) -> None:
    assert _subject(_signed(subject)) == subject


@pytest.mark.parametrize("subject", [
    "x" * 129,
    "x" * 5000,
    "alice\nadmin",
    "alice\x00",
    "tab\there",
    "\u200b",  # a zero-width space: not printable
    "",
])
def test_subject_that_is_not_a_valid_user_id_is_token_invalid(subject: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        _subject(_signed(subject))

    assert info.value.reason == "TOKEN_INVALID"
    text = f"{info.value.message} {info.value.metadata!r}"
    assert subject == "" or subject not in text
    assert "x" * 64 not in text


@pytest.mark.parametrize("subject", [7, ["alice"], {"id": "alice"}, None])
def test_subject_that_is_not_a_string_is_token_invalid(subject: object) -> None:
    with pytest.raises(Unauthenticated) as info:
        _subject(_signed(subject))

    assert info.value.reason == "TOKEN_INVALID"


def test_minting_refuses_an_empty_subject_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="subject") as info:
        mint_token(SECRET, "")

    assert "\n" not in str(info.value)


@pytest.mark.parametrize("subject", ["x" * 129, "alice\nadmin", "nul\x00"])
def test_minting_refuses_a_subject_the_verifier_would_refuse(subject: str) -> None:
    with pytest.raises(ValueError, match="1..128 printable characters") as info:
        mint_token(SECRET, subject)

    assert subject not in str(info.value)


@pytest.mark.parametrize("ttl", [0, -1, -60])
def test_minting_refuses_a_ttl_that_is_not_positive(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl") as info:
        mint_token(SECRET, "user-7", ttl_seconds=ttl)

    assert str(ttl) in str(info.value) and "\n" not in str(info.value)


def test_minted_token_lives_for_its_ttl() -> None:
    claims = jwt.decode(mint_token(SECRET, "user-7", ttl_seconds=90), SECRET,
                        algorithms=["HS256"], issuer="geoplex")

    assert claims["exp"] - claims["iat"] == 90
