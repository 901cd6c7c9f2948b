"""Two real notifier nodes over the session's etcd, routing to an in-test webhook receiver.

Both nodes read one Alertmanager-format configuration (short timers: group_wait 300ms,
group_interval 500ms) and share one etcd prefix, as ``geoplex up`` runs them. Each test
labels its alerts ``test=<unique id>`` (group_by includes it), so tests never share a
group and each finds its own requests at the receiver. The API tests post to node 1 only;
the availability tests post to both.
"""

from __future__ import annotations

import importlib.util
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.notifier import NotifierClient
from geoplex.infra.local import BackendUrls

from notifier_hook import HookServer
from notifier_setup import GROUP_INTERVAL_S, GROUP_WAIT_S, REPEAT_S, RETRY_ATTEMPTS

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="session")
def hook() -> Iterator[HookServer]:
    server = HookServer().start()
    server.answer("/broken", 503)   # retryable
    server.answer("/refused", 400)  # not retryable
    yield server
    server.stop()


@pytest.fixture(scope="session")
def notifier_config(hook: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("notifier") / "alertmanager.yml"
    path.write_text(textwrap.dedent(f"""\
        route:
          receiver: hook
          group_by: [test, alertname]
          group_wait: {int(GROUP_WAIT_S * 1000)}ms
          group_interval: {int(GROUP_INTERVAL_S * 1000)}ms
          repeat_interval: 1h
          routes:
            - matchers: ['scenario="repeat"']
              receiver: hook
              repeat_interval: {int(REPEAT_S)}s
            - matchers: ['scenario="broken"']
              receiver: broken
            - matchers: ['scenario="refused"']
              receiver: refused
        receivers:
          - name: hook
            webhook_configs: [{{url: '{hook.url("/hook")}'}}]
          - name: broken
            webhook_configs: [{{url: '{hook.url("/broken")}'}}]
          - name: refused
            webhook_configs: [{{url: '{hook.url("/refused")}'}}]
        inhibit_rules:
          - source_matchers: ['severity="critical"']
            target_matchers: ['severity="warning"']
            equal: [test, cluster]
        """))
    return path


@pytest.fixture(scope="session")
def notifier_env(backends: BackendUrls, notifier_config: Path) -> dict[str, str]:
    return {**backends.env(), "GEOPLEX_NOTIFIER_CONFIG": str(notifier_config),
            "GEOPLEX_NOTIFIER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
            "GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT": "1h",
            "GEOPLEX_NOTIFIER_RETRY_ATTEMPTS": str(RETRY_ATTEMPTS),
            "GEOPLEX_NOTIFIER_RETRY_BASE_SECONDS": "0.05",
            "GEOPLEX_NOTIFIER_RETRY_MAX_SECONDS": "0.2",
            "GEOPLEX_NOTIFIER_SEND_TIMEOUT_SECONDS": "5",
            "GEOPLEX_LOG_LEVEL": "info"}


@pytest.fixture(scope="session")
def notifiers(notifier_env: dict[str, str],
              server_factory: Callable[..., ServerProcess]) -> list[ServerProcess]:
    """Node 1 and node 2, as `geoplex up` runs them (GEOPLEX_NOTIFIER_ID=i); etcd (through
    ``notifier_env``) is set up first, so it is stopped after them."""
    return [server_factory("notifier", {**notifier_env, "GEOPLEX_NOTIFIER_ID": str(i)},
                           f"notifier-{i}") for i in (1, 2)]


@pytest.fixture
def delivering() -> None:
    """Delivery needs the channels package (servers/notifier/channels)."""
    if importlib.util.find_spec("geoplex.servers.notifier.channels") is None:
        pytest.skip("servers/notifier/channels is not there yet: the notifier cannot "
                    "deliver to the webhook receiver, so delivery is not checked")


@pytest.fixture
async def nf(notifiers: list[ServerProcess]) -> AsyncIterator[NotifierClient]:
    async with NotifierClient(notifiers[0].address, ChannelOptions(retry=False)) as client:
        yield client


@pytest.fixture
async def nf2(notifiers: list[ServerProcess]) -> AsyncIterator[NotifierClient]:
    async with NotifierClient(notifiers[1].address, ChannelOptions(retry=False)) as client:
        yield client
