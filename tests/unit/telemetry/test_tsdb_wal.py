"""The WAL: records framed with CRC32C, a torn tail cut at replay, damage in the middle
ending the log there, both fsync policies acknowledging only after an fsync."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from geoplex.servers.telemetry.tsdb import TSDB, FsyncPolicy, Matcher, MatchOp, TSDBOptions
from geoplex.servers.telemetry.tsdb.wal import WAL, frame, read_frames, replay

ALL = [Matcher("__name__", MatchOp.EQ, "m")]


def write_records(directory: Path, payloads: list[bytes], segment_bytes: int = 1 << 20) -> None:
    wal = WAL(directory, FsyncPolicy.always(), segment_bytes)
    for payload in payloads:
        wal.commit(wal.append(payload))
    wal.close()


def test_records_round_trip_across_segments(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (i * 7) for i in range(1, 60)]
    write_records(tmp_path, payloads, segment_bytes=256)
    assert len(list(tmp_path.iterdir())) > 5
    assert list(replay(tmp_path)) == payloads


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 20])
def test_a_torn_tail_is_cut_at_replay(tmp_path: Path, cut: int) -> None:
    write_records(tmp_path, [b"first", b"second record", b"third record here"])
    (segment,) = tmp_path.iterdir()
    data = segment.read_bytes()
    segment.write_bytes(data[:-cut])
    assert list(replay(tmp_path)) == [b"first", b"second record"]
    assert segment.stat().st_size == len(frame(b"first")) + len(frame(b"second record"))
    write_records(tmp_path, [b"after"])  # a new segment: nothing is written after a cut
    assert list(replay(tmp_path)) == [b"first", b"second record", b"after"]


def test_a_flipped_bit_fails_the_crc(tmp_path: Path) -> None:
    data = bytearray(frame(b"a") + frame(b"payload") + frame(b"c"))
    data[len(frame(b"a")) + 9] ^= 0x10
    records, good = read_frames(bytes(data))
    assert records == [b"a"] and good == len(frame(b"a"))


def test_damage_in_a_middle_segment_ends_the_log_there(tmp_path: Path) -> None:
    write_records(tmp_path, [b"x" * 100] * 6, segment_bytes=250)
    segments = sorted(tmp_path.iterdir())
    assert len(segments) == 3
    middle = bytearray(segments[1].read_bytes())
    middle[-1] ^= 0xFF
    segments[1].write_bytes(bytes(middle))
    assert list(replay(tmp_path)) == [b"x" * 100] * 3
    assert not segments[2].exists()


@pytest.mark.parametrize("policy", [FsyncPolicy.always(), FsyncPolicy.interval(5)])
def test_every_acknowledged_append_is_synced(tmp_path: Path, policy: FsyncPolicy) -> None:
    wal = WAL(tmp_path, policy)
    tokens: list[int] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                token = wal.append(b"%d-%d" % (n, i))
                wal.commit(token)
                assert wal.synced >= token
                tokens.append(token)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(tokens) == 80 and 1 <= wal.fsyncs <= 80
    wal.close()
    assert len(list(replay(tmp_path))) == 80


def test_the_store_replays_its_wal_after_a_torn_write(tmp_path: Path) -> None:
    with TSDB.open(tmp_path, TSDBOptions(fsync=FsyncPolicy.interval(2))) as db:
        for t in range(10):
            db.append([({"__name__": "m", "k": str(t % 3)}, t * 1000, t / 3)])
    (segment,) = [p for p in (tmp_path / "wal").iterdir() if p.stat().st_size]
    segment.write_bytes(segment.read_bytes()[:-5])  # the last batch torn
    with TSDB.open(tmp_path) as db:
        got = sorted((int(t), v) for s in db.select(ALL, 0, 10 ** 6)
                     for t, v in zip(s.timestamps, s.values.tolist()))
        assert got == [(t * 1000, t / 3) for t in range(9)]
        assert db.append([({"__name__": "m", "k": "0"}, 9000, 3.0)]).appended == 1
    with TSDB.open(tmp_path) as db:
        assert sum(len(s.timestamps) for s in db.select(ALL, 0, 10 ** 6)) == 10
        assert np.isclose(db.stats().head_samples, 10)
