"""A restart mid-firing does not page again, end to end: a real telemetry process
evaluates an alerting rule every 200 ms and posts the firing alert to a real notifier
process (its state in the session's etcd), which pages a real webhook receiver once. The
telemetry process is then killed (SIGKILL) and started again on the same data directory:
it restores the alert from its ``ALERTS`` / ``ALERTS_FOR_STATE`` series, fires it again at
once with the same start and re-posts it; the notifier takes the re-post (the alert's
``ends_at`` moves on) and, over many evaluations after it, pages nobody again."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.notifier import NotifierClient
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import BackendUrls
from geoplex.notifier.v1 import notifier_pb2 as npb

from polling import eventually
from test_alerting_rules_process import _state, start_rules_telemetry

# the notifier's contract tests keep the webhook receiver and their timers beside them;
# pytest puts that folder on sys.path only when it collects a test there
NOTIFIER_TESTS = Path(__file__).resolve().parent.parent / "notifier"
if str(NOTIFIER_TESTS) not in sys.path:
    sys.path.append(str(NOTIFIER_TESTS))

from notifier_hook import HookServer, Received  # noqa: E402
from notifier_setup import GROUP_INTERVAL_S, GROUP_WAIT_S  # noqa: E402

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(90)

ALERT = 'ALERTS{alertname="QueueBacklog", alertstate="%s"}[30s]'
INTERVAL_S = 0.2  # RULES' group interval
# evaluations to watch after the re-post reached the notifier: three group intervals of
# the notifier's, each a flush that would page if it thought the alert new
ROUNDS_AFTER = math.ceil(3 * GROUP_INTERVAL_S / INTERVAL_S) + 1


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer().start()
    yield server
    server.stop()


def pages(hook: HookServer) -> list[Received]:
    return hook.received("/hook")


async def held(nf: NotifierClient) -> npb.Alert | None:
    """The one alert the notifier holds (None until it holds exactly one)."""
    found = (await nf.list_alerts()).alerts
    return found[0].alert if len(found) == 1 else None


async def evaluations_since(tm: TelemetryClient, state: str, since_ms: int) -> list[int]:
    """The times of the evaluations after ``since_ms`` that wrote ALERTS{alertstate=state}."""
    answer = await tm.query(ALERT % state)
    return sorted(s.timestamp_ms for ts in answer.matrix for s in ts.samples
                  if s.timestamp_ms > since_ms and not math.isnan(s.value))


def rfc3339_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_telemetry_restart_mid_firing_does_not_page_again(
        server_factory: Callable[..., ServerProcess], backends: BackendUrls,
        hook: HookServer, tmp_path: Path) -> None:
    notifier = server_factory("notifier", {
        **backends.env(), "GEOPLEX_NOTIFIER_ID": "1",
        "GEOPLEX_NOTIFIER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
        "GEOPLEX_NOTIFIER_WEBHOOK_URL": hook.url("/hook"),
        "GEOPLEX_NOTIFIER_GROUP_WAIT": f"{int(GROUP_WAIT_S * 1000)}ms",
        "GEOPLEX_NOTIFIER_GROUP_INTERVAL": f"{int(GROUP_INTERVAL_S * 1000)}ms",
        "GEOPLEX_NOTIFIER_REPEAT_INTERVAL": "1h",
        "GEOPLEX_NOTIFIER_RETRY_BASE_SECONDS": "0.05",
        "GEOPLEX_NOTIFIER_RETRY_MAX_SECONDS": "0.2"}, "restart-notifier")
    telemetry, http_port = start_rules_telemetry(server_factory, tmp_path, notifier.address,
                                                 "restart-telemetry")
    try:
        async with aiohttp.ClientSession() as http, \
                NotifierClient(notifier.address, ChannelOptions(retry=False)) as nf:
            async with TelemetryClient(telemetry.address, ChannelOptions(retry=False)) as tm:
                await tm.write([series({"__name__": "test_queue_depth", "queue": "orders"},
                                       [(int(time.time() * 1000), 250.0)])])
            firing = await eventually(lambda: _state(http, http_port, "firing"), 10,
                                      what="the alert firing (for: 1s)", every=0.05)
            (page,) = await eventually(lambda: pages(hook), 10, what="the page")
            assert page.body["status"] == "firing"
            (paged,) = page.alerts
            assert paged["labels"] == {"alertname": "QueueBacklog", "queue": "orders",
                                       "severity": "page"}
            before = await held(nf)
            assert before is not None
            starts_ms = before.starts_at.ToMilliseconds()
            # the notifier holds times as float seconds: its two renderings round apart
            assert abs(rfc3339_ms(paged["startsAt"]) - starts_ms) <= 1

            # killed mid-firing, started again on the same data directory
            killed_ms = int(time.time() * 1000)
            assert await asyncio.to_thread(telemetry.stop, signal.SIGKILL) == -signal.SIGKILL
            await asyncio.to_thread(telemetry.start, 20.0)
            again = await eventually(lambda: _state(http, http_port, "firing"), 10,
                                     what="the alert firing after the restart",
                                     ignore=(aiohttp.ClientError,), every=0.05)
            assert again["activeAt"] == firing["activeAt"]

            async def reposted() -> list[npb.Alert]:
                alert = await held(nf)
                return [alert] if alert is not None and (
                    alert.ends_at.ToMilliseconds() > before.ends_at.ToMilliseconds()) else []

            (after,) = await eventually(reposted, 10,
                                        what="the re-post reaching the notifier", every=0.05)
            reposted_ms = int(time.time() * 1000)
            async with TelemetryClient(telemetry.address, ChannelOptions(retry=False)) as tm:
                async def rounds() -> list[int]:
                    found = await evaluations_since(tm, "firing", reposted_ms)
                    return found if len(found) >= ROUNDS_AFTER else []

                await eventually(rounds, 10, what=f"{ROUNDS_AFTER} evaluations after the "
                                 "re-post", every=0.1)
                # firing from its first evaluation on: never pending again (a new start)
                assert await evaluations_since(tm, "pending", killed_ms) == []

            assert pages(hook) == [page]  # paged once, not again
            log = (await nf.list_notifications()).notifications
            assert [(n.kind, n.state) for n in log] == [
                (npb.NOTIFICATION_KIND_FIRING, npb.DELIVERY_STATE_DELIVERED)]
            assert after.starts_at.ToMilliseconds() == starts_ms  # the same start
            assert dict(after.labels) == paged["labels"]
    finally:
        await asyncio.to_thread(telemetry.stop)
        await asyncio.to_thread(notifier.stop)
