"""``python -m geoplex.servers.broker``: lock the data directory, open etcd and the logs,
serve."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from pathlib import Path

import grpc.aio

from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .adapters.etcd_cluster import EtcdCluster
from .adapters.etcd_meta import EtcdMeta
from .adapters.replica_peers import GrpcPeers
from .app import BrokerApp
from .config import BrokerConfig
from .controller import Controller
from .domain import BrokerInfo, MetadataUnavailable
from .instruments import OffsetInstruments
from .replication import ReplicaManager
from .log import DiskLogStore, FsyncPolicy
from .service import SERVICE
from .servicer import BrokerServicer, add_replica_service, add_to_server

log = logging.getLogger("geoplex.servers.broker")  # not "__main__"
LOCK_FILE = "broker.lock"
# at the end of the log these wait for records (max_wait; a follower's fetch up to its
# replica wait): their durations are waits, not latency (ServiceSpec.long_polls)
LONG_POLLS = frozenset({"/geoplex.broker.v1.BrokerService/Fetch",
                        "/geoplex.broker.v1.ReplicaService/ReplicaFetch"})


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
    cluster = EtcdCluster(meta)
    # the address is known once the server listens (on_serving); the incarnation now
    me = BrokerInfo(config.broker_id, config.address(runtime.port), uuid.uuid4().hex,
                    time.time_ns() // 1_000_000)
    replicas = ReplicaManager(config, me, logs, cluster, GrpcPeers())
    app = BrokerApp(config, logs, meta.topics, meta.offsets, meta.cursors,
                    replicas=replicas, cluster=cluster)
    await app.start()
    stack.push_async_callback(app.stop)
    log.info("broker %d: data in %s (%s)", config.broker_id, config.data_dir, policy.label)
    servicer = BrokerServicer(app)
    tasks: list[asyncio.Task[None]] = []

    async def serving(port: int) -> None:
        registered = BrokerInfo(me.id, config.address(port), me.incarnation, me.started_ms)
        replicas.registered(registered)
        tasks.append(asyncio.create_task(_register(cluster, registered, config.lease_s),
                                         name="broker registration"))
        tasks.append(asyncio.create_task(Controller(cluster, registered).run(),
                                         name="broker controller"))
        if not await replicas.wait_synced(5.0):
            log.warning("the cluster's partition assignments are not known yet (etcd?)")

    async def leave() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(MetadataUnavailable):
            await cluster.deregister()

    stack.push_async_callback(leave)

    def register(server: grpc.aio.Server) -> None:
        add_to_server(servicer, server)
        add_replica_service(servicer, server)

    return [ServiceSpec(SERVICE.grpc_service_names[0], register,
                        on_shutdown=app.begin_shutdown, on_serving=serving,
                        instruments=OffsetInstruments(app).register,
                        long_polls=LONG_POLLS)]


async def _register(cluster: EtcdCluster, me: BrokerInfo, lease_s: float) -> None:
    """Register (the adapter keeps the lease alive and re-registers after losing it);
    while etcd is down at start, try again every second."""
    while True:
        try:
            await cluster.register(me, lease_s)
            log.info("broker %d registered as %s", me.id, me.address)
            return
        except MetadataUnavailable:
            await asyncio.sleep(1.0)  # a backoff while etcd is down


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
