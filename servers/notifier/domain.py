"""The notifier's domain: Alertmanager's model as pure data and functions.

- **Matchers** (``name=value``, ``!=``, ``=~``, ``!~``; Alertmanager 0.22+ syntax, values
  quoted or not, regexes anchored) select alerts by their labels.
- **The routing tree**: an alert goes down from the root route; at each level it takes
  the first child whose matchers match (and the next ones too while a matching child has
  ``continue``); a route none of whose children match is where it stays. Each route it
  ends at puts it in an **aggregation group**: the route and the values of the route's
  ``group_by`` labels (``...``: all labels).
- **Timers**: a new group waits ``group_wait`` before its first notification, then is
  looked at every ``group_interval``; the **notification log** (one entry per receiver
  and group: the firing and resolved fingerprints last notified, and when) decides
  whether that look sends anything (Alertmanager's DedupStage: something new fires, all
  resolved, something resolved for a receiver that wants resolved alerts, or
  ``repeat_interval`` passed).
- **Inhibition**: a firing alert matching a rule's source matchers mutes the alerts
  matching its target matchers whose ``equal`` labels have the same values.
- **Silences** mute the alerts all their matchers match between ``starts_at`` and
  ``ends_at`` (pending before, expired after). When one expires while alerts it muted
  still fire (and nothing else mutes them), their receivers get a ``SILENCE_EXPIRED``
  notification naming it (alertmanager#730).
- **Alerts** are merged as Alertmanager does (the earliest start; the latest explicit
  end); one posted without ``ends_at`` resolves ``resolve_timeout`` after its last post.

Everything takes ``now`` (seconds since the epoch) from the caller: the clock is the
caller's, so every rule here is a pure function of its inputs.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from geoplex.servers._runtime.errors import InvalidArgument

from .notification import Kind, NotifiedAlert, Notification, fingerprint

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_LABELS = 64
MAX_LABEL_VALUE = 2048
MAX_ANNOTATION_VALUE = 16_384
MAX_MATCHERS = 64
MAX_MATCHER_VALUE = 1024
MAX_SILENCE_TEXT = 4096
# resolved alerts stay listable this long after they resolved (and once their groups
# forgot them)
RESOLVED_RETENTION_S = 3600.0

# ---------------------------------------------------------------------------------------
# durations


_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?")
_DURATION_UNITS = (365 * 86_400.0, 7 * 86_400.0, 86_400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: str) -> float:
    """Prometheus's duration (``1h30m``, ``5m``, ``200ms``, ``1d``; units y w d h m s ms,
    each at most once, largest first) in seconds; ValueError otherwise."""
    text = text.strip()
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h30m or 200ms")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _DURATION_UNITS)
               if part is not None)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (ms precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# matchers


class MatchType(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class MatcherError(ValueError):
    """A matcher that does not parse or compile; the message says why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; a regex is anchored at both ends (``=~"a|b"`` is ``^(?:a|b)$``),
    a missing label has the value ``""``."""

    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.name):
            raise MatcherError(f"{self.name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX) and self._regex is None:
            try:
                compiled = re.compile(f"(?:{self.value})")
            except re.error as exc:
                raise MatcherError(f"{self.value!r} is not a regular expression: "
                                   f"{exc}") from None
            object.__setattr__(self, "_regex", compiled)

    @classmethod
    def of(cls, name: str, op: str, value: str) -> Matcher:
        """A matcher from its operator's text: ``=``, ``!=``, ``=~``, ``!~``."""
        try:
            kind = MatchType(op)
        except ValueError:
            raise MatcherError(f"{op!r} is not an operator (=, !=, =~, !~)") from None
        return cls(name, kind, value)

    def matches_value(self, value: str) -> bool:
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.type is MatchType.REGEX else not found

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.matches_value(labels.get(self.name, ""))

    @property
    def matches_empty(self) -> bool:
        return self.matches_value("")

    def __str__(self) -> str:
        return f"{self.name}{self.type.value}{json.dumps(self.value, ensure_ascii=False)}"


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*", re.DOTALL)


def parse_matcher(text: str) -> Matcher:
    """One matcher as Alertmanager 0.22+ writes them: ``name="value"``, ``name=value``,
    ``name!~"a|b"``; MatcherError saying what is wrong."""
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise MatcherError(f"{text.strip()!r} is not a matcher such as name=\"value\", "
                           "name!=\"value\", name=~\"regex\" or name!~\"regex\"")
    name, op, raw = found.groups()
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise MatcherError(f"{text.strip()!r}: the value's closing quote is missing")
        try:
            value = json.loads(raw)
        except ValueError:
            raise MatcherError(f"{text.strip()!r}: the quoted value has a bad escape") from None
        if not isinstance(value, str):
            raise MatcherError(f"{text.strip()!r}: the quoted value is not a string")
    else:
        if '"' in raw:
            raise MatcherError(f"{text.strip()!r}: a value with quotes must be quoted as "
                               "a whole")
        value = raw
    return Matcher.of(name, op, value)


def split_matchers(text: str) -> list[str]:
    """``{a="1", b=~"x,y"}`` or ``a="1",b=~"x,y"`` cut at the commas outside quotes."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherError(f"{text.strip()!r}: the closing brace is missing")
        body = body[1:-1]
    elif body.endswith("}"):
        raise MatcherError(f"{text.strip()!r}: the opening brace is missing")
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in body:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise MatcherError(f"{text.strip()!r}: a quote is not closed")
    parts.append("".join(current))
    if not body.strip():
        return []
    if not parts[-1].strip():
        parts.pop()  # a trailing comma
    if any(not p.strip() for p in parts):
        raise MatcherError(f"{text.strip()!r}: an empty matcher between commas")
    return parts


def parse_matchers(text: str) -> list[Matcher]:
    """Matchers separated by commas, in braces or not (``{}`` or ``""``: none)."""
    return [parse_matcher(piece) for piece in split_matchers(text)]


# ---------------------------------------------------------------------------------------
# the routing tree


@dataclass(frozen=True, eq=False, slots=True)
class Route:
    """A node of the routing tree with its options resolved (children inherit what they
    do not set when the tree is built); ``key`` names it uniquely in the tree."""

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ()
    group_by_all: bool = False  # group_by: ['...']
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    continue_matching: bool = False
    routes: tuple[Route, ...] = ()
    key: str = "{}"

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes ``labels`` end at, below and including this one (empty when this
        route's matchers do not match)."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hit = child.match(labels)
            found.extend(hit)
            if hit and not child.continue_matching:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if labels.get(name)}

    def walk(self) -> Iterator[Route]:
        yield self
        for child in self.routes:
            yield from child.walk()


def child_key(parent_key: str, index: int, matchers: Sequence[Matcher]) -> str:
    """A child route's key: its parent's, its matchers and its place among its siblings."""
    return f"{parent_key}/{{{','.join(str(m) for m in matchers)}}}/{index}"


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    """An aggregation group's key (Alertmanager's shape): route key and group labels."""
    inner = ",".join(f"{name}={json.dumps(labels[name], ensure_ascii=False)}"
                     for name in sorted(labels))
    return f"{route.key}:{{{inner}}}"


# ---------------------------------------------------------------------------------------
# alerts


@dataclass(frozen=True, slots=True)
class PostedAlert:
    """An alert as an evaluator posts it (times None when not given)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: float | None = None
    ends_at: float | None = None
    generator_url: str = ""


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert the notifier holds: ``ends_at`` is always set (its own, or the last post
    plus the resolve timeout: ``timeout``); resolved once ``ends_at`` has passed."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float
    generator_url: str = ""
    timeout: bool = False
    updated_at: float = 0.0
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    def resolved(self, now: float) -> bool:
        return self.ends_at <= now

    def notified(self, now: float) -> NotifiedAlert:
        done = self.resolved(now)
        return NotifiedAlert(labels=dict(self.labels), annotations=dict(self.annotations),
                             status="resolved" if done else "firing",
                             starts_at=self.starts_at, ends_at=self.ends_at if done else None,
                             generator_url=self.generator_url)


def _check_text(field_name: str, value: str, limit: int, *, lines: bool = False) -> None:
    if len(value) > limit:
        raise InvalidArgument(field_name, f"is {len(value)} characters long",
                              allowed=[f"at most {limit}"])
    allowed = value.replace("\n", "").replace("\t", "") if lines else value
    if not allowed.isprintable():
        raise InvalidArgument(field_name, "holds control characters"
                              + (" (only line breaks and tabs are allowed)" if lines else ""))


def check_alert(alert: PostedAlert, where: str) -> None:
    """InvalidArgument naming the field (``alerts[3].labels``) when ``alert`` cannot be
    held: no labels, a bad label name, control characters, ends before it starts."""
    if not alert.labels:
        raise InvalidArgument(f"{where}.labels", "is required: an alert is identified by "
                              "its labels (alertname and the rule's labels)",
                              reason="REQUIRED_FIELD")
    if len(alert.labels) > MAX_LABELS:
        raise InvalidArgument(f"{where}.labels", f"{len(alert.labels)} labels",
                              allowed=[f"at most {MAX_LABELS}"])
    for name, value in alert.labels.items():
        if not LABEL_NAME.fullmatch(name):
            raise InvalidArgument(f"{where}.labels", f"{name!r} is not a label name",
                                  allowed=["[a-zA-Z_][a-zA-Z0-9_]*"])
        if not value:
            raise InvalidArgument(f"{where}.labels[{name}]", "is empty; leave the label out")
        _check_text(f"{where}.labels[{name}]", value, MAX_LABEL_VALUE)
    for name, value in alert.annotations.items():
        if not LABEL_NAME.fullmatch(name):
            raise InvalidArgument(f"{where}.annotations", f"{name!r} is not an annotation "
                                  "name", allowed=["[a-zA-Z_][a-zA-Z0-9_]*"])
        _check_text(f"{where}.annotations[{name}]", value, MAX_ANNOTATION_VALUE, lines=True)
    _check_text(f"{where}.generator_url", alert.generator_url, MAX_LABEL_VALUE)
    if (alert.starts_at is not None and alert.ends_at is not None
            and alert.ends_at < alert.starts_at):
        raise InvalidArgument(f"{where}.ends_at", "is before starts_at")


def admit(posted: PostedAlert, now: float, resolve_timeout: float) -> Alert:
    """The alert to hold for a post: starts now unless it says when, and resolves
    ``resolve_timeout`` from now unless it says when it ends."""
    starts = posted.starts_at if posted.starts_at is not None else now
    if posted.ends_at is not None:
        return Alert(dict(posted.labels), dict(posted.annotations), starts, posted.ends_at,
                     posted.generator_url, timeout=False, updated_at=now)
    return Alert(dict(posted.labels), dict(posted.annotations), starts,
                 max(starts, now) + resolve_timeout, posted.generator_url, timeout=True,
                 updated_at=now)


def overlaps(old: Alert, new: Alert) -> bool:
    """Whether ``new`` is the same occurrence as ``old`` (their times overlap)."""
    return ((old.starts_at <= new.ends_at <= old.ends_at)
            or (old.starts_at <= new.starts_at <= old.ends_at))


def merge(old: Alert, new: Alert, now: float) -> Alert:
    """Alertmanager's ``Alert.Merge``: the newer post's content and the earliest start;
    when both are resolved the latest end, when the newer fires an older explicit end
    that is later than its own."""
    if new.updated_at < old.updated_at:
        old, new = new, old
    starts = min(old.starts_at, new.starts_at)
    ends = new.ends_at
    if new.resolved(now):
        if old.resolved(now) and old.ends_at > new.ends_at:
            ends = old.ends_at
    elif old.ends_at > new.ends_at and not old.timeout:
        ends = old.ends_at
    return replace(new, starts_at=starts, ends_at=ends)


# ---------------------------------------------------------------------------------------
# inhibition


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def equal_values(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(name, "") for name in self.equal)


class Inhibitor:
    """The inhibition rules over one snapshot of the firing alerts: which of them mute a
    given alert. A source alert that matches its rule's target matchers too does not
    mute an alert that also matches both sides (Alertmanager: no mutual muting)."""

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[Alert]) -> None:
        self.rules = tuple(rules)
        # per rule: equal values -> [(fingerprint, matches the target side too)]
        self._sources: list[dict[tuple[str, ...], list[tuple[str, bool]]]] = [
            {} for _ in self.rules]
        for alert in firing:
            for index, rule in enumerate(self.rules):
                if matches_all(rule.source_matchers, alert.labels):
                    both = matches_all(rule.target_matchers, alert.labels)
                    self._sources[index].setdefault(rule.equal_values(alert.labels), []
                                                    ).append((alert.fingerprint, both))

    def inhibited_by(self, labels: Mapping[str, str], own: str = "") -> list[str]:
        """The fingerprints of the firing alerts that mute an alert with ``labels``."""
        found: list[str] = []
        for index, rule in enumerate(self.rules):
            if not matches_all(rule.target_matchers, labels):
                continue
            two_sided = matches_all(rule.source_matchers, labels)
            for source, both in self._sources[index].get(rule.equal_values(labels), ()):
                if source != own and not (two_sided and both) and source not in found:
                    found.append(source)
        return sorted(found)


# ---------------------------------------------------------------------------------------
# silences


class SilenceState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float
    expired_by: str = ""
    expire_comment: str = ""

    def state(self, now: float) -> SilenceState:
        if now < self.starts_at:
            return SilenceState.PENDING
        if now >= self.ends_at:
            return SilenceState.EXPIRED
        return SilenceState.ACTIVE

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) is SilenceState.ACTIVE and matches_all(self.matchers, labels)

    def expire(self, now: float, by: str, comment: str) -> Silence:
        """Ended now by ``by``: a pending one never starts, an active one ends; one that
        has expired already is returned as it is."""
        state = self.state(now)
        if state is SilenceState.EXPIRED:
            return self
        starts = now if state is SilenceState.PENDING else self.starts_at
        return replace(self, starts_at=starts, ends_at=now, updated_at=now, expired_by=by,
                       expire_comment=comment)

    def describe(self) -> dict[str, str]:
        """What a SILENCE_EXPIRED notification says about it."""
        out = {"id": self.id, "created_by": self.created_by, "comment": self.comment,
               "matchers": ", ".join(str(m) for m in self.matchers),
               "starts_at": _iso(self.starts_at), "ends_at": _iso(self.ends_at)}
        if self.expired_by:
            out["expired_by"] = self.expired_by
            out["expire_comment"] = self.expire_comment
        return out


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")


MATCH_TYPE_NAMES = ("MATCH_TYPE_EQUAL", "MATCH_TYPE_NOT_EQUAL", "MATCH_TYPE_REGEX",
                    "MATCH_TYPE_NOT_REGEX")


@dataclass(frozen=True, slots=True)
class MatcherInput:
    """A silence matcher as a request gives it (``type`` None: not one of the four)."""

    name: str
    value: str
    type: MatchType | None


def silence_matchers(given: Sequence[MatcherInput], where: str = "silence.matchers"
                     ) -> tuple[Matcher, ...]:
    """The matchers of a new silence; InvalidArgument naming the matcher and the rule."""
    if not given:
        raise InvalidArgument(where, "is required: at least one matcher, e.g. "
                              "alertname=\"HighLatency\"", reason="REQUIRED_FIELD")
    if len(given) > MAX_MATCHERS:
        raise InvalidArgument(where, f"{len(given)} matchers", allowed=[f"at most "
                                                                        f"{MAX_MATCHERS}"])
    out = []
    for i, item in enumerate(given):
        if item.type is None:
            raise InvalidArgument(f"{where}[{i}].type", "is not a match type",
                                  allowed=MATCH_TYPE_NAMES)
        if not item.name:
            raise InvalidArgument(f"{where}[{i}].name", "is required: the label to match",
                                  reason="REQUIRED_FIELD")
        if not LABEL_NAME.fullmatch(item.name):
            raise InvalidArgument(f"{where}[{i}].name", "is not a label name",
                                  allowed=["[a-zA-Z_][a-zA-Z0-9_]*"])
        _check_text(f"{where}[{i}].value", item.value, MAX_MATCHER_VALUE)
        try:
            out.append(Matcher(item.name, item.type, item.value))
        except MatcherError as exc:
            raise InvalidArgument(f"{where}[{i}].value", str(exc),
                                  reason="INVALID_REGEX") from None
    if all(m.matches_empty for m in out):
        raise InvalidArgument(where, "every matcher matches the empty string, so the "
                              "silence would mute every alert; at least one must not "
                              "(e.g. alertname=\"X\" or instance=~\".+\")",
                              reason="MATCHES_EVERYTHING")
    return tuple(out)


def new_silence(silence_id: str, matchers: Sequence[MatcherInput], starts_at: float | None,
                ends_at: float | None, created_by: str, comment: str, now: float) -> Silence:
    """A silence to store; InvalidArgument naming the field for anything wrong."""
    checked = silence_matchers(matchers)
    # one starting in the past starts now (as Alertmanager): it never muted the past
    starts = now if starts_at is None else max(starts_at, now)
    if ends_at is None:
        raise InvalidArgument("silence.ends_at", "is required: when the silence ends",
                              reason="REQUIRED_FIELD")
    if starts_at is not None and ends_at <= starts_at:
        raise InvalidArgument("silence.ends_at", "must be after starts_at")
    if ends_at <= now:
        raise InvalidArgument("silence.ends_at", "is in the past: the silence would "
                              "never mute anything")
    if not created_by.strip():
        raise InvalidArgument("silence.created_by", "is required: who silences",
                              reason="REQUIRED_FIELD")
    _check_text("silence.created_by", created_by, 256)
    if not comment.strip():
        raise InvalidArgument("silence.comment", "is required: why the alerts are "
                              "silenced", reason="REQUIRED_FIELD")
    _check_text("silence.comment", comment, MAX_SILENCE_TEXT, lines=True)
    return Silence(silence_id, checked, starts, ends_at, created_by.strip(), comment, now)


def check_expire(expired_by: str, comment: str) -> None:
    if not expired_by.strip():
        raise InvalidArgument("expired_by", "is required: who ends the silence",
                              reason="REQUIRED_FIELD")
    _check_text("expired_by", expired_by, 256)
    _check_text("comment", comment, MAX_SILENCE_TEXT, lines=True)


def silence_to_json(s: Silence) -> bytes:
    return json.dumps({
        "id": s.id, "matchers": [{"name": m.name, "type": m.type.value, "value": m.value}
                                 for m in s.matchers],
        "starts_at": s.starts_at, "ends_at": s.ends_at, "created_by": s.created_by,
        "comment": s.comment, "updated_at": s.updated_at, "expired_by": s.expired_by,
        "expire_comment": s.expire_comment}, separators=(",", ":")).encode()


def silence_from_json(raw: bytes) -> Silence:
    """ValueError (or KeyError, TypeError) when ``raw`` is not a stored silence."""
    data = json.loads(raw)
    return Silence(str(data["id"]),
                   tuple(Matcher.of(m["name"], m["type"], m["value"]) for m in data["matchers"]),
                   float(data["starts_at"]), float(data["ends_at"]), str(data["created_by"]),
                   str(data["comment"]), float(data["updated_at"]),
                   str(data.get("expired_by", "")), str(data.get("expire_comment", "")))


def silence_filter_matches(s: Silence, matchers: Sequence[Matcher]) -> bool:
    """ListSilences' filter: the silence's matchers read as labels (name = value) match
    every filter matcher (as Alertmanager's API filters silences)."""
    labels = {m.name: m.value for m in s.matchers}
    return matches_all(matchers, labels)


def silence_order(s: Silence, now: float) -> tuple[int, float, str]:
    """Listing order: active (ending soonest first), pending (starting soonest first),
    expired (most recent first)."""
    state = s.state(now)
    if state is SilenceState.ACTIVE:
        return 0, s.ends_at, s.id
    if state is SilenceState.PENDING:
        return 1, s.starts_at, s.id
    return 2, -s.ends_at, s.id


# ---------------------------------------------------------------------------------------
# the notification log and deduplication


@dataclass(frozen=True, slots=True)
class NflogEntry:
    """What one receiver was last told about one group, and when."""

    firing: frozenset[str]
    resolved: frozenset[str]
    at: float


def needs_update(entry: NflogEntry | None, firing: frozenset[str], resolved: frozenset[str],
                 now: float, repeat_interval: float, send_resolved: bool) -> bool:
    """Alertmanager's DedupStage: whether a group's current alerts are news to the
    receiver its log ``entry`` is about."""
    if entry is None:
        return bool(firing)  # never notified: only if something fires
    if not firing <= entry.firing:
        return True  # something fires that the receiver was not told about
    if not firing:
        # all resolved: tell (even without send_resolved: the log forgets the firing
        # ones) unless the receiver never heard of any of them
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.at <= now - repeat_interval


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The pause after failed attempt ``attempt`` (1, 2, ...): exponential from ``base``,
    at most ``cap``, with full jitter in its upper half (so nodes and groups retrying
    together spread out, yet never retry at once)."""
    ceiling = min(cap, base * math.pow(2.0, max(0, attempt - 1)))
    return ceiling / 2 + rng.random() * ceiling / 2


# ---------------------------------------------------------------------------------------
# the state of one notifier node


class AlertState(enum.Enum):
    ACTIVE = "active"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class ListedAlert:
    alert: Alert
    state: AlertState
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]
    receivers: tuple[str, ...]


@dataclass(eq=False, slots=True)
class Group:
    """An aggregation group: the alerts one route gathers under one set of group labels."""

    route: Route
    labels: dict[str, str]
    key: str
    fingerprints: set[str]
    next_flush: float
    flushed: bool = False
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class Planned:
    """A notification to send and what to record once it is sent: the receiver's log
    entry for the group (``firing`` / ``resolved``), and the group's resolved alerts to
    forget (fingerprint -> the ``ends_at`` they had, so a changed one stays)."""

    notification: Notification
    group_key: str
    firing: frozenset[str]
    resolved: frozenset[str]
    resolved_ends: Mapping[str, float]
    # claims among nodes: a claim older than this may be taken again (a repeat); None
    # (a silence's expiry notice) never
    reclaim_after: float | None
    claim_ttl: float

    @property
    def receiver(self) -> str:
        return self.notification.receiver


def build_notification(receiver: str, kind: Kind, key: str, group_labels: Mapping[str, str],
                       alerts: Sequence[Alert], now: float, external_url: str = "",
                       silence: Mapping[str, str] | None = None) -> Notification:
    """One notification of ``alerts`` (sorted by labels, so every node builds the same)."""
    ordered = sorted(alerts, key=lambda a: sorted(a.labels.items()))
    notified = tuple(a.notified(now) for a in ordered)
    common = _common([a.labels for a in ordered])
    annotations = _common([a.annotations for a in ordered])
    status = "firing" if any(a.status == "firing" for a in notified) else "resolved"
    return Notification(receiver=receiver, kind=kind, status=status, group_key=key,
                        group_labels=dict(group_labels), common_labels=common,
                        common_annotations=annotations, alerts=notified,
                        external_url=external_url, silence=dict(silence or {}))


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


class NotifierState:
    """What one notifier node holds: every alert, the aggregation groups, the silences
    and the notification log; its methods are the dispatcher's steps, each given the
    time. ``send_resolved`` says, per receiver, whether any of its channels wants
    resolved alerts (default True)."""

    def __init__(self, route: Route, inhibit_rules: Sequence[InhibitRule] = (), *,
                 resolve_timeout: float = 300.0, external_url: str = "",
                 send_resolved: Mapping[str, bool] | None = None,
                 resolved_retention: float = RESOLVED_RETENTION_S) -> None:
        self.route = route
        self.inhibit_rules = tuple(inhibit_rules)
        self.resolve_timeout = resolve_timeout
        self.external_url = external_url
        self.send_resolved = dict(send_resolved or {})
        self.resolved_retention = resolved_retention
        self.alerts: dict[str, Alert] = {}
        self.groups: dict[str, Group] = {}
        self.nflog: dict[tuple[str, str], NflogEntry] = {}
        self.silences: dict[str, Silence] = {}
        # per silence: the firing alerts it muted while active (for its expiry notice)
        self.muted_by: dict[str, set[str]] = {}
        self._seen_active: set[str] = set()

    # -- alerts ---------------------------------------------------------------------------

    def put(self, posted: Sequence[PostedAlert], now: float) -> int:
        """Hold the posted alerts (merged with those held) and put each in the groups of
        the routes it ends at; returns how many were taken. A resolved alert the node
        does not hold is dropped: nobody was told it fired."""
        taken = 0
        for item in posted:
            alert = admit(item, now, self.resolve_timeout)
            old = self.alerts.get(alert.fingerprint)
            if old is None and alert.resolved(now):
                continue
            if old is not None and overlaps(old, alert):
                alert = merge(old, alert, now)
            self.alerts[alert.fingerprint] = alert
            taken += 1
            for route in self.route.match(alert.labels):
                labels = route.group_labels(alert.labels)
                key = group_key(route, labels)
                group = self.groups.get(key)
                if group is None:
                    group = Group(route, labels, key, set(), now + route.group_wait)
                    self.groups[key] = group
                group.fingerprints.add(alert.fingerprint)
                if not group.flushed and alert.starts_at + route.group_wait < now:
                    group.next_flush = min(group.next_flush, now)  # old news: no wait
            self._observe(alert, now)
        return taken

    def inhibitor(self, now: float) -> Inhibitor:
        return Inhibitor(self.inhibit_rules,
                         (a for a in self.alerts.values() if not a.resolved(now)))

    def silenced_by(self, alert: Alert, now: float) -> list[str]:
        return sorted(s.id for s in self.silences.values() if s.mutes(alert.labels, now))

    def listed(self, now: float, matchers: Sequence[Matcher] = (), *,
               include_suppressed: bool = False, include_resolved: bool = False
               ) -> list[ListedAlert]:
        """The alerts held (by fingerprint) with their state, for ListAlerts."""
        inhibitor = self.inhibitor(now)
        out = []
        for fp in sorted(self.alerts):
            alert = self.alerts[fp]
            if not matches_all(matchers, alert.labels):
                continue
            silenced = tuple(self.silenced_by(alert, now))
            inhibited = tuple(inhibitor.inhibited_by(alert.labels, fp))
            if alert.resolved(now):
                state = AlertState.RESOLVED
            elif silenced or inhibited:
                state = AlertState.SUPPRESSED
            else:
                state = AlertState.ACTIVE
            if state is AlertState.RESOLVED and not include_resolved:
                continue
            if state is AlertState.SUPPRESSED and not include_suppressed:
                continue
            receivers = tuple(dict.fromkeys(r.receiver for r in self.route.match(alert.labels)))
            out.append(ListedAlert(alert, state, silenced, inhibited, receivers))
        return out

    # -- silences -------------------------------------------------------------------------

    def set_silence(self, silence: Silence, now: float) -> None:
        self.silences[silence.id] = silence
        if silence.state(now) is SilenceState.ACTIVE:
            self._seen_active.add(silence.id)
            for alert in self.alerts.values():
                self._observe_one(silence, alert, now)

    def drop_silence(self, silence_id: str) -> None:
        self.silences.pop(silence_id, None)
        self.muted_by.pop(silence_id, None)
        self._seen_active.discard(silence_id)

    def _observe(self, alert: Alert, now: float) -> None:
        for silence in self.silences.values():
            self._observe_one(silence, alert, now)

    def _observe_one(self, silence: Silence, alert: Alert, now: float) -> None:
        if not alert.resolved(now) and silence.mutes(alert.labels, now):
            self.muted_by.setdefault(silence.id, set()).add(alert.fingerprint)

    def silence_notices(self, now: float) -> list[Planned]:
        """For each silence that has expired since the last call while alerts it muted
        still fire unmuted: one SILENCE_EXPIRED notification per receiver and group.
        The log entries of those groups take the alerts in at once (the notice is the
        news), so the next flush does not tell the same again as FIRING."""
        for started in self.silences.values():  # pending ones that became active
            if started.id not in self._seen_active and \
                    started.state(now) is SilenceState.ACTIVE:
                self._seen_active.add(started.id)
                for alert in self.alerts.values():
                    self._observe_one(started, alert, now)
        out: list[Planned] = []
        inhibitor: Inhibitor | None = None
        for silence_id in sorted(self.muted_by):
            silence = self.silences.get(silence_id)
            if silence is None or silence.state(now) is not SilenceState.EXPIRED:
                continue
            muted = self.muted_by.pop(silence_id)
            if inhibitor is None:
                inhibitor = self.inhibitor(now)
            still = [self.alerts[fp] for fp in sorted(muted) if fp in self.alerts
                     and not self.alerts[fp].resolved(now)
                     and not self.silenced_by(self.alerts[fp], now)
                     and not inhibitor.inhibited_by(self.alerts[fp].labels, fp)]
            by_group: dict[str, tuple[Route, dict[str, str], list[Alert]]] = {}
            for alert in still:
                for route in self.route.match(alert.labels):
                    labels = route.group_labels(alert.labels)
                    key = group_key(route, labels)
                    by_group.setdefault(key, (route, labels, []))[2].append(alert)
            for key in sorted(by_group):
                route, labels, alerts = by_group[key]
                fps = frozenset(a.fingerprint for a in alerts)
                n = build_notification(route.receiver, Kind.SILENCE_EXPIRED, key, labels,
                                       alerts, now, self.external_url, silence.describe())
                entry = self.nflog.get((route.receiver, key))
                self.nflog[(route.receiver, key)] = NflogEntry(
                    (entry.firing if entry else frozenset()) | fps,
                    (entry.resolved if entry else frozenset()) - fps,
                    entry.at if entry else now)
                out.append(Planned(n, key, fps, frozenset(), {}, None,
                                   claim_ttl=_claim_ttl(route)))
        return out

    # -- timers and flushes ---------------------------------------------------------------

    def due(self, now: float) -> list[Group]:
        """The groups whose timer has run out and that are not sending (by key)."""
        return [self.groups[k] for k in sorted(self.groups)
                if not self.groups[k].in_flight and self.groups[k].next_flush <= now]

    def flush(self, group: Group, now: float, inhibitor: Inhibitor | None = None
              ) -> Planned | None:
        """One look at ``group``: its timer restarts (``group_interval``); what to send
        its receiver, or None when the log says nothing is new (then its resolved alerts
        are forgotten at once, as after a send)."""
        route = group.route
        group.next_flush = now + route.group_interval
        group.flushed = True
        inhibitor = inhibitor or self.inhibitor(now)
        present = [self.alerts[fp] for fp in sorted(group.fingerprints) if fp in self.alerts]
        group.fingerprints = {a.fingerprint for a in present}
        for alert in present:
            self._observe(alert, now)
        resolved_ends = {a.fingerprint: a.ends_at for a in present if a.resolved(now)}
        shown = [a for a in present if not self.silenced_by(a, now)
                 and not inhibitor.inhibited_by(a.labels, a.fingerprint)]
        firing = frozenset(a.fingerprint for a in shown if not a.resolved(now))
        resolved = frozenset(a.fingerprint for a in shown if a.resolved(now))
        receiver = route.receiver
        entry = self.nflog.get((receiver, group.key))
        if not needs_update(entry, firing, resolved, now, route.repeat_interval,
                            self.send_resolved.get(receiver, True)):
            self._forget_resolved(group, resolved_ends)
            return None
        if not firing and not resolved:  # all muted: nothing to say, the log forgets
            self.nflog[(receiver, group.key)] = NflogEntry(frozenset(), frozenset(), now)
            self._forget_resolved(group, resolved_ends)
            return None
        kind = Kind.FIRING if firing else Kind.RESOLVED
        n = build_notification(receiver, kind, group.key, group.labels, shown, now,
                               self.external_url)
        group.in_flight = True
        return Planned(n, group.key, firing, resolved, resolved_ends,
                       reclaim_after=max(route.repeat_interval, route.group_interval) / 2,
                       claim_ttl=_claim_ttl(route))

    def done(self, planned: Planned, now: float, sent: bool) -> None:
        """A flush's notification was sent (by this node or, its claim lost, another):
        log it and forget the group's resolved alerts; or it was not (the next flush
        tries again)."""
        group = self.groups.get(planned.group_key)
        if planned.notification.kind is Kind.SILENCE_EXPIRED:
            return  # logged when planned
        if group is not None:
            group.in_flight = False
        if not sent:
            return
        self.nflog[(planned.receiver, planned.group_key)] = NflogEntry(
            planned.firing, planned.resolved, now)
        if group is not None:
            self._forget_resolved(group, planned.resolved_ends)

    def _forget_resolved(self, group: Group, resolved_ends: Mapping[str, float]) -> None:
        for fp, ends in resolved_ends.items():
            alert = self.alerts.get(fp)
            if alert is None or alert.ends_at == ends:
                group.fingerprints.discard(fp)
        if not group.fingerprints and not group.in_flight:
            del self.groups[group.key]
            self.nflog.pop((group.route.receiver, group.key), None)

    def next_deadline(self, now: float) -> float:
        """When something may next be due: a group's timer, a silence starting or ending."""
        times = [g.next_flush for g in self.groups.values() if not g.in_flight]
        for silence in self.silences.values():
            state = silence.state(now)
            if state is SilenceState.PENDING:
                times.append(silence.starts_at)
            elif state is SilenceState.ACTIVE and silence.id in self.muted_by:
                times.append(silence.ends_at)
        return min(times, default=math.inf)

    def gc(self, now: float) -> None:
        """Forget resolved alerts no group holds, once past the retention."""
        grouped = {fp for g in self.groups.values() for fp in g.fingerprints}
        for fp in [fp for fp, a in self.alerts.items()
                   if a.resolved(now) and a.ends_at < now - self.resolved_retention
                   and fp not in grouped]:
            del self.alerts[fp]


def _claim_ttl(route: Route) -> float:
    """How long a claim on a notification lasts among nodes: a few repeat intervals."""
    return max(60.0, 3 * max(route.repeat_interval, route.group_interval))
