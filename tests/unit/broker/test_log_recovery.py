"""Opening a partition log again: after a clean close, after a crash (the files as the
page cache held them, copied while the log was open: what ``kill -9`` leaves), with a torn
or garbled tail, a corrupt batch in the middle, missing indexes and snapshots, and a full
disk."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.domain import CorruptBatch, OutOfSequence, StorageFull, TopicConfig
from geoplex.servers.broker.log import DiskPartitionLog, FsyncPolicy
from geoplex.servers.broker.log.frame import HEADER_SIZE, read_header


def blob(size: int, tag: int = 0) -> bytes:
    return pb.RecordBatch(records=[pb.Record(key=b"%d" % tag, value=b"v" * size)]
                          ).SerializeToString()


def keys(log: DiskPartitionLog, offset: int = 0) -> list[bytes]:
    return [pb.RecordBatch.FromString(b).records[0].key for b in log.read(offset, 1 << 30).batches]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def frame_positions(path: Path) -> list[int]:
    data = path.read_bytes()
    positions, position = [], 0
    while position < len(data):
        positions.append(position)
        position += read_header(data, position).size
    return positions


async def open_log(directory: Path, **config: Any) -> DiskPartitionLog:
    return await DiskPartitionLog.open(directory, "t", 0, TopicConfig(**config), FsyncPolicy())


async def written(directory: Path, batches: int, **config: Any) -> DiskPartitionLog:
    log = await open_log(directory, **config)
    for i in range(batches):
        await log.append(blob(300, i), 1, 1_000 + i, producer_id=11, base_sequence=i)
    return log


def crash_copy(directory: Path, into: Path) -> Path:
    """The partition's files as a ``kill -9`` would leave them: copied while it is open."""
    shutil.copytree(directory, into)
    return into


async def test_a_clean_close_reopens_without_a_scan_and_with_everything(tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 30, segment_bytes=2_000)
    segments = log.segment_count
    await log.close()
    again = await open_log(tmp_path / "t-0", segment_bytes=2_000)
    assert again.recovered_clean and again.segment_count == segments
    assert keys(again) == [b"%d" % i for i in range(30)]
    assert (await again.append(blob(1), 1, 0, producer_id=11, base_sequence=29)).duplicate
    assert again.offset_for_time(1_010) == 10
    assert not list((tmp_path / "t-0").glob("*.tmp"))
    await again.close()


async def test_after_a_crash_every_acknowledged_batch_and_the_producers_come_back(
        tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 30, segment_bytes=2_000)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    again = await open_log(copy, segment_bytes=2_000)
    assert not again.recovered_clean
    assert keys(again) == [b"%d" % i for i in range(30)] and again.log_end_offset == 30
    retry = await again.append(blob(1), 1, 0, producer_id=11, base_sequence=27)
    assert retry.duplicate and retry.base_offset == 27
    with pytest.raises(OutOfSequence):
        await again.append(blob(1), 1, 0, producer_id=11, base_sequence=31)
    assert (await again.append(blob(1), 1, 0, producer_id=11, base_sequence=30)).base_offset == 30
    await again.close()


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE + 1, 200])
async def test_a_torn_tail_is_truncated_and_the_batches_before_it_stay(tmp_path: Path,
                                                                      cut: int) -> None:
    log = await written(tmp_path / "t-0", 5)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    (segment,) = segment_files(copy)
    last = frame_positions(segment)[-1]
    os.truncate(segment, last + cut)
    again = await open_log(copy)
    assert again.log_end_offset == 4 and keys(again) == [b"%d" % i for i in range(4)]
    assert segment.stat().st_size == last
    # the torn batch was never acknowledged: its producer may send it again
    assert (await again.append(blob(300, 4), 1, 0, producer_id=11, base_sequence=4)).base_offset == 4
    assert keys(again, 4) == [b"4"]
    await again.close()


async def test_a_garbled_tail_is_truncated(tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 5)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    (segment,) = segment_files(copy)
    last = frame_positions(segment)[-1]
    with open(segment, "r+b") as file:
        file.seek(last + HEADER_SIZE + 20)
        file.write(b"\xff" * 30)
    again = await open_log(copy)
    assert again.log_end_offset == 4 and keys(again) == [b"%d" % i for i in range(4)]
    await again.close()


async def test_a_tail_of_zeros_is_truncated(tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 3)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    (segment,) = segment_files(copy)
    size = segment.stat().st_size
    with open(segment, "ab") as file:
        file.write(bytes(4096))
    again = await open_log(copy)
    assert again.log_end_offset == 3 and segment.stat().st_size == size
    await again.close()


async def test_a_corrupt_batch_in_the_middle_is_kept_reported_and_not_served(
        tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 5)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    (segment,) = segment_files(copy)
    middle = frame_positions(segment)[2]
    with open(segment, "r+b") as file:
        file.seek(middle + HEADER_SIZE + 40)
        file.write(b"\x00\x01\x02")
    again = await open_log(copy)
    assert again.log_end_offset == 5  # the acknowledged batches after it are not cut
    assert keys(again) == [b"0", b"1"]
    with pytest.raises(CorruptBatch):
        again.read(2, 1 << 20)
    assert keys(again, 3) == [b"3", b"4"]
    await again.close()


async def test_missing_or_damaged_indexes_are_rebuilt(tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 40, segment_bytes=2_500)
    await log.close()
    directory = tmp_path / "t-0"
    closed = segment_files(directory)[:-1]
    assert len(closed) >= 3
    closed[0].with_suffix(".index").unlink()
    closed[1].with_suffix(".timeindex").write_bytes(b"\x01" * 13)
    with open(closed[2].with_suffix(".index"), "r+b") as file:  # a stale last entry
        file.truncate(8)
    again = await open_log(directory, segment_bytes=2_500)
    assert keys(again) == [b"%d" % i for i in range(40)]
    for i in range(40):
        assert keys(again, i)[0] == b"%d" % i
        assert again.offset_for_time(1_000 + i) == i
    for segment in closed:
        assert segment.with_suffix(".index").stat().st_size % 8 == 0
        assert segment.with_suffix(".timeindex").stat().st_size % 12 == 0
    await again.close()
    assert keys(third := await open_log(directory, segment_bytes=2_500), 35) == [
        b"%d" % i for i in range(35, 40)]
    await third.close()


async def test_producer_state_comes_back_from_the_batches_without_snapshots(
        tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 20, segment_bytes=2_000)
    copy = crash_copy(tmp_path / "t-0", tmp_path / "crashed")
    await log.close()
    for snapshot in copy.glob("*.snapshot"):
        snapshot.unlink()
    again = await open_log(copy, segment_bytes=2_000)
    assert (await again.append(blob(1), 1, 0, producer_id=11, base_sequence=18)).duplicate
    await again.close()


async def test_a_damaged_clean_marker_means_a_full_check(tmp_path: Path) -> None:
    log = await written(tmp_path / "t-0", 3)
    await log.close()
    (tmp_path / "t-0" / ".clean").write_bytes(b"nonsense")
    again = await open_log(tmp_path / "t-0")
    assert not again.recovered_clean and again.log_end_offset == 3
    await again.close()


# ---- a full disk ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE test covers EFBIG")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_fails_the_append_and_leaves_nothing_of_it(small_disk: Path) -> None:
    log = await open_log(small_disk / "t-0")
    appended = 0
    with pytest.raises(StorageFull):
        for i in range(100):
            await log.append(blob(60_000, i), 1, 0, producer_id=4, base_sequence=i)
            appended += 1
    assert 0 < appended < 100 and log.log_end_offset == appended
    (segment,) = segment_files(small_disk / "t-0")
    assert segment.stat().st_size == log.size_bytes == frame_positions(segment)[-1] + (
        read_header(segment.read_bytes(), frame_positions(segment)[-1]).size)
    assert keys(log) == [b"%d" % i for i in range(appended)]
    # the failed batch was not taken: the producer sends it again once there is room
    with pytest.raises(StorageFull):
        await log.append(blob(60_000, appended), 1, 0, producer_id=4, base_sequence=appended)
    copy_size = segment.stat().st_size
    await log.close()
    again = await open_log(small_disk / "t-0")
    assert again.log_end_offset == appended and segment.stat().st_size == copy_size
    await again.close()


_FILE_SIZE_LIMIT = textwrap.dedent("""
    import asyncio, resource, signal, sys
    from geoplex.servers.broker.domain import StorageFull
    from geoplex.servers.broker.log import DiskPartitionLog, FsyncPolicy

    async def main(directory):
        log = await DiskPartitionLog.open(directory, "t", 0, policy=FsyncPolicy())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        written = 0
        try:
            for _ in range(100):
                await log.append(b"x" * 30_000, 1, 0)
                written += 1
        except StorageFull:
            print(written, log.log_end_offset, log.size_bytes)
        await log.close()

    asyncio.run(main(sys.argv[1]))
""")


def test_a_file_size_limit_fails_the_append_as_a_full_disk(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, str(tmp_path / "t-0")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    written, log_end, size = map(int, done.stdout.split())
    assert 0 < written < 100 and log_end == written
    (segment,) = segment_files(tmp_path / "t-0")
    assert segment.stat().st_size == size <= 200_000

    async def reopen() -> None:
        log = await open_log(tmp_path / "t-0")
        assert log.log_end_offset == written and log.read(0, 1 << 30).batches
        await log.close()

    asyncio.run(reopen())
