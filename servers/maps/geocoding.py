"""Geocoding (text -> ranked candidates) and reverse geocoding (point -> nearest answer).

Forward: every distinct normalised name (a street, once for all its house numbers; a POI;
a place) is indexed by its character trigrams in a CSR inverted index. A query counts
shared trigrams per name in one ``np.bincount`` over the postings of its trigrams, keeps
the few hundred names with the best trigram overlap, and scores only those with
rapidfuzz. Candidates are ranked by match quality, then importance, then nearness to the
bias point. A house number resolves to that address, else to a point interpolated
between the nearest known numbers of the same parity along the street, else to the
street itself.

Reverse: the nearest address point within the limit (a k-d tree on earth-centred
coordinates in metres), else the nearest street by exact projection onto its segments,
else the nearest GeoNames place.
"""

from __future__ import annotations

import bisect
import heapq
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import fuzz, process
from scipy.spatial import cKDTree

from geoplex.servers._runtime.geo import EARTH_RADIUS_M, haversine_m

from .domain import (ADDRESS, KINDS, MAX_LIMIT, MAX_QUERY_CHARS, PLACE, POI, STREET,
                     Candidate, Feature, ReverseAnswer, StreetLine)
from .text import (NUMBER_FIRST, housenumber_value, normalize, normalize_housenumber,
                   parse_query)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

PLACE_MAX_DISTANCE_M = 50_000.0
ADDRESS_OFFSET_M = 100.0   # an address this far from its street's line is not on it
CANDIDATE_NAMES = 200      # names scored by rapidfuzz per query
PIECE_M = 100.0            # street segments are indexed in pieces of at most this length
MIN_QUALITY = 0.5          # a name matching worse than this is no answer
# how the house number was resolved -> factor on the street name's match quality
EXACT, SAME_VALUE, INTERPOLATED, STREET_ONLY = 1.0, 0.92, 0.88, 0.8
STREET_SPREAD = 0.25       # streets matching this much worse than the best are not tried
MIN_SHARED = 0.3           # a candidate name shares at least this part of the trigrams
WORD_ORDER = 0.95          # factor on a match found only after sorting the words
CONTEXT_MISMATCH = 0.85    # the query names a city/postcode the candidate does not have
IMPORTANCE_WEIGHT = 0.05   # ranking bonus for importance (0..1)
PROXIMITY_WEIGHT = 0.05    # ranking bonus for nearness to the bias point (0..1)
PROXIMITY_SCALE_M = 10_000.0
_KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}


@dataclass(slots=True)
class _Street:
    """One street of one locality: its name once, its house numbers, its lines."""

    name: str
    city: str
    lat: float = math.nan
    lon: float = math.nan
    importance: float = 0.0
    postcode: str = ""
    numbers: dict[str, list[Feature]] = field(default_factory=dict)
    by_value: dict[int, list[str]] = field(default_factory=dict)  # 10 -> ["10a", "10b"]
    by_parity: tuple[list[tuple[int, Feature]], list[tuple[int, Feature]]] = \
        field(default_factory=lambda: ([], []))
    geometry: _Polylines | None = None


@dataclass(frozen=True, slots=True)
class _Context:
    """What a query says besides the name: folded tokens of the city/postcode/country."""

    tokens: frozenset[str]
    text: str

    def matches(self, city: str, postcode: str) -> bool | None:
        """None if the query gave no context, else whether the candidate fits it."""
        if not self.tokens:
            return None
        if postcode and postcode.lower() in self.tokens:
            return True
        norm = normalize(city)
        return bool(norm) and (set(norm.split()) <= self.tokens or norm in self.text)


def _ecef(lats: F64, lons: F64) -> F64:
    """Earth-centred coordinates in metres (a sphere): chord distances between them are
    the great-circle distances to well under a millimetre at street scale."""
    la, lo = np.radians(lats), np.radians(lons)
    return np.column_stack((np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo),
                            np.sin(la))) * EARTH_RADIUS_M


def _to_latlon(xyz: F64) -> tuple[float, float]:
    x, y, z = (float(v) for v in xyz)
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


def _trigram_codes(names: Sequence[str]) -> tuple[U64, I64]:
    """Every trigram of every name padded with one space each side, as a 63-bit code
    (three 21-bit code points), with the index of its name; vectorised over all names."""
    padded = [f" {n} " for n in names]
    lengths = np.fromiter((len(p) for p in padded), dtype=np.int64, count=len(padded))
    chars = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32) \
        .astype(np.uint64)
    owner = np.repeat(np.arange(len(padded), dtype=np.int64), lengths)
    if chars.size < 3:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    codes = (chars[:-2] << np.uint64(42)) | (chars[1:-1] << np.uint64(21)) | chars[2:]
    inside = owner[:-2] == owner[2:]
    return codes[inside], owner[:-2][inside]


def _labels_number_first(street: str) -> bool:
    first = normalize(street).split(" ", 1)[0]
    return first in NUMBER_FIRST


def address_label(street: str, number: str, postcode: str, city: str) -> str:
    """"Mannerheimintie 10, 00100 Helsinki"; "10 Avenue de la Costa, 98000 Monaco"."""
    head = f"{number} {street}" if _labels_number_first(street) else f"{street} {number}"
    tail = " ".join(v for v in (postcode, city) if v)
    return f"{head}, {tail}" if tail else head


def _name_label(name: str, city: str) -> str:
    return f"{name}, {city}" if city else name


class Geocoder:
    """An in-memory gazetteer answering forward and reverse geocoding queries."""

    def __init__(self, features: Sequence[Feature], streets: Sequence[StreetLine]) -> None:
        self._counts = Counter(f.kind for f in features)
        self._lines = list(streets)
        self._streets: list[_Street] = []
        self._pois: list[Feature] = []
        self._places: list[Feature] = []
        self._addresses: list[Feature] = []
        self._city_words: set[str] = set()
        self._build_streets(features)
        self._build_name_index()
        self._build_spatial()

    # -- building -----------------------------------------------------------------

    def _build_streets(self, features: Sequence[Feature]) -> None:
        """Group addresses and street features by (street, locality); sort the rest."""
        by_key: dict[tuple[str, str], _Street] = {}

        def street_of(name: str, city: str) -> _Street:
            key = (normalize(name), normalize(city))
            street = by_key.get(key)
            if street is None:
                street = by_key[key] = _Street(name, city)
                self._streets.append(street)
            return street

        for f in features:
            if f.kind == ADDRESS:
                self._addresses.append(f)
                s = street_of(f.name, f.city)
                s.numbers.setdefault(normalize_housenumber(f.housenumber), []).append(f)
                value = housenumber_value(f.housenumber)
                if value is not None:
                    s.by_parity[value % 2].append((value, f))
                    keys = s.by_value.setdefault(value, [])
                    if normalize_housenumber(f.housenumber) not in keys:
                        keys.append(normalize_housenumber(f.housenumber))
                if f.postcode and not s.postcode:
                    s.postcode = f.postcode
            elif f.kind == STREET:
                s = street_of(f.name, f.city)
                s.lat, s.lon, s.importance = f.lat, f.lon, max(s.importance, f.importance)
            elif f.kind == POI:
                self._pois.append(f)
            elif f.kind == PLACE:
                self._places.append(f)
            else:
                raise ValueError(f"unknown feature kind {f.kind!r}")
            if f.kind != PLACE and f.city:
                self._city_words.add(normalize(f.city))
        lines_by_name: dict[str, list[int]] = {}
        for i, line in enumerate(self._lines):
            lines_by_name.setdefault(normalize(line.name), []).append(i)
        for s in self._streets:
            for parity in s.by_parity:
                parity.sort(key=lambda pair: pair[0])
            for keys in s.by_value.values():
                keys.sort()
            if s.by_parity[0] or s.by_parity[1]:
                s.geometry = _Polylines.of([self._lines[i] for i in
                                            lines_by_name.get(normalize(s.name), [])])
            if math.isnan(s.lat):  # addresses only: place the street at their mean
                points = [f for group in s.numbers.values() for f in group]
                s.lat = sum(f.lat for f in points) / len(points)
                s.lon = sum(f.lon for f in points) / len(points)
        self._city_words.discard("")

    def _build_name_index(self) -> None:
        """Distinct normalised names -> their targets (CSR), and trigram -> names (CSR)."""
        name_ids: dict[str, int] = {}
        target_name: list[int] = []
        target_kind: list[int] = []
        target_ref: list[int] = []

        normal: dict[str, str] = {}  # place names repeat ("San José"): normalise once

        def add(name: str, kind: str, ref: int) -> None:
            norm = normal.get(name)
            if norm is None:
                norm = normal[name] = normalize(name)
            if not norm:
                return
            nid = name_ids.setdefault(norm, len(name_ids))
            target_name.append(nid)
            target_kind.append(_KIND_CODES[kind])
            target_ref.append(ref)

        for i, s in enumerate(self._streets):
            add(s.name, STREET, i)
        for i, f in enumerate(self._pois):
            add(f.name, POI, i)
        for i, f in enumerate(self._places):
            add(f.name, PLACE, i)
        self._names = list(name_ids)
        n = len(self._names)
        names_arr = np.asarray(target_name, dtype=np.int64)
        order = np.argsort(names_arr, kind="stable")
        self._target_kind = np.asarray(target_kind, dtype=np.int8)[order]
        self._target_ref = np.asarray(target_ref, dtype=np.int32)[order]
        self._target_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(names_arr, minlength=n), out=self._target_ptr[1:])
        self._is_street_name = np.zeros(n, dtype=bool)
        self._is_street_name[names_arr[np.asarray(target_kind) == _KIND_CODES[STREET]]] = True

        codes, owner = _trigram_codes(self._names)
        order = np.argsort(codes)
        ordered = codes[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        self._tri_keys = ordered[first]
        trigram = np.empty(len(codes), dtype=np.int64)
        trigram[order] = np.cumsum(first) - 1
        pairs = np.sort(trigram * max(n, 1) + owner)
        keep = np.ones(len(pairs), dtype=bool)
        keep[1:] = pairs[1:] != pairs[:-1]  # a name repeating a trigram is posted once
        pairs = pairs[keep]
        self._tri_ptr = np.searchsorted(pairs, np.arange(len(self._tri_keys) + 1) * n) \
            .astype(np.int64)
        self._postings: I32 = (pairs % max(n, 1)).astype(np.int32)
        self._name_trigrams = np.bincount(self._postings, minlength=n).astype(np.float32)

    def _build_spatial(self) -> None:
        """k-d trees over addresses, street pieces and places, in earth-centred metres."""
        def tree(points: Sequence[Feature]) -> cKDTree | None:
            if not points:
                return None
            lats = np.fromiter((p.lat for p in points), dtype=np.float64, count=len(points))
            lons = np.fromiter((p.lon for p in points), dtype=np.float64, count=len(points))
            return cKDTree(_ecef(lats, lons))

        self._address_tree = tree(self._addresses)
        self._place_tree = tree(self._places)
        a_lat: list[F64] = []
        a_lon: list[F64] = []
        b_lat: list[F64] = []
        b_lon: list[F64] = []
        seg_line: list[I64] = []
        for i, line in enumerate(self._lines):
            if len(line.lats) < 2:
                continue
            a_lat.append(line.lats[:-1])
            a_lon.append(line.lons[:-1])
            b_lat.append(line.lats[1:])
            b_lon.append(line.lons[1:])
            seg_line.append(np.full(len(line.lats) - 1, i, dtype=np.int64))
        if not seg_line:
            self._piece_tree: cKDTree | None = None
            self._piece_a = self._piece_b = np.zeros((0, 3))
            self._piece_line = np.zeros(0, dtype=np.int64)
            return
        a = _ecef(np.concatenate(a_lat), np.concatenate(a_lon))
        b = _ecef(np.concatenate(b_lat), np.concatenate(b_lon))
        lines = np.concatenate(seg_line)
        pieces = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / PIECE_M)) \
            .astype(np.int64)
        seg = np.repeat(np.arange(len(a)), pieces)
        k = np.arange(len(seg)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        t0 = (k / pieces[seg])[:, None]
        t1 = ((k + 1) / pieces[seg])[:, None]
        d = b[seg] - a[seg]
        self._piece_a = a[seg] + t0 * d
        self._piece_b = a[seg] + t1 * d
        self._piece_line = lines[seg]
        self._piece_tree = cKDTree((self._piece_a + self._piece_b) / 2)

    # -- reporting ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many features of each kind the gazetteer was built from."""
        return {kind: self._counts.get(kind, 0) for kind in KINDS}

    def nbytes(self) -> int:
        """Approximate memory held: the arrays exactly, Python objects by sys.getsizeof
        of the features and strings (shared small objects are not counted)."""
        arrays: list[npt.NDArray[Any]] = [
            self._target_kind, self._target_ref, self._target_ptr, self._is_street_name,
            self._tri_keys, self._tri_ptr, self._postings, self._name_trigrams,
            self._piece_a, self._piece_b, self._piece_line]
        total = sum(a.nbytes for a in arrays)
        trees: list[cKDTree | None] = [self._address_tree, self._place_tree, self._piece_tree]
        for t in trees:
            if t is not None:
                total += t.data.nbytes * 2 + t.indices.nbytes  # points + tree nodes (approx)
        total += sum(line.lats.nbytes + line.lons.nbytes + sys.getsizeof(line)
                     for line in self._lines)
        total += sum(sys.getsizeof(n) for n in self._names) + sys.getsizeof(self._names)
        for group in (self._addresses, self._pois, self._places):
            total += sys.getsizeof(group) + sum(sys.getsizeof(f) + sys.getsizeof(f.name)
                                                for f in group)
        total += sum(sys.getsizeof(s) + sys.getsizeof(s.numbers) for s in self._streets)
        return total

    def addresses(self) -> Sequence[Feature]:
        """The address points, as given (for checks and exports)."""
        return self._addresses

    # -- forward ------------------------------------------------------------------

    def geocode(self, text: str, bias: tuple[float, float] | None = None,
                limit: int = 10, offset: int = 0) -> list[Candidate]:
        """Candidates for ``text``, best first: ``limit`` of them after skipping
        ``offset``."""
        if len(text) > MAX_QUERY_CHARS:
            raise ValueError(f"query longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= limit <= MAX_LIMIT + 1:  # one more than a page: whether more follow
            raise ValueError(f"limit must be in 1..{MAX_LIMIT + 1}")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        parsed = parse_query(text)
        name = normalize(parsed.street)
        if not name:
            return []
        variants, stripped = self._strip_cities(name)
        context = _Context(frozenset(normalize(parsed.rest).split()) | stripped,
                           " ".join([normalize(parsed.rest), *sorted(stripped)]))
        want = offset + limit
        ranked: list[tuple[float, int, Candidate]] = []  # (rank, tie-break, candidate)
        # one candidate per label (GeoNames has several places called "Helong", CN): the
        # best ranked of them, the most populous among equal matches
        by_label: dict[tuple[str, str], tuple[float, int, Candidate]] = {}

        def push(rank: float, candidate: Candidate) -> None:
            key = (candidate.kind, candidate.label)
            old = by_label.get(key)
            if old is not None and old[0] >= rank:
                return
            item = (rank, -len(by_label) if old is None else old[1], candidate)
            by_label[key] = item
            if old is not None and old in ranked:  # better than its namesake: take its place
                ranked[ranked.index(old)] = item
                heapq.heapify(ranked)
            elif len(ranked) < want:
                heapq.heappush(ranked, item)
            elif item > ranked[0]:
                heapq.heapreplace(ranked, item)

        def floor() -> float:
            return ranked[0][0] if len(ranked) >= want else -1.0

        bonus = IMPORTANCE_WEIGHT + PROXIMITY_WEIGHT
        if parsed.housenumber is not None:
            matches = self._match(variants, streets_only=True)
            for nid, quality in matches:
                if quality + bonus < floor() or quality < matches[0][1] - STREET_SPREAD:
                    break
                for ref in self._targets(nid, STREET):
                    self._push_address(self._streets[ref], parsed.housenumber, quality,
                                       context, bias, push, floor() - bonus)
        full = variants if parsed.housenumber is None else \
            [f"{v} {normalize(parsed.housenumber)}" for v in variants]
        for nid, quality in self._match(full, streets_only=False):
            if quality + bonus < floor():
                break
            for code, ref in self._all_targets(nid):
                kind = KINDS[code]
                if kind == STREET:
                    if parsed.housenumber is not None:
                        continue  # answered above, with its number
                    s = self._streets[ref]
                    push(*self._rank(quality, s.lat, s.lon, s.city, s.postcode,
                                     s.importance, context, bias, STREET,
                                     _name_label(s.name, s.city)))
                else:
                    f = self._pois[ref] if kind == POI else self._places[ref]
                    push(*self._rank(quality, f.lat, f.lon, f.city, f.postcode,
                                     f.importance, context, bias, kind,
                                     _name_label(f.name, f.city)))
        return [c for _rank, _tie, c in sorted(ranked, reverse=True)[offset:want]]

    def _strip_cities(self, name: str) -> tuple[list[str], frozenset[str]]:
        """The name as written, and without a locality written before or after it
        ("helsinki mannerheimintie"); the stripped words count as context."""
        tokens = name.split()
        stripped: set[str] = set()
        for size in (3, 2, 1):
            if len(tokens) > size and " ".join(tokens[:size]) in self._city_words:
                stripped.update(tokens[:size])
                tokens = tokens[size:]
                break
        for size in (3, 2, 1):
            if len(tokens) > size and " ".join(tokens[-size:]) in self._city_words:
                stripped.update(tokens[-size:])
                tokens = tokens[:-size]
                break
        variants = [name] if not stripped else [name, " ".join(tokens)]
        return variants, frozenset(stripped)

    def _match(self, variants: Sequence[str], streets_only: bool) -> list[tuple[int, float]]:
        """Name ids scoring at least MIN_QUALITY against the best of ``variants``, best
        first: trigram overlap picks CANDIDATE_NAMES names, rapidfuzz scores them."""
        codes, _owner = _trigram_codes(variants)
        codes = np.unique(codes)
        pos = np.minimum(np.searchsorted(self._tri_keys, codes), len(self._tri_keys) - 1)
        pos = pos[self._tri_keys[pos] == codes] if len(self._tri_keys) else pos[:0]
        if not pos.size:
            return []
        postings = np.concatenate([self._postings[self._tri_ptr[p]:self._tri_ptr[p + 1]]
                                   for p in pos])
        shared = np.bincount(postings, minlength=len(self._names))
        query_trigrams = len(codes) / max(1, len(variants))
        hits = np.flatnonzero(shared >= max(1.0, MIN_SHARED * query_trigrams))
        if streets_only:
            hits = hits[self._is_street_name[hits]]
        common = shared[hits].astype(np.float32)
        overlap = common / (self._name_trigrams[hits] + np.float32(query_trigrams) - common)
        if hits.size > CANDIDATE_NAMES:
            hits = hits[np.argpartition(overlap, -CANDIDATE_NAMES)[-CANDIDATE_NAMES:]]
        if not hits.size:
            return []
        choices = [self._names[i] for i in hits]
        scores = _scores(variants, choices)
        order = np.argsort(-scores, kind="stable")
        return [(int(hits[i]), float(scores[i])) for i in order
                if scores[i] >= MIN_QUALITY]

    def _all_targets(self, nid: int) -> Iterable[tuple[int, int]]:
        lo, hi = int(self._target_ptr[nid]), int(self._target_ptr[nid + 1])
        return zip(self._target_kind[lo:hi].tolist(), self._target_ref[lo:hi].tolist())

    def _targets(self, nid: int, kind: str) -> list[int]:
        code = _KIND_CODES[kind]
        return [ref for c, ref in self._all_targets(nid) if c == code]

    @staticmethod
    def _rank(quality: float, lat: float, lon: float, city: str, postcode: str,
              importance: float, context: _Context, bias: tuple[float, float] | None,
              kind: str, label: str, interpolated: bool = False) -> tuple[float, Candidate]:
        """A candidate's confidence (match quality, lowered when the query's city or
        postcode disagrees) and its rank (confidence, then importance, then nearness)."""
        confidence = quality
        if context.matches(city, postcode) is False:
            confidence *= CONTEXT_MISMATCH
        confidence = min(1.0, max(0.0, confidence))
        rank = confidence + IMPORTANCE_WEIGHT * importance
        if bias is not None:
            distance = haversine_m(bias[0], bias[1], lat, lon)
            rank += PROXIMITY_WEIGHT * PROXIMITY_SCALE_M / (PROXIMITY_SCALE_M + distance)
        return rank, Candidate(label, kind, lat, lon, confidence, interpolated)

    def _push_address(self, s: _Street, number: str, quality: float, context: _Context,
                      bias: tuple[float, float] | None,
                      push: Callable[[float, Candidate], None], floor: float) -> None:
        """The address ``number`` on street ``s``: exact, else the same number with another
        letter, else interpolated, else the street itself. Interpolation is skipped when
        its answer could not reach ``floor`` (the rank to beat, less the bonuses)."""
        exact = s.numbers.get(normalize_housenumber(number))
        value = housenumber_value(number)
        if exact is None and value is not None:
            same = s.by_value.get(value)
            if same:
                f = s.numbers[same[0]][0]
                push(*self._rank(quality * SAME_VALUE, f.lat, f.lon, f.city, f.postcode,
                                 s.importance, context, bias, ADDRESS,
                                 address_label(s.name, f.housenumber, f.postcode, f.city)))
                return
        if exact is not None:
            f = next((a for a in exact if a.postcode), exact[0])
            push(*self._rank(quality * EXACT, f.lat, f.lon, f.city, f.postcode,
                             s.importance, context, bias, ADDRESS,
                             address_label(s.name, f.housenumber, f.postcode, f.city)))
            return
        if quality * INTERPOLATED < floor:
            return
        point = self._interpolate(s, value) if value is not None else None
        if point is not None:
            lat, lon, postcode = point
            push(*self._rank(quality * INTERPOLATED, lat, lon, s.city, postcode,
                             s.importance, context, bias, ADDRESS,
                             address_label(s.name, number, postcode, s.city),
                             interpolated=True))
            return
        push(*self._rank(quality * STREET_ONLY, s.lat, s.lon, s.city, s.postcode,
                         s.importance, context, bias, STREET, _name_label(s.name, s.city)))

    def _interpolate(self, s: _Street, value: int) -> tuple[float, float, str] | None:
        """A point for ``value`` between the nearest known numbers of the same parity:
        along the street's line passing near both, else on the straight line between
        them; None if ``value`` is not bracketed by known numbers."""
        known = s.by_parity[value % 2]
        i = bisect.bisect_left(known, value, key=lambda pair: pair[0])
        if i == 0 or i >= len(known) or known[i][0] == value:
            return None
        (lo_value, lo), (hi_value, hi) = known[i - 1], known[i]
        fraction = (value - lo_value) / (hi_value - lo_value)
        postcode = lo.postcode if lo.postcode == hi.postcode else ""
        ends = _ecef(np.array([lo.lat, hi.lat]), np.array([lo.lon, hi.lon]))
        point = s.geometry.interpolate(ends[0], ends[1], fraction, ADDRESS_OFFSET_M) \
            if s.geometry is not None else None
        if point is None:
            point = ends[0] + fraction * (ends[1] - ends[0])
        lat, lon = _to_latlon(point)
        return lat, lon, postcode

    # -- reverse ------------------------------------------------------------------

    def reverse(self, lat: float, lon: float,
                max_distance_m: float = 100.0) -> ReverseAnswer | None:
        """The nearest address within ``max_distance_m``, else the nearest street within
        it (the foot of the perpendicular), else the nearest place within 50 km."""
        q = _ecef(np.array([lat]), np.array([lon]))[0]
        if self._address_tree is not None:
            dist, i = self._address_tree.query(q, distance_upper_bound=max_distance_m)
            if math.isfinite(dist):
                f = self._addresses[int(i)]
                return ReverseAnswer(address_label(f.name, f.housenumber, f.postcode, f.city),
                                     ADDRESS, f.lat, f.lon, float(dist))
        if self._piece_tree is not None:
            near = self._piece_tree.query_ball_point(q, max_distance_m + PIECE_M / 2 + 1.0)
            if near:
                idx = np.asarray(near, dtype=np.int64)
                a, b = self._piece_a[idx], self._piece_b[idx]
                d = b - a
                t = np.clip(np.einsum("ij,ij->i", q - a, d)
                            / np.maximum(np.einsum("ij,ij->i", d, d), 1e-12), 0.0, 1.0)
                foot = a + t[:, None] * d
                dist = np.linalg.norm(foot - q, axis=1)
                j = int(np.argmin(dist))
                if dist[j] <= max_distance_m:
                    line = self._lines[int(self._piece_line[idx[j]])]
                    flat, flon = _to_latlon(foot[j])
                    return ReverseAnswer(_name_label(line.name, line.city), STREET,
                                         flat, flon, float(dist[j]))
        if self._place_tree is not None:
            dist, i = self._place_tree.query(q, distance_upper_bound=PLACE_MAX_DISTANCE_M)
            if math.isfinite(dist):
                f = self._places[int(i)]
                return ReverseAnswer(_name_label(f.name, f.city), PLACE, f.lat, f.lon,
                                     haversine_m(lat, lon, f.lat, f.lon))
        return None


def _scores(variants: Sequence[str], choices: Sequence[str]) -> npt.NDArray[np.float32]:
    """Match quality 0..1 of each choice against the best variant: edit similarity of the
    whole names, or (slightly discounted) of their sorted words when the order differs
    ("costa avenue de la")."""
    whole = process.cdist(variants, choices, scorer=fuzz.ratio, dtype=np.float32)
    words = process.cdist(variants, choices, scorer=fuzz.token_sort_ratio, dtype=np.float32)
    best: npt.NDArray[np.float32] = np.maximum(whole, words * np.float32(WORD_ORDER)) \
        .max(axis=0) / np.float32(100.0)
    return best


@dataclass(frozen=True, slots=True)
class _Polylines:
    """The segments of one street's lines in earth-centred metres, for interpolating
    house numbers: segment i of line k lies in ``starts[k]:starts[k + 1]``."""

    a: F64
    b: F64
    starts: I64     # first segment of each line, and the total at the end
    chain: F64      # chainage of each segment's start along its line

    @staticmethod
    def of(lines: Sequence[StreetLine]) -> _Polylines | None:
        parts = [_ecef(line.lats, line.lons) for line in lines if len(line.lats) >= 2]
        if not parts:
            return None
        a = np.concatenate([pts[:-1] for pts in parts])
        b = np.concatenate([pts[1:] for pts in parts])
        counts = np.array([len(pts) - 1 for pts in parts], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)))
        lengths = np.linalg.norm(b - a, axis=1)
        chain = np.cumsum(lengths) - lengths
        chain -= np.repeat(chain[starts[:-1]], counts)
        return _Polylines(a, b, starts, chain)

    def interpolate(self, p0: F64, p1: F64, fraction: float,
                    max_offset_m: float) -> F64 | None:
        """The point ``fraction`` of the way from p0's foot to p1's foot along the one line
        nearest to both; None if no line passes within ``max_offset_m`` of both."""
        d = self.b - self.a
        lengths2 = np.maximum(np.einsum("ij,ij->i", d, d), 1e-12)
        ends = np.stack((p0, p1))                                         # (2, 3)
        t = np.clip(np.einsum("eij,ij->ei", ends[:, None, :] - self.a[None], d)
                    / lengths2, 0.0, 1.0)                                 # (2, S)
        feet = self.a[None] + t[..., None] * d[None]
        dist = np.linalg.norm(feet - ends[:, None, :], axis=2)            # (2, S)
        per_line = np.minimum.reduceat(dist, self.starts[:-1], axis=1)    # (2, L)
        k = int(np.argmin(per_line.max(axis=0)))
        if per_line[:, k].max() > max_offset_m:
            return None
        lo, hi = int(self.starts[k]), int(self.starts[k + 1])
        j = lo + np.argmin(dist[:, lo:hi], axis=1)
        lengths = np.sqrt(lengths2[lo:hi])
        along0, along1 = (self.chain[j] + t[(0, 1), j] * np.sqrt(lengths2[j])).tolist()
        along = along0 + fraction * (along1 - along0)
        i = int(np.clip(np.searchsorted(self.chain[lo:hi], along, side="right") - 1,
                        0, hi - lo - 1))
        u = min(1.0, max(0.0, (along - self.chain[lo + i]) / lengths[i]))
        point: F64 = self.a[lo + i] + u * d[lo + i]
        return point
