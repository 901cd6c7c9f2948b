"""The inverted index: ``label=value`` → the sorted ids of the series that carry it.

:class:`MemPostings` is the head's (ids are handed out in increasing order, so appending
keeps every list sorted); a block's index answers the same :class:`PostingsReader`
questions from its files. :func:`select_postings` evaluates matchers on either, as
Prometheus's ``PostingsForMatchers`` does: the matchers that do not match ``""`` are
intersected first (each one the union of the postings of the values it matches); a
matcher that matches ``""`` removes the series whose value it does *not* match (so the
series without the label stay), starting from every series when no matcher narrows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .labels import Labels, Matcher, MatchOp

Ids = npt.NDArray[np.int64]
EMPTY: Ids = np.empty(0, np.int64)


class PostingsReader(Protocol):
    def all_ids(self) -> Ids: ...

    def label_names(self) -> Iterable[str]: ...

    def values_of(self, name: str) -> Iterable[str]: ...

    def postings(self, name: str, value: str) -> Ids: ...


def union(lists: Sequence[Ids]) -> Ids:
    if not lists:
        return EMPTY
    if len(lists) == 1:
        return lists[0]
    return np.unique(np.concatenate(lists))


def _matching(reader: PostingsReader, matcher: Matcher, want: bool) -> Ids:
    """The series whose value of ``matcher.name`` is non-empty and matched (``want``) or
    not matched (not ``want``) by the matcher."""
    if matcher.op is MatchOp.EQ and want:
        return reader.postings(matcher.name, matcher.value) if matcher.value else EMPTY
    if matcher.op is MatchOp.NE and not want:
        return reader.postings(matcher.name, matcher.value) if matcher.value else EMPTY
    return union([reader.postings(matcher.name, value) for value in reader.values_of(matcher.name)
                  if matcher.matches(value) == want])


def select_postings(reader: PostingsReader, matchers: Sequence[Matcher]) -> Ids:
    """The sorted ids of the series every matcher selects."""
    narrowing = [m for m in matchers if not m.matches_empty]
    widening = [m for m in matchers if m.matches_empty]
    result: Ids | None = None
    for matcher in sorted(narrowing, key=lambda m: m.op is not MatchOp.EQ):  # cheap ones first
        found = _matching(reader, matcher, want=True)
        result = found if result is None else np.intersect1d(result, found, assume_unique=True)
        if not len(result):
            return EMPTY
    if result is None:
        result = reader.all_ids()
    for matcher in widening:
        excluded = _matching(reader, matcher, want=False)
        if len(excluded):
            result = np.setdiff1d(result, excluded, assume_unique=True)
    return result.astype(np.int64, copy=False)


class MemPostings:
    """The head's index, in memory; ids must be added in increasing order."""

    def __init__(self) -> None:
        self._index: dict[str, dict[str, list[int]]] = {}
        self._all: list[int] = []
        self._frozen: dict[tuple[str, str], Ids] = {}  # numpy copies, until the next change
        self._all_frozen: Ids | None = None

    def add(self, series_id: int, labels: Labels) -> None:
        if self._all and series_id <= self._all[-1]:
            raise ValueError("series ids must be added in increasing order")
        self._all.append(series_id)
        for name, value in labels.pairs:
            self._index.setdefault(name, {}).setdefault(value, []).append(series_id)
            self._frozen.pop((name, value), None)
        self._all_frozen = None

    def remove(self, dropped: set[int], labels_of: Iterable[Labels]) -> None:
        """Forget ``dropped`` series (``labels_of``: their label sets)."""
        if not dropped:
            return
        pairs = {pair for labels in labels_of for pair in labels.pairs}
        for name, value in pairs:
            values = self._index[name]
            kept = [i for i in values[value] if i not in dropped]
            if kept:
                values[value] = kept
            else:
                del values[value]
                if not values:
                    del self._index[name]
            self._frozen.pop((name, value), None)
        self._all = [i for i in self._all if i not in dropped]
        self._all_frozen = None

    def all_ids(self) -> Ids:
        if self._all_frozen is None:
            self._all_frozen = np.array(self._all, np.int64)
        return self._all_frozen

    def label_names(self) -> list[str]:
        return sorted(self._index)

    def values_of(self, name: str) -> list[str]:
        return sorted(self._index.get(name, ()))

    def postings(self, name: str, value: str) -> Ids:
        key = (name, value)
        found = self._frozen.get(key)
        if found is None:
            found = np.array(self._index.get(name, {}).get(value, ()), np.int64)
            self._frozen[key] = found
        return found
