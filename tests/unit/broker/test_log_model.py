"""Property: any run of appends, producer retries, reads, retention and reopens (clean, or
from the files as a crash leaves them) behaves as a plain list of batches."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.domain import OffsetOutOfRange, TopicConfig
from geoplex.servers.broker.log import DiskPartitionLog, FsyncPolicy

PRODUCER = 77


@dataclass
class Model:
    batches: list[tuple[int, int, bytes]] = field(default_factory=list)  # base, count, blob
    start: int = 0
    sequence: int = 0  # the producer's next
    last_idempotent: tuple[int, int, bytes] | None = None

    @property
    def end(self) -> int:
        return self.batches[-1][0] + self.batches[-1][1] if self.batches else self.start


appends = st.tuples(st.just("append"), st.integers(0, 3_000), st.integers(1, 4), st.booleans())
reads = st.tuples(st.just("read"), st.integers(-1, 200), st.integers(1, 12_000), st.just(False))
reopens = st.tuples(st.just("reopen"), st.just(0), st.just(0), st.booleans())
retries = st.tuples(st.just("retry"), st.just(0), st.just(0), st.just(False))
retains = st.tuples(st.just("retain"), st.integers(1, 30_000), st.just(0), st.just(False))
operations = st.lists(st.one_of(appends, appends, reads, reads, reopens, retries, retains),
                      max_size=40)


def _blob(size: int, tag: int) -> bytes:
    return pb.RecordBatch(records=[pb.Record(key=b"%d" % tag, value=b"v" * size)]
                          ).SerializeToString()


async def _open(directory: Path, segment_bytes: int, retention_bytes: int = 0
                ) -> DiskPartitionLog:
    return await DiskPartitionLog.open(
        directory, "t", 0, TopicConfig(segment_bytes=segment_bytes,
                                       retention_bytes=retention_bytes), FsyncPolicy.never())


def _check_read(log: DiskPartitionLog, model: Model, offset: int, max_bytes: int) -> None:
    if offset < model.start or offset > model.end:
        try:
            log.read(offset, max_bytes)
        except OffsetOutOfRange:
            return
        raise AssertionError(f"read({offset}) outside {model.start}..{model.end} succeeded")
    got = log.read(offset, max_bytes)
    assert (got.log_start_offset, got.log_end_offset) == (model.start, model.end)
    wanted = [b for b in model.batches if b[0] + b[1] > offset]
    assert len(got.batches) <= len(wanted)
    total = 0
    for payload, (base, count, blob) in zip(got.batches, wanted):
        batch = pb.RecordBatch.FromString(payload)
        assert batch.base_offset == base and payload.endswith(blob)
        total += len(payload)
    assert got.batches or not wanted
    assert total <= max_bytes or len(got.batches) == 1
    if len(got.batches) < len(wanted):  # stopped only because the next would not fit
        next_base = wanted[len(got.batches)][0]
        assert total + len(log.read(next_base, 1).batches[0]) > max_bytes


async def _run(root: Path, segment_bytes: int,
               ops: list[tuple[str, int, int, bool]]) -> None:
    directory = root / "t-0"
    log = await _open(directory, segment_bytes)
    model = Model()
    generation = 0
    for op, a, b, flag in ops:
        if op == "append":
            producer = PRODUCER if flag else 0
            blob = _blob(a, len(model.batches))
            result = await log.append(blob, b, len(model.batches), producer_id=producer,
                                      base_sequence=model.sequence if flag else 0)
            assert not result.duplicate and result.base_offset == model.end
            model.batches.append((result.base_offset, b, blob))
            if flag:
                model.sequence += b
                model.last_idempotent = (result.base_offset, b, blob)
        elif op == "retry":
            if model.last_idempotent and model.last_idempotent[0] >= model.start:
                base, count, blob = model.last_idempotent
                result = await log.append(blob, count, 0, producer_id=PRODUCER,
                                          base_sequence=model.sequence - count)
                assert result.duplicate and result.base_offset == base
        elif op == "read":
            _check_read(log, model, model.start + a - 1 if a else model.start - 1, b)
        elif op == "reopen":
            if flag:
                await log.close()
            else:  # as a crash leaves them: every write is in the page cache
                generation += 1
                crashed = root / f"crash{generation}" / "t-0"
                shutil.copytree(directory, crashed)
                await log.discard()
                directory = crashed
            log = await _open(directory, segment_bytes)
            assert log.recovered_clean == flag
        elif op == "retain":
            log.configure(TopicConfig(segment_bytes=segment_bytes, retention_bytes=a))
            await log.enforce_retention(0)
            log.configure(TopicConfig(segment_bytes=segment_bytes))
            assert log.size_bytes <= a or log.segment_count == 1
            assert log.log_start_offset >= model.start
            if log.log_start_offset != model.end:
                assert log.log_start_offset in {base for base, _, _ in model.batches}
            model.batches = [b for b in model.batches if b[0] >= log.log_start_offset]
            model.start = log.log_start_offset
        assert (log.log_start_offset, log.log_end_offset) == (model.start, model.end)
    _check_read(log, model, model.start, 1 << 30)
    await log.close()


@settings(max_examples=60, deadline=None)
@given(segment_bytes=st.sampled_from([2_500, 9_000, 60_000]), ops=operations)
def test_the_log_behaves_as_a_list_of_batches(segment_bytes: int,
                                              ops: list[tuple[str, int, int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(_run(Path(root), segment_bytes, ops))
