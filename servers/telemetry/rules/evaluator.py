"""Rule groups evaluated as Prometheus's rule manager evaluates them (``rules/group.go``,
``alerting.go``, ``recording.go``).

A group's rules run in order at one timestamp per iteration; its iterations fall on a
grid of its interval shifted by a stable offset (a hash of file and name), so groups
spread over the interval and keep their slots across restarts. Each rule's output goes
into the store before the next rule runs, so a later rule reads an earlier one's series.

- A **recording rule** writes each sample of its vector as a series named by ``record``
  with the rule's labels set over the sample's.
- An **alerting rule** keeps one alert per label set of its vector (the sample's labels
  without ``__name__``, the rule's templated labels, ``alertname``): pending when it
  appears, firing once it has been active for ``for`` (at once when ``for`` is 0); when
  it leaves the vector a firing alert keeps firing for ``keep_firing_for``, then is
  resolved and kept 15 minutes (sent as resolved), a pending one is dropped. It writes
  ``ALERTS{alertname, alertstate="pending"|"firing", ...} 1`` and
  ``ALERTS_FOR_STATE{alertname, ...}`` = the time it became active, Unix seconds.
- A series a rule wrote at its last evaluation and not at this one gets a staleness
  marker, as do all of a rule's series when it is removed.

**Restoring ``for`` state** (Prometheus's ``RestoreForState``): at a group's first
evaluation after start, each alert the vector has is matched with its
``ALERTS_FOR_STATE`` series (looked up over the outage tolerance, 1 h); its last sample
(unless a staleness marker) gives the time it became active and the time the evaluator
went down. An alert whose ``for`` had passed keeps its active-since time, so it fires
again at once, and its firing-since time — the ``starts_at`` sent to the notifier, which
deduplicates by it — is read from its ``ALERTS{alertstate="firing"}`` series (the first
sample since it became active), so the notifier sees the same alert, not a new one. An
alert that was pending keeps the time it had waited, shifted by the outage, and waits at
least the grace period (10 min) — unless ``for`` is shorter than the grace period, when
it waits ``for`` again from now. Two differences from Prometheus, both so that an alert
firing before a restart is firing with the same start after it: the restoration is done
within the first evaluation (Prometheus does it after it, so for one interval the alert
is pending again), and it applies to rules whose ``for`` is under the grace period too
when their alert was firing (Prometheus skips those rules, and they fire with a new
start). And an alert that was firing when the evaluator stopped but is gone from the
vector at its first evaluation is resolved and sent as resolved at once (Prometheus
forgets it, so the notifier keeps it firing until its ``ends_at``, up to 4 minutes).
Active-since times are kept to the millisecond (Prometheus: whole seconds).

Sending (Prometheus's ``sendAlerts``): a firing alert is sent when it fires and again
when the resend delay (1 min) has passed since it was last sent, with ``ends_at`` =
now + 4 × max(interval, resend delay) so that the notifier resolves it if the evaluator
stops; a resolved alert when it resolves and every resend delay while it is kept, with
``ends_at`` = the time it resolved. Pending alerts are not sent.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np

from geoplex.servers._runtime.errors import GeoplexError

from ..promql.ast import Expr
from ..promql.engine import Engine
from ..promql.values import Scalar, Vector
from ..tsdb.api import Series, Storage
from ..tsdb.chunks import STALE_NAN, STALE_NAN_BITS
from ..tsdb.errors import SampleRejected
from ..tsdb.head import SampleInput
from ..tsdb.labels import METRIC_NAME, Labels, Matcher, eq
from .files import GroupSpec, RuleSpec
from .templates import TemplateData

logger = logging.getLogger(__name__)

ALERTS: Final = "ALERTS"
ALERTS_FOR_STATE: Final = "ALERTS_FOR_STATE"
ALERT_NAME: Final = "alertname"
ALERT_STATE: Final = "alertstate"
RESOLVED_RETENTION_MS: Final = 15 * 60_000


class AlertState(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Health(enum.Enum):
    UNKNOWN = "unknown"
    OK = "ok"
    ERR = "err"


class RuleEvalError(Exception):
    """A rule's evaluation failed (its query, its result's shape, a limit)."""


@dataclass(frozen=True)
class EvalOptions:
    """What Prometheus takes from flags: ``--rules.alert.resend-delay`` (1m),
    ``--rules.alert.for-outage-tolerance`` (1h), ``--rules.alert.for-grace-period``
    (10m); the labels and URL added to what is sent."""

    resend_delay_ms: int = 60_000
    outage_tolerance_ms: int = 3_600_000
    for_grace_period_ms: int = 600_000
    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""


@dataclass
class Alert:
    """One alert of an alerting rule (times in Unix milliseconds)."""

    labels: Labels                    # without __name__, with alertname
    annotations: dict[str, str]
    state: AlertState
    value: float
    active_at_ms: int
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    last_sent_at_ms: int | None = None
    valid_until_ms: int | None = None
    keep_firing_since_ms: int | None = None
    restored_fired_at_ms: int | None = None  # from the store: the firing-since to keep

    def needs_sending(self, ts_ms: int, resend_delay_ms: int) -> bool:
        if self.state is AlertState.PENDING:
            return False
        if self.resolved_at_ms is not None and (self.last_sent_at_ms is None
                                                or self.resolved_at_ms > self.last_sent_at_ms):
            return True
        return self.last_sent_at_ms is None or self.last_sent_at_ms + resend_delay_ms < ts_ms


@dataclass(frozen=True)
class OutgoingAlert:
    """An alert as posted to the notifier."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at_ms: int
    ends_at_ms: int
    generator_url: str


def instant_vector(engine: Engine, expr: Expr, ts_ms: int) -> list[tuple[Labels, float]]:
    """The rule's query at ``ts_ms`` as (labels, value) samples: a vector, or a scalar as
    one sample without labels (as Prometheus's ``EngineQueryFunc``)."""
    try:
        result = engine.instant(expr, ts_ms)  # raw samples whenever the raw tier holds them
    except GeoplexError as error:
        raise RuleEvalError(getattr(error, "message", str(error))) from error
    value = result.value
    if isinstance(value, Vector):
        return [(s.labels, s.v) for s in value.samples]
    if isinstance(value, Scalar):
        return [(Labels(), value.v)]
    raise RuleEvalError("rule result is not a vector or scalar")


def go_time(ms: int | None) -> str:
    """RFC 3339 with the fraction Go prints (``time.Time`` in JSON; the zero time when
    ``ms`` is None, as Prometheus shows a rule not yet evaluated)."""
    if ms is None:
        return "0001-01-01T00:00:00Z"
    seconds, millis = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return stamp + (f".{millis:03d}".rstrip("0") if millis else "") + "Z"


class Rule:
    """What both kinds share: the spec, health, the last error and evaluation, and the
    series written at the last evaluation (for staleness markers)."""

    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        self.health = Health.UNKNOWN
        self.last_error = ""
        self.last_evaluation_ms: int | None = None
        self.evaluation_s = 0.0
        self.written: set[Labels] = set()

    @property
    def name(self) -> str:
        return self.spec.name

    def eval(self, engine: Engine, storage: Storage, ts_ms: int, group: Group
             ) -> list[tuple[Labels, float]]:
        raise NotImplementedError

    def take_state(self, old: Rule) -> None:
        self.written = old.written
        self.health, self.last_error = old.health, old.last_error
        self.last_evaluation_ms, self.evaluation_s = old.last_evaluation_ms, old.evaluation_s


class RecordingRule(Rule):
    def eval(self, engine: Engine, storage: Storage, ts_ms: int, group: Group
             ) -> list[tuple[Labels, float]]:
        vector = instant_vector(engine, self.spec.expr, ts_ms)
        out: list[tuple[Labels, float]] = []
        seen: set[Labels] = set()
        for labels, value in vector:
            pairs = dict(labels)
            pairs[METRIC_NAME] = self.spec.name
            pairs.update(self.spec.labels)
            key = Labels(pairs.items())
            if key in seen:
                raise RuleEvalError("vector contains metrics with the same labelset after "
                                    "applying rule labels")
            seen.add(key)
            out.append((key, value))
        if group.spec.limit > 0 and len(out) > group.spec.limit:
            raise RuleEvalError(f"exceeded limit of {group.spec.limit} with {len(out)} series")
        return out


class AlertingRule(Rule):
    def __init__(self, spec: RuleSpec, restore: bool) -> None:
        super().__init__(spec)
        self.active: dict[Labels, Alert] = {}
        self.restored = not restore  # False: restore from the store at the first evaluation

    def take_state(self, old: Rule) -> None:
        super().take_state(old)
        if isinstance(old, AlertingRule):
            with old.lock:
                self.active = {k: replace(a) for k, a in old.active.items()}
            self.restored = True

    @property
    def state(self) -> AlertState:
        """The rule's state: the highest of its alerts'."""
        with self.lock:
            states = {a.state for a in self.active.values()}
        for state in (AlertState.FIRING, AlertState.PENDING):
            if state in states:
                return state
        return AlertState.INACTIVE

    def alerts(self) -> list[Alert]:
        """Copies of its pending and firing alerts (resolved ones left out)."""
        with self.lock:
            return [replace(a) for a in self.active.values() if a.resolved_at_ms is None]

    def eval(self, engine: Engine, storage: Storage, ts_ms: int, group: Group
             ) -> list[tuple[Labels, float]]:
        vector = instant_vector(engine, self.spec.expr, ts_ms)
        options = group.options
        found: dict[Labels, tuple[float, dict[str, str], Labels]] = {}
        for labels, value in vector:
            data = TemplateData(dict(labels), value, options.external_labels,
                                options.external_url)
            pairs = {k: v for k, v in labels.items() if k != METRIC_NAME}
            for name, template in self.spec.label_templates:
                pairs[name] = template.expand_or_error(data)
            pairs[ALERT_NAME] = self.spec.name
            key = Labels(pairs.items())
            if key in found:
                raise RuleEvalError("vector contains metrics with the same labelset after "
                                    "applying alert labels")
            annotations = {name: template.expand_or_error(data)
                           for name, template in self.spec.annotation_templates}
            found[key] = (value, annotations, labels)
        with self.lock:
            return self._transition(found, storage, ts_ms, group)

    def _transition(self, found: Mapping[Labels, tuple[float, dict[str, str], Labels]],
                    storage: Storage, ts_ms: int, group: Group) -> list[tuple[Labels, float]]:
        created: list[Alert] = []
        for key, (value, annotations, _labels) in found.items():
            alert = self.active.get(key)
            if alert is not None and alert.state is not AlertState.INACTIVE:
                alert.value, alert.annotations = value, annotations
                continue
            alert = Alert(key, annotations, AlertState.PENDING, value, ts_ms)
            self.active[key] = alert
            created.append(alert)
        if not self.restored:
            restore_for_state(self, created, set(found), storage, ts_ms, group.options)
            self.restored = True
        out: list[tuple[Labels, float]] = []
        for key, alert in list(self.active.items()):
            keep_firing = False
            if key not in found:
                if alert.state is AlertState.FIRING and self.spec.keep_firing_for_ms > 0:
                    if alert.keep_firing_since_ms is None:
                        alert.keep_firing_since_ms = ts_ms
                    keep_firing = ts_ms - alert.keep_firing_since_ms < \
                        self.spec.keep_firing_for_ms
                if alert.state is AlertState.PENDING or (
                        alert.resolved_at_ms is not None
                        and ts_ms - alert.resolved_at_ms > RESOLVED_RETENTION_MS):
                    del self.active[key]
                if alert.state is not AlertState.INACTIVE and not keep_firing:
                    alert.state = AlertState.INACTIVE
                    alert.resolved_at_ms = ts_ms
                if not keep_firing:
                    continue
            else:
                alert.keep_firing_since_ms = None
            if alert.state is AlertState.PENDING and \
                    ts_ms - alert.active_at_ms >= self.spec.for_ms:
                alert.state = AlertState.FIRING
                alert.fired_at_ms = alert.restored_fired_at_ms or ts_ms
                alert.restored_fired_at_ms = None
            out.append((alert_series(key, alert.state), 1.0))
            out.append((for_state_series(key), alert.active_at_ms / 1000))
        count = len(out) // 2
        if group.spec.limit > 0 and count > group.spec.limit:
            self.active.clear()
            raise RuleEvalError(f"exceeded limit of {group.spec.limit} with {count} alerts")
        return out

    def due(self, ts_ms: int, interval_ms: int, options: EvalOptions,
            generator_url: str) -> list[OutgoingAlert]:
        """The alerts to send now (each marked sent)."""
        delta = max(options.resend_delay_ms, interval_ms)
        out = []
        with self.lock:
            for alert in self.active.values():
                if not alert.needs_sending(ts_ms, options.resend_delay_ms):
                    continue
                alert.last_sent_at_ms = ts_ms
                alert.valid_until_ms = ts_ms + 4 * delta
                labels = {**options.external_labels, **alert.labels}
                out.append(OutgoingAlert(
                    labels, dict(alert.annotations),
                    alert.fired_at_ms if alert.fired_at_ms is not None else alert.active_at_ms,
                    alert.resolved_at_ms if alert.resolved_at_ms is not None
                    else alert.valid_until_ms, generator_url))
        return out


def alert_series(labels: Labels, state: AlertState) -> Labels:
    return Labels((*labels.pairs, (METRIC_NAME, ALERTS), (ALERT_STATE, state.value)))


def for_state_series(labels: Labels) -> Labels:
    return Labels((*labels.pairs, (METRIC_NAME, ALERTS_FOR_STATE)))


def _is_stale(value: float) -> bool:
    return int(np.array([value], np.float64).view(np.uint64)[0]) == STALE_NAN_BITS


def restore_for_state(rule: AlertingRule, alerts: Sequence[Alert], present: set[Labels],
                      storage: Storage, ts_ms: int, options: EvalOptions) -> None:
    """Prometheus's ``RestoreForState`` for ``alerts`` (just created at the first
    evaluation), from the rule's ``ALERTS_FOR_STATE`` series (see the module's text); and
    the alerts that were firing when the evaluator stopped but are not in the vector
    (``present``) now, back as firing with their start, so that this evaluation resolves
    them (or keeps them for ``keep_firing_for``) and the notifier is sent the resolution
    at once (Prometheus forgets them: the notifier resolves them only when their
    ``ends_at`` passes, up to 4 resend delays later)."""
    mint = ts_ms - options.outage_tolerance_ms
    try:
        found = {s.labels.without(METRIC_NAME): s for s in storage.select(
            [eq(METRIC_NAME, ALERTS_FOR_STATE), eq(ALERT_NAME, rule.name)], mint, ts_ms)}
    except Exception:  # noqa: BLE001 - without the store's answer, alerts start afresh
        logger.warning("telemetry: rule %r: cannot read ALERTS_FOR_STATE to restore its "
                       "alerts", rule.name, exc_info=True)
        return
    hold, grace = rule.spec.for_ms, options.for_grace_period_ms
    for alert in alerts:
        last = _last_state(found.get(alert.labels))
        if last is None:
            continue
        down_at, active_at = last
        remaining = hold - (down_at - active_at)
        if remaining <= 0:  # firing when the evaluator stopped: it still is, as it was
            alert.active_at_ms = active_at
            alert.restored_fired_at_ms = _firing_since(storage, alert.labels,
                                                       max(active_at, mint), ts_ms)
        elif hold < grace:
            continue  # Prometheus skips these rules: the alert waits `for` from now
        elif remaining < grace:
            alert.active_at_ms = ts_ms + grace - hold
        else:
            alert.active_at_ms = active_at + (ts_ms - down_at)
        logger.info("telemetry: rule %r: restored %s, active since %s", rule.name,
                    alert.labels, go_time(alert.active_at_ms))
    for labels, series in found.items():
        if labels in present or labels in rule.active:
            continue
        last = _last_state(series)
        if last is None or hold - (last[0] - last[1]) > 0:
            continue  # resolved before the stop, or pending then: nothing was sent for it
        active_at = last[1]
        fired_at = _firing_since(storage, labels, max(active_at, mint), ts_ms)
        data = TemplateData({k: v for k, v in labels.items() if k != ALERT_NAME}, math.nan,
                            options.external_labels, options.external_url)
        annotations = {name: template.expand_or_error(data)
                       for name, template in rule.spec.annotation_templates}
        rule.active[labels] = Alert(labels, annotations, AlertState.FIRING, math.nan,
                                    active_at, fired_at if fired_at is not None else active_at)
        logger.info("telemetry: rule %r: %s was firing when the evaluator stopped and is "
                    "gone: resolving it", rule.name, labels)


def _last_state(series: Series | None) -> tuple[int, int] | None:
    """(when the evaluator last wrote it, active-since) of an ``ALERTS_FOR_STATE`` series,
    or None if it has no samples or ends resolved (a staleness marker)."""
    if series is None or len(series.timestamps) == 0:
        return None
    value = float(series.values[-1])
    if _is_stale(value) or not math.isfinite(value):
        return None
    return int(series.timestamps[-1]), round(value * 1000)


def _firing_since(storage: Storage, labels: Labels, mint: int, maxt: int) -> int | None:
    """The first ``ALERTS{alertstate="firing"}`` sample of ``labels`` in the range after
    the last staleness marker: when the alert last began firing."""
    matchers: list[Matcher] = [eq(METRIC_NAME, ALERTS), eq(ALERT_STATE, "firing"),
                               *(eq(k, v) for k, v in labels.items())]
    try:
        for series in storage.select(matchers, mint, maxt):
            if series.labels.without(METRIC_NAME, ALERT_STATE) != labels:
                continue
            start: int | None = None
            bits = series.values.view(np.uint64)
            for t, b in zip(series.timestamps.tolist(), bits.tolist()):
                if b == STALE_NAN_BITS:
                    start = None
                elif start is None:
                    start = int(t)
            return start
    except Exception:  # noqa: BLE001 - the alert gets a new start instead
        logger.warning("telemetry: cannot read ALERTS to restore a firing alert's start",
                       exc_info=True)
    return None


@dataclass
class GroupMetrics:
    evaluations: int = 0          # rule evaluations
    failures: int = 0             # failed rule evaluations
    iterations: int = 0
    iterations_missed: int = 0
    rule_seconds: float = 0.0     # sum of rule evaluation times
    last_duration_s: float = 0.0
    group_seconds: float = 0.0    # sum of iteration times
    last_samples: int = 0
    samples_rejected: int = 0     # samples the store refused


def group_offset_ms(file: str, name: str, interval_ms: int) -> int:
    """A stable offset in the interval, from the group's file and name."""
    digest = hashlib.blake2b(f"{file};{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % interval_ms


class Group:
    """A rule group: its rules and state; :meth:`evaluate` runs one iteration (sync: the
    manager calls it off the event loop)."""

    def __init__(self, spec: GroupSpec, default_interval_ms: int, options: EvalOptions,
                 *, restore: bool = True) -> None:
        self.spec = spec
        self.interval_ms = spec.interval_ms or default_interval_ms
        self.options = options
        self.rules: list[Rule] = [AlertingRule(r, restore) if r.kind == "alerting"
                                  else RecordingRule(r) for r in spec.rules]
        self.metrics = GroupMetrics()
        self.last_evaluation_ms: int | None = None
        self.offset_ms = group_offset_ms(spec.file, spec.name, self.interval_ms)

    @property
    def key(self) -> tuple[str, str]:
        return self.spec.file, self.spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def file(self) -> str:
        return self.spec.file

    def eval_timestamp(self, now_ms: int) -> int:
        """The latest slot of this group's grid at or before ``now_ms``."""
        start = now_ms - self.offset_ms
        return start - start % self.interval_ms + self.offset_ms

    def copy_state(self, old: Group) -> list[Rule]:
        """Take over the state of ``old``'s rules with the same kind, name and labels
        (in order, as Prometheus's ``CopyState``); the old rules not taken over."""
        pool: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[Rule]] = {}
        for rule in old.rules:
            pool.setdefault(rule.spec.identity, []).append(rule)
        for rule in self.rules:
            matches = pool.get(rule.spec.identity)
            if matches:
                rule.take_state(matches.pop(0))
        self.metrics = old.metrics
        self.last_evaluation_ms = old.last_evaluation_ms
        return [r for rules in pool.values() for r in rules]

    def evaluate(self, engine: Engine, storage: Storage, ts_ms: int,
                 timer: Callable[[], float] = time.perf_counter) -> list[OutgoingAlert]:
        """One iteration at ``ts_ms``: every rule in order, its output stored before the
        next; the alerts to send."""
        started = timer()
        samples_total = 0
        query_ts = ts_ms - self.spec.query_offset_ms
        for rule in self.rules:
            rule_started = timer()
            try:
                produced = rule.eval(engine, storage, query_ts, self)
            except RuleEvalError as error:
                self._failed(rule, str(error), query_ts)
            except Exception as error:  # noqa: BLE001 - one rule must not stop the group
                logger.exception("telemetry: rule group %r, rule %r failed unexpectedly",
                                 self.name, rule.name)
                self._failed(rule, f"internal error: {error}", query_ts)
            else:
                keys = {labels for labels, _ in produced}
                batch: list[SampleInput] = [(labels, query_ts, value)
                                            for labels, value in produced]
                batch += [(labels, query_ts, STALE_NAN) for labels in rule.written - keys]
                self._append(storage, rule, batch)
                rule.written = keys
                samples_total += len(produced)
                if rule.health is not Health.OK and rule.health is not Health.UNKNOWN:
                    logger.info("telemetry: rule group %r, rule %r evaluates again",
                                self.name, rule.name)
                rule.health, rule.last_error = Health.OK, ""
            finally:
                rule.evaluation_s = timer() - rule_started
                rule.last_evaluation_ms = query_ts
                self.metrics.evaluations += 1
                self.metrics.rule_seconds += rule.evaluation_s
        duration = timer() - started
        self.metrics.iterations += 1
        self.metrics.last_duration_s = duration
        self.metrics.group_seconds += duration
        self.metrics.last_samples = samples_total
        self.last_evaluation_ms = query_ts
        return self.due(ts_ms)

    def due(self, ts_ms: int) -> list[OutgoingAlert]:
        out: list[OutgoingAlert] = []
        for rule in self.rules:
            if isinstance(rule, AlertingRule):
                url = self.options.external_url.rstrip("/") + table_link(rule.spec.query)
                out.extend(rule.due(ts_ms, self.interval_ms, self.options, url))
        return out

    def _failed(self, rule: Rule, message: str, ts_ms: int) -> None:
        self.metrics.failures += 1
        if rule.health is not Health.ERR:
            logger.warning("telemetry: rule group %r, rule %r: %s", self.name, rule.name,
                           message)
        else:
            logger.debug("telemetry: rule group %r, rule %r: %s", self.name, rule.name,
                         message)
        rule.health, rule.last_error = Health.ERR, message

    def _append(self, storage: Storage, rule: Rule, batch: Sequence[SampleInput]) -> None:
        """Store the batch; when the store refuses it whole, each sample on its own (the
        ones it takes are kept), the refused ones counted and logged."""
        if not batch:
            return
        try:
            storage.append(batch)
            return
        except SampleRejected:
            pass
        rejected, first = 0, ""
        for sample in batch:
            try:
                storage.append([sample])
            except GeoplexError as error:
                rejected += 1
                first = first or error.message
        self.metrics.samples_rejected += rejected
        if rejected:
            logger.warning("telemetry: rule group %r, rule %r: %d of %d samples not stored: %s",
                           self.name, rule.name, rejected, len(batch), first)

    def stale_markers(self, now_ms: int, rules: Sequence[Rule] | None = None
                      ) -> list[SampleInput]:
        """Staleness markers for every series the rules (all: None) wrote last, at
        ``now_ms`` (after the last evaluation)."""
        at = max(now_ms, (self.last_evaluation_ms or 0) + 1)
        chosen = self.rules if rules is None else rules
        return [(labels, at, STALE_NAN) for rule in chosen for labels in rule.written]


def table_link(expr: str) -> str:
    """Prometheus's ``strutil.TableLinkForExpression``."""
    return "/graph?g0.expr=" + urllib.parse.quote_plus(expr) + "&g0.tab=1"
