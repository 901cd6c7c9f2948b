"""Leader epochs: the cache's rules, and a partition log's ``leader-epochs`` file on real
files (written, reopened, rebuilt from the batch headers when missing, damaged or stale)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.domain import TopicConfig
from geoplex.servers.broker.log import (
    DiskPartitionLog,
    EpochEntry,
    FsyncPolicy,
    StaleLeaderEpoch,
)
from geoplex.servers.broker.log.epochs import (
    EPOCHS_FILE,
    LeaderEpochCache,
    decode,
    encode,
)
from geoplex.servers.broker.log.frame import read_header


def blob(size: int = 50, tag: int = 0) -> bytes:
    return pb.RecordBatch(records=[pb.Record(key=b"%d" % tag, value=b"v" * size)]
                          ).SerializeToString()


def cache(*entries: tuple[int, int]) -> LeaderEpochCache:
    written: list[bytes] = []
    return LeaderEpochCache(Path("/nonexistent/leader-epochs"),
                            lambda _path, data: written.append(data),
                            [EpochEntry(*entry) for entry in entries])


def header_epochs(directory: Path) -> list[tuple[int, int]]:
    """(base offset, leader epoch) of every frame in every segment file."""
    found = []
    for path in sorted(directory.glob("*.log")):
        data, position = path.read_bytes(), 0
        while position < len(data):
            header = read_header(data, position)
            found.append((header.base_offset, header.leader_epoch))
            position += header.size
    return found


async def open_log(directory: Path, policy: FsyncPolicy | None = None,
                   **config: Any) -> DiskPartitionLog:
    return await DiskPartitionLog.open(directory, "t", 0, TopicConfig(**config),
                                       policy or FsyncPolicy())


# ---- the cache ------------------------------------------------------------------------


def test_epochs_are_added_in_order_and_the_latest_again_changes_nothing() -> None:
    epochs = cache()
    assert epochs.latest_epoch == -1 and epochs.epoch_at(0) == -1
    assert epochs.assign(0, 0) and epochs.assign(3, 10)
    assert not epochs.assign(3, 15)
    assert epochs.entries == (EpochEntry(0, 0), EpochEntry(3, 10))
    assert [epochs.epoch_at(offset) for offset in (0, 9, 10, 99)] == [0, 0, 3, 3]


def test_an_older_epoch_is_refused_where_a_newer_one_holds_batches() -> None:
    epochs = cache((0, 0), (3, 10))
    with pytest.raises(StaleLeaderEpoch) as stale:
        epochs.assign(2, 20)
    assert (stale.value.epoch, stale.value.latest) == (2, 3)
    assert isinstance(stale.value, ValueError)
    assert epochs.entries == (EpochEntry(0, 0), EpochEntry(3, 10))


def test_entries_starting_at_or_after_a_new_start_give_way() -> None:
    # epoch 5 began at 20 but no batch of it came; batches of epoch 4 arrive there
    epochs = cache((0, 0), (3, 10), (5, 20))
    assert epochs.accepts(4, 20) and not epochs.accepts(2, 20)
    assert epochs.assign(4, 20)
    assert epochs.entries == (EpochEntry(0, 0), EpochEntry(3, 10), EpochEntry(4, 20))
    epochs.assign(6, 30)
    epochs.assign(7, 30)  # two epochs begun at the same offset: the newer stays
    assert epochs.entries[-1] == EpochEntry(7, 30) and len(epochs.entries) == 4


@pytest.mark.parametrize("asked, answer", [
    (-1, (-1, 5)),  # before every epoch: the log start
    (0, (-1, 5)),
    (1, (1, 10)),  # ends where the next begins
    (2, (1, 10)),  # unknown epoch: the largest below it
    (3, (3, 40)),
    (6, (6, 100)),  # the latest ends at the log end
    (99, (6, 100)),
])
def test_end_offset_for_epoch(asked: int, answer: tuple[int, int]) -> None:
    epochs = cache((1, 5), (3, 10), (6, 40))
    assert epochs.end_offset_for(asked, 5, 100) == answer


def test_truncation_from_the_end_and_from_the_start() -> None:
    epochs = cache((1, 0), (3, 10), (6, 40))
    assert not epochs.truncate_from_end(41)
    assert epochs.truncate_from_end(40)
    assert list(epochs.entries) == [EpochEntry(1, 0), EpochEntry(3, 10)]
    assert epochs.truncate_from_start(12)
    assert list(epochs.entries) == [EpochEntry(3, 12)]
    assert not epochs.truncate_from_start(12)
    assert not epochs.truncate_from_start(5)  # (below the first entry)


def test_the_file_format_round_trips_and_garbage_is_refused() -> None:
    entries = [EpochEntry(0, 0), EpochEntry(4, 1_000), EpochEntry(9, 1 << 40)]
    assert decode(encode(entries)) == entries
    assert decode(encode([])) == []
    for bad in (b"", b"0\n2\n0 0\n", b"1\n0\n", b"0\n2\n3 10\n2 20\n", b"0\n1\nx y\n",
                b"0\n2\n1 10\n2 10\n", b"\xff\n", b"0\n1\n-1 0\n"):
        assert decode(bad) is None, bad


def test_a_save_never_replaces_a_newer_state() -> None:
    written: list[bytes] = []
    epochs = LeaderEpochCache(Path("x"), lambda _path, data: written.append(data))
    epochs.assign(1, 0)
    older = epochs.saver()
    epochs.assign(2, 5)
    newer = epochs.saver()
    newer()
    older()
    assert [decode(data) for data in written] == [[EpochEntry(1, 0), EpochEntry(2, 5)]]
    assert not epochs.dirty


# ---- the log's epochs -----------------------------------------------------------------


async def test_begun_epochs_stamp_the_batches_and_are_written_to_the_file(
        tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory)
    assert log.latest_epoch == -1 and log.last_batch_epoch == -1
    await log.append(blob(), 2, 0)
    assert log.latest_epoch == 0  # without a leader: epoch 0, as in part 1
    log.begin_epoch(3)
    log.begin_epoch(3)  # the same epoch again: nothing
    await log.append(blob(), 1, 0)
    await log.append(blob(), 1, 0)
    log.begin_epoch(7)
    await log.append(blob(), 1, 0)
    assert header_epochs(directory) == [(0, 0), (2, 3), (3, 3), (4, 7)]
    assert log.epoch_entries == (EpochEntry(0, 0), EpochEntry(3, 2), EpochEntry(7, 4))
    assert decode((directory / EPOCHS_FILE).read_bytes()) == list(log.epoch_entries)
    assert log.last_batch_epoch == 7
    with pytest.raises(StaleLeaderEpoch):
        log.begin_epoch(6)
    assert log.end_offset_for_epoch(5) == (3, 4)
    assert log.end_offset_for_epoch(7) == (7, 5)
    assert log.end_offset_for_epoch(-1) == (-1, 0)
    await log.close()


async def test_epochs_come_back_at_reopen_without_those_that_hold_no_batch(
        tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory)
    await log.append(blob(), 1, 0)
    log.begin_epoch(2)
    await log.append(blob(), 1, 0)
    log.begin_epoch(5)  # no batch of it before the restart
    assert log.latest_epoch == 5 and log.last_batch_epoch == 2
    crashed = tmp_path / "crashed"
    shutil.copytree(directory, crashed)
    await log.close()
    for where in (directory, crashed):
        again = await open_log(where)
        assert again.epoch_entries == (EpochEntry(0, 0), EpochEntry(2, 1)), where
        again.begin_epoch(5)
        assert (await again.append(blob(), 1, 0)).base_offset == 2
        await again.close()
        assert header_epochs(where)[-1] == (2, 5)


@pytest.mark.parametrize("damage", ["missing", "garbled", "stale"])
async def test_a_missing_damaged_or_stale_epochs_file_is_rebuilt_from_the_batches(
        tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory, segment_bytes=600)
    for epoch in (0, 1, 4):
        log.begin_epoch(epoch)
        for i in range(4):
            await log.append(blob(100, i), 1, 0)
    entries = log.epoch_entries
    assert entries == (EpochEntry(0, 0), EpochEntry(1, 4), EpochEntry(4, 8))
    assert log.segment_count > 2
    await log.close()
    path = directory / EPOCHS_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "garbled":
        path.write_bytes(b"0\n3\nnonsense\n")
    else:  # as if the last epoch's write were lost
        path.write_bytes(encode(entries[:2]))
    again = await open_log(directory, segment_bytes=600)
    assert again.epoch_entries == entries
    assert decode(path.read_bytes()) == list(entries)
    await again.close()


async def test_a_log_written_before_epochs_existed_gets_epoch_zero(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory, policy=FsyncPolicy.never())
    for i in range(3):
        await log.append(blob(), 1, 0)
    await log.discard()  # leaves no epochs file behind (as part 1 did)
    (directory / EPOCHS_FILE).unlink(missing_ok=True)
    again = await open_log(directory)
    assert again.epoch_entries == (EpochEntry(0, 0),)
    assert again.end_offset_for_epoch(0) == (0, 3)
    await again.close()


async def test_retention_moves_the_first_epoch_to_the_new_log_start(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = await open_log(directory, segment_bytes=600, retention_bytes=700)
    log.begin_epoch(1)
    for i in range(6):
        await log.append(blob(100, i), 1, 0)
    log.begin_epoch(2)
    for i in range(6):
        await log.append(blob(100, i), 1, 0)
    assert await log.enforce_retention(0) > 0
    start = log.log_start_offset
    assert 6 < start < 12
    assert log.epoch_entries == (EpochEntry(2, start),)
    assert log.end_offset_for_epoch(1) == (-1, start)
    await log.close()
    again = await open_log(directory, segment_bytes=600)
    assert again.epoch_entries == (EpochEntry(2, start),)
    await again.close()
