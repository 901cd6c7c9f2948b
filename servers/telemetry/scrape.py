"""Pull ingestion: scrape Prometheus text-format and OpenMetrics endpoints into the store,
as Prometheus's scrape loop does (the targets come from :mod:`.scrape_config`).

Each target has its own loop. Its scrapes fall on a fixed grid of the wall clock, every
``interval`` seconds shifted by a stable hash of the target, so targets spread over the
interval and keep their slot across restarts. A scrape is one HTTP GET (OpenMetrics
asked for first, the text format accepted), parsed with prometheus-client's parsers; its
samples get the target's labels and, unless the exposition gives its own timestamp and
the job honours it, the scrape's start time. One append stores them together with:

- the report series Prometheus writes per scrape: ``up``, ``scrape_duration_seconds``,
  ``scrape_samples_scraped``, ``scrape_samples_post_metric_relabeling`` (there is no
  relabelling, so the samples after dropping in-scrape duplicates) and
  ``scrape_series_added`` (series not in the previous successful scrape);
- a stale marker (:data:`~.tsdb.chunks.STALE_NAN`) for each series of the previous scrape
  that this one lacks.

A failed scrape (unreachable, a timeout, an HTTP status other than 200, an exposition
that does not parse, a batch the store or the tenant's sample rate refuses) writes
``up`` 0 and stale markers for every series of the previous scrape. A target that is
removed, or a manager that stops, marks its series and its report series stale. Series
with their own timestamps are not marked stale, as in Prometheus.

Labels: a scraped label that a target label (``job``, ``instance``, static labels) also
names is kept as ``exported_<name>``, unless the job has ``honor_labels``, when the
scraped value wins. Logs say the job and instance, never the URL (it may hold a
password), and only when a target goes down or comes back (each failure at DEBUG).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Timestamp

from geoplex import __version__
from geoplex.servers._runtime.config import Env
from geoplex.servers._runtime.errors import FailedPrecondition, GeoplexError, InvalidArgument

from .limits import DEFAULT_TENANT, SampleRateLimit
from .scrape_config import ScrapeConfig, ScrapeTarget
from .tsdb.api import Storage
from .tsdb.chunks import STALE_NAN
from .tsdb.labels import METRIC_NAME, Labels, labels_of

logger = logging.getLogger(__name__)

ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
OPENMETRICS_TYPE = "application/openmetrics-text"
MAX_BODY_BYTES = 64 << 20
EXPORTED_PREFIX = "exported_"
REPORT_NAMES = ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                "scrape_samples_post_metric_relabeling", "scrape_series_added")
MAX_ERROR_CHARS = 200

# the OpenMetrics parser is untyped; its signature, as the text parser's
_parse_openmetrics: Callable[[str], Iterable[Metric]] = (
    openmetrics_parser.text_string_to_metric_families)
# `# TYPE name counter` in the text format: the parser appends `_total` to the samples of
# a counter whose name lacks it, which is not the series the target exposed
_COUNTER_TYPE_LINE = re.compile(r"^[ \t]*#[ \t]+TYPE[ \t]+(\S+)[ \t]+counter[ \t]*$",
                                re.MULTILINE)

Sample = tuple[Labels, int, float]


class ScrapeFailed(Exception):
    """Why one scrape produced nothing (short: it becomes the target's last error)."""


@dataclass(frozen=True, slots=True)
class ExposedSample:
    """One sample line of an exposition: its full series name (``http_requests_total``,
    ``x_created``, ``x_bucket``), labels as exposed, value, and own timestamp if any."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int | None = None


def parse_exposition(text: str, content_type: str = "") -> list[ExposedSample]:
    """The samples of an exposition, OpenMetrics when ``content_type`` says so, else the
    Prometheus text format; ScrapeFailed when it does not parse. Native histograms are
    skipped (the store keeps floats only)."""
    openmetrics = content_type.split(";", 1)[0].strip().lower() == OPENMETRICS_TYPE
    out = []
    try:
        if openmetrics:
            families = _parse_openmetrics(text)
            renamed: set[str] = set()
        else:
            families = text_string_to_metric_families(text)
            renamed = ({name.strip('"') for name in _COUNTER_TYPE_LINE.findall(text)}
                       if "counter" in text else set())
        for family in families:
            restore = family.type == "counter" and family.name in renamed
            for sample in family.samples:
                if sample.native_histogram is not None:
                    continue
                name = sample.name
                if restore and name == family.name + "_total":
                    name = family.name  # the name it was exposed with
                out.append(ExposedSample(name, tuple(sample.labels.items()),
                                         float(sample.value), _ms(sample.timestamp)))
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as error:
        kind = "OpenMetrics" if openmetrics else "text format"
        raise ScrapeFailed(f"the {kind} exposition does not parse: "
                           f"{_short(str(error) or type(error).__name__)}") from None
    return out


def _ms(timestamp: float | Timestamp | None) -> int | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, Timestamp):
        return timestamp.sec * 1000 + int(timestamp.nsec / 1_000_000)
    return round(timestamp * 1000)  # the text parser divides the exposed ms by 1000


def merge_labels(exposed: Iterable[tuple[str, str]], name: str,
                 target: Sequence[tuple[str, str]], honor_labels: bool) -> dict[str, str]:
    """A sample's labels with the target's, as Prometheus's ``mutateSampleLabels``: with
    ``honor_labels`` an exposed label wins; without, the target's wins and the exposed
    value moves to ``exported_<name>`` (``exported_exported_<name>`` if that is taken)."""
    labels = {key: value for key, value in exposed if value}
    labels[METRIC_NAME] = name
    if honor_labels:
        for key, value in target:
            if not labels.get(key):
                labels[key] = value
        return labels
    conflicts = []
    for key, value in target:
        if labels.get(key):
            conflicts.append((key, labels[key]))
        labels[key] = value
    for key, value in sorted(conflicts, key=lambda c: len(c[0])):
        renamed = key
        while True:
            renamed = EXPORTED_PREFIX + renamed
            if not labels.get(renamed):
                labels[renamed] = value
                break
    return labels


def scrape_offset(now_s: float, interval_s: float, seed: int) -> float:
    """Seconds until a target's next slot: Prometheus's ``Target.offset``, slots at
    ``seed mod interval`` past each multiple of the interval since the epoch."""
    interval_ns = max(1, int(interval_s * 1e9))
    base = interval_ns - int(now_s * 1e9) % interval_ns
    delay = base + seed % interval_ns
    if delay > interval_ns:
        delay -= interval_ns
    return delay / 1e9


def target_seed(target: ScrapeTarget) -> int:
    """A stable hash of the target (its URL and labels), the same in every process."""
    identity = "\x00".join([target.url, *(f"{n}={v}" for n, v in target.labels)])
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big")


class Health(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """A target as Prometheus's ``/api/v1/targets`` shows it."""

    target: ScrapeTarget
    health: Health
    last_error: str
    last_scrape_ms: int | None
    last_duration_s: float
    scrapes: int  # attempts so far, failed ones included


@dataclass(frozen=True, slots=True)
class _Scraped:
    samples: list[Sample]
    tracked: set[Labels]  # the series without their own timestamps: these go stale
    total: int            # sample lines in the exposition


class _TargetLoop:
    """One target's scrapes and the series they wrote. The store's calls run in threads;
    the bookkeeping shares a lock with them, so a cancelled scrape still records what its
    append stored and nothing is written after the end-of-run stale markers."""

    def __init__(self, target: ScrapeTarget, store: Storage, session: aiohttp.ClientSession,
                 limit: SampleRateLimit | None, tenant: str) -> None:
        self.target = target
        self.store = store
        self.session = session
        self.limit = limit
        self.tenant = tenant
        self.report_labels = [labels_of({**dict(target.labels), METRIC_NAME: name})
                              for name in REPORT_NAMES]
        self.health = Health.UNKNOWN
        self.last_error = ""
        self.last_scrape_ms: int | None = None
        self.last_duration_s = 0.0
        self.scrapes = 0
        self._lock = threading.Lock()
        self._previous: set[Labels] = set()  # tracked series of the last scrape
        self._seen: set[Labels] = set()      # every series of the last successful scrape
        self._written_ms: int | None = None  # the last scrape's time in the store
        self._closed = False

    def status(self) -> TargetStatus:
        return TargetStatus(self.target, self.health, self.last_error, self.last_scrape_ms,
                            self.last_duration_s, self.scrapes)

    async def run(self) -> None:
        interval = self.target.interval_s
        loop = asyncio.get_running_loop()
        await asyncio.sleep(scrape_offset(time.time(), interval, target_seed(self.target)))
        next_at = loop.time()
        while True:
            try:
                await self.scrape_once()
            except Exception:  # a bug must not end the target's scrapes
                logger.exception("scrape of %s (job %s): unexpected error",
                                 self.target.instance, self.target.job)
            next_at += interval
            now = loop.time()
            if next_at <= now:  # the scrape overran its slot: skip the slots it missed
                next_at += (math.floor((now - next_at) / interval) + 1) * interval
            await asyncio.sleep(next_at - now)

    async def scrape_once(self) -> None:
        start_s = time.time()
        started = time.perf_counter()
        t_ms = int(start_s * 1000)
        error = ""
        try:
            body, content_type = await self._fetch()
            scraped = await asyncio.to_thread(self._scraped, body, content_type, t_ms)
            await asyncio.to_thread(self._commit, scraped, t_ms, time.perf_counter() - started)
        except ScrapeFailed as failure:
            error = str(failure)
        except GeoplexError as refused:  # SampleRejected, the tenant's rate, a closed store
            error = f"the store refused the scrape: {_short(refused.message)}"
        duration = time.perf_counter() - started
        if error:
            try:
                await asyncio.to_thread(self._commit_down, t_ms, duration)
            except GeoplexError as refused:
                logger.debug("scrape of %s (job %s): up=0 not stored: %s",
                             self.target.instance, self.target.job, _short(refused.message))
        self._record(t_ms, duration, error)

    async def _fetch(self) -> tuple[bytes, str]:
        timeout = self.target.timeout_s
        try:
            async with self.session.get(
                    self.target.url, timeout=aiohttp.ClientTimeout(total=timeout),
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}
                    ) as response:
                if response.status != 200:
                    raise ScrapeFailed(f"server returned HTTP status {response.status} "
                                       f"{response.reason or ''}".rstrip())
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise ScrapeFailed(f"body larger than {MAX_BODY_BYTES} bytes")
                return bytes(body), response.headers.get("Content-Type", "")
        except TimeoutError:
            raise ScrapeFailed(f"timed out after {timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as error:
            raise ScrapeFailed(_short(str(error) or type(error).__name__)) from None

    def _scraped(self, body: bytes, content_type: str, t_ms: int) -> _Scraped:
        """Parse and label (in a thread: it is the CPU-bound part)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ScrapeFailed("the exposition is not UTF-8") from None
        exposed = parse_exposition(text, content_type)
        samples: dict[Labels, Sample] = {}
        tracked: set[Labels] = set()
        for sample in exposed:
            try:
                labels = labels_of(merge_labels(sample.labels, sample.name,
                                                self.target.labels, self.target.honor_labels))
            except InvalidArgument as error:
                raise ScrapeFailed(_short(error.message)) from None
            if labels in samples:
                continue  # a repeated series: the first one counts, as in Prometheus
            own = sample.timestamp_ms if self.target.honor_timestamps else None
            if own is None:
                tracked.add(labels)
            samples[labels] = (labels, t_ms if own is None else own, sample.value)
        return _Scraped(list(samples.values()), tracked, len(exposed))

    def _report(self, t_ms: int, up: float, duration_s: float, scraped: int, kept: int,
                added: int) -> list[Sample]:
        values = (up, duration_s, float(scraped), float(kept), float(added))
        return [(labels, t_ms, value) for labels, value in zip(self.report_labels, values)]

    def _commit(self, scraped: _Scraped, t_ms: int, duration_s: float) -> None:
        """Store a scrape with its report and stale markers (in a thread)."""
        with self._lock:
            if self._closed:
                return
            stale = [(labels, t_ms, STALE_NAN) for labels in sorted(self._previous
                                                                     - scraped.tracked)]
            series = {labels for labels, _, _ in scraped.samples}
            report = self._report(t_ms, 1.0, duration_s, scraped.total, len(scraped.samples),
                                  len(series - self._seen))
            batch = [*scraped.samples, *stale, *report]
            if self.limit is not None:
                self.limit.take(self.tenant, len(batch))
            self.store.append(batch)
            self._previous, self._seen = scraped.tracked, series
            self._written_ms = t_ms

    def _commit_down(self, t_ms: int, duration_s: float) -> None:
        """A failed scrape: ``up`` 0 and every series of the previous scrape stale."""
        with self._lock:
            if self._closed:
                return
            stale = [(labels, t_ms, STALE_NAN) for labels in sorted(self._previous)]
            self.store.append([*stale, *self._report(t_ms, 0.0, duration_s, 0, 0, 0)])
            self._previous = set()
            self._written_ms = t_ms

    def end(self) -> None:
        """The target is gone: its series and report series stale now (in a thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._written_ms is None:
                return
            t_ms = max(int(time.time() * 1000), self._written_ms + 1)
            batch = [(labels, t_ms, STALE_NAN) for labels in [*sorted(self._previous),
                                                              *self.report_labels]]
            try:
                self.store.append(batch)
            except GeoplexError as refused:
                logger.warning("scrape of %s (job %s): stale markers not stored: %s",
                               self.target.instance, self.target.job, _short(refused.message))
            self._previous = set()

    def _record(self, t_ms: int, duration_s: float, error: str) -> None:
        was = self.health
        self.scrapes += 1
        self.last_scrape_ms, self.last_duration_s, self.last_error = t_ms, duration_s, error
        self.health = Health.DOWN if error else Health.UP
        job, instance = self.target.job, self.target.instance
        if error and was is not Health.DOWN:
            logger.warning("scrape of %s (job %s) failed: %s", instance, job, error)
        elif error:
            logger.debug("scrape of %s (job %s) failed: %s", instance, job, error)
        elif was is Health.DOWN:
            logger.info("scrape of %s (job %s) is up again", instance, job)


class ScrapeManager:
    """Scrapes every target of a :class:`ScrapeConfig` into ``store`` until stopped.

    ``limit`` (the tenant sample rate of the push paths) counts each scrape for ``tenant``;
    a scrape over it fails. :meth:`apply` swaps the targets: a removed one is marked
    stale, a new one starts in its slot. :meth:`stop` marks every target's series stale."""

    def __init__(self, store: Storage, config: ScrapeConfig,
                 limit: SampleRateLimit | None = None, *, tenant: str = DEFAULT_TENANT) -> None:
        self.store = store
        self.config = config
        self.limit = limit
        self.tenant = tenant
        self._loops: dict[ScrapeTarget, tuple[_TargetLoop, asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False

    @classmethod
    def from_env(cls, store: Storage, limit: SampleRateLimit | None = None,
                 env: Env | None = None) -> ScrapeManager:
        return cls(store, ScrapeConfig.from_env(env), limit)

    async def __aenter__(self) -> ScrapeManager:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.apply(self.config)
        if self.config.targets:
            logger.info("scraping %d targets", len(self.config.targets))

    async def apply(self, config: ScrapeConfig) -> None:
        """Scrape ``config``'s targets from now on; a target whose settings changed
        starts again."""
        if self._stopped:
            raise FailedPrecondition("the scrape manager is stopped")
        self.config = config
        wanted = set(config.targets)
        await asyncio.gather(*(self._end(target) for target in list(self._loops)
                               if target not in wanted))
        for target in config.targets:
            if target not in self._loops:
                loop = _TargetLoop(target, self.store, self._client(), self.limit,
                                   self.tenant)
                task = asyncio.create_task(loop.run(), name=f"scrape {target.job} "
                                                            f"{target.instance}")
                self._loops[target] = (loop, task)

    async def stop(self) -> None:
        """End every target (their series marked stale) and close the HTTP client."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.gather(*(self._end(target) for target in list(self._loops)))
        if self._session is not None:
            await self._session.close()
            self._session = None

    def targets(self) -> list[TargetStatus]:
        return [loop.status() for loop, _ in self._loops.values()]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Accept": ACCEPT, "User-Agent": f"geoplex-telemetry/{__version__}"},
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def _end(self, target: ScrapeTarget) -> None:
        loop, task = self._loops.pop(target)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(loop.end)


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 1] + "…"

