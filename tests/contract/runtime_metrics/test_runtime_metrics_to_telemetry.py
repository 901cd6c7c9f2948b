"""Real servers push their own metrics to a real telemetry server over OTLP (GEOPLEX_METRICS
=otlp): each RPC by method and status code, the broker's end and committed offsets and
consumer lag, the proximity index size, presence's fan-out and open streams, all found by the PromQL a dashboard or an alert rule would use."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from polling import eventually

from geoplex.broker.v1 import broker_pb2 as bpb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError, ResourceExhaustedError
from geoplex.clients.notifier import NotifierClient
from geoplex.clients.presence import LiveSession, PresenceClient
from geoplex.clients.proximity import ProximityClient
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import BackendUrls, free_port
from geoplex.notifier.v1 import notifier_pb2 as npb
from geoplex.proximity.v1 import proximity_pb2 as ppb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.type.v1.geo_pb2 import LatLng

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

BY_METHOD_AND_CODE = ('sum by (rpc_method, rpc_grpc_status_code) '
                      '(rpc_server_call_duration_seconds_count{{job="{job}"}})')


def metrics_env(telemetry: ServerProcess) -> dict[str, str]:
    return {"GEOPLEX_METRICS": "otlp", "GEOPLEX_METRICS_ENDPOINT": telemetry.address,
            "GEOPLEX_METRICS_INTERVAL_SECONDS": "0.5", "GEOPLEX_LOG_LEVEL": "warning"}


@pytest.fixture(scope="module")
def telemetry(server_factory: Callable[..., ServerProcess],
              tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("metrics-store")),
        "GEOPLEX_METRICS": "off"}, "metrics-telemetry")


@pytest.fixture(scope="module")
def broker(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
           tmp_path_factory: pytest.TempPathFactory, telemetry: ServerProcess) -> ServerProcess:
    data: Path = tmp_path_factory.mktemp("metrics-broker")
    return server_factory("broker", {
        **backends.env(), "GEOPLEX_BROKER_DATA_DIR": str(data),
        "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
        **metrics_env(telemetry)}, "metrics-broker")


@pytest.fixture(scope="module")
def proximity(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
              telemetry: ServerProcess) -> ServerProcess:
    return server_factory("proximity", {
        **backends.env(), "GEOPLEX_PROXIMITY_DATABASE": f"metrics_{uuid.uuid4().hex[:8]}",
        **metrics_env(telemetry)}, "metrics-proximity")


@pytest.fixture(scope="module")
def presence(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
             telemetry: ServerProcess) -> ServerProcess:
    tag = uuid.uuid4().hex[:8]
    return server_factory("presence", {
        **backends.env(), "GEOPLEX_PRESENCE_DATABASE": f"metrics_{tag}",
        "GEOPLEX_PRESENCE_NAMESPACE": f"metrics{tag}:", "GEOPLEX_PRESENCE_PORT": "0",
        **metrics_env(telemetry)}, "metrics-presence")


@pytest.fixture
async def tm(telemetry: ServerProcess) -> AsyncIterator[TelemetryClient]:
    async with TelemetryClient(telemetry.address, ChannelOptions(retry=False)) as client:
        yield client


Vector = dict[tuple[tuple[str, str], ...], float]  # sorted labels -> value


async def _vector(tm: TelemetryClient, query: str) -> Vector:
    answer = await tm.query(query, timeout=10)
    return {tuple(sorted((label.name, label.value) for label in s.labels)): s.sample.value
            for s in answer.vector}


async def test_broker_rpcs_by_method_and_code_and_a_groups_lag_reach_telemetry(
        broker: ServerProcess, tm: TelemetryClient) -> None:
    topic, group = f"metrics-{uuid.uuid4().hex[:8]}", f"billing-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(broker.address) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        await stub.CreateTopic(bpb.CreateTopicRequest(topic=bpb.Topic(name=topic, partitions=1)),
                               timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateTopic(bpb.CreateTopicRequest(
                topic=bpb.Topic(name=f"{topic}-none", partitions=0)), timeout=10)
        # the group has read nothing: its offset at the start, then 5 records it never reads
        await stub.ResetOffsets(bpb.ResetOffsetsRequest(group=group, topic=topic,
                                                        to=bpb.RESET_TO_EARLIEST), timeout=10)
        await stub.Produce(bpb.ProduceRequest(
            topic=topic, partition=0, acks=bpb.ACKS_ALL,
            records=[bpb.Record(value=b"%d" % i) for i in range(5)]), timeout=10)
        # it commits the first 2 (from outside the group: it has no members)
        await stub.CommitOffsets(bpb.CommitOffsetsRequest(
            group=group, offsets=[bpb.PartitionOffset(topic=topic, partition=0, offset=2)]),
            timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    async def rpcs_seen() -> Vector:
        found = await _vector(tm, BY_METHOD_AND_CODE.format(job="broker"))
        wanted = [(("rpc_grpc_status_code", "0"), ("rpc_method", "CreateTopic")),
                  (("rpc_grpc_status_code", "3"), ("rpc_method", "CreateTopic")),
                  (("rpc_grpc_status_code", "0"), ("rpc_method", "Produce"))]
        return found if all(key in found for key in wanted) else {}

    by_method = await eventually(rpcs_seen, 30, what="the broker's RPCs in telemetry")
    assert by_method[(("rpc_grpc_status_code", "3"), ("rpc_method", "CreateTopic"))] == 1
    assert by_method[(("rpc_grpc_status_code", "0"), ("rpc_method", "Produce"))] == 1

    lag_query = f'geoplex_broker_consumer_lag{{job="broker", group="{group}", topic="{topic}"}}'

    async def lag() -> Vector:
        found = await _vector(tm, lag_query)
        return found if list(found.values()) == [3.0] else {}

    ((labels, _),) = (await eventually(lag, 30, what="the group's lag of 3")).items()
    assert {k for k, _ in labels} >= {"__name__", "job", "instance", "topic", "partition",
                                      "group"}
    assert dict(labels)["partition"] == "0"
    end = await _vector(tm, f'geoplex_broker_partition_end_offset{{topic="{topic}"}}')
    assert list(end.values()) == [5.0]
    committed = await _vector(tm, f'geoplex_broker_consumer_committed_offset{{job="broker", '
                                  f'group="{group}", topic="{topic}", partition="0"}}')
    assert list(committed.values()) == [2.0]


async def test_proximity_calls_and_its_index_size_reach_telemetry(
        proximity: ServerProcess, tm: TelemetryClient) -> None:
    async with ProximityClient(proximity.address, ChannelOptions(retry=False)) as px:
        await px.search(60.1704, 24.9522, 1000, timeout=10)
        with pytest.raises(InvalidArgumentError):
            await px.search(60.1704, 24.9522, 7, timeout=10)
        async def none_indexed() -> Vector:  # a fresh, empty database
            size = await _vector(tm, 'geoplex_proximity_index_businesses{job="proximity"}')
            return size if list(size.values()) == [0.0] else {}

        await eventually(none_indexed, 30, what="the proximity index size 0 in telemetry")
        await px.create(ppb.Business(name="Metrics cafe", category="cafe",
                                     location=LatLng(latitude=60.17, longitude=24.95)),
                        token=mint_token(DEV_SECRET, "metrics-owner"), timeout=10)

    async def both_codes() -> Vector:
        found = await _vector(tm, BY_METHOD_AND_CODE.format(job="proximity"))
        keys = [(("rpc_grpc_status_code", code), ("rpc_method", "SearchNearbyBusinesses"))
                for code in ("0", "3")]
        return found if all(found.get(key) == 1 for key in keys) else {}

    await eventually(both_codes, 30, what="the proximity RPCs in telemetry")

    async def one_indexed() -> Vector:  # the business just created, in its index
        size = await _vector(tm, 'geoplex_proximity_index_businesses{job="proximity"}')
        return size if list(size.values()) == [1.0] else {}

    await eventually(one_indexed, 30, what="the proximity index size 1 in telemetry")


async def test_the_notifiers_counts_reach_telemetry_for_its_failure_alert(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        telemetry: ServerProcess, tm: TelemetryClient) -> None:
    """The notifier's instruments: what it holds and what it sent or failed to send — the
    series the default NotificationsFailing rule reads, which it finds failing once a
    webhook nobody listens on refused a notification."""
    notifier = server_factory("notifier", {
        **backends.env(), "GEOPLEX_NOTIFIER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
        "GEOPLEX_NOTIFIER_ID": "1", "GEOPLEX_NOTIFIER_GROUP_WAIT": "100ms",
        "GEOPLEX_NOTIFIER_RETRY_ATTEMPTS": "1",
        "GEOPLEX_NOTIFIER_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook",
        **metrics_env(telemetry)}, "metrics-notifier")

    async def silences_reported() -> Vector:
        return await _vector(tm, 'sum by (state) (geoplex_notifier_silences{job="notifier"})')

    found = await eventually(silences_reported, 60, what="the notifier's silence gauges")
    assert {dict(k)["state"] for k in found} >= {"active", "expired"}
    groups = await _vector(tm, 'geoplex_notifier_aggregation_groups{job="notifier"}')
    assert list(groups.values()) == [0.0]

    alert = npb.Alert(labels={"alertname": "MetricsTest", "severity": "page"})
    async with NotifierClient(notifier.address, ChannelOptions(retry=False)) as client:
        await client.post_alerts([alert])

    async def failing() -> Vector:   # the rule's expression, over what the notifier pushed
        return await _vector(tm, 'sum by (job, instance) (increase('
                                 'geoplex_notifier_notifications_failed_total[15m])) > 0')

    found = await eventually(failing, 60, what="NotificationsFailing's expression true")
    assert [dict(k)["job"] for k in found] == ["notifier"]
    failed = await _vector(tm, 'geoplex_notifier_notifications_failed_total{job="notifier"}')
    assert [dict(k)["integration"] for k, v in failed.items() if v > 0] == ["webhook"]


async def test_writes_telemetry_refuses_are_counted_in_its_own_metrics_for_its_alert(
        server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Telemetry exporting its own metrics to itself: each refused write counts its samples
    in geoplex_telemetry_samples_rejected_total{path, reason}, what the default rule
    TelemetryIngestRefusingSamples reads; a write it takes counts nothing."""
    port = free_port()
    own = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_PORT": str(port),
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("refusing-store")),
        "GEOPLEX_TELEMETRY_MAX_SAMPLES_PER_SECOND": "1000",
        "GEOPLEX_METRICS": "otlp", "GEOPLEX_METRICS_ENDPOINT": f"127.0.0.1:{port}",
        "GEOPLEX_METRICS_INTERVAL_SECONDS": "0.5"}, "refusing-telemetry")
    now_ms = int(time.time() * 1000)
    async with TelemetryClient(own.address, ChannelOptions(retry=False)) as client:
        await client.write([series({"__name__": "kept", "job": "t"}, [(now_ms, 1.0)])])
        with pytest.raises(InvalidArgumentError):   # a label name that is not one: 3 samples
            await client.write([series({"__name__": "bad", "0job": "t"},
                                       [(now_ms + i, 1.0) for i in range(3)])])
        with pytest.raises(ResourceExhaustedError):  # over the tenant's 1000/s (burst 2000)
            await client.write([series({"__name__": "many", "job": "t"},
                                       [(now_ms + i, 1.0) for i in range(5000)])])

        async def refused() -> Vector:
            found = await _vector(client, 'sum by (path, reason) '
                                          '(geoplex_telemetry_samples_rejected_total)')
            return found if len(found) >= 2 else {}

        found = await eventually(refused, 60, what="the refusals in telemetry's metrics")
        by_reason = {dict(k)["reason"]: v for k, v in found.items()
                     if dict(k)["path"] == "write"}
        assert by_reason.pop("SAMPLE_RATE_LIMIT") == 5000
        assert list(by_reason.values()) == [3]  # the invalid label's reason, its 3 samples
        # refusals going on: the rule's expression sees them, by path and reason
        with pytest.raises(ResourceExhaustedError):
            await client.write([series({"__name__": "many", "job": "t"},
                                       [(now_ms + i, 1.0) for i in range(5000)])])

        async def rising() -> Vector:
            return await _vector(client, 'sum by (job, instance, path, reason) (rate('
                                         'geoplex_telemetry_samples_rejected_total[5m])) > 0')

        firing = await eventually(rising, 60, what="the refusal rate in telemetry")
        assert ("write", "telemetry") in {(dict(k)["path"], dict(k)["job"]) for k in firing}


async def test_presence_fan_out_and_open_streams_reach_telemetry(
        presence: ServerProcess, tm: TelemetryClient) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    home = (57.7089, 11.9746)

    def client(user: str) -> PresenceClient:
        return PresenceClient(presence.address, ChannelOptions(
            token=mint_token(DEV_SECRET, user), retry=False))

    async def next_kind(live: LiveSession, kind: str) -> None:
        deadline = time.monotonic() + 10
        while (await live.next(max(0.05, deadline - time.monotonic()))
               ).WhichOneof("event") != kind:
            pass

    fanout = 'geoplex_presence_fanout_messages_total{job="presence"}'

    async def none_yet() -> Vector:  # the counter's first export, before any fan-out
        found = await _vector(tm, fanout)
        return found if list(found.values()) == [0.0] else {}

    await eventually(none_yet, 30, what="presence's fan-out counter at 0")
    async with client(alice) as pa, client(bob) as pbob:
        await pa.set_sharing(True)
        await pbob.set_sharing(True)
        await pa.add_friend(bob)
        async with pa.live(*home) as la:
            await next_kind(la, "snapshot")  # alice's stream is open before bob's
            async with pbob.live(home[0] + 0.01, home[1]) as lb:
                await next_kind(la, "friend_nearby")  # fan-out 1: bob to alice
                await next_kind(lb, "snapshot")
                await lb.update(home[0] + 0.02, home[1])
                await next_kind(la, "friend_moved")  # fan-out 2: bob's move to alice

                async def two_streams() -> Vector:
                    found = await _vector(tm, 'geoplex_presence_streams{job="presence"}')
                    return found if list(found.values()) == [2.0] else {}

                await eventually(two_streams, 30, what="presence's 2 open streams")

    async def fanned_out() -> Vector:
        found = await _vector(tm, fanout)
        return found if list(found.values()) == [2.0] else {}

    await eventually(fanned_out, 30, what="presence's fan-out of 2 events")

    async def rising() -> Vector:  # the rate a dashboard draws: from 0 to 2 within the minute
        found = await _vector(tm, f"sum(rate({fanout}[1m]))")
        return found if found and list(found.values())[0] > 0 else {}

    await eventually(rising, 30, what="a fan-out rate above 0")
