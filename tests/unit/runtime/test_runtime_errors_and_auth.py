"""Domain errors map to canonical status with google.rpc details; bearer tokens verify."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from geoplex.servers._runtime.auth import DEV_SECRET, TokenVerifier, auth_secret, mint_token
from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers._runtime.status import to_status
from geoplex.servers._runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    GeoplexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)


def _decode(error: GeoplexError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    status = to_status(error)
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)  # a -bin entry
    return status.code, status_pb2.Status.FromString(details)


@pytest.mark.parametrize(("error", "code"), [
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
    (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (InvalidArgument("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_each_domain_error_has_its_canonical_code_in_status_and_details(
        error: GeoplexError, code: grpc.StatusCode) -> None:
    status_code, proto = _decode(error)

    assert status_code is code
    assert proto.code == getattr(code_pb2, code.name)


def test_error_info_carries_reason_domain_and_metadata() -> None:
    _, proto = _decode(NotFound("gone", reason="BUSINESS_NOT_FOUND", metadata={"id": "b-1"}))

    info = error_details_pb2.ErrorInfo()
    assert proto.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "BUSINESS_NOT_FOUND", "geoplex.dev", {"id": "b-1"})
    assert proto.message == "gone"


def test_default_reason_is_the_code_name() -> None:
    assert PermissionDenied("no").reason == "PERMISSION_DENIED"


def test_invalid_argument_names_field_and_allowed_values_in_message_info_and_bad_request() -> None:
    error = InvalidArgument("radius_meters", "must be one of", allowed=[500, 1000])
    _, proto = _decode(error)

    assert error.message == "radius_meters: must be one of (allowed: 500, 1000)"
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert proto.details[0].Unpack(info) and proto.details[1].Unpack(bad)
    assert dict(info.metadata) == {"field": "radius_meters", "allowed": "500,1000"}
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("radius_meters", "must be one of")]


# -- bearer tokens ------------------------------------------------------------

SECRET = "a-test-secret-that-is-32-bytes-or-longer"


def _subject(token: str | None, secret: str = SECRET) -> str:
    metadata = [] if token is None else [("authorization", token)]
    return TokenVerifier(secret).subject(metadata)


def test_minted_token_verifies_to_its_subject() -> None:
    assert _subject(f"Bearer {mint_token(SECRET, 'user-7')}") == "user-7"


@pytest.mark.parametrize(("header", "reason"), [
    (None, "TOKEN_MISSING"),
    ("Basic dXNlcjpwYXNz", "TOKEN_MALFORMED"),
    ("Bearer", "TOKEN_MALFORMED"),
    ("Bearer not-a-jwt", "TOKEN_INVALID"),
])
def test_missing_or_malformed_token_is_unauthenticated(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        _subject(header)

    assert info.value.reason == reason


def test_token_signed_with_another_secret_is_rejected() -> None:
    token = mint_token("some-other-secret-value-32-bytes-long", "user-7")

    with pytest.raises(Unauthenticated) as info:
        _subject(f"Bearer {token}")

    assert info.value.reason == "TOKEN_INVALID"


def test_expired_token_is_rejected_as_expired() -> None:
    # signed by hand: mint_token refuses a ttl that is not positive
    now = int(time.time())
    token = jwt.encode({"sub": "user-7", "iss": "geoplex", "iat": now - 120, "exp": now - 60},
                       SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated) as info:
        _subject(f"Bearer {token}")

    assert info.value.reason == "TOKEN_EXPIRED"


def test_token_without_expiry_is_rejected() -> None:
    token = jwt.encode({"sub": "user-7", "iss": "geoplex"}, SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated):
        _subject(f"Bearer {token}")


def test_token_with_the_none_algorithm_is_rejected() -> None:
    token = jwt.encode({"sub": "user-7", "iss": "geoplex", "exp": 2**40}, None, algorithm="none")

    with pytest.raises(Unauthenticated):
        _subject(f"Bearer {token}")


def test_short_auth_secret_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_AUTH_SECRET"):
        auth_secret(Env({"GEOPLEX_AUTH_SECRET": "short"}))


def test_auth_secret_defaults_to_the_dev_secret() -> None:
    assert auth_secret(Env({})) == DEV_SECRET


def test_minting_for_an_empty_subject_is_refused() -> None:
    with pytest.raises(ValueError):
        mint_token(SECRET, "")
