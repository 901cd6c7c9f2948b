"""Measure the chunk encodings on node-exporter-like data: bytes per sample and
encode/decode throughput (``python -m bench.telemetry_chunks``).

Columnar is measured as a block stores it (pages of packed chunks, zstd per page) and
chunk by chunk (zstd per chunk); gorilla as Prometheus stores it (chunk by chunk).
Throughput is wall-clock on this machine, one core, best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

from geoplex.servers.telemetry.tsdb import chunks
from geoplex.servers.telemetry.tsdb.workload import KINDS, SyntheticSeries, node_exporter_like


def _best(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _paged(data: Sequence[SyntheticSeries], page_bytes: int) -> list[bytes]:
    pages, page, size = [], [], 0
    for series in data:
        packed = chunks.pack(series.timestamps, series.values)
        page.append(packed)
        size += len(packed)
        if size >= page_bytes:
            pages.append(chunks.compress_page(b"".join(page)))
            page, size = [], 0
    if page:
        pages.append(chunks.compress_page(b"".join(page)))
    return pages


def measure(series: int, samples: int, repeat: int, jitter: bool = True) -> list[str]:
    data = list(node_exporter_like(series, samples, seed=3))
    if not jitter:
        stamps = data[0].timestamps[0] + np.arange(samples, dtype="int64") * 15_000
        data = [SyntheticSeries(s.labels, s.kind, stamps, s.values) for s in data]
    total = series * samples
    rows = [f"{series} series x {samples} samples (15 s scrapes, jitter {'on' if jitter else 'off'})"]

    pages = _paged(data, 256 << 10)
    enc = _best(repeat, lambda: _paged(data, 256 << 10))
    packed = [chunks.pack(s.timestamps, s.values) for s in data]
    dec = _best(repeat, lambda: [chunks.unpack(c) for c in packed])
    decomp = _best(repeat, lambda: [chunks.decompress_page(p) for p in pages])
    rows.append(f"columnar, 256 KiB zstd pages: {sum(map(len, pages)) / total:.3f} B/sample, "
                f"encode {total / enc / 1e6:.2f} M samples/s, decode "
                f"{total / (dec + decomp) / 1e6:.2f} M samples/s")
    per_chunk = [chunks.encode_columnar(s.timestamps, s.values) for s in data]
    rows.append(f"columnar, zstd per chunk:     {sum(map(len, per_chunk)) / total:.3f} B/sample")
    gorilla = [chunks.encode_gorilla(s.timestamps, s.values) for s in data]
    genc = _best(1, lambda: [chunks.encode_gorilla(s.timestamps, s.values) for s in data])
    gdec = _best(1, lambda: [chunks.decode_gorilla(g) for g in gorilla])
    rows.append(f"gorilla (XOR, Python):        {sum(map(len, gorilla)) / total:.3f} B/sample, "
                f"encode {total / genc / 1e6:.2f} M samples/s, decode "
                f"{total / gdec / 1e6:.2f} M samples/s")
    for kind, _ in KINDS:
        chosen = [s for s in data if s.kind == kind]
        n = len(chosen) * samples
        if not n:
            continue
        col = sum(map(len, _paged(chosen, 256 << 10))) / n
        gor = sum(len(chunks.encode_gorilla(s.timestamps, s.values)) for s in chosen) / n
        rows.append(f"  {kind:14s} {len(chosen):5d} series: columnar {col:.3f}, "
                    f"gorilla {gor:.3f} B/sample")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=480)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for jitter in (True, False):
        print("\n".join(measure(args.series, args.samples, args.repeat, jitter)))


if __name__ == "__main__":
    main()
