"""Head ranges cut into blocks, blocks read back, select merging head and blocks,
compaction, and the WAL checkpointed once a range is a block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.tsdb import (
    TSDB,
    ChunkEncoding,
    Matcher,
    MatchOp,
    TSDBOptions,
    labels_of,
)
from geoplex.servers.telemetry.tsdb.blocks import Block, compact, open_blocks, write_block
from geoplex.servers.telemetry.tsdb.labels import Labels
from geoplex.servers.telemetry.tsdb.workload import node_exporter_like

HOUR = 3_600_000
MIN = 60_000
NODE = [Matcher("job", MatchOp.EQ, "node")]


def synthetic(series: int, samples: int, start: int = 0) -> list[tuple[Labels, np.ndarray,
                                                                         np.ndarray]]:
    out = [(labels_of(s.labels), s.timestamps, s.values)
           for s in node_exporter_like(series, samples, seed=11, start_ms=start)]
    return sorted(out, key=lambda item: item[0])


@pytest.mark.parametrize("encoding", list(ChunkEncoding))
def test_a_block_reads_back_what_was_written(tmp_path: Path, encoding: ChunkEncoding) -> None:
    data = synthetic(40, 300)
    maxt = int(max(ts[-1] for _, ts, _ in data)) + 1
    meta = write_block(tmp_path, data, 0, maxt, encoding=encoding, chunk_samples=128,
                       page_bytes=4096)
    assert meta is not None and meta.num_series == 40 and meta.num_samples == 40 * 300
    assert not list(tmp_path.glob(".tmp-*"))
    block = Block(tmp_path / meta.id)
    try:
        got = list(block.select([Matcher("__name__", MatchOp.RE, ".+")], 0, maxt))
        assert [g[0] for g in got] == [d[0] for d in data]
        for (_, ts, vs), (_, gts, gvs) in zip(data, got):
            assert gts.tolist() == ts.tolist()
            assert gvs.view(np.uint64).tolist() == vs.view(np.uint64).tolist()
        some = data[3]
        lo, hi = int(some[1][10]), int(some[1][200])
        (_, gts, _), = block.select([Matcher("n", MatchOp.EQ, some[0]["n"])], lo, hi)
        assert gts.tolist() == some[1][10:201].tolist()
        assert block.values_of("job") == ["node"]
    finally:
        block.close()


def test_an_unfinished_block_write_is_removed_at_open(tmp_path: Path) -> None:
    (tmp_path / ".tmp-abc").mkdir()
    (tmp_path / ".tmp-abc" / "chunks").write_bytes(b"half")
    assert open_blocks(tmp_path) == []
    assert not (tmp_path / ".tmp-abc").exists()


def cut_store(path: Path, wal_segment_bytes: int = 32 << 20) -> TSDB:
    return TSDB.open(path, TSDBOptions(block_range_ms=HOUR, ooo_window_ms=10 * MIN,
                                       wal_segment_bytes=wal_segment_bytes))


def append_scrapes(db: TSDB, series: int, start: int, end: int, step: int = 15_000) -> None:
    for t in range(start, end, step):
        db.append([({"__name__": "m", "job": "node", "i": str(i)}, t, float(t // 1000 + i))
                   for i in range(series)])


def test_a_head_range_becomes_a_block_once_the_window_has_passed(tmp_path: Path) -> None:
    with cut_store(tmp_path) as db:
        append_scrapes(db, 3, 0, HOUR + 10 * MIN)
        assert db.stats().blocks == ()
        append_scrapes(db, 3, HOUR + 10 * MIN, HOUR + 11 * MIN)
        stats = db.stats()
        assert [(b.min_time, b.max_time, b.series, b.samples) for b in stats.blocks] == [
            (0, HOUR, 3, 3 * 240)]
        assert stats.head_min_time == HOUR
        series = list(db.select(NODE, 0, 2 * HOUR))
        assert [len(s.timestamps) for s in series] == [284] * 3  # 240 in the block, 44 in head
        assert all(bool(np.all(np.diff(s.timestamps) == 15_000)) for s in series)
        with pytest.raises(Exception, match="minimum valid time"):
            db.append([({"__name__": "m", "job": "node", "i": "0"}, HOUR - 1, 1.0)])


def test_select_merges_blocks_and_head_after_reopening(tmp_path: Path) -> None:
    with cut_store(tmp_path) as db:
        append_scrapes(db, 2, 0, 3 * HOUR)
        before = [(s.labels, s.timestamps.tolist(), s.values.tolist())
                  for s in db.select(NODE, 0, 3 * HOUR)]
        assert len(db.stats().blocks) == 2
    with cut_store(tmp_path) as db:
        after = [(s.labels, s.timestamps.tolist(), s.values.tolist())
                 for s in db.select(NODE, 0, 3 * HOUR)]
        assert after == before
        assert len(before[0][1]) == 3 * HOUR // 15_000
        assert db.series(NODE, 0, 10) == [b[0] for b in before]
        assert db.label_values("i", mint_ms=0, maxt_ms=HOUR) == ["0", "1"]


def test_the_wal_is_checkpointed_when_a_range_is_cut(tmp_path: Path) -> None:
    with cut_store(tmp_path, wal_segment_bytes=4096) as db:
        append_scrapes(db, 5, 0, HOUR)
        segments_before = len(list((tmp_path / "wal").iterdir()))
        append_scrapes(db, 5, HOUR, HOUR + 11 * MIN)
        names = sorted(p.name for p in (tmp_path / "wal").iterdir())
        assert segments_before > 3
        assert len([n for n in names if n.startswith("checkpoint.")]) == 1
        checkpoint = int(next(n for n in names if n.startswith("checkpoint."))[11:])
        assert all(int(n) >= checkpoint for n in names if not n.startswith("checkpoint."))
        head = db.stats().head_samples
    with cut_store(tmp_path) as db:
        assert db.replayed_samples == head
        assert sum(len(s.timestamps) for s in db.select(NODE, 0, 2 * HOUR)) == 5 * (
            HOUR + 11 * MIN) // 15_000


def test_series_gone_from_the_head_are_forgotten_after_a_cut(tmp_path: Path) -> None:
    with cut_store(tmp_path) as db:
        db.append([({"__name__": "old", "job": "node"}, 0, 1.0)])
        append_scrapes(db, 1, 0, HOUR + 11 * MIN, step=60_000)
        assert db.stats().head_series == 1
        assert db.label_values("__name__") == ["m", "old"]  # the block still has it
        assert db.label_values("__name__", mint_ms=HOUR) == ["m"]


def test_compaction_merges_adjacent_blocks(tmp_path: Path) -> None:
    with cut_store(tmp_path) as db:
        append_scrapes(db, 2, 0, 3 * HOUR + 11 * MIN, step=60_000)
        db.append([({"__name__": "late", "job": "node"}, 3 * HOUR + 11 * MIN, 1.0)])
        before = [(s.labels, s.timestamps.tolist()) for s in db.select(NODE, 0, 4 * HOUR)]
        assert len(db.stats().blocks) == 3
        made = db.compact()
        assert [(m.min_time, m.max_time, m.level) for m in made] == [(0, 3 * HOUR, 2)]
        stats = db.stats()
        assert [(b.min_time, b.max_time) for b in stats.blocks] == [(0, 3 * HOUR)]
        assert stats.blocks[0].samples == 2 * 180
        assert [(s.labels, s.timestamps.tolist()) for s in db.select(NODE, 0, 4 * HOUR)] == before
    assert len(open_blocks(tmp_path)) == 1


def test_a_crash_before_deleting_compacted_sources_is_finished_at_open(tmp_path: Path) -> None:
    data = synthetic(5, 100)
    first = write_block(tmp_path, data, 0, 10 ** 13)
    second = write_block(tmp_path, synthetic(5, 10, start=10 ** 13), 10 ** 13, 2 * 10 ** 13)
    assert first is not None and second is not None
    blocks = open_blocks(tmp_path)
    merged = compact(tmp_path, blocks)
    for block in blocks:
        block.close()
    assert merged is not None and merged.num_samples == 5 * 110
    reopened = open_blocks(tmp_path)  # the sources were left behind, as after a crash
    assert [b.id for b in reopened] == [merged.id]
    for block in reopened:
        block.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5 * HOUR), st.integers(-5, 5)),
                min_size=1, max_size=60))
def test_compaction_keeps_every_sample(tmp_path_factory: pytest.TempPathFactory,
                                       samples: list[tuple[int, int, int]]) -> None:
    path = tmp_path_factory.mktemp("compact")
    expected: dict[Labels, dict[int, float]] = {}
    for i, t, v in samples:
        expected.setdefault(labels_of({"__name__": "x", "s": str(i)}), {}).setdefault(t, v)
    window = HOUR
    for start in range(0, 6 * HOUR, window):
        part = [(labels, np.array(sorted(t for t in ts if start <= t < start + window)),
                 np.array([ts[t] for t in sorted(t for t in ts if start <= t < start + window)],
                          np.float64)) for labels, ts in sorted(expected.items())]
        write_block(path, [p for p in part if len(p[1])], start, start + window)
    blocks = open_blocks(path)
    merged = compact(path, blocks)
    for block in blocks:
        block.close()
    assert merged is not None
    block = Block(path / merged.id)
    got = {labels: dict(zip(ts.tolist(), vs.tolist())) for labels, ts, vs in block.all_series()}
    block.close()
    assert got == expected
