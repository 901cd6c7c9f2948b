"""Domain errors cross the wire as status codes with ErrorInfo, and come back typed."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from runtime_probe import CRASH_TEXT, ProbeClient, search_request

from geoplex.clients.errors import (
    GeoplexRpcError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    from_rpc_error,
)
from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc


async def _rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_invalid_argument_arrives_with_field_reason_domain_and_allowed_values(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub) -> None:
    raw = await _rpc_error(probe_stub.SearchNearbyBusinesses(search_request(radius_meters=750)))

    assert raw.code() is grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(raw)
    assert isinstance(error, InvalidArgumentError)
    assert error.reason == "INVALID_ARGUMENT"
    assert error.domain == "geoplex.dev"
    assert error.field == "radius_meters"
    assert error.metadata["allowed"] == "500,1000"
    assert "radius_meters" in error.message
    assert "500" in error.message and "1000" in error.message


async def test_invalid_argument_carries_a_bad_request_field_violation(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub) -> None:
    raw = await _rpc_error(probe_stub.SearchNearbyBusinesses(search_request(radius_meters=1)))

    # cast: from_call reads only code(), details() and trailing_metadata(), which the aio
    # error has too; its stubs ask for the blocking grpc.Call
    status = rpc_status.from_call(cast(grpc.Call, raw))
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    assert violations == [("radius_meters", "must be one of")]


async def test_invalid_argument_message_never_echoes_the_location(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub) -> None:
    raw = await _rpc_error(probe_stub.SearchNearbyBusinesses(search_request(radius_meters=3)))

    text = f"{raw.details()} {raw.trailing_metadata()!r}"
    assert "60.1704" not in text and "24.9522" not in text


@pytest.mark.parametrize(("business_id", "code", "error_type", "reason"), [
    ("missing", grpc.StatusCode.NOT_FOUND, NotFoundError, "BUSINESS_NOT_FOUND"),
    ("forbidden", grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError, "NOT_OWNER"),
])
async def test_domain_error_becomes_its_typed_client_exception(
        probe_client: ProbeClient, business_id: str, code: grpc.StatusCode,
        error_type: type[GeoplexRpcError], reason: str) -> None:
    with pytest.raises(error_type) as info:
        await probe_client.get_business(business_id)

    error = info.value
    assert error.code is code
    assert error.reason == reason
    assert error.domain == "geoplex.dev"
    assert error.field == ""


async def test_unexpected_exception_becomes_internal_without_its_text(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub) -> None:
    raw = await _rpc_error(probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="crash")))

    assert raw.code() is grpc.StatusCode.INTERNAL
    assert raw.details() == "internal error; the server logged the details"
    assert "hunter2" not in repr(raw.trailing_metadata())
    assert CRASH_TEXT not in (raw.details() or "")


async def test_unexpected_exception_is_logged_with_its_traceback(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="geoplex.rpc")

    await _rpc_error(probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="crash")))

    errors = [r for r in caplog.records if r.name == "geoplex.rpc" and r.exc_info]
    assert len(errors) == 1
    assert "GetBusiness" in errors[0].getMessage()
    exc_info = errors[0].exc_info
    assert exc_info is not None  # kept above only if it has one
    assert isinstance(exc_info[1], RuntimeError)


async def test_client_keeps_the_request_id_of_a_failed_call(probe_client: ProbeClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await probe_client.get_business("missing")

    assert info.value.request_id == probe_client.last_request_id != ""
