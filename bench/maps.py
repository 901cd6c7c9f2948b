"""Geocoding benchmark: our maps engine against SQLite full-text and R*Tree indexes.

``python -m bench.maps``, in one run, on the gazetteer the maps server loads by default
(the Helsinki and Monaco OSM extracts and the GeoNames ``cities500`` places):

1. Build: ``load_gazetteer`` (reading the sources, then the geocoder's indexes), its
   memory (``Geocoder.nbytes``) and feature counts; the peers' index builds over the
   same features.
2. Forward geocoding in process, one query at a time: queries/s, p50/p99 latency and
   top-1/top-5 accuracy of ``Geocoder.geocode`` on query sets made from a seeded sample
   of real addresses (``--addresses``): as written, with one typo in the street name,
   without diacritics, city first; and from GeoNames places of more than 50,000 people
   (``--places``): the name as written and with one typo.
3. The peer: SQLite FTS5 (stdlib ``sqlite3``) over the same names (addresses, streets,
   POIs, places), ``unicode61 remove_diacritics 2``, every query token a prefix term
   (``"yrjonkatu"* "16"*``, all required), ranked by bm25 then importance (a place's
   population on a log scale); and two rows with FTS5's ``trigram`` tokenizer: the
   query's words as substrings (all required), and an OR of the query's trigrams ranked
   by bm25 (a fuzzy match; on the first ``--trigram-or-queries`` of each set, it is slow).
4. Reverse geocoding: ours on ``--reverse-points`` sampled address points, each moved by
   a seeded random 0-30 m; right when it names the nearest address point (brute force in
   numpy, the oracle). Peer: an SQLite R*Tree box query (the same 100 m limit), the
   nearest of the box's points by haversine in Python.
5. End to end: one ``python -m geoplex.servers.maps`` process, closed-loop ``Geocode``
   through the raw generated stub at ``--concurrency``, interleaved with the runtime
   ceiling on the same process (``MeshService/Ping`` answering as many bytes as the
   average Geocode response); the best of ``--rounds`` each.

Writes ``bench/results/maps.json`` and the ``maps`` section of ``BENCHMARKS.md``
(``--no-write`` to skip; ``--quick`` implies it; ``--report-only`` re-renders).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import math
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio
import numpy as np

from geoplex.infra import data
from geoplex.maps.v1 import maps_pb2 as mpb
from geoplex.maps.v1 import maps_pb2_grpc
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from geoplex.servers._runtime.geo import EARTH_RADIUS_M, haversine_m
from geoplex.servers.maps.adapters.geonames import importance, read_places
from geoplex.servers.maps.adapters.osm_gazetteer import read_gazetteer
from geoplex.servers.maps import app as maps_app
from geoplex.servers.maps.app import Loaded, load_gazetteer
from geoplex.servers.maps.config import MapsConfig
from geoplex.servers.maps.domain import ADDRESS, PLACE, Feature, StreetLine
from geoplex.servers.maps.geocoding import Geocoder, address_label
from geoplex.servers.maps.text import normalize, normalize_housenumber

from ._common import (run_and_report, Steps, log, CpuSample, LoadResult, closed_loop, cpu_usage, fmt_num, free_port, latency_summary,
                      machine_info, machine_line, markdown_table, per_worker, percentile,
                      read_results, start_server_processes, wait_for_quiet,
                      wait_for_quiet_async, write_results, write_section)

NAME = "maps"
DATASETS = ("helsinki", "monaco", "geonames")
TOP = 5                     # candidates asked of every engine; top-5 accuracy counts these
PLACE_MIN_POPULATION = 50_000
PLACE_MATCH_M = 5_000.0     # a place answer is right with the right label this near
REVERSE_MAX_M = 100.0       # the server's default reverse limit (GEOPLEX_MAPS_REVERSE_MAX_METERS)
REVERSE_OFFSET_M = 30.0
SAME_POINT_M = 0.01         # an answer this near the oracle's address point names it
WARM_QUERIES = 10
QUIET_MAX_S = 5.0           # the longest wait for an idle machine before a timed part
PEER_FETCH = 20             # rows a peer fetches before dropping repeated labels

ADDRESS_SETS = ("exact", "one typo", "no diacritics", "city first")
PLACE_SETS = ("place exact", "place one typo")
SETS = ADDRESS_SETS + PLACE_SETS
ENGINES = (  # key, label
    ("ours", "ours (trigram index + rapidfuzz)"),
    ("fts5", "FTS5 unicode61, prefix terms, AND"),
    ("trigram", "FTS5 trigram, substrings, AND"),
    ("trigram_or", "FTS5 trigram, OR of trigrams"),
)
ENGINE_LABELS = dict(ENGINES)

Answer = tuple[str, str, float, float]  # label, kind, lat, lon
Lookup = Callable[[str], list[Answer]]





def quiet(label: str) -> float:
    """Wait (5 s at most) for the machine to go idle; how busy it still was."""
    busy = wait_for_quiet(max_wait=QUIET_MAX_S)
    if busy >= 20:
        log(f"    (machine still {busy:.0f}% busy before {label})")
    return busy


# =========================================================================== query sets

@dataclass
class Query:
    """One lookup and what answers it: a normalised label (and for a place, its point)."""

    text: str
    wanted: frozenset[str]
    lat: float = math.nan
    lon: float = math.nan

    def right(self, answer: Answer) -> bool:
        return self.right_label(answer) and not self.elsewhere(answer)

    def right_label(self, answer: Answer) -> bool:
        return normalize(answer[0]) in self.wanted

    def elsewhere(self, answer: Answer) -> bool:
        """A place answer farther than PLACE_MATCH_M from the wanted place."""
        return not math.isnan(self.lat) and haversine_m(self.lat, self.lon, answer[2],
                                                        answer[3]) > PLACE_MATCH_M


AddressKey = tuple[str, str]


def address_key(f: Feature) -> AddressKey:
    """Street and number: what a query without a city asks for."""
    return normalize(f.name), normalize_housenumber(f.housenumber)


def head(f: Feature) -> str:
    """"Mannerheimintie 10" or "10 Avenue de la Costa": the label without the city."""
    return address_label(f.name, f.housenumber, "", "")


def typo(name: str, rng: random.Random) -> str:
    """``name`` with one letter substituted, deleted or inserted (seeded)."""
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    if not letters:
        return name
    i = rng.choice(letters)
    op = rng.choice(("substitute", "delete", "insert"))
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    if op == "substitute":
        return name[:i] + rng.choice(alphabet.replace(name[i].lower(), "")) + name[i + 1:]
    if op == "delete":
        return name[:i] + name[i + 1:]
    return name[:i] + rng.choice(alphabet) + name[i:]


def strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def sample_addresses(addresses: Sequence[Feature], count: int,
                     rng: random.Random) -> list[Feature]:
    """Distinct addresses (one per street and number), ``count`` at most."""
    distinct: dict[AddressKey, Feature] = {}
    for f in addresses:
        if f.kind == ADDRESS and normalize(f.name) and f.housenumber:
            distinct.setdefault(address_key(f), f)
    chosen = list(distinct.values())
    return rng.sample(chosen, min(count, len(chosen)))


def address_labels(addresses: Sequence[Feature],
                   sample: Sequence[Feature]) -> dict[AddressKey, frozenset[str]]:
    """Every label (normalised) an address of the sample's street and number may carry:
    some are mapped twice, with and without a postcode, or in two localities."""
    labels: dict[AddressKey, set[str]] = {address_key(f): set() for f in sample}
    for f in addresses:
        key = address_key(f)
        if key in labels:
            labels[key].add(normalize(address_label(f.name, f.housenumber, f.postcode,
                                                    f.city)))
    return {k: frozenset(v) for k, v in labels.items()}


def address_sets(addresses: Sequence[Feature], count: int,
                 seed: int) -> dict[str, list[Query]]:
    rng = random.Random(seed)
    sample = sample_addresses(addresses, count, rng)
    labels = address_labels(addresses, sample)
    out: dict[str, list[Query]] = {name: [] for name in ADDRESS_SETS}
    for f in sample:
        wanted = labels[address_key(f)]
        out["exact"].append(Query(head(f), wanted))
        out["one typo"].append(Query(head(Feature(ADDRESS, typo(f.name, rng), f.lat, f.lon,
                                                  housenumber=f.housenumber)), wanted))
        if not f.name.isascii():
            out["no diacritics"].append(Query(strip_diacritics(head(f)), wanted))
        out["city first"].append(Query(f"{f.city} {head(f)}", wanted))
    return out


def place_sets(places: Sequence[Feature], count: int, seed: int) -> dict[str, list[Query]]:
    """GeoNames places of more than PLACE_MIN_POPULATION people (their importance says
    so: the population on a log scale), by name, as written and with one typo."""
    rng = random.Random(seed + 1)
    threshold = importance(PLACE_MIN_POPULATION)
    big = [p for p in places if p.kind == PLACE and p.importance > threshold
           and any(ch.isalpha() for ch in p.name)]
    sample = rng.sample(big, min(count, len(big)))
    out: dict[str, list[Query]] = {name: [] for name in PLACE_SETS}
    for p in sample:
        wanted = frozenset({normalize(f"{p.name}, {p.city}")})
        out["place exact"].append(Query(p.name, wanted, p.lat, p.lon))
        out["place one typo"].append(Query(typo(p.name, rng), wanted, p.lat, p.lon))
    return out


# =========================================================================== the peers

_FTS_TOKEN = re.compile(r"[^\W_]+")


def fts5_prefix_query(text: str) -> str:
    """``Yrjönkatu 16`` -> ``"Yrjönkatu"* "16"*``: every unicode61 token a prefix term,
    all of them required (FTS5's implicit AND)."""
    return " ".join(f'"{t}"*' for t in _FTS_TOKEN.findall(text))


def trigram_phrases(text: str) -> list[str]:
    """The query's words (split at spaces and commas), each word shorter than 3
    characters joined to its neighbour ("yrjönkatu 16"): the trigram tokenizer matches
    nothing shorter than a trigram."""
    words = text.replace(",", " ").split()
    phrases: list[str] = []
    pending = ""
    for w in words:
        if pending:
            w = f"{pending} {w}"
            pending = ""
        if len(w) < 3:
            if phrases:
                phrases[-1] = f"{phrases[-1]} {w}"
            else:
                pending = w
            continue
        phrases.append(w)
    if pending:
        phrases.append(pending)
    return phrases


def _quoted(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def trigram_and_query(text: str) -> str:
    """Every phrase of :func:`trigram_phrases` as a substring, all required."""
    return " ".join(_quoted(p) for p in trigram_phrases(text) if len(p) >= 3)


def trigram_or_query(text: str) -> str:
    """Any trigram of the query's phrases (lowercased, each once): a fuzzy match that
    bm25 ranks by how many and how rare the shared trigrams are."""
    grams: dict[str, None] = {}
    for p in trigram_phrases(text.lower()):
        for i in range(len(p) - 2):
            grams.setdefault(p[i:i + 3], None)
    return " OR ".join(_quoted(g) for g in grams)


@dataclass
class Row:
    """One name of the gazetteer as the peers index it."""

    text: str
    label: str
    kind: str
    lat: float
    lon: float
    importance: float


def peer_rows(features: Sequence[Feature]) -> list[Row]:
    """The gazetteer's names with the labels our geocoder gives them: an address as it
    is written ("Yrjönkatu 16 Helsinki", "10 Avenue de la Costa Monaco"), a street or POI
    with its locality, a place with its country code."""
    rows = []
    for f in features:
        if f.kind == ADDRESS:
            if not f.name or not f.housenumber:
                continue
            rows.append(Row(f"{head(f)} {f.city}".strip(),
                            address_label(f.name, f.housenumber, f.postcode, f.city),
                            f.kind, f.lat, f.lon, 0.0))
        else:
            if not f.name:
                continue
            label = f"{f.name}, {f.city}" if f.city else f.name
            rows.append(Row(f"{f.name} {f.city}".strip(), label, f.kind, f.lat, f.lon,
                            f.importance))
    return rows


@dataclass
class FtsPeer:
    """An in-memory SQLite FTS5 table over :func:`peer_rows`."""

    tokenize: str
    make_query: Callable[[str], str]
    db: sqlite3.Connection = field(default_factory=lambda: sqlite3.connect(":memory:"))
    build_s: float = math.nan
    rows: int = 0

    def build(self, rows: Sequence[Row]) -> FtsPeer:
        t0 = time.perf_counter()
        self.db.execute("CREATE VIRTUAL TABLE names USING fts5(text, label UNINDEXED, "
                        "kind UNINDEXED, lat UNINDEXED, lon UNINDEXED, importance UNINDEXED, "
                        f"tokenize = {_sql_string(self.tokenize)})")
        self.db.executemany("INSERT INTO names(text, label, kind, lat, lon, importance) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            ((r.text, r.label, r.kind, r.lat, r.lon, r.importance)
                             for r in rows))
        self.db.execute("INSERT INTO names(names) VALUES ('optimize')")
        self.db.commit()
        self.build_s = time.perf_counter() - t0
        self.rows = len(rows)
        return self

    def nbytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def lookup(self, text: str) -> list[Answer]:
        match = self.make_query(text)
        if not match:
            return []
        cursor = self.db.execute(
            "SELECT label, kind, lat, lon FROM names WHERE names MATCH ? "
            "ORDER BY bm25(names), importance DESC LIMIT ?", (match, PEER_FETCH))
        out: list[Answer] = []
        seen: set[tuple[str, str]] = set()
        for label, kind, lat, lon in cursor:
            if (kind, label) in seen:
                continue
            seen.add((kind, label))
            out.append((label, kind, lat, lon))
            if len(out) == TOP:
                break
        return out


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sqlite_features() -> dict[str, Any]:
    """The stdlib sqlite3's library version and whether FTS5 and R*Tree are compiled in."""
    db = sqlite3.connect(":memory:")
    options = {row[0] for row in db.execute("PRAGMA compile_options")}
    out: dict[str, Any] = {"sqlite_version": sqlite3.sqlite_version,
                           "fts5": "ENABLE_FTS5" in options,
                           "rtree": "ENABLE_RTREE" in options}
    for key, sql in (("fts5", "CREATE VIRTUAL TABLE f USING fts5(x)"),
                     ("rtree", "CREATE VIRTUAL TABLE r USING rtree(id, a, b)")):
        try:
            db.execute(sql)
            out[key] = True
        except sqlite3.OperationalError:
            out[key] = False
    out["trigram_remove_diacritics"] = sqlite3.sqlite_version_info >= (3, 45, 0)
    db.close()
    return out


@dataclass
class RtreePeer:
    """An SQLite R*Tree over the address points; nearest by haversine in Python."""

    lats: list[float]
    lons: list[float]
    labels: list[str]
    db: sqlite3.Connection = field(default_factory=lambda: sqlite3.connect(":memory:"))
    build_s: float = math.nan

    def build(self) -> RtreePeer:
        t0 = time.perf_counter()
        self.db.execute("CREATE VIRTUAL TABLE points USING rtree(id, min_lat, max_lat, "
                        "min_lon, max_lon)")
        self.db.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?)",
                            ((i, lat, lat, lon, lon)
                             for i, (lat, lon) in enumerate(zip(self.lats, self.lons))))
        self.db.commit()
        self.build_s = time.perf_counter() - t0
        return self

    def nbytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def reverse(self, lat: float, lon: float,
                limit_m: float = REVERSE_MAX_M) -> tuple[int, float] | None:
        """The index and distance of the nearest address point within ``limit_m``
        (``labels[index]`` names it)."""
        dlat = math.degrees(limit_m / EARTH_RADIUS_M)
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        best: tuple[int, float] | None = None
        for (i,) in self.db.execute(
                "SELECT id FROM points WHERE max_lat >= ? AND min_lat <= ? AND max_lon >= ? "
                "AND min_lon <= ?", (lat - dlat, lat + dlat, lon - dlon, lon + dlon)):
            d = haversine_m(lat, lon, self.lats[i], self.lons[i])
            if d <= limit_m and (best is None or d < best[1]):
                best = (i, d)
        return best


# =========================================================================== measuring

def time_lookups(lookup: Lookup, queries: Sequence[Query]) -> dict[str, Any]:
    """Every query once, one at a time, after a few of them as warm-up (a tenth, at most
    WARM_QUERIES): latency, queries/s and top-1/top-5 accuracy."""
    for q in queries[:min(WARM_QUERIES, max(1, len(queries) // 10))]:
        lookup(q.text)
    clock = time.perf_counter
    times: list[float] = []
    top1 = top5 = same_name_elsewhere = 0
    misses: list[dict[str, Any]] = []
    cpu0 = CpuSample.take()
    for q in queries:
        t0 = clock()
        found = lookup(q.text)
        times.append(clock() - t0)
        hit = [q.right(a) for a in found[:TOP]]
        top1 += bool(hit) and hit[0]
        top5 += any(hit)
        if not hit or not hit[0]:
            if found and q.right_label(found[0]) and q.elsewhere(found[0]):
                same_name_elsewhere += 1
            if len(misses) < 5:
                misses.append({"query": q.text, "wanted": sorted(q.wanted),
                               "got": [a[0] for a in found[:3]]})
    cpu = cpu_usage(cpu0, CpuSample.take())
    n = len(queries)
    total = sum(times)
    return {"n": n, "queries_per_s": n / total if total else math.nan,
            **latency_summary(times), "top1": top1 / n if n else math.nan,
            "top5": top5 / n if n else math.nan,
            "top1_same_name_elsewhere": same_name_elsewhere,
            "other_cpu_pct": cpu.get("other_cpu_pct", math.nan), "misses": misses}


def ours_lookup(geocoder: Geocoder) -> Lookup:
    def lookup(text: str) -> list[Answer]:
        return [(c.label, c.kind, c.lat, c.lon) for c in geocoder.geocode(text, limit=TOP)]
    return lookup


def forward(sets: Mapping[str, list[Query]], lookups: Mapping[str, Lookup],
            trigram_or_queries: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in SETS:
        queries = sets.get(name) or []
        if not queries:
            continue
        out[name] = {}
        busy = quiet(name)  # the engines then run back to back, a few seconds in all
        for key, label in ENGINES:
            if key not in lookups:
                continue
            subset = queries[:trigram_or_queries] if key == "trigram_or" else queries
            got = time_lookups(lookups[key], subset)
            got["busy_before_pct"] = busy
            out[name][key] = got
            log(f"    {name:<15} {label:<36} n={got['n']:>4}: {got['queries_per_s']:>8,.0f} q/s,"
                f" p50 {got['p50_ms']:7.3f} ms, p99 {got['p99_ms']:7.3f} ms, top-1 "
                f"{got['top1']:6.1%}, top-5 {got['top5']:6.1%}")
    return out


def moved_points(lats: np.ndarray[Any, np.dtype[np.float64]],
                 lons: np.ndarray[Any, np.dtype[np.float64]],
                 rng: np.random.Generator) -> tuple[list[float], list[float], list[float]]:
    """Each point moved by a uniform 0..REVERSE_OFFSET_M metres in a uniform direction;
    the moved points and the offsets."""
    dist = rng.uniform(0.0, REVERSE_OFFSET_M, lats.size)
    bearing = rng.uniform(0.0, 2 * math.pi, lats.size)
    dlat = np.degrees(dist * np.cos(bearing) / EARTH_RADIUS_M)
    dlon = np.degrees(dist * np.sin(bearing) / EARTH_RADIUS_M) / np.cos(np.radians(lats))
    return (lats + dlat).tolist(), (lons + dlon).tolist(), dist.tolist()


def nearest_oracle(lats: np.ndarray[Any, np.dtype[np.float64]],
                   lons: np.ndarray[Any, np.dtype[np.float64]],
                   qlat: Sequence[float], qlon: Sequence[float]) -> list[tuple[int, float]]:
    """For each query point, the index of the nearest address point and its distance
    (haversine over all of them)."""
    la, lo = np.radians(lats), np.radians(lons)
    out = []
    for a, b in zip(qlat, qlon):
        ra, rb = math.radians(a), math.radians(b)
        h = (np.sin((la - ra) / 2) ** 2
             + math.cos(ra) * np.cos(la) * np.sin((lo - rb) / 2) ** 2)
        d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        i = int(np.argmin(d))
        out.append((i, float(d[i])))
    return out


def reverse(geocoder: Geocoder, peer: RtreePeer, count: int, seed: int) -> dict[str, Any]:
    addresses = geocoder.addresses()
    lats = np.array([f.lat for f in addresses], dtype=np.float64)
    lons = np.array([f.lon for f in addresses], dtype=np.float64)
    labels = [normalize(address_label(f.name, f.housenumber, f.postcode, f.city))
              for f in addresses]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(addresses), size=min(count, len(addresses)), replace=False)
    qlat, qlon, offsets = moved_points(lats[chosen], lons[chosen], rng)
    oracle = nearest_oracle(lats, lons, qlat, qlon)

    def names_oracle(i: int, label: str, lat: float, lon: float) -> bool:
        """The answer is the oracle's address (or one at the same point)."""
        return label == labels[i] or haversine_m(lat, lon, lats[i], lons[i]) <= SAME_POINT_M

    out: dict[str, Any] = {"points": len(qlat), "offset_max_m": REVERSE_OFFSET_M,
                           "limit_m": REVERSE_MAX_M,
                           "oracle_median_m": percentile(sorted(d for _i, d in oracle), 50)}
    clock = time.perf_counter
    # ours
    busy = quiet("reverse ours")
    cpu0 = CpuSample.take()
    for a, b in zip(qlat[:WARM_QUERIES], qlon[:WARM_QUERIES]):
        geocoder.reverse(a, b, REVERSE_MAX_M)
    times: list[float] = []
    right = answered = 0
    kinds: dict[str, int] = {}
    dists: list[float] = []
    for (a, b), (i, _d) in zip(zip(qlat, qlon), oracle):
        t0 = clock()
        ans = geocoder.reverse(a, b, REVERSE_MAX_M)
        times.append(clock() - t0)
        if ans is None:
            continue
        answered += 1
        kinds[ans.kind] = kinds.get(ans.kind, 0) + 1
        dists.append(ans.distance_m)
        right += ans.kind == ADDRESS and names_oracle(i, normalize(ans.label), ans.lat,
                                                      ans.lon)
    n = len(qlat)
    total = sum(times)
    out["ours"] = {"queries_per_s": n / total, **latency_summary(times),
                   "busy_before_pct": busy,
                   "other_cpu_pct": cpu_usage(cpu0, CpuSample.take()).get("other_cpu_pct"),
                   "answered": answered / n, "right": right / n, "kinds": kinds,
                   "median_distance_m": percentile(sorted(dists), 50)}
    # the peer
    busy = quiet("reverse R*Tree")
    cpu0 = CpuSample.take()
    for a, b in zip(qlat[:WARM_QUERIES], qlon[:WARM_QUERIES]):
        peer.reverse(a, b)
    times, dists = [], []
    right = answered = 0
    for (a, b), (i, _d) in zip(zip(qlat, qlon), oracle):
        t0 = clock()
        got = peer.reverse(a, b)
        times.append(clock() - t0)
        if got is None:
            continue
        answered += 1
        j, dist = got
        dists.append(dist)
        right += names_oracle(i, labels[j], peer.lats[j], peer.lons[j])
    total = sum(times)
    out["rtree"] = {"queries_per_s": n / total, **latency_summary(times),
                    "busy_before_pct": busy,
                    "other_cpu_pct": cpu_usage(cpu0, CpuSample.take()).get("other_cpu_pct"),
                    "answered": answered / n, "right": right / n,
                    "median_distance_m": percentile(sorted(dists), 50),
                    "build_s": peer.build_s}
    out["offset_median_m"] = percentile(sorted(offsets), 50)
    for key, label in (("ours", "ours (k-d tree)"), ("rtree", "R*Tree + haversine")):
        r = out[key]
        log(f"    reverse {label:<20} {n} points: {r['queries_per_s']:>8,.0f} q/s, p50 "
            f"{r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, right {r['right']:.1%}, median "
            f"distance {r['median_distance_m']:.1f} m")
    return out


# =========================================================================== end to end

async def e2e(sets: Mapping[str, list[Query]], args: argparse.Namespace,
              state: str) -> list[dict[str, Any]]:
    port = free_port()
    env = {"GEOPLEX_MAPS_PORT": str(port), "GEOPLEX_STATE_DIR": state,
           "GEOPLEX_LOG_LEVEL": "warning", "GEOPLEX_TRACING": "off"}
    texts = [q.text for pair in itertools.zip_longest(sets.get("exact", []),
                                                      sets.get("place exact", []))
             for q in pair if q is not None]
    requests = [mpb.GeocodeRequest(text=t, page_size=TOP) for t in texts]
    log("  starting one maps server process (it builds the gazetteer)...")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with start_server_processes([sys.executable, "-m", "geoplex.servers.maps"], 1, env,
                                ready_timeout=300) as servers:
        log(f"  ready in {time.perf_counter() - t0:.1f} s at {servers.address}")
        channel = grpc.aio.insecure_channel(servers.address)
        try:
            stub = maps_pb2_grpc.MapsServiceStub(channel)
            mesh = mesh_pb2_grpc.MeshServiceStub(channel)
            sizes = [(await stub.Geocode(r, timeout=30)).ByteSize() for r in requests[:200]]
            size = int(np.mean(sizes))
            ping_req = mesh_pb2.PingRequest(response_size=size)
            for conc in args.concurrency:
                if not servers.processes[0].running:
                    break
                cyc = itertools.cycle(requests)

                async def geocode() -> None:
                    await stub.Geocode(next(cyc), timeout=30)

                async def ping() -> None:
                    await mesh.Ping(ping_req, timeout=30)

                async def window(op: Callable[[], Any]) -> LoadResult:
                    await wait_for_quiet_async(max_wait=QUIET_MAX_S)
                    return await closed_loop(per_worker(op), concurrency=conc,
                                             warmup=args.warmup, duration=args.duration,
                                             pids=servers.pids)

                best: LoadResult | None = None
                ceil: LoadResult | None = None
                for _ in range(args.rounds):
                    r = await window(geocode)
                    best = r if best is None or r.calls_per_s > best.calls_per_s else best
                    c = await window(ping)
                    ceil = c if ceil is None or c.calls_per_s > ceil.calls_per_s else ceil
                assert best is not None and ceil is not None
                if best.errors:
                    log(f"  c={conc}: Geocode: {best.errors} errors, first: {best.first_error}")
                rows.append({"concurrency": conc, "response_bytes": size,
                             "geocode": best.as_dict(), "ceiling": ceil.as_dict()})
                log(f"  c={conc:>2}: {best.calls_per_s:,.0f} Geocode/s p50 {best.p50_ms:.2f} "
                    f"p99 {best.p99_ms:.2f} ms, errors {best.errors} | ceiling (Ping {size} B) "
                    f"{ceil.calls_per_s:,.0f}/s -> {_ratio(best.calls_per_s, ceil.calls_per_s)}")
        finally:
            await channel.close()
            server = servers.processes[0]
            if not server.running:
                tail = server.log_tail(40)
                log(f"  the maps server exited ({server.returncode}); the end of its log:\n"
                    f"{tail}")
                rows.append({"server_exit": server.returncode, "server_log_tail": tail})
    return rows


def runtime_ceiling() -> dict[str, Any]:
    """The runtime benchmark's empty unary Ping per concurrency (raw stub, one process,
    one channel), from ``bench/results/runtime.json``, for scale."""
    try:
        runtime = read_results("runtime")
    except (OSError, ValueError):
        return {}
    cells = {}
    for cell in runtime.get("cells", []):
        if (cell.get("server") == "base" and cell.get("call") == "unary"
                and cell.get("response_size") == 0 and cell.get("client") == "stub"
                and cell.get("channels") == 1):
            cells[str(cell["concurrency"])] = cell["calls_per_s"]
    return {"source": "bench/results/runtime.json",
            "date": runtime.get("machine", {}).get("date", ""), "calls_per_s": cells}


# =========================================================================== report

def _ratio(ours: Any, theirs: Any, digits: int = 2) -> str:
    if not ours or not theirs or not (math.isfinite(ours) and math.isfinite(theirs)):
        return "-"
    r = ours / theirs
    return f"{r:.{digits}f}x" if r < 10 else f"{r:,.0f}x"


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:.{digits}f}%"


def _ms(value: Any, digits: int = 3) -> str:
    return "-" if value is None else fmt_num(float(value), digits)


def _mib(n: Any) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def report(result: Mapping[str, Any]) -> str:
    s = result["settings"]
    b = result["build"]
    sq = result["sqlite"]
    counts = b["ours"]["counts"]
    lines = [
        "`python -m bench.maps`: the maps service's geocoder (`geoplex.servers.maps`) on "
        "the gazetteer it loads by default (Helsinki and Monaco OSM extracts, GeoNames "
        "cities500), against SQLite "
        f"{sq['sqlite_version']} (Python's stdlib `sqlite3`) over the same names: FTS5 with "
        "`unicode61 remove_diacritics 2`, every query token a prefix term, all required, "
        "ranked by bm25 then importance (a place's population on a log scale) -- the floor "
        "a plain full-text index gives; FTS5's `trigram` tokenizer with the query's words "
        "as substrings (all required; a word under 3 characters joined to its neighbour), "
        "and with an OR of the query's trigrams ranked by bm25 (fuzzy, slow: on the first "
        f"{s['trigram_or_queries']} queries of each set)"
        + ("" if sq.get("trigram_remove_diacritics") else
           "; this SQLite's trigram tokenizer cannot remove diacritics (3.45+)")
        + ". Query sets from a seeded sample (seed "
        f"{s['seed']}) of {s['addresses']} distinct real addresses (street + number): "
        "as written, one letter of the street substituted, deleted or inserted, without "
        "diacritics (the streets with some), locality first; and of "
        f"{s['places']} GeoNames places of more than {PLACE_MIN_POPULATION:,} people: the "
        "name alone, as written and with one typo. Every engine returns 5 candidates; "
        "top-1/top-5 count an answer right when its label (normalised) is one the address "
        "carries (some are mapped twice), for a place also within "
        f"{PLACE_MATCH_M / 1000:.0f} km. One query at a time in one process, after a "
        f"tenth of the set (at most {WARM_QUERIES}) as warm-up, the collector frozen after "
        "loading as the server does; queries/s = queries / their summed latency. Reverse: "
        f"{result['reverse']['points']:,} address points moved by a seeded 0-"
        f"{REVERSE_OFFSET_M:.0f} m; right = the nearest address point (numpy brute force) "
        f"or one at the same spot; the peer is an R*Tree box query of +-{REVERSE_MAX_M:.0f} m, "
        "then the nearest of the box's points by haversine in Python (addresses only: no "
        "street or place fallback). Each timed part (a query set, all engines back to back; "
        f"a reverse run; an end-to-end window) first waits up to {QUIET_MAX_S:.0f} s for an "
        "idle machine.",
        "",
        f"Machine: {machine_line(result['machine'])}. Whole run: "
        f"{fmt_num(result.get('elapsed_s', math.nan) / 60, 1)} min.", ""]

    # 1. build
    rows = [["ours: `load_gazetteer` (read the 3 sources, build the geocoder)",
             f"{b['ours']['load_s']:.2f}", _mib(b["ours"]["nbytes"]),
             ", ".join(f"{k} {v:,}" for k, v in counts.items())],
            ["  of which reading the sources (pyosmium, json)",
             f"{b['ours']['read_s']:.2f}", "", ""],
            ["  of which the geocoder's indexes (`Geocoder(...)`)",
             f"{b['ours']['index_s']:.2f}", "", ""]]
    for key in ("fts5", "trigram", "trigram_or"):
        p = b.get(key)
        if not p or key == "trigram_or":
            continue
        rows.append([f"{ENGINE_LABELS[key].split(',')[0]} table: insert + optimize",
                     f"{p['build_s']:.2f}", _mib(p["nbytes"]), f"{p['rows']:,} rows"])
    rt = b.get("rtree")
    if rt:
        rows.append(["R*Tree over the address points", f"{rt['build_s']:.3f}",
                     _mib(rt["nbytes"]), f"{rt['rows']:,} points"])
    lines += ["**1. Build** (seconds; memory: ours by `Geocoder.nbytes()`, SQLite by its "
              "in-memory pages; the FTS5 tables store each name's label and point too).", "",
              markdown_table(["what", "s", "memory", "contents"], rows, "lrrl"), ""]

    # 2. forward
    fw = result["forward"]
    head_ = ["query set", "n", "engine", "queries/s", "p50 ms", "p99 ms", "top-1", "top-5",
             "ours / peer queries/s", "ours / peer p50"]
    rows = []
    for name in SETS:
        cells = fw.get(name)
        if not cells:
            continue
        ours = cells.get("ours") or {}
        for key, label in ENGINES:
            c = cells.get(key)
            if not c:
                continue
            rows.append([name if key == "ours" else "", c["n"], label,
                         fmt_num(c["queries_per_s"]), _ms(c["p50_ms"]), _ms(c["p99_ms"]),
                         _pct(c["top1"]), _pct(c["top5"]),
                         "" if key == "ours" else _ratio(ours.get("queries_per_s"),
                                                         c["queries_per_s"]),
                         "" if key == "ours" else _ratio(ours.get("p50_ms"), c["p50_ms"])])
    elsewhere = []
    for key, label in ENGINES:
        got = [fw[n][key].get("top1_same_name_elsewhere", 0) for n in PLACE_SETS
               if key in fw.get(n, {})]
        if got:
            elsewhere.append(f"{label.split(' (')[0]} {' / '.join(str(g) for g in got)}")
    others = sorted(c.get("other_cpu_pct") or 0.0 for cells in fw.values()
                    for c in cells.values())
    lines += ["**2. Forward geocoding in process** (one query at a time; ratios above 1x: "
              "ours is faster in queries/s, slower in p50).", "",
              markdown_table(head_, rows, "lrlrrrrrrr"), "",
              "Place top-1 misses naming the wanted place's name and country but another "
              "place of that name, more than "
              f"{PLACE_MATCH_M / 1000:.0f} km away (exact / one typo): "
              + "; ".join(elsewhere) + ". Other work on the machine during these cells: "
              f"median {percentile(others, 50):.0f}%, max {percentile(others, 100):.0f}% of "
              "a core (this process runs on one of the two).", ""]

    # 3. reverse
    rv = result["reverse"]
    o, r = rv["ours"], rv["rtree"]
    rows = [["ours: `Geocoder.reverse` (k-d tree, 100 m)", fmt_num(o["queries_per_s"]),
             _ms(o["p50_ms"]), _ms(o["p99_ms"]), _pct(o["right"]), _pct(o["answered"]),
             f"{o['median_distance_m']:.1f}", "", ""],
            ["SQLite R*Tree box + haversine in Python", fmt_num(r["queries_per_s"]),
             _ms(r["p50_ms"]), _ms(r["p99_ms"]), _pct(r["right"]), _pct(r["answered"]),
             f"{r['median_distance_m']:.1f}", _ratio(o["queries_per_s"], r["queries_per_s"]),
             _ratio(o["p50_ms"], r["p50_ms"])]]
    lines += [f"**3. Reverse geocoding** ({rv['points']:,} points, median offset "
              f"{rv['offset_median_m']:.1f} m, the oracle's nearest address at a median "
              f"{rv['oracle_median_m']:.1f} m).", "",
              markdown_table(["engine", "queries/s", "p50 ms", "p99 ms", "right address",
                              "answered", "median distance m", "ours / peer queries/s",
                              "ours / peer p50"], rows, "lrrrrrrrr"), ""]

    # 4. end to end
    e2e_rows = result.get("e2e")
    if e2e_rows is None:
        lines += ["**4. End to end over gRPC**: not run (`--no-e2e`)."]
    else:
        ceilings = (result.get("runtime_ceiling") or {}).get("calls_per_s", {})
        rows = []
        for row in e2e_rows:
            if "server_exit" in row:
                rows.append(["-"] * 6 + [f"server exited ({row['server_exit']})"])
                continue
            g, c = row["geocode"], row["ceiling"]
            ref = ceilings.get(str(row["concurrency"]))
            rows.append([row["concurrency"], row["response_bytes"],
                         f"{fmt_num(g['calls_per_s'])} ({g['p50_ms']:.2f} / {g['p99_ms']:.2f})",
                         f"{fmt_num(c['calls_per_s'])} ({c['p50_ms']:.2f} / {c['p99_ms']:.2f})",
                         _pct(g["calls_per_s"] / c["calls_per_s"] if c["calls_per_s"]
                              else math.nan),
                         f"{fmt_num(ref)} -> {_pct(g['calls_per_s'] / ref)}" if ref else "-",
                         f"{g['cpu'].get('server_cpu_pct', math.nan):.0f} / "
                         f"{g['cpu'].get('client_cpu_pct', math.nan):.0f} / "
                         f"{g['cpu'].get('other_cpu_pct', math.nan):.0f}", g["errors"]])
        when = (result.get("runtime_ceiling") or {}).get("date", "")
        lines += [f"**4. End to end over gRPC**: one maps server process, one client "
                  "process, closed-loop `Geocode` (page size 5) through the raw generated "
                  "stub, cycling through the exact address and place queries; calls/s and "
                  f"(p50 / p99 ms); each cell the best of {s['rounds']} round(s) of "
                  f"{s['duration']:g} s after {s['warmup']:g} s warm-up, interleaved with "
                  "the ceiling on the same process: `MeshService/Ping` answering as many "
                  "bytes as the average Geocode response. The last ceiling column is the "
                  "empty-Ping ceiling of `bench/results/runtime.json` "
                  f"({when or 'not found'}), another run.", "",
                  markdown_table(["conc", "resp B", "ours: Geocode", "ceiling: Ping same size",
                                  "ours / ceiling", "runtime.json ceiling -> ours / it",
                                  "CPU % server / client / other", "errors"], rows,
                                 "rrrrrrrr") if rows else "(no cell measured)"]
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    markdown = "## Maps (geocoding)\n\n" + report(result)
    log(f"wrote {write_section(NAME, markdown)}")


# =========================================================================== main

def load(config: MapsConfig) -> tuple[Loaded, dict[str, float], list[Feature]]:
    """``load_gazetteer``, timed: in all, and until its progress says the sources are
    read. Also the features it read, for the peers to index the very same ones: its two
    readers are wrapped while it runs to keep what they return (read again with the same
    adapters if ``geoplex.servers.maps.app`` no longer calls them by those names)."""
    marks: dict[str, float] = {}
    captured: list[Feature] = []
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        if msg.startswith("gazetteer places") or (config.places is None
                                                   and msg.startswith("gazetteer ")
                                                   and "built" not in msg):
            marks["read_s"] = time.perf_counter() - t0
        log("  " + msg)

    def osm(path: Path, city: str) -> tuple[list[Feature], list[StreetLine]]:
        found, lines = read_gazetteer(path, city)
        captured.extend(found)
        return found, lines

    def geonames(path: Path) -> list[Feature]:
        found = read_places(path)
        captured.extend(found)
        return found

    wrapped = [(name, fn) for name, fn in (("read_gazetteer", osm), ("read_places", geonames))
               if hasattr(maps_app, name)]
    with contextlib.ExitStack() as stack:
        for name, fn in wrapped:
            stack.enter_context(_patched(maps_app, name, fn))
        loaded = load_gazetteer(config, progress=progress)
    total = time.perf_counter() - t0
    read_s = marks.get("read_s", math.nan)
    if len(wrapped) < 2 or len(captured) != sum(loaded.geocoder.counts().values()):
        log("  (could not keep load_gazetteer's features: reading the sources again)")
        captured = source_features(config)
    return loaded, {"load_s": total, "read_s": read_s, "index_s": total - read_s}, captured


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def source_features(config: MapsConfig) -> list[Feature]:
    """The features ``load_gazetteer`` builds from, read again with the same adapters."""
    features: list[Feature] = []
    for extract in config.extracts:
        found, _lines = read_gazetteer(extract.path, extract.city)
        features += found
    if config.places is not None:
        features += read_places(config.places)
    return features


def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    sq = sqlite_features()
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(), "sqlite": sq,
        "settings": {"addresses": args.addresses, "places": args.places,
                     "reverse_points": args.reverse_points,
                     "trigram_or_queries": args.trigram_or_queries, "seed": args.seed,
                     "concurrency": args.concurrency, "duration": args.duration,
                     "warmup": args.warmup, "rounds": args.rounds, "quick": args.quick}}
    step = Steps(6)
    step(1, "data", f"data: {', '.join(DATASETS)} (geoplex data fetch); SQLite "
        f"{sq['sqlite_version']}, FTS5 {'yes' if sq['fts5'] else 'NO'}, R*Tree "
        f"{'yes' if sq['rtree'] else 'NO'}")
    data.fetch(list(DATASETS), progress=log)
    config = MapsConfig.from_env()
    step(2, "load", "our gazetteer (load_gazetteer)...")
    quiet("load_gazetteer")
    loaded, timing, features = load(config)
    geocoder = loaded.geocoder
    result["build"] = {"ours": {**timing, "nbytes": geocoder.nbytes(),
                                "counts": geocoder.counts(), "sources": list(loaded.sources)}}
    log(f"  load {timing['load_s']:.2f} s (read {timing['read_s']:.2f} s, indexes "
        f"{timing['index_s']:.2f} s), {geocoder.nbytes() / 2**20:.1f} MiB, {geocoder.counts()}")

    step(3, "peers", "the peers: SQLite FTS5 and R*Tree over the same features...")
    rows = peer_rows(features)
    places = [f for f in features if f.kind == PLACE]
    peers: dict[str, FtsPeer] = {}
    if sq["fts5"]:
        trigram = "trigram remove_diacritics 1" if sq["trigram_remove_diacritics"] \
            else "trigram"
        for key, tokenize, make in (("fts5", "unicode61 remove_diacritics 2",
                                     fts5_prefix_query),
                                    ("trigram", trigram, trigram_and_query)):
            quiet(f"{key} build")
            peers[key] = FtsPeer(tokenize, make).build(rows)
            result["build"][key] = {"tokenize": tokenize, "build_s": peers[key].build_s,
                                    "rows": peers[key].rows, "nbytes": peers[key].nbytes()}
            log(f"  FTS5 {tokenize}: {peers[key].rows:,} rows in {peers[key].build_s:.2f} s, "
                f"{peers[key].nbytes() / 2**20:.1f} MiB")
    addresses = geocoder.addresses()
    rtree: RtreePeer | None = None
    if sq["rtree"]:
        rtree = RtreePeer([f.lat for f in addresses], [f.lon for f in addresses],
                          [address_label(f.name, f.housenumber, f.postcode, f.city)
                           for f in addresses]).build()
        result["build"]["rtree"] = {"build_s": rtree.build_s, "rows": len(addresses),
                                    "nbytes": rtree.nbytes()}
    sets = {**address_sets(addresses, args.addresses, args.seed),
            **place_sets(places, args.places, args.seed)}
    result["query_sets"] = {name: len(qs) for name, qs in sets.items()}
    log("  query sets: " + ", ".join(f"{k} {v}" for k, v in result["query_sets"].items()))
    del features, rows, places
    gc.collect()
    gc.freeze()  # as the server does after loading: no full collections of the gazetteer

    step(4, "forward", "forward geocoding, in process...")
    lookups: dict[str, Lookup] = {"ours": ours_lookup(geocoder)}
    if "fts5" in peers:
        lookups["fts5"] = peers["fts5"].lookup
        lookups["trigram"] = peers["trigram"].lookup
        peers["trigram_or"] = FtsPeer(peers["trigram"].tokenize, trigram_or_query,
                                      peers["trigram"].db)
        if args.trigram_or_queries > 0:
            lookups["trigram_or"] = peers["trigram_or"].lookup
    result["forward"] = forward(sets, lookups, args.trigram_or_queries)

    step(5, "reverse", "reverse geocoding, in process...")
    if rtree is None:
        raise SystemExit("this SQLite has no R*Tree module: the reverse peer cannot run")
    result["reverse"] = reverse(geocoder, rtree, args.reverse_points, args.seed)

    step(6, "e2e", "end to end over gRPC...")
    result["runtime_ceiling"] = runtime_ceiling()
    if args.no_e2e:
        result["e2e"] = None
    else:
        del loaded, geocoder, lookups, peers, rtree
        gc.unfreeze()
        gc.collect()  # the server builds its own gazetteer: give it the memory
        with tempfile.TemporaryDirectory(prefix="geoplex-bench-maps-") as state:
            result["e2e"] = asyncio.run(e2e(sets, args, state))
    step.done()
    result["step_s"] = step.seconds
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.maps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=500,
                        help="distinct real addresses sampled for the address query sets")
    parser.add_argument("--places", type=int, default=300,
                        help=f"GeoNames places of more than {PLACE_MIN_POPULATION:,} people "
                             "sampled for the place query sets")
    parser.add_argument("--reverse-points", type=int, default=1000,
                        help="address points (moved by 0-30 m) reverse-geocoded")
    parser.add_argument("--trigram-or-queries", type=int, default=50,
                        help="queries per set the slow FTS5 trigram-OR peer runs (0: skip it)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of every sample")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 16],
                        help="end-to-end concurrencies, e.g. '1,16'")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per end-to-end round")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of warm-up before each end-to-end round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved end-to-end rounds (Geocode, Ping); the best is kept")
    parser.add_argument("--no-e2e", action="store_true", help="skip the gRPC measurement")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in under a minute: small samples, short e2e; "
                             "writes nothing")
    parser.add_argument("--no-write", action="store_true",
                        help="print the report, write neither results nor BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the BENCHMARKS.md section from "
                             "bench/results/maps.json")
    args = parser.parse_args()
    if args.report_only:
        write_report(read_results(NAME))
        return
    if args.quick:
        args.addresses, args.places, args.reverse_points = 100, 60, 300
        args.trigram_or_queries, args.no_write = 5, True
        args.duration, args.warmup, args.rounds = 1.0, 0.3, 1
    run_and_report(lambda: amain(args), NAME, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
