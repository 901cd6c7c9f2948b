"""The dispatcher: the notifier's application, on asyncio.

It holds one :class:`~.domain.NotifierState` and drives it: alerts come in
(:meth:`Dispatcher.post_alerts`), one loop sleeps until the next group timer (or a post,
or a silence change, wakes it), flushes the groups that are due and sends what they plan.
Each notification is sent by a task of its own:

1. **claim** it among the nodes (``ClaimStore.claim`` on its idempotency key): a node
   whose claim loses logs the notification as sent (the winner sends it) and stops. With
   etcd unreachable a node sends without a claim (a repeat beats a page nobody gets);
2. **send** it through each channel of its receiver (those with ``send_resolved: false``
   skip one that holds resolved alerts only), each with its own retries: up to
   ``retry_attempts`` attempts of at most ``send_timeout_s``, exponential jittered
   backoff between, none after a ``DeliveryError`` with ``retryable=False``; every attempt
   is written to the notification log (delivered / retrying / failed, attempts, the last
   error, the node);
3. **record** the outcome in the state: delivered by any channel means the receiver was
   told (the log entry moves on); nothing delivered gives the claim back, and the group's
   next flush tries again.

Silences live in the shared store; every node follows them. Counters are kept in one
place (:class:`Counters`) and read with :meth:`Dispatcher.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from geoplex.servers._runtime.errors import Aborted, NotFound, Unavailable

from .config import NotifierConfig
from .domain import (
    ListedAlert,
    Matcher,
    MatcherInput,
    NotifierState,
    Planned,
    PostedAlert,
    Silence,
    SilenceState,
    backoff_delay,
    check_expire,
    new_silence,
    silence_filter_matches,
    silence_order,
)
from .notification import DeliveryError, Notification
from .ports import Channel, DeliveryState, NotificationRecord, SharedState

log = logging.getLogger(__name__)

MAX_SLEEP_S = 1.0  # the loop looks at least this often (resolve timeouts, retention)
MAINTAIN_EVERY_S = 10.0  # log trimming and silence retention
STOP_GRACE_S = 5.0  # sends in flight may finish this long at shutdown
FIRST_SILENCES_S = 5.0  # start-up waits this long for the silences before flushing
_MAX_ERROR = 512

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric: OpenTelemetry / Prometheus style name and labels."""

    name: str
    labels: Mapping[str, str]
    value: float
    kind: str = "counter"  # or "gauge"

    def __str__(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}} {self.value:g}"


FAILURE_REASONS = ("not_retryable", "attempts_exhausted")  # ..._failed_total{reason}


@dataclass
class Counters:
    """The notifier's counters, in one place:

    - ``geoplex_notifier_notifications_total{integration,receiver}``: notifications handed
      to a channel (one each, however many attempts it took);
    - ``geoplex_notifier_notifications_failed_total{integration,receiver,reason}``: of
      those, given up (``reason``: ``not_retryable`` or ``attempts_exhausted``);
    - ``geoplex_notifier_notification_requests_total{integration,receiver}`` and
      ``..._requests_failed_total``: delivery attempts, and the failed ones;
    - ``geoplex_notifier_notifications_claimed_elsewhere_total{receiver}``: notifications
      another node claimed first (so this one did not send them);
    - ``geoplex_notifier_alerts_received_total{status}``: alerts posted.
    """

    values: dict[tuple[str, LabelSet], float] = field(default_factory=dict)

    def inc(self, name: str, /, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0.0) + 1.0

    def zero_deliveries(self, **labels: str) -> None:
        """Start one channel's delivery series at 0, so that its first failure is an
        increase (``increase()`` does not count a series' first sample)."""
        names = ("geoplex_notifier_notifications_total",
                 "geoplex_notifier_notification_requests_total",
                 "geoplex_notifier_notification_requests_failed_total")
        series = [(name, labels) for name in names]
        series += [("geoplex_notifier_notifications_failed_total", {**labels, "reason": r})
                   for r in FAILURE_REASONS]
        for name, pairs in series:
            self.values.setdefault((name, tuple(sorted(pairs.items()))), 0.0)

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def samples(self) -> list[Sample]:
        return [Sample(name, dict(labels), value)
                for (name, labels), value in sorted(self.values.items())]


def wants(channel: Channel, n: Notification) -> bool:
    """Whether ``channel`` sends ``n``: not one of resolved alerts only when the channel
    does not send resolved alerts."""
    if getattr(channel, "send_resolved", True):
        return True
    return any(a.status == "firing" for a in n.alerts)


class Dispatcher:
    """Alerts in, notifications out; silences and the log through the shared state."""

    def __init__(self, config: NotifierConfig, channels: Mapping[str, Sequence[Channel]],
                 shared: SharedState, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.channels = {name: tuple(chans) for name, chans in channels.items()}
        self.shared = shared
        self.clock = clock
        self.rng = rng or random.Random()
        alerting = config.alerting
        self.state = NotifierState(
            alerting.route, alerting.inhibit_rules, resolve_timeout=config.resolve_timeout_s,
            external_url=config.external_url,
            send_resolved={r.name: any(getattr(c, "send_resolved", True)
                                       for c in self.channels.get(r.name, ()))
                           for r in alerting.receivers})
        self.counters = Counters()
        for receiver, held in self.channels.items():  # every configured delivery at 0
            for channel in held:
                self.counters.zero_deliveries(integration=channel.integration,
                                              receiver=receiver)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        self._closing = False

    @property
    def node(self) -> str:
        return self.config.node

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, wait_for_silences: float = FIRST_SILENCES_S) -> None:
        """Follow the silences (waiting up to ``wait_for_silences`` for the first list, so
        nothing silenced is sent at start), then run the loop and the maintenance."""
        listed = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._follow_silences(listed),
                                               name="notifier silences"))
        try:
            if wait_for_silences > 0:
                async with asyncio.timeout(wait_for_silences):
                    await listed.wait()
        except TimeoutError:
            log.warning("the silences are not known yet (etcd does not answer); alerts are "
                        "notified without them until they are")
        self._tasks.append(asyncio.create_task(self._run(), name="notifier dispatch"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="notifier maintenance"))

    async def stop(self) -> None:
        """Stop looking; let sends in flight finish for a few seconds, cancel the rest;
        close the channels."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for chans in self.channels.values():
            for channel in chans:
                try:
                    await channel.close()
                except Exception:  # noqa: BLE001 - closing one must not stop the others
                    log.exception("closing a %s channel failed", channel.integration)

    # -- alerts ---------------------------------------------------------------------------

    def post_alerts(self, posted: Sequence[PostedAlert]) -> int:
        now = self.clock()
        for alert in posted:
            resolved = alert.ends_at is not None and alert.ends_at <= now
            self.counters.inc("geoplex_notifier_alerts_received_total",
                              status="resolved" if resolved else "firing")
        taken = self.state.put(posted, now)
        self._wake.set()
        return taken

    def list_alerts(self, matchers: Sequence[Matcher] = (), *, include_suppressed: bool = False,
                    include_resolved: bool = False) -> list[ListedAlert]:
        return self.state.listed(self.clock(), matchers, include_suppressed=include_suppressed,
                                 include_resolved=include_resolved)

    # -- silences -------------------------------------------------------------------------

    async def create_silence(self, matchers: Sequence[MatcherInput], starts_at: float | None,
                             ends_at: float | None, created_by: str, comment: str) -> Silence:
        now = self.clock()
        silence = new_silence(uuid.uuid4().hex, matchers, starts_at, ends_at, created_by,
                              comment, now)
        await self.shared.create_silence(silence)
        self._apply_silence(silence)
        log.info("silence %s created by %s (%d matchers, until %.0f)", silence.id,
                 silence.created_by, len(silence.matchers), silence.ends_at)
        return silence

    async def get_silence(self, silence_id: str) -> Silence:
        held = self.state.silences.get(silence_id)
        if held is not None:
            return held
        stored = await self.shared.get_silence(silence_id)  # made on another node just now
        if stored is None:
            raise NotFound("no silence has this id", reason="SILENCE_NOT_FOUND")
        self._apply_silence(stored.silence)
        return stored.silence

    def list_silences(self, matchers: Sequence[Matcher] = (), *,
                      include_expired: bool = False) -> list[Silence]:
        now = self.clock()
        found = [s for s in self.state.silences.values()
                 if (include_expired or s.state(now) is not SilenceState.EXPIRED)
                 and silence_filter_matches(s, matchers)]
        return sorted(found, key=lambda s: silence_order(s, now))

    async def expire_silence(self, silence_id: str, expired_by: str, comment: str) -> Silence:
        check_expire(expired_by, comment)
        for _ in range(5):
            stored = await self.shared.get_silence(silence_id)
            if stored is None:
                raise NotFound("no silence has this id", reason="SILENCE_NOT_FOUND")
            now = self.clock()
            if stored.silence.state(now) is SilenceState.EXPIRED:
                self._apply_silence(stored.silence)
                return stored.silence  # expired already: nothing changes (idempotent)
            ended = stored.silence.expire(now, expired_by.strip(), comment)
            if await self.shared.replace_silence(ended, stored.revision):
                self._apply_silence(ended)
                log.info("silence %s expired by %s", silence_id, ended.expired_by)
                return ended
        raise Aborted("the silence kept changing while it was being expired; try again")

    def _apply_silence(self, silence: Silence) -> None:
        held = self.state.silences.get(silence.id)
        if held is not None and held.updated_at > silence.updated_at:
            return  # an older version (a watch event behind what this node wrote)
        self.state.set_silence(silence, self.clock())
        self._wake.set()

    async def _follow_silences(self, listed: asyncio.Event) -> None:
        changes = self.shared.follow_silences()
        try:
            async for batch in changes:
                for silence_id, silence in batch:
                    if silence is None:
                        self.state.drop_silence(silence_id)
                    else:
                        self._apply_silence(silence)
                listed.set()
                self._wake.set()
        finally:
            await changes.aclose()

    # -- the notification log -------------------------------------------------------------

    async def list_notifications(self, receiver: str = "") -> list[NotificationRecord]:
        records = await self.shared.records()
        return [r for r in records if not receiver or r.receiver == receiver]

    def metrics(self) -> list[Sample]:
        """The counters, and gauges of what the node holds now."""
        now = self.clock()
        out = self.counters.samples()
        states: dict[str, int] = {"active": 0, "suppressed": 0, "resolved": 0}
        for listed in self.state.listed(now, include_suppressed=True, include_resolved=True):
            states[listed.state.value] += 1
        out += [Sample("geoplex_notifier_alerts", {"state": k}, v, "gauge")
                for k, v in states.items()]
        silences = {s.value: 0 for s in SilenceState}
        for silence in self.state.silences.values():
            silences[silence.state(now).value] += 1
        out += [Sample("geoplex_notifier_silences", {"state": k}, v, "gauge")
                for k, v in silences.items()]
        out.append(Sample("geoplex_notifier_aggregation_groups", {}, len(self.state.groups),
                          "gauge"))
        return out

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self.step()
                now = self.clock()
                delay = min(MAX_SLEEP_S, max(0.0, self.state.next_deadline(now) - now))
            except Exception:  # noqa: BLE001 - the loop must outlive one bad step
                log.exception("the notifier's dispatch step failed; going on")
                delay = MAX_SLEEP_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # a timer, or woken by a change
                    await self._wake.wait()

    def step(self) -> list[Planned]:
        """One pass: expiry notices, then the groups that are due; starts their sends."""
        now = self.clock()
        planned = self.state.silence_notices(now)
        due = self.state.due(now)
        if due:
            inhibitor = self.state.inhibitor(now)
            for group in due:
                one = self.state.flush(group, now, inhibitor)
                if one is not None:
                    planned.append(one)
        self.state.gc(now)
        for one in planned:
            task = asyncio.create_task(self._deliver(one), name="notifier send")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return planned

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)  # a timer: housekeeping
            try:
                dropped = await self.shared.trim(self.config.log_limit)
                if dropped:
                    log.debug("notification log: %d old records dropped", dropped)
                await self._forget_old_silences()
            except Unavailable as exc:
                log.warning("notifier maintenance skipped: %s", exc)
            except Exception:  # noqa: BLE001 - housekeeping must outlive one bad pass
                log.exception("notifier maintenance failed; retrying later")

    async def _forget_old_silences(self) -> None:
        cutoff = self.clock() - self.config.silence_retention_s
        for silence in list(self.state.silences.values()):
            if silence.ends_at < cutoff:
                stored = await self.shared.get_silence(silence.id)
                if stored is None or await self.shared.delete_silence(silence.id,
                                                                      stored.revision):
                    self.state.drop_silence(silence.id)

    # -- sending --------------------------------------------------------------------------

    async def _deliver(self, planned: Planned) -> None:
        n = planned.notification
        key = n.idempotency_key
        sent = False
        claimed = False
        chosen = [c for c in self.channels.get(n.receiver, ()) if wants(c, n)]
        try:
            if not chosen:
                sent = True  # nothing of it for any channel (resolved only; or no channel)
                return
            try:
                holder = await self.shared.claim(key, self.node, self.clock(),
                                                 planned.claim_ttl, planned.reclaim_after)
                claimed = holder is None
            except Unavailable as exc:
                holder = None
                log.warning("notification %s for %s: cannot claim it (%s); sending anyway "
                            "(another node may send it too)", key, n.receiver, exc)
            if holder is not None:
                self.counters.inc("geoplex_notifier_notifications_claimed_elsewhere_total",
                                  receiver=n.receiver)
                log.info("notification %s (%s) for receiver %s: claimed by %s, not sent "
                         "from here", key, n.kind.value, n.receiver, holder)
                sent = True
                return
            results = await asyncio.gather(*(self._send(c, planned) for c in chosen))
            sent = any(results)
            if not sent and claimed:
                with contextlib.suppress(Unavailable):
                    await self.shared.release(key, self.node)
        except asyncio.CancelledError:
            if claimed and not sent:  # stopped mid-send: let another node or a restart try
                with contextlib.suppress(Unavailable, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.shared.release(key, self.node)
            raise
        finally:
            self.state.done(planned, self.clock(), sent)
            self._wake.set()

    async def _send(self, channel: Channel, planned: Planned) -> bool:
        """Deliver through one channel with retries; True once delivered."""
        n = planned.notification
        labels = {"integration": channel.integration, "receiver": n.receiver}
        created = self.clock()
        record_id = f"{int(created * 1e9):020d}-{self.node}-{next(self._ids):06d}"
        attempt = 0
        self.counters.inc("geoplex_notifier_notifications_total", **labels)
        while True:
            attempt += 1
            retryable = True
            self.counters.inc("geoplex_notifier_notification_requests_total", **labels)
            try:
                async with asyncio.timeout(self.config.send_timeout_s):
                    await channel.send(n)
            except DeliveryError as exc:
                error, retryable = str(exc) or type(exc).__name__, exc.retryable
            except TimeoutError:
                error = f"no answer within {self.config.send_timeout_s:g} s"
            except Exception as exc:  # noqa: BLE001 - a channel's bug fails its notification
                log.exception("the %s channel of receiver %s failed unexpectedly",
                              channel.integration, n.receiver)
                error, retryable = f"the channel failed ({type(exc).__name__})", False
            else:
                await self._record(record_id, channel, planned, created,
                                   DeliveryState.DELIVERED, attempt, "")
                return True
            self.counters.inc("geoplex_notifier_notification_requests_failed_total", **labels)
            if not retryable or attempt >= self.config.retry_attempts or self._closing:
                reason = FAILURE_REASONS[0] if not retryable else FAILURE_REASONS[1]
                self.counters.inc("geoplex_notifier_notifications_failed_total",
                                  reason=reason, **labels)
                log.warning("notification %s to %s/%s failed after %d attempt(s): %s",
                            n.idempotency_key, n.receiver, channel.integration, attempt, error)
                await self._record(record_id, channel, planned, created, DeliveryState.FAILED,
                                   attempt, error)
                return False
            await self._record(record_id, channel, planned, created, DeliveryState.RETRYING,
                               attempt, error)
            await asyncio.sleep(backoff_delay(attempt, self.config.retry_base_s,
                                              self.config.retry_max_s, self.rng))  # backoff

    async def _record(self, record_id: str, channel: Channel, planned: Planned,
                      created: float, state: DeliveryState, attempts: int, error: str) -> None:
        n = planned.notification
        record = NotificationRecord(
            record_id, n.receiver, channel.integration, n.group_key, n.kind,
            tuple(sorted(a.fingerprint for a in n.alerts)), created, state, attempts,
            error[:_MAX_ERROR], self.node)
        try:
            await self.shared.record(record)
        except Unavailable as exc:
            log.warning("notification log: record %s not written (%s)", record_id, exc)
