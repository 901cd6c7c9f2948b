"""A partition log's replication primitives on real files: frames read from a leader and
appended by a follower, truncation where the two diverge, the externally moved high
watermark, and a property: any interleaving of leader writes, follower divergence,
truncations, fetches and restarts ends with the follower byte-identical to the leader."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.domain import CorruptBatch, OffsetOutOfRange, TopicConfig
from geoplex.servers.broker.log import (
    DiskPartitionLog,
    EpochEntry,
    FramesRead,
    FsyncPolicy,
    ReplicaMismatch,
)
from geoplex.servers.broker.log.frame import HEADER_SIZE, read_header

NEVER = FsyncPolicy.never()
EVERYTHING = 1 << 30


def blob(size: int, tag: int = 0, records: int = 1) -> bytes:
    return pb.RecordBatch(records=[pb.Record(key=b"%d" % tag, value=bytes([tag % 256]) * size)
                                   for _ in range(records)]).SerializeToString()


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def open_log(directory: Path, policy: FsyncPolicy = NEVER, clock: Clock | None = None,
                   **config: Any) -> DiskPartitionLog:
    return await DiskPartitionLog.open(directory, "t", 0, TopicConfig(**config), policy,
                                       clock or Clock())


async def catch_up(leader: DiskPartitionLog, follower: DiskPartitionLog,
                   max_bytes: int = EVERYTHING) -> int:
    """Fetch until the follower's log ends where the leader's does; returns the fetches."""
    fetches = 0
    while follower.log_end_offset < leader.log_end_offset:
        got = leader.read_frames(follower.log_end_offset, max_bytes)
        assert got.count >= 1
        assert await follower.append_frames(got.data) == got.next_offset
        fetches += 1
    return fetches


def everything(log: DiskPartitionLog) -> tuple[bytes, list[bytes]]:
    return (log.read_frames(log.log_start_offset, EVERYTHING).data,
            log.read(log.log_start_offset, EVERYTHING).batches)


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(position, size) of each frame in concatenated frames."""
    spans, position = [], 0
    while position < len(data):
        size = read_header(data, position).size
        spans.append((position, size))
        position += size
    return spans


async def written_leader(directory: Path, batches: int, policy: FsyncPolicy = NEVER,
                         **config: Any) -> DiskPartitionLog:
    """Batches of 1..3 records at times 1000, 1001...; every other one from producer 42."""
    leader = await open_log(directory, policy, **config)
    sequence = 0
    for i in range(batches):
        count, idempotent = 1 + i % 3, i % 2 == 1
        await leader.append(blob(100 + 37 * i % 400, i, records=count), count, 1_000 + i,
                            producer_id=42 if idempotent else 0,
                            base_sequence=sequence if idempotent else 0)
        sequence += count if idempotent else 0
    return leader


def last_idempotent(log: DiskPartitionLog) -> tuple[int, int, int]:
    """(base sequence, records, base offset) of producer 42's last batch, from the headers."""
    data = log.read_frames(log.log_start_offset, EVERYTHING).data
    headers = [read_header(data, position) for position, _ in frame_spans(data)]
    last = [h for h in headers if h.producer_id == 42][-1]
    return last.base_sequence, last.records, last.base_offset


# ---- read_frames ----------------------------------------------------------------------


async def test_frames_are_read_as_stored_up_to_the_log_end(tmp_path: Path) -> None:
    leader = await open_log(tmp_path / "t-0", policy=FsyncPolicy(), segment_bytes=1_500)
    for i in range(12):
        await leader.append(blob(200, i), 2, i)
    await leader.append(blob(200, 12), 1, 12, sync=False)  # written, not yet synced
    assert leader.high_watermark == 24 < leader.log_end_offset == 25
    got = leader.read_frames(0, EVERYTHING)
    assert isinstance(got, FramesRead) and got.count == 13 and got.next_offset == 25
    on_disk = b"".join(path.read_bytes() for path in sorted((tmp_path / "t-0").glob("*.log")))
    assert got.data == on_disk and leader.segment_count > 2
    payloads = [got.data[p + HEADER_SIZE:p + s] for p, s in frame_spans(got.data)]
    assert payloads[:12] == leader.read(0, EVERYTHING).batches
    # from inside a batch: that whole batch; at the end: nothing; outside: out of range
    inside = leader.read_frames(5, 1)
    assert inside.count == 1 and read_header(inside.data).base_offset == 4
    assert leader.read_frames(25, 100) == FramesRead(b"", -1, 0)
    for outside in (-1, 26):
        with pytest.raises(OffsetOutOfRange):
            leader.read_frames(outside, 100)
    await leader.close()


async def test_max_bytes_bounds_read_frames_but_one_whole_frame_always_comes(
        tmp_path: Path) -> None:
    leader = await open_log(tmp_path / "t-0")
    for i in range(5):
        await leader.append(blob(1_000, i), 1, 0)
    sizes = [size for _, size in frame_spans(leader.read_frames(0, EVERYTHING).data)]
    assert leader.read_frames(0, 1).count == 1
    assert leader.read_frames(0, sizes[0] + sizes[1]).count == 2
    assert leader.read_frames(0, sum(sizes[:3]) - 1).count == 2
    assert leader.read_frames(1, EVERYTHING).count == 4
    await leader.close()


async def test_read_frames_reports_a_corrupt_frame(tmp_path: Path) -> None:
    leader = await open_log(tmp_path / "t-0")
    for i in range(3):
        await leader.append(blob(500, i), 1, 0)
    segment = tmp_path / "t-0" / ("0" * 20 + ".log")
    position, _ = frame_spans(segment.read_bytes())[1]
    with open(segment, "r+b") as file:
        file.seek(position + HEADER_SIZE + 100)
        file.write(b"\x00\xff")
    assert leader.read_frames(0, EVERYTHING).count == 1  # stops before the damage
    with pytest.raises(CorruptBatch):
        leader.read_frames(1, EVERYTHING)
    await leader.close()


# ---- append_frames --------------------------------------------------------------------


async def test_a_follower_fed_the_leaders_frames_holds_the_same_log(tmp_path: Path) -> None:
    leader = await written_leader(tmp_path / "leader", 30, segment_bytes=2_000)
    follower = await open_log(tmp_path / "follower", segment_bytes=2_000)
    assert await catch_up(leader, follower, max_bytes=1_500) > 3
    assert everything(follower) == everything(leader)
    assert follower.log_end_offset == leader.log_end_offset
    assert follower.segment_count == leader.segment_count > 3  # rolled where the leader did
    for offset in range(leader.log_end_offset):
        assert follower.read(offset, 1).batches == leader.read(offset, 1).batches
    for stamp in (0, 1_005, 1_017, 5_000):
        assert follower.offset_for_time(stamp) == leader.offset_for_time(stamp)
    # the follower, now leader, knows the idempotent producer's batches
    sequence, records, base = last_idempotent(leader)
    retry = await follower.append(blob(1), records, 0, producer_id=42, base_sequence=sequence)
    assert retry.duplicate and retry.base_offset == base
    after = await follower.append(blob(1), 1, 0, producer_id=42, base_sequence=sequence + records)
    assert not after.duplicate and after.base_offset == leader.log_end_offset
    await leader.close()
    await follower.close()


async def test_a_replicated_idempotent_batch_is_deduplicated_on_the_follower(
        tmp_path: Path) -> None:
    leader = await open_log(tmp_path / "leader")
    first = await leader.append(blob(10), 3, 0, producer_id=9, base_sequence=0)
    await leader.append(blob(10), 2, 0, producer_id=9, base_sequence=3)
    follower = await open_log(tmp_path / "follower")
    await catch_up(leader, follower)
    again = await follower.append(blob(10), 3, 0, producer_id=9, base_sequence=0)
    assert again.duplicate and again.base_offset == first.base_offset
    assert follower.log_end_offset == 5
    await leader.close()
    await follower.close()


async def test_a_follower_append_is_durable_when_it_returns(tmp_path: Path) -> None:
    leader = await written_leader(tmp_path / "leader", 5)
    follower = await open_log(tmp_path / "follower", policy=FsyncPolicy())
    told: list[int] = []
    follower.set_durable_listener(told.append)
    rounds = follower.sync_rounds
    end = await follower.append_frames(leader.read_frames(0, EVERYTHING).data)
    assert end == follower.durable_end == follower.high_watermark == leader.log_end_offset
    assert follower.sync_rounds > rounds and told == [end]
    assert follower.epoch_entries == leader.epoch_entries == (EpochEntry(0, 0),)
    await leader.close()
    await follower.close()


@pytest.mark.parametrize("where", ["magic", "length", "crc", "base_offset", "epoch", "payload"])
async def test_a_flipped_byte_is_refused_and_nothing_is_written(tmp_path: Path,
                                                                where: str) -> None:
    leader = await written_leader(tmp_path / "leader", 6)
    follower = await open_log(tmp_path / "follower")
    data = bytearray(leader.read_frames(0, EVERYTHING).data)
    third, _ = frame_spans(bytes(data))[2]
    at = third + {"magic": 0, "length": 5, "crc": 9, "base_offset": 12, "epoch": 52,
                  "payload": HEADER_SIZE + 3}[where]
    data[at] ^= 0x10
    with pytest.raises(CorruptBatch):
        await follower.append_frames(bytes(data))
    assert follower.log_end_offset == 0 and follower.size_bytes == 0
    assert follower.read(0, EVERYTHING).batches == []
    await catch_up(leader, follower)  # the intact frames are taken afterwards
    assert everything(follower) == everything(leader)
    await leader.close()
    await follower.close()


async def test_a_torn_frame_is_refused(tmp_path: Path) -> None:
    leader = await written_leader(tmp_path / "leader", 3)
    follower = await open_log(tmp_path / "follower")
    data = leader.read_frames(0, EVERYTHING).data
    for cut in (1, HEADER_SIZE - 1, HEADER_SIZE + 1, len(data) - 1):
        with pytest.raises(CorruptBatch):
            await follower.append_frames(data[:cut])
    assert follower.log_end_offset == 0
    assert await follower.append_frames(b"") == 0
    await leader.close()
    await follower.close()


async def test_frames_that_do_not_start_at_the_log_end_or_leave_a_gap_are_refused(
        tmp_path: Path) -> None:
    leader = await written_leader(tmp_path / "leader", 6)
    follower = await open_log(tmp_path / "follower")
    data = leader.read_frames(0, EVERYTHING).data
    spans = frame_spans(data)
    second = read_header(data, spans[1][0]).base_offset
    with pytest.raises(ReplicaMismatch) as ahead:
        await follower.append_frames(data[spans[1][0]:])
    assert (ahead.value.field, ahead.value.expected, ahead.value.got) == ("base_offset", 0,
                                                                         second)
    gap = data[:spans[1][0]] + data[spans[2][0]:]
    with pytest.raises(ReplicaMismatch) as missing:
        await follower.append_frames(gap)
    assert (missing.value.expected, missing.value.got) == (second,
                                                           read_header(data, spans[2][0]).base_offset)
    assert isinstance(missing.value, ValueError) and follower.log_end_offset == 0
    await follower.append_frames(data[:spans[2][0]])
    with pytest.raises(ReplicaMismatch):  # an overlap: frames the follower holds already
        await follower.append_frames(data)
    await leader.close()
    await follower.close()


async def test_frames_of_an_older_epoch_are_refused_after_batches_of_a_newer_one(
        tmp_path: Path) -> None:
    old = await open_log(tmp_path / "old")
    old.begin_epoch(1)
    await old.append(blob(10), 1, 0)
    await old.append(blob(10), 1, 0)
    follower = await open_log(tmp_path / "follower")
    follower.begin_epoch(2)
    await follower.append(blob(10), 1, 0)
    with pytest.raises(ReplicaMismatch) as stale:
        await follower.append_frames(old.read_frames(1, EVERYTHING).data)
    assert (stale.value.field, stale.value.expected, stale.value.got) == ("leader_epoch", 2, 1)
    # an epoch begun with no batch yet gives way to older batches arriving there
    follower.begin_epoch(5)
    await follower.truncate_to(0)
    assert list(follower.epoch_entries) == []
    await follower.append_frames(old.read_frames(0, EVERYTHING).data)
    assert list(follower.epoch_entries) == [EpochEntry(1, 0)]
    await old.close()
    await follower.close()


# ---- truncate_to ----------------------------------------------------------------------


async def test_truncating_inside_a_segment_cuts_at_the_batch_boundary(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy())
    bases = [(await log.append(blob(100, i), 3, 1_000 + i)).base_offset for i in range(10)]
    assert log.segment_count == 1
    assert await log.truncate_to(bases[6] + 1) == bases[6]
    assert log.log_end_offset == log.high_watermark == log.durable_end == bases[6]
    assert [pb.RecordBatch.FromString(b).base_offset for b in log.read(0, EVERYTHING).batches] \
        == bases[:6]
    size = sum(read_header(log.read_frames(b, 1).data).size for b in bases[:6])
    assert log.size_bytes == size == (tmp_path / "t-0" / ("0" * 20 + ".log")).stat().st_size
    assert log.offset_for_time(1_005) == bases[5] and log.offset_for_time(1_006) == bases[6]
    assert (await log.append(blob(100, 99), 1, 2_000)).base_offset == bases[6]
    assert log.offset_for_time(1_006) == bases[6]
    assert await log.truncate_to(log.log_end_offset) == log.log_end_offset  # nothing
    assert await log.truncate_to(10_000) == log.log_end_offset
    await log.close()


async def test_truncating_across_segments_removes_the_later_ones(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory, segment_bytes=1_000)
    for i in range(30):
        await log.append(blob(150, i), 1, 1_000 + i)
    segments = sorted(directory.glob("*.log"))
    assert len(segments) > 4
    keep = segments[1]
    base = int(keep.stem)
    assert await log.truncate_to(base + 1) == base + 1
    assert sorted(directory.glob("*.log")) == segments[:2]
    assert not keep.with_suffix(".index").exists()  # the active segment's index is in memory
    assert log.segment_count == 2 and log.log_end_offset == base + 1
    assert len(log.read(0, EVERYTHING).batches) == base + 1
    for i in range(base + 1, 30):  # the same batches again: the same segments
        await log.append(blob(150, i), 1, 1_000 + i)
    assert sorted(directory.glob("*.log")) == segments
    assert [pb.RecordBatch.FromString(b).records[0].key for b in log.read(0, EVERYTHING).batches] \
        == [b"%d" % i for i in range(30)]
    await log.close()


async def test_truncating_at_a_segment_base_leaves_it_empty_and_active(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory, segment_bytes=1_000)
    for i in range(15):
        await log.append(blob(150, i), 1, 0)
    bases = [int(path.stem) for path in sorted(directory.glob("*.log"))]
    assert await log.truncate_to(bases[1]) == bases[1]
    assert log.segment_count == 2 and log.size_bytes == (directory / f"{0:020d}.log").stat().st_size
    assert await log.truncate_to(0) == 0
    assert log.log_end_offset == log.log_start_offset == 0 and log.size_bytes == 0
    assert log.read(0, EVERYTHING).batches == [] and log.segment_count == 1
    assert (await log.append(blob(10), 1, 0)).base_offset == 0
    await log.close()


async def test_truncating_rebuilds_the_producers_and_epochs_and_lowers_the_watermark(
        tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", segment_bytes=800)
    log.begin_epoch(1)
    for sequence in range(10):
        await log.append(blob(100), 1, 0, producer_id=5, base_sequence=sequence)
    log.begin_epoch(2)
    for sequence in range(10, 20):
        await log.append(blob(100), 1, 0, producer_id=5, base_sequence=sequence)
    assert log.segment_count > 3 and log.high_watermark == 20
    assert await log.truncate_to(7) == 7
    assert log.high_watermark == 7 and log.epoch_entries == (EpochEntry(1, 0),)
    # the producer is back at the cut: its batch 7 is new, 6 a retry, 12 out of sequence
    assert (await log.append(blob(1), 1, 0, producer_id=5, base_sequence=6)).duplicate
    assert not (await log.append(blob(1), 1, 0, producer_id=5, base_sequence=7)).duplicate
    assert log.log_end_offset == 8 and log.last_batch_epoch == 1
    with pytest.raises(ValueError):
        await log.truncate_to(-1)
    await log.close()


async def test_a_truncated_log_reopens_as_it_was_left(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await written_leader(directory, 40, policy=FsyncPolicy(), segment_bytes=2_000)
    log.begin_epoch(3)
    await log.append(blob(10), 1, 0)
    assert await log.truncate_to(35) <= 35
    await log.append(blob(10, 7), 1, 3_000)
    sequence, records, base = last_idempotent(log)

    def state(of: DiskPartitionLog) -> Any:
        return (everything(of), of.log_start_offset, of.log_end_offset, of.segment_count,
                of.size_bytes, of.epoch_entries, [of.offset_for_time(t) for t in (0, 1_010, 3_000)])

    before = state(log)
    crashed = shutil.copytree(directory, tmp_path / "crashed")
    await log.close()
    for where in (directory, crashed):
        again = await open_log(where, policy=FsyncPolicy(), segment_bytes=2_000)
        assert state(again) == before, where
        assert not again.recovery_truncated
        retry = await again.append(blob(1), records, 0, producer_id=42, base_sequence=sequence)
        assert retry.duplicate and retry.base_offset == base
        await again.close()


async def test_a_follower_behind_the_leaders_log_start_starts_again_there(
        tmp_path: Path) -> None:
    leader = await written_leader(tmp_path / "leader", 30, segment_bytes=1_500,
                                  retention_bytes=3_000)
    follower = await open_log(tmp_path / "follower", segment_bytes=1_500)
    await follower.append_frames(leader.read_frames(0, 1).data)
    assert await leader.enforce_retention(0) > 0
    with pytest.raises(OffsetOutOfRange):
        leader.read_frames(follower.log_end_offset, EVERYTHING)
    start = leader.log_start_offset
    await follower.truncate_fully(start)
    assert (follower.log_start_offset, follower.log_end_offset, follower.size_bytes) == (
        start, start, 0)
    assert list(follower.epoch_entries) == [] and follower.high_watermark == start
    await catch_up(leader, follower)
    assert everything(follower) == everything(leader)
    assert list(follower.epoch_entries) == list(leader.epoch_entries)
    await follower.close()
    again = await open_log(tmp_path / "follower", segment_bytes=1_500)
    assert everything(again) == everything(leader) and again.log_start_offset == start
    sequence, records, base = last_idempotent(leader)
    retry = await again.append(blob(1), records, 0, producer_id=42, base_sequence=sequence)
    assert retry.duplicate and retry.base_offset == base
    await again.close()
    await leader.close()


# ---- the high watermark ---------------------------------------------------------------


async def test_in_replicated_mode_only_set_high_watermark_moves_it(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "t-0", policy=FsyncPolicy())
    await log.append(blob(10), 2, 0)
    log.set_replicated(True)
    assert log.replicated
    await log.append(blob(10), 3, 0)
    assert (log.durable_end, log.high_watermark) == (5, 2)
    assert len(log.read(0, EVERYTHING).batches) == 1 and log.read(2, EVERYTHING).batches == []
    assert log.offset_for_time(10**15) == 2
    waiting = asyncio.ensure_future(log.wait_for(2, 30.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    log.set_high_watermark(4)
    assert await waiting and log.high_watermark == 4
    log.set_high_watermark(1)  # never down
    log.set_high_watermark(99)  # never past the log end
    assert log.high_watermark == 5
    await log.truncate_to(2)  # but a truncation brings it down
    assert log.high_watermark == 2
    await log.append(blob(10), 1, 0)
    assert log.high_watermark == 2
    log.set_replicated(False)  # the durable end again
    assert log.high_watermark == 3
    log.set_replicated(True, high_watermark=0)  # a restarted replica knows less
    assert log.high_watermark == 0 and log.read(0, EVERYTHING).batches == []
    await log.close()


@pytest.mark.parametrize("policy", [FsyncPolicy(), NEVER], ids=["per-batch", "never"])
async def test_the_durable_listener_hears_each_advance(tmp_path: Path,
                                                       policy: FsyncPolicy) -> None:
    log = await open_log(tmp_path / "t-0", policy=policy)
    told: list[int] = []
    log.set_durable_listener(told.append)
    await log.append(blob(10), 2, 0)
    await log.append(blob(10), 1, 0)
    await log.truncate_to(2)
    await log.append(blob(10), 4, 0)
    assert told == [2, 3, 6]

    def broken(_end: int) -> None:
        raise RuntimeError("a listener's bug")

    log.set_durable_listener(broken)  # logged, never breaks the log
    await log.append(blob(10), 1, 0)
    log.set_durable_listener(None)
    await log.append(blob(10), 1, 0)
    assert told == [2, 3, 6] and log.durable_end == log.high_watermark == 8
    await log.close()


# ---- recovery -------------------------------------------------------------------------


async def test_recovery_says_whether_it_cut_anything(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await written_leader(directory, 5)
    torn = shutil.copytree(directory, tmp_path / "torn")
    corrupt = shutil.copytree(directory, tmp_path / "corrupt")
    intact = shutil.copytree(directory, tmp_path / "intact")
    await log.close()
    clean = await open_log(directory)
    assert clean.recovered_clean and not clean.recovery_truncated
    await clean.close()
    (segment,) = torn.glob("*.log")
    with open(segment, "ab") as file:
        file.write(b"\x01" * 30)
    (segment,) = corrupt.glob("*.log")
    middle, _ = frame_spans(segment.read_bytes())[2]
    with open(segment, "r+b") as file:  # a batch in the middle: kept, but it counts
        file.seek(middle + HEADER_SIZE + 10)
        file.write(b"\x00\x01\x02")
    for where, cut in ((torn, True), (corrupt, True), (intact, False)):
        again = await open_log(where)
        assert not again.recovered_clean and again.recovery_truncated == cut
        assert again.log_end_offset == log.log_end_offset
        await again.close()


# ---- the property ---------------------------------------------------------------------

leader_writes = st.tuples(st.just("leader_append"), st.integers(0, 900), st.integers(1, 3),
                          st.booleans())
new_epochs = st.tuples(st.just("leader_epoch"), st.just(0), st.just(0), st.just(False))
diverges = st.tuples(st.just("follower_leads"), st.integers(0, 900), st.integers(1, 4),
                     st.booleans())
fetches = st.tuples(st.just("fetch"), st.integers(1, 4_000), st.just(0), st.just(False))
cuts = st.tuples(st.just("truncate"), st.integers(0, 60), st.just(0), st.just(False))
restarts = st.tuples(st.just("restart"), st.just(0), st.just(0), st.booleans())
retains = st.tuples(st.just("leader_retains"), st.integers(1, 8_000), st.just(0), st.just(False))
operations = st.lists(st.one_of(leader_writes, leader_writes, new_epochs, diverges, fetches,
                                fetches, fetches, cuts, restarts, retains), max_size=40)


class Cluster:
    """A leader and a follower log, the follower run by the fetch protocol of the design."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self.epoch = 0  # the newest epoch handed out
        self.restarts = 0
        self.sequence = 0  # the idempotent producer's next
        self.last_batch = (0, 0)  # its last batch's base offset and records
        self.reigns = 0  # the follower's turns as leader (each with its own producer)

    async def start(self) -> None:
        self.leader = await self.open(self.root / "leader")
        self.follower_dir = self.root / "follower"
        self.follower = await self.open(self.follower_dir)
        self.leader.begin_epoch(0)

    async def open(self, directory: Path) -> DiskPartitionLog:
        return await open_log(directory, NEVER, segment_bytes=self.segment_bytes,
                              segment_age_ms=0)

    async def fetch(self, max_bytes: int) -> bool:
        """One fetch round: truncate where the logs diverge, else append what came.
        False when the follower is caught up and agrees with the leader."""
        follower, leader = self.follower, self.leader
        if follower.log_end_offset > follower.log_start_offset:
            last = follower.last_batch_epoch
            epoch, end = leader.end_offset_for_epoch(last)
            if epoch != last or end < follower.log_end_offset:
                _, own_end = follower.end_offset_for_epoch(epoch)
                target = min(end, own_end, follower.log_end_offset)
                await follower.truncate_to(target)
                return True
        if follower.log_end_offset == leader.log_end_offset:
            return False
        if follower.log_end_offset < leader.log_start_offset:  # the leader has no more of it
            await follower.truncate_fully(leader.log_start_offset)
            return True
        got = leader.read_frames(follower.log_end_offset, max_bytes)
        await follower.append_frames(got.data)
        return True

    async def run(self, op: str, a: int, b: int, flag: bool) -> None:
        if op == "leader_append":
            if flag:
                appended = await self.leader.append(blob(a, self.sequence), b, a, producer_id=8,
                                                    base_sequence=self.sequence)
                self.sequence += b
                self.last_batch = appended.base_offset, b
            else:
                await self.leader.append(blob(a), b, a)
        elif op == "leader_epoch":
            self.epoch += 1
            self.leader.begin_epoch(self.epoch)
        elif op == "follower_leads":  # it led for a while and wrote what the leader never got
            self.epoch += 1
            self.reigns += 1
            self.follower.begin_epoch(self.epoch)
            for i in range(b):
                await self.follower.append(blob(a, 1_000 + i), 1, a,
                                           producer_id=100 + self.reigns if flag else 0,
                                           base_sequence=i if flag else 0)
            self.epoch += 1
            self.leader.begin_epoch(self.epoch)
        elif op == "fetch":
            await self.fetch(a)
        elif op == "leader_retains":
            self.leader.configure(TopicConfig(segment_bytes=self.segment_bytes, segment_age_ms=0,
                                              retention_bytes=a))
            await self.leader.enforce_retention(0)
            self.leader.configure(TopicConfig(segment_bytes=self.segment_bytes, segment_age_ms=0))
        elif op == "truncate":
            target = min(self.follower.log_start_offset + a, self.follower.log_end_offset)
            assert await self.follower.truncate_to(target) <= target
        elif op == "restart":
            self.restarts += 1
            if flag:
                await self.follower.close()
            else:  # as kill -9 leaves the files
                crashed = self.root / f"crash{self.restarts}"
                shutil.copytree(self.follower_dir, crashed)
                await self.follower.discard()
                self.follower_dir = crashed
            self.follower = await self.open(self.follower_dir)

    async def converge(self) -> None:
        rounds = 0
        while await self.fetch(EVERYTHING):
            rounds += 1
            assert rounds < 200, "the follower never caught up"


async def _property(root: Path, segment_bytes: int,
                    ops: list[tuple[str, int, int, bool]]) -> None:
    cluster = Cluster(root, segment_bytes)
    await cluster.start()
    for op in ops:
        await cluster.run(*op)
    await cluster.converge()
    leader, follower = cluster.leader, cluster.follower
    start = leader.log_start_offset  # (the follower may hold more below it)
    assert follower.log_start_offset <= start
    assert follower.read_frames(start, EVERYTHING) == leader.read_frames(start, EVERYTHING)
    assert follower.log_end_offset == leader.log_end_offset
    with_batches = [e for e in leader.epoch_entries
                    if leader.end_offset_for_epoch(e.epoch)[1] > e.start_offset]
    assert [e for e in follower.epoch_entries if e.start_offset > start] == [
        e for e in with_batches if e.start_offset > start]
    for entry in with_batches:
        assert follower.end_offset_for_epoch(entry.epoch) == leader.end_offset_for_epoch(
            entry.epoch)
    base, count = cluster.last_batch
    if count and base >= start:  # the follower would take the producer over where it is
        retry = await follower.append(blob(0), count, 0, producer_id=8,
                                      base_sequence=cluster.sequence - count)
        assert retry.duplicate and retry.base_offset == base
        after = await follower.append(blob(0), 1, 0, producer_id=8,
                                      base_sequence=cluster.sequence)
        assert not after.duplicate and after.base_offset == leader.log_end_offset
    await leader.close()
    await follower.close()


@settings(max_examples=50, deadline=None)
@given(segment_bytes=st.sampled_from([1_200, 5_000, 1 << 20]), ops=operations)
def test_a_follower_ends_byte_identical_to_its_leader(segment_bytes: int,
                                                      ops: list[tuple[str, int, int, bool]]
                                                      ) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(_property(Path(root), segment_bytes, ops))


# ---- a batch damaged in the middle ------------------------------------------------------


async def test_a_batch_damaged_mid_log_is_reported_until_truncated_away(tmp_path: Path) -> None:
    leader = await open_log(tmp_path / "t-0")
    for i in range(4):
        await leader.append(blob(500, i), 1, 0)
    segment = tmp_path / "t-0" / ("0" * 20 + ".log")
    position, _ = frame_spans(segment.read_bytes())[1]
    with open(segment, "r+b") as file:  # intact batches follow it: recovery keeps it
        file.seek(position + HEADER_SIZE + 100)
        file.write(b"\x00\xff")
    # opened again without a clean shutdown (no close): recovery checks every CRC
    copy = await open_log(tmp_path / "t-0")
    assert copy.damaged_offset == 1
    assert copy.log_end_offset == 4
    assert await copy.truncate_to(copy.damaged_offset) == 1
    assert copy.damaged_offset == -1
    await copy.append(blob(500, 9), 1, 0)
    assert copy.damaged_offset == -1
    assert len(copy.read(0, EVERYTHING).batches) == 2
    await copy.close()
    await leader.discard()
