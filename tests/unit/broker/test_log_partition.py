"""A partition log on real files: order, reads, bounds, CRCs, producers, fsync, waiting,
rolling and retention."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.domain import (
    CorruptBatch,
    LogClosed,
    OffsetOutOfRange,
    OutOfSequence,
    TopicConfig,
)
from geoplex.servers.broker.log import DiskPartitionLog, FsyncPolicy
from geoplex.servers.broker.log.frame import HEADER_SIZE, read_header

NEVER = FsyncPolicy.never()


def blob(size: int, tag: int = 0, records: int = 1) -> bytes:
    return pb.RecordBatch(records=[pb.Record(key=b"%d" % tag, value=bytes([tag % 256]) * size)
                                   for _ in range(records)]).SerializeToString()


def parse(payload: bytes) -> pb.RecordBatch:
    return pb.RecordBatch.FromString(payload)


def frames(path: Path) -> list[tuple[int, int]]:
    """(position, base offset) of every frame in a segment file."""
    data = path.read_bytes()
    found, position = [], 0
    while position < len(data):
        header = read_header(data, position)
        found.append((position, header.base_offset))
        position += header.size
    return found


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def open_log(directory: Path, policy: FsyncPolicy = NEVER, clock: Clock | None = None,
                   **config: Any) -> DiskPartitionLog:
    return await DiskPartitionLog.open(directory, "t", 0, TopicConfig(**config), policy,
                                       clock or Clock())


async def test_batches_read_back_in_order_across_segment_rolls(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", segment_bytes=2_000)
    bases = []
    for i in range(40):
        result = await log.append(blob(100 + 13 * i, i, records=1 + i % 3), 1 + i % 3, i)
        bases.append(result.base_offset)
    assert log.segment_count > 3
    assert bases == sorted(bases) and log.log_end_offset == sum(1 + i % 3 for i in range(40))
    got = log.read(0, 1 << 30).batches
    assert [parse(b).base_offset for b in got] == bases
    assert [parse(b).records[0].key for b in got] == [b"%d" % i for i in range(40)]
    assert sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))[0] == "0" * 20 + ".log"
    for i, base in enumerate(bases):
        assert parse(log.read(base, 1).batches[0]).records[0].key == b"%d" % i
    await log.close()


async def test_a_read_from_inside_a_batch_returns_the_whole_batch(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    await log.append(blob(10, 1, records=5), 5, 0)
    await log.append(blob(10, 2, records=5), 5, 0)
    for offset in range(5, 10):
        (batch,) = log.read(offset, 1).batches
        assert parse(batch).base_offset == 5 and len(parse(batch).records) == 5
    await log.close()


async def test_reads_outside_the_log_are_out_of_range_and_at_its_end_empty(
        tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    await log.append(blob(10), 3, 0)
    with pytest.raises(OffsetOutOfRange) as below:
        log.read(-1, 100)
    assert (below.value.log_start_offset, below.value.log_end_offset) == (0, 3)
    with pytest.raises(OffsetOutOfRange):
        log.read(4, 100)
    at_end = log.read(3, 100)
    assert at_end.batches == [] and at_end.log_end_offset == 3
    await log.close()


async def test_max_bytes_bounds_a_read_but_the_first_batch_always_comes(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    for i in range(5):
        await log.append(blob(1_000, i), 1, 0)
    sizes = [len(log.read(offset, 1).batches[0]) for offset in range(5)]
    assert len(log.read(0, 1).batches) == 1
    assert len(log.read(0, sizes[0] + sizes[1]).batches) == 2
    assert len(log.read(0, sum(sizes[:3]) - 1).batches) == 2
    assert len(log.read(1, 1 << 20).batches) == 4
    await log.close()


async def test_a_corrupt_batch_is_reported_never_served(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    for i in range(3):
        await log.append(blob(500, i), 1, 0)
    segment = tmp_path / "t-0" / ("0" * 20 + ".log")
    position, _ = frames(segment)[1]
    with open(segment, "r+b") as file:
        file.seek(position + HEADER_SIZE + 100)
        byte = file.read(1)
        file.seek(position + HEADER_SIZE + 100)
        file.write(bytes([byte[0] ^ 0xFF]))
    before = log.read(0, 1 << 20).batches
    assert [parse(b).base_offset for b in before] == [0]  # stops before the damage
    with pytest.raises(CorruptBatch):
        log.read(1, 1 << 20)
    assert [parse(b).base_offset for b in log.read(2, 1 << 20).batches] == [2]
    await log.close()


async def test_a_producer_retry_is_written_once_and_a_gap_is_refused(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    first = await log.append(blob(10), 2, 0, producer_id=99, base_sequence=0)
    second = await log.append(blob(10), 3, 0, producer_id=99, base_sequence=2)
    retry = await log.append(blob(10), 2, 0, producer_id=99, base_sequence=0)
    assert retry.duplicate and (retry.base_offset, retry.count) == (first.base_offset, 2)
    assert log.log_end_offset == 5
    with pytest.raises(OutOfSequence) as gap:
        await log.append(blob(10), 1, 0, producer_id=99, base_sequence=6)
    assert gap.value.metadata == {"expected": "5", "got": "6"}
    assert (await log.append(blob(10), 1, 0, producer_id=99, base_sequence=5)).base_offset == 5
    # a new producer may start anywhere; others do not interfere
    assert (await log.append(blob(10), 1, 0, producer_id=7, base_sequence=40)).base_offset == 6
    assert not (await log.append(blob(10), 1, 0, producer_id=7, base_sequence=41)).duplicate
    assert second.base_offset == 2 and log.log_end_offset == 8
    await log.close()


async def test_the_last_five_batches_of_a_producer_are_remembered(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    for sequence in range(7):
        await log.append(blob(10), 1, 0, producer_id=5, base_sequence=sequence)
    for sequence in range(2, 7):
        assert (await log.append(blob(10), 1, 0, producer_id=5, base_sequence=sequence)).duplicate
    with pytest.raises(OutOfSequence):
        await log.append(blob(10), 1, 0, producer_id=5, base_sequence=1)
    assert log.log_end_offset == 7
    await log.close()


async def test_concurrent_appends_share_one_fsync(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy())
    results = await asyncio.gather(*(log.append(blob(1_000, i), 1, 0) for i in range(50)))
    assert sorted(r.base_offset for r in results) == list(range(50))
    assert 1 <= log.sync_rounds <= 2
    assert log.high_watermark == 50 and len(log.read(0, 1 << 20).batches) == 50
    await log.close()


async def test_under_the_per_batch_policy_a_batch_is_visible_once_synced(
        tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy())
    await log.append(blob(10), 1, 0)
    await log.append(blob(10), 1, 0, sync=False)  # returns before its fsync
    assert (log.log_end_offset, log.high_watermark) == (2, 1)
    assert log.read(1, 100).batches == []
    assert await log.wait_for(1, 10.0)
    assert len(log.read(1, 100).batches) == 1
    await log.close()


async def test_sync_true_forces_an_fsync_under_an_interval_policy(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy.every(interval_ms=3_600_000))
    await log.append(blob(10), 1, 0)
    assert log.sync_rounds == 0 and log.high_watermark == 1  # visible once written
    await log.append(blob(10), 1, 0, sync=True)
    assert log.sync_rounds == 1
    await log.close()


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_an_interval_policy_syncs_in_the_background(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy.every(interval_ms=10))
    await log.append(blob(10), 1, 0)
    await _until(lambda: log.sync_rounds >= 1)
    await log.close()


async def test_a_bytes_policy_syncs_once_enough_is_unsynced(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy.every(interval_bytes=3_000))
    await log.append(blob(1_000), 1, 0)
    await log.append(blob(1_000), 1, 0)
    await asyncio.sleep(0)
    assert log.sync_rounds == 0
    await log.append(blob(1_000), 1, 0)
    await _until(lambda: log.sync_rounds >= 1)
    await log.close()


async def test_wait_for_wakes_on_append_and_otherwise_times_out(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    assert not await log.wait_for(0, 0.01)
    waiting = asyncio.ensure_future(log.wait_for(0, 30.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    await log.append(blob(10), 1, 0)
    assert await waiting
    assert await log.wait_for(0, 0.0)  # already past
    await log.close()


async def test_closing_wakes_waiters_and_refuses_appends(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0")
    waiting = asyncio.ensure_future(log.wait_for(0, 30.0))
    await asyncio.sleep(0)
    await log.close()
    with pytest.raises(LogClosed):
        await waiting
    with pytest.raises(LogClosed):
        await log.append(blob(10), 1, 0)


async def test_a_segment_rolls_once_its_first_batch_is_older_than_the_segment_age(
        tmp_path: Path) -> None:
    clock = Clock()
    log = await open_log(tmp_path / "t-0", clock=clock, segment_age_ms=1_000)
    await log.append(blob(10), 1, 0)
    clock.now += 999
    await log.append(blob(10), 1, 0)
    assert log.segment_count == 1
    clock.now += 1
    await log.append(blob(10), 1, 0)
    assert log.segment_count == 2
    assert len(log.read(0, 1 << 20).batches) == 3
    await log.close()


async def test_offset_for_time_finds_the_first_batch_at_or_after_a_time(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", segment_bytes=3_000)
    stamps = [100, 300, 200, 400, 400, 900, 500, 1_000]  # record times need not rise
    for i, stamp in enumerate(stamps * 20):
        await log.append(blob(200, i), 1, stamp + (i // len(stamps)) * 1_000)
    expected = {}
    every = [stamp + (i // len(stamps)) * 1_000 for i, stamp in enumerate(stamps * 20)]
    for target in range(0, 21_000, 50):
        expected[target] = next((i for i, t in enumerate(every) if t >= target), len(every))
    assert log.segment_count > 5
    for target, offset in expected.items():
        assert log.offset_for_time(target) == offset, target
    await log.close()


async def test_time_retention_deletes_old_segments_and_advances_the_log_start(
        tmp_path: Path) -> None:
    clock = Clock()
    log = await open_log(tmp_path / "t-0", clock=clock, segment_bytes=2_000,
                         retention_ms=60_000)
    for i in range(10):
        await log.append(blob(500, i), 1, 0)
    clock.now += 30_000
    for i in range(10):
        await log.append(blob(500, i), 1, 0)
    segments = log.segment_count
    assert await log.enforce_retention(clock.now) == 0
    deleted = await log.enforce_retention(clock.now + 40_000)
    assert 0 < deleted < segments and log.log_start_offset > 0
    assert log.log_start_offset <= 10  # the second half stays
    assert parse(log.read(log.log_start_offset, 1).batches[0]).base_offset == log.log_start_offset
    with pytest.raises(OffsetOutOfRange):
        log.read(log.log_start_offset - 1, 100)
    # everything expired: the active segment is rolled and goes too
    assert await log.enforce_retention(clock.now + 120_000) > 0
    assert log.log_start_offset == log.log_end_offset == 20 and log.segment_count == 1
    assert log.read(20, 100).batches == [] and log.size_bytes == 0
    assert sorted(p.name for p in (tmp_path / "t-0").glob("*.log")) == [f"{20:020d}.log"]
    assert (await log.append(blob(10), 1, 0)).base_offset == 20
    await log.close()


async def test_size_retention_deletes_the_oldest_segments_while_over_the_limit(
        tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", segment_bytes=2_000, retention_bytes=5_000)
    for i in range(40):
        await log.append(blob(400, i), 1, 0)
    total = log.size_bytes
    assert await log.enforce_retention(0) > 0
    assert log.size_bytes <= 5_000 < total
    assert log.log_start_offset > 0
    assert [parse(b).base_offset for b in log.read(log.log_start_offset, 1 << 20).batches] == list(
        range(log.log_start_offset, 40))
    await log.close()


async def test_retention_forgets_producers_whose_batches_are_all_gone(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", segment_bytes=1_000, retention_bytes=1)
    await log.append(blob(400), 1, 0, producer_id=3, base_sequence=0)
    for i in range(5):
        await log.append(blob(400, i), 1, 0)
    await log.enforce_retention(0)
    assert log.log_start_offset > 0
    # the producer is forgotten: its next batch may carry any sequence
    assert not (await log.append(blob(10), 1, 0, producer_id=3, base_sequence=9)).duplicate
    await log.close()


def test_the_log_file_is_whole_frames_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await open_log(tmp_path / "t-0")
        for i in range(3):
            await log.append(blob(10 * i, i), 1, 0)
        await log.close()

    asyncio.run(scenario())
    segment = tmp_path / "t-0" / ("0" * 20 + ".log")
    assert [base for _, base in frames(segment)] == [0, 1, 2]
    assert os.path.getsize(segment) == sum(
        read_header(segment.read_bytes(), position).size for position, _ in frames(segment))
