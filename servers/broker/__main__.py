"""``python -m geoplex.servers.broker``: lock the data directory, open etcd and the logs,
serve."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .adapters.etcd_meta import EtcdMeta
from .app import BrokerApp
from .config import BrokerConfig
from .domain import MetadataUnavailable
from .log import DiskLogStore, FsyncPolicy
from .service import SERVICE
from .servicer import BrokerServicer, add_to_server

log = logging.getLogger("geoplex.servers.broker")  # not "__main__"
LOCK_FILE = "broker.lock"


def lock_data_dir(data_dir: Path, stack: contextlib.ExitStack | contextlib.AsyncExitStack
                  ) -> None:
    """One broker per data directory: an exclusive ``flock`` held while it runs (the
    kernel drops it when the process dies, even by ``kill -9``)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartupError(f"GEOPLEX_BROKER_DATA_DIR={str(data_dir)!r}: cannot be used "
                           f"({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"GEOPLEX_BROKER_DATA_DIR={str(data_dir)!r} is in use by another "
                           "broker: stop it, or give this one its own data directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    stack.callback(os.close, fd)


def fsync_policy(config: BrokerConfig) -> FsyncPolicy:
    if config.fsync == "batch":
        return FsyncPolicy()
    if config.fsync == "never":
        return FsyncPolicy.never()
    return FsyncPolicy.every(config.fsync_interval_ms, config.fsync_bytes)


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: BrokerConfig | None = None) -> list[ServiceSpec]:
    config = config or BrokerConfig.from_env()
    lock_data_dir(config.data_dir, stack)
    meta = EtcdMeta(config.etcd_endpoints, config.etcd_prefix)
    await meta.connect()
    stack.push_async_callback(meta.aclose)
    try:
        await meta.ping()
    except MetadataUnavailable:
        log.warning("GEOPLEX_ETCD_ENDPOINTS=%s: etcd does not answer; serving the topics this "
                    "broker knew last until it does", ",".join(config.etcd_endpoints))
    policy = fsync_policy(config)
    logs = DiskLogStore(config.data_dir, policy)
    app = BrokerApp(config, logs, meta.topics, meta.offsets, meta.cursors)
    await app.start()
    stack.push_async_callback(app.stop)
    log.info("broker data in %s (%s)", config.data_dir, policy.label)
    servicer = BrokerServicer(app)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server),
                        on_shutdown=app.begin_shutdown)]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
