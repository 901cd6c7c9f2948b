"""Consumer processes of a group killed with SIGKILL, or stopped (SIGSTOP) past their
session: the group rebalances after the session timeout, every record is delivered at
least once, no committed offset ever moves backwards, and a stopped member that comes back
joins again and gets partitions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients.broker import BrokerClient, RecordMetadata
from geoplex.infra.local import LocalInfra
from geoplex.infra.process import Process

import polling  # tests/polling.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

OWN_BACKENDS = ("etcd",)
PARTITIONS = 6
RECORDS = 6000
SESSION_TIMEOUT_S = 2.0
DEADLINE_S = 60.0

# one group member in its own process: writes "partition offset" for each record it is
# handed, before it moves past it (so before the record can be committed)
CONSUMER = """
import asyncio, sys
from geoplex.clients.broker import BrokerClient

async def main(target, group, topic, out):
    async with BrokerClient(target) as broker:
        consumer = broker.consumer(group, [topic], session_timeout=float(sys.argv[5]),
                                   auto_commit_interval=0.2, auto_offset_reset="earliest",
                                   client_id=out)
        async with consumer:
            print("consumer ready", flush=True)
            with open(out, "a") as seen:
                async for record in consumer:
                    seen.write(f"{record.partition} {record.offset}\\n")
                    seen.flush()

asyncio.run(main(*sys.argv[1:5]))
"""


def seen_in(path: Path) -> set[tuple[int, int]]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        partition, _, offset = line.partition(" ")
        if offset:  # a line being written is read next time
            out.add((int(partition), int(offset)))
    return out


async def until(condition: Callable[[], object], what: str, limit: float = DEADLINE_S) -> None:
    """Poll ``condition`` (a value, or an awaitable of one) until it is true."""
    await polling.eventually(condition, limit, what=what, every=0.05)


@pytest.fixture(scope="module")
def broker_address(own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
                   tmp_path_factory: pytest.TempPathFactory) -> str:
    env = {**own_infra.urls.env(),
           "GEOPLEX_BROKER_DATA_DIR": str(tmp_path_factory.mktemp("broker-crash")),
           "GEOPLEX_BROKER_ETCD_PREFIX": f"/crash-{uuid.uuid4().hex[:8]}/broker"}
    return server_factory("broker", env, "broker-crash").address


def consumer_processes(broker_address: str, group: str, topic: str, outputs: list[Path],
                       logs: Path) -> list[Process]:
    return [Process(f"consumer-{i}", [sys.executable, "-c", CONSUMER, broker_address, group,
                                      topic, str(out), str(SESSION_TIMEOUT_S)],
                    logs / f"consumer-{i}.log", ready_line=re.compile("consumer ready"),
                    stop_grace=10.0)
            for i, out in enumerate(outputs)]


class CommitWatch:
    """Polls a group's committed offsets and notes any that moved backwards."""

    def __init__(self, client: BrokerClient, group: str, topic: str) -> None:
        self.client, self.group, self.topic = client, group, topic
        self.history: dict[tuple[str, int], list[int]] = {}
        self.backwards: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CommitWatch:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def sample(self) -> None:
        committed = await self.client.get_committed_offsets(self.group, [self.topic])
        for tp, offset in committed.items():
            seen = self.history.setdefault(tp, [])
            if seen and offset < seen[-1]:
                self.backwards.append(f"{tp}: {seen[-1]} -> {offset}")
            seen.append(offset)

    async def _watch(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(0.05)  # the next look


async def produce(client: BrokerClient, topic: str, start: int, count: int,
                  pause: float = 0.0, hold: asyncio.Event | None = None
                  ) -> list[RecordMetadata]:
    """``hold``: the second half waits until it is set (the stream goes on past a fault
    however fast the first half went)."""
    written: list[RecordMetadata] = []
    async with client.producer(linger_ms=2) as producer:
        for first in range(start, start + count, 100):
            if hold is not None and first - start >= count // 2:
                await hold.wait()
            futures = [await producer.send(topic, b"ride %d" % i, key=b"%d" % i)
                       for i in range(first, min(first + 100, start + count))]
            written.extend([await f for f in futures])
            if pause:
                await asyncio.sleep(pause)  # a steady stream, not one burst
    return written


def delivered(outputs: list[Path]) -> set[tuple[int, int]]:
    return set().union(*(seen_in(out) for out in outputs))


async def members(client: BrokerClient, group: str) -> int:
    return len((await client.describe_group(group)).members)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_killed_consumer_process_loses_no_record_and_no_commit_goes_backwards(
        broker_address: str, tmp_path: Path) -> None:
    topic, group = "crash-rides", "crash-billing"
    outputs = [tmp_path / f"seen-{i}.txt" for i in range(3)]
    consumers = consumer_processes(broker_address, group, topic, outputs, tmp_path)
    async with BrokerClient(broker_address) as client:
        await client.create_topic(topic, PARTITIONS)
        try:
            for consumer in consumers:
                consumer.start()
            for consumer in consumers:
                await consumer.wait_ready_async(60.0)
            # (else the first member, given every partition at its join, may read the whole
            # first half before it hands any over, and the victim has nothing to read)
            await until(lambda: _each_owns_part_of(client, group, topic, len(consumers)),
                        "the three members share the topic")
            async with CommitWatch(client, group, topic) as watch:
                killed = asyncio.Event()
                producing = asyncio.create_task(produce(client, topic, 0, RECORDS, pause=0.01,
                                                        hold=killed))
                await until(lambda: len(seen_in(outputs[0])) >= 200,
                            "the first consumer is consuming")
                assert not producing.done(), "the kill must come mid-stream"
                consumers[0].kill()  # SIGKILL: no leave, no last commit
                killed.set()         # the second half is produced after the kill
                written = await producing
                wanted = {(m.partition, m.offset) for m in written}
                assert len(wanted) == RECORDS
                await until(lambda: wanted <= delivered(outputs),
                            "every record delivered at least once")
                # the victim's session timed out: two members share every partition now
                described = await client.describe_group(group)
                assert len(described.members) == 2
                owned = {p for m in described.members for tps in m.assignment
                         if tps.topic == topic for p in tps.partitions}
                assert owned == set(range(PARTITIONS))
                await until(lambda: all_committed(client, group, topic),
                                  "the survivors commit up to the log end")
                await watch.sample()  # the final offsets, after whatever it saw on the way
            assert not watch.backwards, f"committed offsets went backwards: {watch.backwards}"
            # how many commits it saw on the way depends on timing (a victim killed before
            # its first hand-over leaves the others idle until its session ends); the last
            # look always sees every partition
            assert len(watch.history) == PARTITIONS
        finally:
            for consumer in consumers:
                consumer.stop()


async def all_committed(client: BrokerClient, group: str, topic: str) -> bool:
    ends = {info.partition: info.log_end_offset
            for info in (await client.get_topic(topic)).partitions}
    done = await client.get_committed_offsets(group, [topic])
    return all(done.get((topic, p), -1) == end for p, end in ends.items())


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_consumer_stopped_past_its_session_joins_again_when_it_resumes(
        broker_address: str, tmp_path: Path) -> None:
    topic, group = "pause-rides", "pause-billing"
    outputs = [tmp_path / f"seen-{i}.txt" for i in range(2)]
    consumers = consumer_processes(broker_address, group, topic, outputs, tmp_path)
    paused = consumers[0]
    async with BrokerClient(broker_address) as client:
        await client.create_topic(topic, 2)
        try:
            for consumer in consumers:
                consumer.start()
            for consumer in consumers:
                await consumer.wait_ready_async(60.0)
            await until(lambda: _each_owns_part_of(client, group, topic, 2),
                              "the two members share the topic")
            async with CommitWatch(client, group, topic) as watch:
                first = await produce(client, topic, 0, 400)
                await until(lambda: {(m.partition, m.offset) for m in first}
                            <= delivered(outputs), "the first records delivered")
                assert seen_in(outputs[0]) and seen_in(outputs[1])  # both had a partition

                assert paused.pid is not None
                os.kill(paused.pid, signal.SIGSTOP)  # no heartbeats: its session ends
                try:
                    await until(lambda: _members_are(client, group, 1),
                                      "the stopped member left the group")
                    second = await produce(client, topic, 400, 400)
                    await until(lambda: {(m.partition, m.offset) for m in second}
                                <= seen_in(outputs[1]), "the other member took over")
                finally:
                    os.kill(paused.pid, signal.SIGCONT)
                await until(lambda: _each_owns_part_of(client, group, topic, 2),
                                  "the resumed member joined again and owns a partition")
                before = len(seen_in(outputs[0]))
                third = await produce(client, topic, 800, 400)
                await until(lambda: {(m.partition, m.offset) for m in third}
                            <= delivered(outputs), "the last records delivered")
                assert len(seen_in(outputs[0])) > before  # it was given a partition again
                await until(lambda: all_committed(client, group, topic),
                                  "both commit up to the log end")
            assert not watch.backwards, f"committed offsets went backwards: {watch.backwards}"
            assert "membership lost" in paused.log_tail(200)
        finally:
            for consumer in consumers:
                consumer.stop()


async def _members_are(client: BrokerClient, group: str, count: int) -> bool:
    return await members(client, group) == count


async def _each_owns_part_of(client: BrokerClient, group: str, topic: str, count: int) -> bool:
    described = await client.describe_group(group)
    return described.state == "STABLE" and len(described.members) == count and all(
        any(tps.topic == topic and tps.partitions for tps in m.assignment)
        for m in described.members)
