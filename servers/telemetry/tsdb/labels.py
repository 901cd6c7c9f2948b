"""Label sets and label matchers, with Prometheus's rules.

A series is keyed by its label set, ``__name__`` included, kept sorted by name: two sets
with the same pairs are the same series whatever order they arrived in. A label with an
empty value is the same as no label (Prometheus drops it), so it is dropped here too.

Label names match ``[a-zA-Z_][a-zA-Z0-9_]*``; names starting ``__`` are reserved for the
store (only ``__name__`` may be written). Values are any UTF-8 text.

Matchers select on one label: ``=``, ``!=``, ``=~`` and ``!~``. A regex is fully anchored
(``=~"a.*"`` does not match ``"ba"``) and ``.`` matches a newline too, as Prometheus's
``^(?s:…)$``. A series without the label is seen as having the value ``""``, so a matcher
that matches the empty string (``env=""``, ``env!="prod"``, ``env=~"|x"``) selects the
series without the label as well, and ``env!=""`` means "has the label".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, overload

from geoplex.servers._runtime.errors import InvalidArgument

from ..re2 import compile_regex

METRIC_NAME: Final = "__name__"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class InvalidLabels(InvalidArgument):
    """A label set that cannot be a series' key (the field names what is wrong)."""

    def __init__(self, description: str) -> None:
        super().__init__("labels", description, reason="INVALID_LABELS")


def validate_label_name(name: str, *, internal: bool = False) -> None:
    """Raise InvalidLabels unless ``name`` may be written (``internal``: ``__`` allowed)."""
    if not _LABEL_NAME.fullmatch(name):
        raise InvalidLabels(f"label name {name!r} does not match [a-zA-Z_][a-zA-Z0-9_]*")
    if name.startswith("__") and name != METRIC_NAME and not internal:
        raise InvalidLabels(f"label name {name!r}: names starting '__' are reserved")


class Labels(Mapping[str, str]):
    """An immutable label set, sorted by name; hashable and ordered (by its pairs)."""

    __slots__ = ("_pairs", "_hash")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        """Trusted construction: ``pairs`` already valid (use :func:`labels_of` for input)."""
        self._pairs: tuple[tuple[str, str], ...] = tuple(sorted(p for p in pairs if p[1]))
        self._hash = hash(self._pairs)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self._pairs

    @property
    def name(self) -> str:
        """The metric name (``__name__``), ``""`` when there is none."""
        return self.get(METRIC_NAME, "")

    def __getitem__(self, key: str) -> str:
        for name, value in self._pairs:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._hash == other._hash and self._pairs == other._pairs
        return super().__eq__(other)

    def __lt__(self, other: Labels) -> bool:
        return self._pairs < other._pairs

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in self._pairs if n != METRIC_NAME)
        return f"{self.name}{{{inner}}}"

    def without(self, *names: str) -> Labels:
        return Labels(p for p in self._pairs if p[0] not in names)


@overload
def labels_of(source: Labels) -> Labels: ...


@overload
def labels_of(source: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels: ...


def labels_of(source: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """A validated label set from user input: names checked, duplicates and a missing or
    empty ``__name__`` rejected (InvalidLabels), empty values dropped."""
    if isinstance(source, Labels):
        return source
    pairs = list(source.items()) if isinstance(source, Mapping) else list(source)
    seen: set[str] = set()
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidLabels(f"label {name!r}: names and values must be strings")
        validate_label_name(name)
        try:
            value.encode()
        except UnicodeEncodeError as error:
            raise InvalidLabels(f"label {name!r}: the value is not valid UTF-8") from error
        if name in seen:
            raise InvalidLabels(f"label name {name!r} appears twice")
        seen.add(name)
    labels = Labels(pairs)
    if not labels.name:
        raise InvalidLabels(f"a series needs a non-empty {METRIC_NAME}")
    return labels


class MatchOp(enum.Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """``name op value``; regexes compiled once, fully anchored, ``.`` matching newline."""

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                           compare=False)

    def __post_init__(self) -> None:
        validate_label_name(self.name, internal=True)
        if self.op in (MatchOp.RE, MatchOp.NRE):
            try:
                regex = compile_regex(self.value)
            except re.error as error:
                raise InvalidArgument("matcher", f"{self.name}{self.op.value}{self.value!r}: "
                                      f"invalid regex: {error}",
                                      reason="INVALID_REGEX") from error
            object.__setattr__(self, "_regex", regex)

    @classmethod
    def parse_op(cls, name: str, op: str, value: str) -> Matcher:
        try:
            return cls(name, MatchOp(op), value)
        except ValueError as error:
            raise InvalidArgument("matcher", f"unknown operator {op!r}",
                                  allowed=[o.value for o in MatchOp]) from error

    def matches(self, value: str) -> bool:
        """Whether a series whose label has ``value`` (``""``: absent) is selected."""
        if self.op is MatchOp.EQ:
            return value == self.value
        if self.op is MatchOp.NE:
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.op is MatchOp.RE else not found

    @property
    def matches_empty(self) -> bool:
        return self.matches("")

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{self.value!r}"


def eq(name: str, value: str) -> Matcher:
    return Matcher(name, MatchOp.EQ, value)


def ne(name: str, value: str) -> Matcher:
    return Matcher(name, MatchOp.NE, value)


def re_(name: str, value: str) -> Matcher:
    return Matcher(name, MatchOp.RE, value)


def nre(name: str, value: str) -> Matcher:
    return Matcher(name, MatchOp.NRE, value)


def matches_all(labels: Mapping[str, str], matchers: Iterable[Matcher]) -> bool:
    """The brute-force definition the index must agree with."""
    return all(m.matches(labels.get(m.name, "")) for m in matchers)
