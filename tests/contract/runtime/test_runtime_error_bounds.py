"""An error that echoes a huge request value still reaches the client as its own code.

gRPC clients refuse trailers over 8 KiB (``RESOURCE_EXHAUSTED: received metadata size
exceeds soft limit``), so the runtime's error mapping bounds what any error echoes.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from runtime_probe import ProbeClient

from geoplex.clients.errors import InvalidArgumentError, NotFoundError
from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc

# "well under" the 8 KiB soft limit of every gRPC client
TRAILER_BUDGET = 4096
# one ASCII, one two-byte and one four-byte character: percent-encoding grows them 1x, 6x, 12x
FILLERS = ["x", "é", "\U0001f986"]


async def _rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def _wire_size(error: grpc.aio.AioRpcError) -> int:
    """What the trailers cost on the wire (HPACK counts name + value + 32 per entry):
    -bin values travel base64-encoded, grpc-message percent-encoded (at most 3x its bytes)."""
    size = len("grpc-status") + 2 + 32
    size += len("grpc-message") + 3 * len((error.details() or "").encode()) + 32
    for key, value in error.trailing_metadata() or ():
        wire = 4 * math.ceil(len(value) / 3) if isinstance(value, bytes) else len(value.encode())
        size += len(key) + wire + 32
    return size


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin in the trailers")


@pytest.mark.parametrize("filler", FILLERS)
async def test_not_found_echoing_a_5000_char_id_arrives_as_not_found_with_bounded_trailers(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub, filler: str) -> None:
    business_id = "missing-" + filler * 5000

    raw = await _rpc_error(probe_stub.GetBusiness(
        proximity_pb2.GetBusinessRequest(id=business_id), timeout=5))

    assert raw.code() is grpc.StatusCode.NOT_FOUND, raw.details()
    assert _wire_size(raw) <= TRAILER_BUDGET
    message = raw.details() or ""
    assert message.startswith("business 'missing-" + filler * 16)
    assert message.endswith("does not exist")
    assert f"{len(business_id)} chars" in message  # clipped, and says how long it was
    info = error_details_pb2.ErrorInfo()
    assert _status(raw).details[0].Unpack(info)
    assert info.reason == "BUSINESS_NOT_FOUND"
    assert info.metadata["id"].startswith("missing-" + filler * 16)
    assert len(info.metadata["id"]) <= 160
    assert f"{len(business_id)} chars" in info.metadata["id"]


@pytest.mark.parametrize("filler", FILLERS)
async def test_invalid_argument_echoing_a_5000_char_id_arrives_with_its_field(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub, filler: str) -> None:
    raw = await _rpc_error(probe_stub.GetBusiness(
        proximity_pb2.GetBusinessRequest(id="bad-" + filler * 5000), timeout=5))

    assert raw.code() is grpc.StatusCode.INVALID_ARGUMENT, raw.details()
    assert _wire_size(raw) <= TRAILER_BUDGET
    bad = error_details_pb2.BadRequest()
    assert _status(raw).details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["id"]
    description = bad.field_violations[0].description
    assert description.startswith("'bad-" + filler * 16)
    assert description.endswith("is not a business id")
    assert len(description) <= 256


async def test_typed_client_gets_not_found_for_a_5000_char_id(probe_client: ProbeClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await probe_client.get_business("missing-" + "x" * 5000)

    assert info.value.reason == "BUSINESS_NOT_FOUND"
    assert info.value.request_id == probe_client.last_request_id != ""


async def test_typed_client_gets_invalid_argument_naming_the_field_for_a_5000_char_id(
        probe_client: ProbeClient) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await probe_client.get_business("bad-" + "x" * 5000)

    assert (info.value.field, info.value.reason) == ("id", "INVALID_ID")
