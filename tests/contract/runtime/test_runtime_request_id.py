"""Every RPC has a request id: the caller's, or one the server makes; it comes back."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from runtime_probe import ProbeProximityServicer, search_request

from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.context import request_id


def _trailing_request_ids(metadata: grpc.aio.Metadata | None) -> list[str | bytes]:
    return [value for key, value in metadata or () if key == "x-request-id"]


async def test_caller_request_id_comes_back_in_trailing_metadata_and_reaches_the_handler(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    call = probe_stub.SearchNearbyBusinesses(search_request(radius_meters=500),
                                             metadata=(("x-request-id", "abc"),))
    await call

    assert _trailing_request_ids(await call.trailing_metadata()) == ["abc"]
    assert probe.request_ids == ["abc"]


async def test_call_without_request_id_gets_a_generated_one_the_handler_also_sees(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    call = probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"))
    await call

    ids = _trailing_request_ids(await call.trailing_metadata())
    assert len(ids) == 1 and ids[0] not in ("", "-")
    assert probe.request_ids == ids


async def test_generated_request_ids_differ_between_calls(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    for _ in range(3):
        await probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"))

    assert len(set(probe.request_ids)) == 3


@pytest.mark.parametrize("business_id", ["missing", "crash"])
async def test_failed_call_carries_the_request_id_too(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer, business_id: str) -> None:
    call = probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id=business_id),
                                  metadata=(("x-request-id", "err-42"),))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call

    assert _trailing_request_ids(info.value.trailing_metadata()) == ["err-42"]
    assert probe.request_ids == ["err-42"]


async def test_overlong_request_id_is_truncated_not_rejected(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    call = probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"),
                                  metadata=(("x-request-id", "r" * 1000),))
    await call

    assert _trailing_request_ids(await call.trailing_metadata()) == ["r" * 128]
    assert probe.request_ids == ["r" * 128]


async def test_request_id_does_not_leak_out_of_the_rpc(
        probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub) -> None:
    await probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"),
                                 metadata=(("x-request-id", "inside"),))

    assert request_id.get() == "-"
