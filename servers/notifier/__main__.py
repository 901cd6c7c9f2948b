"""``python -m geoplex.servers.notifier``: read the routing configuration, build the
receivers' channels, open etcd, follow the silences, serve."""

from __future__ import annotations

import contextlib
import logging

import grpc.aio

from geoplex.servers._runtime.config import ConfigError, RuntimeConfig
from geoplex.servers._runtime.errors import Unavailable
from geoplex.servers._runtime.server import ServiceSpec, run

from .adapters.etcd_state import EtcdState
from .config import NotifierConfig
from . import instruments
from .dispatcher import FIRST_SILENCES_S, Dispatcher
from .ports import Channel, ChannelFactory
from .service import SERVICE
from .servicer import NotifierServicer, add_to_server

log = logging.getLogger("geoplex.servers.notifier")  # not "__main__"


def channel_factory() -> ChannelFactory | None:
    """``channels.build_channels``, imported when needed (None if the package is absent)."""
    try:
        from .channels import build_channels
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith(__package__ or "geoplex"):
            raise
        return None
    return build_channels


def build_receivers(config: NotifierConfig, factory: ChannelFactory | None
                    ) -> dict[str, list[Channel]]:
    """Each receiver's channels; a bad channel configuration stops start-up naming the
    file and the receiver."""
    out: dict[str, list[Channel]] = {}
    alerting = config.alerting
    for receiver in alerting.receivers:
        wanted = [k for k in receiver.config if k != "name"]
        if factory is None:
            if wanted:
                log.warning("receiver %s: the channels package is not installed; its "
                            "notifications are logged, not delivered", receiver.name)
            out[receiver.name] = []
            continue
        try:
            out[receiver.name] = list(factory(receiver.config,
                                              external_url=config.external_url))
        except ValueError as exc:  # channels.ChannelConfigError
            raise ConfigError(f"{alerting.source}: {exc}") from None
        if not out[receiver.name]:
            log.warning("receiver %s has no channels: its notifications go nowhere%s",
                        receiver.name,
                        " (set GEOPLEX_NOTIFIER_SMTP_URL and GEOPLEX_NOTIFIER_EMAIL_TO, or "
                        "GEOPLEX_NOTIFIER_WEBHOOK_URL, or GEOPLEX_NOTIFIER_CONFIG)"
                        if receiver.name == "default" else "")
    return out


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: NotifierConfig | None = None) -> list[ServiceSpec]:
    config = config or NotifierConfig.from_env()
    receivers = build_receivers(config, channel_factory())
    shared = EtcdState(config.etcd_endpoints, config.etcd_prefix)
    await shared.connect()
    stack.push_async_callback(shared.aclose)
    reachable = True
    try:
        await shared.ping()
    except Unavailable:
        reachable = False
        log.warning("GEOPLEX_ETCD_ENDPOINTS=%s: etcd does not answer; notifying without "
                    "silences or claims until it does", ",".join(config.etcd_endpoints))
    dispatcher = Dispatcher(config, receivers, shared)
    await dispatcher.start(wait_for_silences=FIRST_SILENCES_S if reachable else 0.0)
    stack.push_async_callback(dispatcher.stop)
    log.info("notifier %s: %d receivers, %d routes, %d inhibition rules (%s)", config.node,
             len(config.alerting.receivers), sum(1 for _ in config.alerting.route.walk()),
             len(config.alerting.inhibit_rules), config.alerting.source)
    servicer = NotifierServicer(dispatcher)

    def register(server: grpc.aio.Server) -> None:
        add_to_server(servicer, server)

    return [ServiceSpec(SERVICE.grpc_service_names[0], register,
                        instruments=instruments.register(dispatcher))]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
