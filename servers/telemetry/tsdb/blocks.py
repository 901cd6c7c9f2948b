"""Immutable blocks on disk: one directory per time range, written once, then only read.

A block ``<db>/<id>/`` holds::

    meta.json            id, min_time (inclusive), max_time (exclusive), stats, resolution
                         ("raw", or a rollup tier's "1m" / "1h": :mod:`.tiers`), chunk
                         encoding, compaction level and source blocks
    symbols.bin          every label name and value once: u32 count, u32 offsets[count+1],
                         the UTF-8 bytes; sorted
    series.npy           per series (sorted by label set) its (name, value) symbol refs,
    series_offsets.npy   the series' slices of series.npy (int64, count+1)
    series_chunks.npy    the series' slices of chunks.npy (int64, count+1)
    chunks.npy           per chunk: mint, maxt, page, offset and length in the page, samples
    pages.npy            the pages' byte offsets in ``chunks`` (int64, pages+1)
    chunks               the pages: zstd frames (with their checksum) of packed chunks for
                         the columnar encoding, the chunks as they are for gorilla
    postings_keys.npy    (name ref, value ref), sorted, and for each
    postings_offsets.npy its slice of
    postings.npy         the series refs carrying that label pair, ascending

The arrays are ``.npy`` files opened with ``mmap_mode="r"``; ``chunks`` is mmapped and a
few decompressed pages are cached. A block is written in ``.tmp-<id>/`` (every file
fsynced), then renamed into place and the parent synced: it exists whole or not at all.
"""

from __future__ import annotations

import heapq
import json
import logging
import mmap
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import chunks as enc
from .chunks import ChunkEncoding, CorruptChunk, Float64s, Int64s
from .index import EMPTY, Ids, select_postings
from .labels import Labels, Matcher
from .wal import fsync_dir

logger = logging.getLogger(__name__)

META = "meta.json"
TMP_PREFIX = ".tmp-"
CHUNK_DTYPE = np.dtype([("mint", "<i8"), ("maxt", "<i8"), ("page", "<u4"), ("offset", "<u4"),
                        ("length", "<u4"), ("count", "<u4")])
KEY_DTYPE = np.dtype([("name", "<u4"), ("value", "<u4")])
SeriesData = tuple[Labels, Int64s, Float64s]


@dataclass(frozen=True)
class BlockMeta:
    id: str
    min_time: int  # inclusive
    max_time: int  # exclusive, as Prometheus's meta.json
    num_series: int
    num_samples: int
    num_chunks: int
    encoding: str = ChunkEncoding.COLUMNAR.value
    resolution: str = "raw"
    level: int = 1
    sources: tuple[str, ...] = field(default_factory=tuple)
    version: int = 1

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["sources"] = list(self.sources)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BlockMeta:
        data = json.loads(text)
        data["sources"] = tuple(data.get("sources", ()))
        return cls(**data)

    def overlaps(self, mint: int, maxt: int) -> bool:
        """Whether the block can hold samples in ``[mint, maxt]``."""
        return self.min_time <= maxt and self.max_time > mint


def merge_samples(parts: Sequence[tuple[Int64s, Float64s]]) -> tuple[Int64s, Float64s]:
    """One ascending sample sequence from several; at a timestamp present in more than
    one, the first part's sample wins."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p[0] for p in parts])
    vs = np.concatenate([p[1] for p in parts])
    # the common case, a block's samples then the head's: each part ends before the next
    # begins (each part is ascending on its own)
    if all(int(a[0][-1]) < int(b[0][0]) for a, b in zip(parts, parts[1:])):
        return ts, vs
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    keep = np.ones(len(ts), bool)
    keep[1:] = ts[1:] != ts[:-1]
    return ts[keep], vs[keep]


def _save(directory: Path, name: str, array: npt.NDArray[Any]) -> None:
    with (directory / name).open("wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_block(parent: Path, series: Iterable[SeriesData], min_time: int, max_time: int, *,
                encoding: ChunkEncoding = ChunkEncoding.COLUMNAR, chunk_samples: int = 480,
                page_bytes: int = 256 << 10, level: int = 1,
                sources: Sequence[str] = (), resolution: str = "raw") -> BlockMeta | None:
    """Write the block for ``series`` (sorted by labels, samples ascending, in
    ``[min_time, max_time)``); None when there is no sample at all."""
    block_id = uuid.uuid4().hex
    temporary = parent / f"{TMP_PREFIX}{block_id}"
    temporary.mkdir(parents=True)
    try:
        meta = _write_into(temporary, block_id, series, min_time, max_time, encoding,
                           chunk_samples, page_bytes, level, tuple(sources), resolution)
        if meta is None:
            shutil.rmtree(temporary)
            return None
        fsync_dir(temporary)
        os.rename(temporary, parent / block_id)
        fsync_dir(parent)
        return meta
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_into(directory: Path, block_id: str, series: Iterable[SeriesData], min_time: int,
                max_time: int, encoding: ChunkEncoding, chunk_samples: int, page_bytes: int,
                level: int, sources: tuple[str, ...], resolution: str) -> BlockMeta | None:
    symbols: dict[str, int] = {}
    all_labels: list[Labels] = []
    chunk_rows: list[tuple[int, int, int, int, int, int]] = []
    series_chunks = [0]
    page_offsets = [0]
    page: list[bytes] = []
    page_size = 0
    samples = 0
    out = (directory / "chunks").open("wb")

    def flush_page() -> None:
        nonlocal page, page_size
        if not page:
            return
        data = b"".join(page)
        if encoding is ChunkEncoding.COLUMNAR:
            data = enc.compress_page(data)
        out.write(data)
        page_offsets.append(page_offsets[-1] + len(data))
        page, page_size = [], 0

    with out:
        previous: Labels | None = None
        for labels, ts, vs in series:
            if not len(ts):
                continue
            if previous is not None and not previous < labels:
                raise ValueError("a block's series must come sorted by labels, each once")
            if int(ts[0]) < min_time or int(ts[-1]) >= max_time:
                raise ValueError(f"{labels!r} has samples outside [{min_time}, {max_time})")
            previous = labels
            all_labels.append(labels)
            for name, value in labels.pairs:
                symbols.setdefault(name, 0)
                symbols.setdefault(value, 0)
            for start in range(0, len(ts), chunk_samples):
                cts, cvs = ts[start:start + chunk_samples], vs[start:start + chunk_samples]
                if encoding is ChunkEncoding.COLUMNAR:
                    data = enc.pack(cts, cvs)
                else:
                    data = enc.encode_gorilla(cts, cvs)
                if page and page_size + len(data) > page_bytes:
                    flush_page()
                chunk_rows.append((int(cts[0]), int(cts[-1]), len(page_offsets) - 1, page_size,
                                   len(data), len(cts)))
                page.append(data)
                page_size += len(data)
            series_chunks.append(len(chunk_rows))
            samples += len(ts)
        flush_page()
        out.flush()
        os.fsync(out.fileno())
    if not all_labels:
        return None
    names = sorted(symbols)
    for i, name in enumerate(names):
        symbols[name] = i
    encoded = [s.encode() for s in names]
    offsets = np.zeros(len(encoded) + 1, "<u4")
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    _write_file(directory / "symbols.bin", np.array([len(encoded)], "<u4").tobytes()
                + offsets.tobytes() + b"".join(encoded))
    refs = np.array([(symbols[n], symbols[v]) for labels in all_labels for n, v in labels.pairs],
                    "<u4").reshape(-1, 2)
    series_offsets = np.zeros(len(all_labels) + 1, "<i8")
    series_offsets[1:] = np.cumsum([len(labels) for labels in all_labels])
    _save(directory, "series.npy", refs)
    _save(directory, "series_offsets.npy", series_offsets)
    _save(directory, "series_chunks.npy", np.array(series_chunks, "<i8"))
    _save(directory, "chunks.npy", np.array(chunk_rows, CHUNK_DTYPE))
    _save(directory, "pages.npy", np.array(page_offsets, "<i8"))
    postings: dict[tuple[int, int], list[int]] = {}
    for ref, labels in enumerate(all_labels):
        for name, value in labels.pairs:
            postings.setdefault((symbols[name], symbols[value]), []).append(ref)
    keys = sorted(postings)
    postings_offsets = np.zeros(len(keys) + 1, "<i8")
    postings_offsets[1:] = np.cumsum([len(postings[k]) for k in keys])
    _save(directory, "postings_keys.npy", np.array(keys, KEY_DTYPE))
    _save(directory, "postings_offsets.npy", postings_offsets)
    _save(directory, "postings.npy",
          np.array([ref for k in keys for ref in postings[k]], "<u4"))
    meta = BlockMeta(id=block_id, min_time=min_time, max_time=max_time,
                     num_series=len(all_labels), num_samples=samples,
                     num_chunks=len(chunk_rows), encoding=encoding.value, level=level,
                     sources=sources or (block_id,), resolution=resolution)
    _write_file(directory / META, meta.to_json().encode())
    return meta


class DecodedChunks:
    """Decoded chunks shared by every open block, least recently used first out, bounded
    by samples: dashboards ask the same ranges again and again, and decoding is most of
    a query over blocks. The arrays are read-only, so callers cannot change a cached
    chunk. Thread-safe."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._items: OrderedDict[tuple[str, int, int], tuple[Int64s, Float64s]] = OrderedDict()
        self._samples = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> tuple[Int64s, Float64s] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, int, int], value: tuple[Int64s, Float64s]) -> None:
        with self._lock:
            if key in self._items or len(value[0]) > self.max_samples:
                return
            self._items[key] = value
            self._samples += len(value[0])
            while self._samples > self.max_samples:
                _, (old, _) = self._items.popitem(last=False)
                self._samples -= len(old)


# ~16 B a sample: 4 M samples is 64 MiB; a server sizes it from its configuration
# (GEOPLEX_TELEMETRY_CHUNK_CACHE_SAMPLES) with DECODED.max_samples
DECODED = DecodedChunks(4_000_000)


class Block:
    """A block opened for reading (thread-safe for readers; the page cache is locked by
    the DB's lock in practice, and a lost race only decompresses a page twice)."""

    PAGE_CACHE = 16

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = BlockMeta.from_json((path / META).read_text())
        self.encoding = ChunkEncoding(self.meta.encoding)
        raw = (path / "symbols.bin").read_bytes()
        count = int(np.frombuffer(raw, "<u4", 1)[0])
        offsets = np.frombuffer(raw, "<u4", count + 1, 4).astype(np.int64)
        text = raw[4 + 4 * (count + 1):]
        self.symbols = [text[offsets[i]:offsets[i + 1]].decode() for i in range(count)]

        def load(name: str) -> npt.NDArray[Any]:
            array: npt.NDArray[Any] = np.load(path / name, mmap_mode="r", allow_pickle=False)
            return array

        self._refs = load("series.npy")
        self._series_offsets = load("series_offsets.npy")
        # the chunk index is small (40 B a chunk) and read on every query: in memory
        self._series_chunks = np.array(load("series_chunks.npy"))
        self._chunks = np.array(load("chunks.npy"))
        # each series' chunks are written in time order, so the chunks a range needs are
        # one slice found by two binary searches (contiguous copies of the two bounds)
        self._chunk_mint = np.ascontiguousarray(self._chunks["mint"])
        self._chunk_maxt = np.ascontiguousarray(self._chunks["maxt"])
        self._pages = load("pages.npy")
        self._postings = load("postings.npy")
        keys = np.load(path / "postings_keys.npy", allow_pickle=False)
        key_offsets = np.load(path / "postings_offsets.npy", allow_pickle=False)
        self._postings_of: dict[str, dict[str, tuple[int, int]]] = {}
        for i, (name, value) in enumerate(keys.tolist()):
            self._postings_of.setdefault(self.symbols[name], {})[self.symbols[value]] = (
                int(key_offsets[i]), int(key_offsets[i + 1]))
        self._file = (path / "chunks").open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._labels_cache: dict[int, Labels] = {}

    @property
    def id(self) -> str:
        return self.meta.id

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()

    # ---- the index (PostingsReader) -------------------------------------------------

    def all_ids(self) -> Ids:
        return np.arange(self.meta.num_series, dtype=np.int64)

    def label_names(self) -> list[str]:
        return sorted(self._postings_of)

    def values_of(self, name: str) -> list[str]:
        return sorted(self._postings_of.get(name, ()))

    def postings(self, name: str, value: str) -> Ids:
        span = self._postings_of.get(name, {}).get(value)
        if span is None:
            return EMPTY
        return np.asarray(self._postings[span[0]:span[1]], np.int64)

    def labels(self, ref: int) -> Labels:
        found = self._labels_cache.get(ref)
        if found is None:
            lo, hi = int(self._series_offsets[ref]), int(self._series_offsets[ref + 1])
            pairs = self._refs[lo:hi].tolist()
            found = Labels((self.symbols[n], self.symbols[v]) for n, v in pairs)
            self._labels_cache[ref] = found
        return found

    # ---- the samples ----------------------------------------------------------------

    def _page(self, number: int) -> bytes:
        page = self._cache.get(number)
        if page is not None:
            self._cache.move_to_end(number)
            return page
        if self._map is None:
            raise CorruptChunk(f"block {self.id}: its chunks file is empty")
        lo, hi = int(self._pages[number]), int(self._pages[number + 1])
        data = self._map[lo:hi]
        page = enc.decompress_page(data) if self.encoding is ChunkEncoding.COLUMNAR else data
        self._cache[number] = page
        if len(self._cache) > self.PAGE_CACHE:
            self._cache.popitem(last=False)
        return page

    def _chunk_span(self, ref: int, mint: int, maxt: int) -> npt.NDArray[Any]:
        lo, hi = int(self._series_chunks[ref]), int(self._series_chunks[ref + 1])
        first = lo + int(self._chunk_maxt[lo:hi].searchsorted(mint))
        last = lo + int(self._chunk_mint[lo:hi].searchsorted(maxt, side="right"))
        return self._chunks[first:max(first, last)]

    def has_data(self, ref: int, mint: int, maxt: int) -> bool:
        return bool(len(self._chunk_span(ref, mint, maxt)))

    def _decoded(self, row: Any) -> tuple[Int64s, Float64s]:
        """A chunk's samples, from the decoded-chunk cache when a recent query read it."""
        key = (self.id, int(row["page"]), int(row["offset"]))
        found = DECODED.get(key)
        if found is not None:
            return found
        page = self._page(int(row["page"]))
        offset, length = int(row["offset"]), int(row["length"])
        data = memoryview(page)[offset:offset + length]
        if self.encoding is ChunkEncoding.COLUMNAR:
            ts, vs = enc.unpack(data)
        else:
            ts, vs = enc.decode_gorilla(bytes(data))
        if len(ts) != int(row["count"]):
            raise CorruptChunk(f"block {self.id}: a chunk decodes to {len(ts)} samples, "
                               f"its index says {int(row['count'])}")
        ts.flags.writeable = False
        vs.flags.writeable = False
        DECODED.put(key, (ts, vs))
        return ts, vs

    def samples(self, ref: int, mint: int, maxt: int) -> tuple[Int64s, Float64s]:
        parts = []
        for row in self._chunk_span(ref, mint, maxt):
            ts, vs = self._decoded(row)
            if int(row["mint"]) >= mint and int(row["maxt"]) <= maxt:  # all of it
                parts.append((ts, vs))
                continue
            lo = int(ts.searchsorted(mint))
            hi = int(ts.searchsorted(maxt, side="right"))
            parts.append((ts[lo:hi], vs[lo:hi]))
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def select_refs(self, matchers: Sequence[Matcher]) -> Ids:
        return select_postings(self, matchers)

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> Iterator[SeriesData]:
        if not self.meta.overlaps(mint, maxt):
            return
        for ref in self.select_refs(matchers).tolist():
            ts, vs = self.samples(ref, mint, maxt)
            if len(ts):
                yield self.labels(ref), ts, vs

    def all_series(self) -> Iterator[SeriesData]:
        """Every series with all its samples, in label order (compaction's input)."""
        for ref in range(self.meta.num_series):
            ts, vs = self.samples(ref, self.meta.min_time, self.meta.max_time - 1)
            yield self.labels(ref), ts, vs


def open_blocks(directory: Path) -> list[Block]:
    """The blocks under ``directory``, by min time: unfinished ``.tmp-*`` writes removed,
    and blocks that a compacted block replaced (its ``sources``) deleted."""
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    metas = {}
    for path in directory.iterdir():
        if path.is_dir() and (path / META).is_file():
            metas[path.name] = BlockMeta.from_json((path / META).read_text())
    replaced = {name for name, meta in metas.items() for other in metas.values()
                if other.level > meta.level and set(meta.sources) <= set(other.sources)}
    for name in sorted(replaced):
        logger.info("deleting block %s: a compacted block replaced it", name)
        shutil.rmtree(directory / name)
        del metas[name]
    return sorted((Block(directory / name) for name in metas),
                  key=lambda b: (b.meta.min_time, b.meta.max_time))


def compact(parent: Path, blocks: Sequence[Block], *,
            encoding: ChunkEncoding = ChunkEncoding.COLUMNAR,
            chunk_samples: int = 480) -> BlockMeta | None:
    """Write one block holding every series of ``blocks`` (merged by label set; at a
    timestamp in two blocks the earlier block's sample wins). The caller deletes the
    sources once it has the new block (a crash before that: :func:`open_blocks` does)."""
    if not blocks:
        return None
    ordered = sorted(blocks, key=lambda b: b.meta.min_time)
    streams = [((labels, rank, ts, vs) for labels, ts, vs in block.all_series())
               for rank, block in enumerate(ordered)]
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))

    def series() -> Iterator[SeriesData]:
        for labels, group in groupby(merged, key=lambda item: item[0]):
            ts, vs = merge_samples([(item[2], item[3]) for item in group])
            yield labels, ts, vs

    sources = tuple(s for b in ordered for s in b.meta.sources)
    return write_block(parent, series(), ordered[0].meta.min_time,
                       max(b.meta.max_time for b in ordered), encoding=encoding,
                       chunk_samples=chunk_samples,
                       level=max(b.meta.level for b in ordered) + 1, sources=sources,
                       resolution=ordered[0].meta.resolution)
