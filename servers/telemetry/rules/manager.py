"""The rule manager: loads rule groups (files, or :meth:`RuleManager.set_group`), runs each
group on its interval as a background task, and hands the alerts due to the sender.

Lifecycle: ``await manager.start()`` loads the configured files (the packaged
``default_rules.yml`` when none are configured; a file with problems is logged, reported
in :attr:`RuleManager.load_errors` and skipped, the others load) and starts one task per
group and the sender; ``await manager.stop()`` lets running evaluations finish, stops the
tasks and the sender. Stopping writes no staleness markers, so that the alerts' state
series are there to restore from at the next start; removing a group (a reload, or
:meth:`set_group` without it) marks its series stale.

Each iteration evaluates off the event loop (``asyncio.to_thread``: the engine and the
store are synchronous); a group's iterations never overlap: one that overruns the
interval skips the slots it missed (counted, as Prometheus's ``iterations_missed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TelemetryConfig
from ..promql.engine import Engine
from ..tsdb.api import Storage
from ..tsdb.head import SampleInput
from .evaluator import AlertingRule, AlertState, EvalOptions, Group, OutgoingAlert, Rule
from .files import GroupSpec, RuleProblem, check_rule_file, load_rules, parse_rule_file
from .files import resolve_rule_files
from .gofmt import quote
from .sender import AlertSender

logger = logging.getLogger(__name__)


@dataclass
class _Running:
    group: Group
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one iteration at a time
    task: asyncio.Task[None] | None = None


class RuleManager:
    def __init__(self, storage: Storage, engine: Engine, *, rule_files: Sequence[Path] = (),
                 interval_s: float = 15.0, notifiers: Sequence[str] = (),
                 options: EvalOptions | None = None, clock: Callable[[], float] = time.time,
                 sender: AlertSender | None = None) -> None:
        """``rule_files`` as given (see :func:`.files.resolve_rule_files` for the
        default); ``clock``: wall-clock seconds, the source of evaluation timestamps."""
        self.storage = storage
        self.engine = engine
        self.rule_files = tuple(rule_files)
        self.interval_ms = max(1, round(interval_s * 1000))
        self.options = options or EvalOptions()
        self.clock = clock
        self.sender = sender or AlertSender(notifiers)
        self.load_errors: list[RuleProblem] = []
        self._groups: dict[tuple[str, str], _Running] = {}
        self._update = asyncio.Lock()
        self._running = False
        self._started_once = False

    @classmethod
    def from_config(cls, storage: Storage, engine: Engine,
                    config: TelemetryConfig) -> RuleManager:
        return cls(storage, engine, rule_files=resolve_rule_files(config.rule_files),
                   interval_s=config.rule_interval_s, notifiers=config.notifiers)

    # -- lifecycle -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read the configured rule files and install their groups (replacing what each
        file had; a file with problems keeps the groups it had, none at the start)."""
        result = await asyncio.to_thread(load_rules, self.rule_files)
        failed = {problem.file for problem in result.errors}
        by_file: dict[str, list[GroupSpec]] = {str(p): [] for p in self.rule_files}
        for spec in result.groups:
            by_file.setdefault(spec.file, []).append(spec)
        for file, specs in by_file.items():
            if file not in failed:
                await self._replace_file(file, specs)
        self.load_errors = list(result.errors)
        logger.info("telemetry: %d rule groups (%d rules) from %d files%s",
                    len(self._groups), sum(len(r.group.rules) for r in self._groups.values()),
                    len(self.rule_files),
                    f"; {len(result.errors)} problems" if result.errors else "")

    async def start(self) -> None:
        await self.load()
        await self.sender.start()
        self._running = True
        self._started_once = True
        for running in self._groups.values():
            self._launch(running)

    async def reload(self) -> None:
        """Read the files again (Prometheus's reload): changed groups take over the
        state of their rules, removed ones have their series marked stale."""
        await self.load()

    async def stop(self) -> None:
        self._running = False
        for running in list(self._groups.values()):
            await self._halt(running)
        await self.sender.aclose()

    async def __aenter__(self) -> RuleManager:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- groups by API -------------------------------------------------------------------

    async def set_group(self, file_name: str, yaml_text: str) -> list[str]:
        """Set the groups of ``file_name`` to those of ``yaml_text`` (a rule file's
        text), validated as files are: :class:`~.files.RuleFileError` naming every problem
        and nothing changed, or the names of the groups now there."""
        specs = check_rule_file(file_name, yaml_text)
        await self._replace_file(file_name, specs)
        return [spec.name for spec in specs]

    async def remove_file(self, file_name: str) -> None:
        """Remove every group of ``file_name`` (their series marked stale)."""
        await self._replace_file(file_name, [])

    def check(self, file_name: str, yaml_text: str) -> list[RuleProblem]:
        """The problems ``set_group`` would refuse (promtool's ``check rules``)."""
        return parse_rule_file(file_name, yaml_text)[1]

    async def _replace_file(self, file: str, specs: Iterable[GroupSpec]) -> None:
        async with self._update:
            old = {key: r for key, r in self._groups.items() if key[0] == file}
            markers: list[SampleInput] = []
            now_ms = int(self.clock() * 1000)
            installed: dict[tuple[str, str], _Running] = {}
            for spec in specs:
                group = Group(spec, self.interval_ms, self.options,
                              restore=not self._started_once)
                previous = old.pop(group.key, None)
                if previous is not None:
                    await self._halt(previous)
                    left = group.copy_state(previous.group)
                    markers += previous.group.stale_markers(now_ms, left)
                installed[group.key] = _Running(group)
            for key, previous in old.items():
                await self._halt(previous)
                markers += previous.group.stale_markers(now_ms)
                del self._groups[key]
            for key, running in installed.items():
                self._groups[key] = running
                if self._running:
                    self._launch(running)
            if markers:
                await self._append_markers(markers)

    async def _append_markers(self, markers: Sequence[SampleInput]) -> None:
        try:
            await asyncio.to_thread(self.storage.append, markers)
        except Exception:  # noqa: BLE001 - stale markers are a nicety
            logger.warning("telemetry: staleness markers for %d series of removed rules "
                           "not stored", len(markers), exc_info=True)

    # -- evaluation ----------------------------------------------------------------------

    def _launch(self, running: _Running) -> None:
        group = running.group
        running.stop.clear()
        running.task = asyncio.create_task(self._run(running),
                                           name=f"telemetry-rules-{group.name}")

    async def _halt(self, running: _Running) -> None:
        """Stop the group's task, letting an evaluation under way finish."""
        task, running.task = running.task, None
        if task is not None:
            running.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with running.lock:  # an evaluate_once under way
            pass

    async def _run(self, running: _Running) -> None:
        group = running.group
        interval = group.interval_ms
        ts = group.eval_timestamp(int(self.clock() * 1000)) + interval
        while True:
            delay = ts / 1000 - self.clock()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(running.stop.wait(), delay)
            if running.stop.is_set():
                return
            try:
                await self._evaluate(running, ts)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad iteration
                logger.exception("telemetry: rule group %r: the iteration failed", group.name)
            missed = (int(self.clock() * 1000) - ts) // interval - 1
            if missed > 0:
                group.metrics.iterations_missed += missed
            ts += (max(missed, 0) + 1) * interval

    async def _evaluate(self, running: _Running, ts_ms: int) -> list[OutgoingAlert]:
        async with running.lock:
            alerts = await asyncio.to_thread(running.group.evaluate, self.engine,
                                             self.storage, ts_ms)
        self.sender.send(alerts)
        return alerts

    async def evaluate_once(self) -> list[OutgoingAlert]:
        """Every group once, at its latest slot for the clock's time (what the background
        tasks do each interval; for tests and tools that drive the clock); the alerts
        handed to the sender."""
        now_ms = int(self.clock() * 1000)
        sent: list[OutgoingAlert] = []
        for running in self.groups_running():
            sent += await self._evaluate(running, running.group.eval_timestamp(now_ms))
        return sent

    # -- views ---------------------------------------------------------------------------

    def groups_running(self) -> list[_Running]:
        return [self._groups[k] for k in sorted(self._groups)]

    def groups(self) -> list[Group]:
        """The groups, by file and name."""
        return [r.group for r in self.groups_running()]

    def group(self, file: str, name: str) -> Group | None:
        running = self._groups.get((file, name))
        return running.group if running else None

    def rules(self) -> list[Rule]:
        return [rule for group in self.groups() for rule in group.rules]

    def metrics(self) -> dict[str, float]:
        """A snapshot of the manager's counters and gauges, Prometheus's rule-manager and
        notifier metrics under ``geoplex_telemetry_rule_*`` names (``name{label="v"}``)."""
        out: dict[str, float] = {}
        rule_s = group_s = 0.0
        evaluations = iterations = 0
        states = {AlertState.PENDING: 0, AlertState.FIRING: 0}
        for group in self.groups():
            m = group.metrics
            key = f'{{rule_group={quote(f"{group.file};{group.name}")}}}'
            out[f"geoplex_telemetry_rule_evaluations_total{key}"] = m.evaluations
            out[f"geoplex_telemetry_rule_evaluation_failures_total{key}"] = m.failures
            out[f"geoplex_telemetry_rule_group_iterations_total{key}"] = m.iterations
            out[f"geoplex_telemetry_rule_group_iterations_missed_total{key}"] = \
                m.iterations_missed
            out[f"geoplex_telemetry_rule_group_rules{key}"] = len(group.rules)
            out[f"geoplex_telemetry_rule_group_interval_seconds{key}"] = group.interval_ms / 1000
            out[f"geoplex_telemetry_rule_group_last_duration_seconds{key}"] = m.last_duration_s
            out[f"geoplex_telemetry_rule_group_last_evaluation_timestamp_seconds{key}"] = (
                (group.last_evaluation_ms or 0) / 1000)
            out[f"geoplex_telemetry_rule_group_last_evaluation_samples{key}"] = m.last_samples
            out[f"geoplex_telemetry_rule_samples_rejected_total{key}"] = m.samples_rejected
            rule_s += m.rule_seconds
            group_s += m.group_seconds
            evaluations += m.evaluations
            iterations += m.iterations
            for rule in group.rules:
                if isinstance(rule, AlertingRule):
                    for alert in rule.alerts():
                        if alert.state in states:
                            states[alert.state] += 1
        out["geoplex_telemetry_rule_evaluation_duration_seconds_sum"] = rule_s
        out["geoplex_telemetry_rule_evaluation_duration_seconds_count"] = evaluations
        out["geoplex_telemetry_rule_group_duration_seconds_sum"] = group_s
        out["geoplex_telemetry_rule_group_duration_seconds_count"] = iterations
        out["geoplex_telemetry_rule_groups"] = len(self._groups)
        out["geoplex_telemetry_rule_rules"] = sum(len(g.rules) for g in self.groups())
        out["geoplex_telemetry_rule_file_errors"] = len(self.load_errors)
        for state, count in states.items():
            out[f'geoplex_telemetry_rule_alerts{{state="{state.value}"}}'] = count
        sender = self.sender
        for address, stats in sender.stats().items():
            key = f"{{notifier={quote(address)}}}"
            out[f"geoplex_telemetry_rule_notifications_sent_total{key}"] = stats.sent
            out[f"geoplex_telemetry_rule_notifications_errors_total{key}"] = stats.errors
            out[f"geoplex_telemetry_rule_notifications_latency_seconds_sum{key}"] = stats.seconds
            out[f"geoplex_telemetry_rule_notifications_latency_seconds_count{key}"] = stats.calls
        out["geoplex_telemetry_rule_notifications_dropped_total"] = sender.dropped
        out["geoplex_telemetry_rule_notifications_queue_length"] = sender.queue_length
        out["geoplex_telemetry_rule_notifications_queue_capacity"] = sender.capacity
        out["geoplex_telemetry_rule_notifiers"] = len(sender.addresses)
        return out
