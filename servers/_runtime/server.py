"""Build, run and stop a Geoplex grpc.aio server.

Every service calls :func:`run` from its ``__main__`` with a ``setup``
coroutine that builds its adapters (registering their closers on the exit
stack, so they close in reverse order) and returns the services to serve.
The runtime adds health (per-service status), reflection, MeshService, the
request-id/logging/error/metrics interceptor, optional tracing, metrics (pushed to
telemetry over OTLP, ``metrics.py``) and TLS, and graceful shutdown on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

import geoplex
from geoplex.clients.registry import HEALTH_STOPPING, Registration
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc

from . import metrics as metrics_module
from . import tracing
from .config import ConfigError, KeepaliveConfig, RuntimeConfig
from .declaration import ServiceDeclaration
from .interceptors import GeoplexServerInterceptor
from .mesh import MeshServicer
from .metrics import RuntimeMetrics, ServiceMetrics, instance_id
from .registry import Registrar

log = logging.getLogger(__name__)

MESH_SERVICE = mesh_pb2.DESCRIPTOR.services_by_name["MeshService"].full_name


class StartupError(RuntimeError):
    """Start-up cannot go on; the message says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One gRPC service to serve: its full name and how to add it to a server."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    # Called once health is NOT_SERVING and before stop(grace): end long-lived
    # streams with UNAVAILABLE so clients reconnect elsewhere.
    on_shutdown: Callable[[], Awaitable[None]] | None = None
    # Called once the server listens, with its port, before the ready line: a service
    # that tells others where it is (the broker registers in etcd) does it here.
    on_serving: Callable[[int], Awaitable[None]] | None = None
    # Called once, as the server is built, with the service's meter (a no-op one while
    # metrics are off): register observable instruments reading state the service keeps
    # (docs/adding-a-service.md, "Metrics").
    instruments: Callable[[ServiceMetrics], None] | None = None
    # Other endpoints the process serves, for its registry entry once it listens (e.g.
    # {"http": "127.0.0.1:8055"}: the maps page, telemetry's Prometheus API).
    endpoints: Callable[[], Mapping[str, str]] | None = None
    # The unary methods (full names, "/pkg.Service/Method") that wait by design, a long
    # poll: their durations are recorded with geoplex.rpc.waits="poll", so latency
    # budgets leave them out as they leave streams out (docs/adding-a-service.md).
    long_polls: frozenset[str] = frozenset()


@dataclass
class GeoplexServer:
    config: RuntimeConfig
    services: Sequence[ServiceSpec]
    tracer_provider: TracerProvider | None = None
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    metrics: RuntimeMetrics | None = None  # None: metrics off
    server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.so_reuseport", 1 if self.config.reuse_port else 0),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            *keepalive_options(self.config.keepalive),
        ]
        metrics = self.metrics or RuntimeMetrics(self.config.name)
        interceptors = [*tracing.server_interceptors(self.tracer_provider),
                        GeoplexServerInterceptor(metrics.rpc), *self.extra_interceptors]
        self.server = grpc.aio.server(interceptors=interceptors, options=options,
                                      maximum_concurrent_rpcs=self.config.max_concurrent_rpcs)
        start = Timestamp()
        start.GetCurrentTime()
        names = [s.name for s in self.services]
        service_metrics = metrics.for_service()
        for spec in self.services:
            spec.register(self.server)
            if metrics.rpc is not None:
                metrics.rpc.long_polls.update(spec.long_polls)
            if spec.instruments is not None:
                spec.instruments(service_metrics)
        mesh_pb2_grpc.add_MeshServiceServicer_to_server(
            MeshServicer(self.config.name, [*names, MESH_SERVICE], start), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*names, MESH_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self._names = [*names, MESH_SERVICE]

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        target = f"{self.config.host}:{self.config.port}"
        var = f"GEOPLEX_{self.config.name.upper()}_PORT"
        if self.config.port != 0 and not self.config.reuse_port:
            # bind first ourselves: gRPC would print its own error line before ours
            problem = _bind_error(self.config.host, self.config.port)
            if problem is not None:
                raise StartupError(f"cannot listen on {target}: the port is taken or the "
                                   f"address is not local ({problem.strerror or problem}); "
                                   f"stop the other process or set {var}")
        try:
            if self.config.tls is None:
                self.port = self.server.add_insecure_port(target)
            else:
                tls = self.config.tls
                creds = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                    require_client_auth=tls.client_ca is not None)
                self.port = self.server.add_secure_port(target, creds)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise StartupError(f"cannot listen on {target}: the port is taken or the address "
                               f"is not local; stop the other process or set {var}")
        await self.server.start()
        for name in self._names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Mark every service NOT_SERVING, then let in-flight calls finish within grace."""
        await self.health.enter_graceful_shutdown()
        for spec in self.services:
            if spec.on_shutdown is not None:
                await spec.on_shutdown()
        await self.server.stop(self.config.shutdown_grace if grace is None else grace)
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.metrics is not None:
            # the last export, bounded (metrics.SHUTDOWN_TIMEOUT_S), off the event loop
            await asyncio.to_thread(self.metrics.shutdown)


def keepalive_options(keepalive: KeepaliveConfig) -> list[tuple[str, int]]:
    """The server's HTTP/2 keepalive channel arguments (see ``KeepaliveConfig``)."""
    return [
        ("grpc.keepalive_time_ms", round(keepalive.time * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive.timeout * 1000)),
        # what the transport waits for any ping's answer: gRPC's own default is a minute,
        # and it, not keepalive_timeout_ms, is what ends the connection of a frozen peer
        ("grpc.http2.ping_timeout_ms", round(keepalive.timeout * 1000)),
        # ping connections without calls too, and accept client pings on them
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC stops pinging after 2 pings without data by default: a quiet stream (a
        # presence stream where no friend moves) would never notice its peer is gone
        ("grpc.http2.max_pings_without_data", 0),
        # how often a client may ping (gRPC's default is once every 5 minutes)
        ("grpc.http2.min_ping_interval_without_data_ms",
         round(keepalive.min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now, or None if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(exc.errno, exc.strerror)
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                return exc
    return None


Setup = Callable[[RuntimeConfig, contextlib.AsyncExitStack], Awaitable[Sequence[ServiceSpec]]]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def serve(config: RuntimeConfig, setup: Setup,
                ready: Callable[[GeoplexServer], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        services = await setup(config, stack)
        provider = tracing.make_tracer_provider(config.tracing, config.name)
        metrics = metrics_module.make_metrics(config.metrics, config.name)
        server = GeoplexServer(config, services, provider, metrics=metrics)
        try:
            await server.start()
        except BaseException:
            await asyncio.to_thread(metrics.shutdown, 0.5)
            raise
        if metrics.enabled:
            log.info("geoplex-%s metrics: to %s every %gs as job=%s instance=%s",
                     config.name, config.metrics.destination, config.metrics.interval_s,
                     config.name, metrics.instance)
        for spec in services:
            if spec.on_serving is not None:
                await spec.on_serving(server.port)
        registrar = None
        if config.registry.enabled:  # the mesh's directory (registry.py), in the background
            registrar = Registrar(config.registry, registration(config, server, services,
                                                                metrics.instance))
            await registrar.start()
            stack.push_async_callback(registrar.stop)  # after server.stop() below
        log.info("geoplex-%s serving %s on %s", config.name,
                 ", ".join(s.name for s in services) or "MeshService", server.address)
        # The one line supervisors and tests wait for.
        print(f"geoplex-{config.name} ready on {server.address}", flush=True)
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("geoplex-%s shutting down (grace %.1fs)", config.name, config.shutdown_grace)
        if registrar is not None:
            await registrar.set_health(HEALTH_STOPPING)
        await server.stop()
    log.info("geoplex-%s stopped", config.name)


def registration(config: RuntimeConfig, server: GeoplexServer,
                 services: Sequence[ServiceSpec], instance: str = "") -> Registration:
    """What this process puts in the registry: where it serves, what it runs, since when."""
    host = socket.gethostname()
    address = server.address
    if config.host in ("0.0.0.0", "::", ""):  # listening everywhere: name the machine
        address = f"{host}:{server.port}"
    endpoints: dict[str, str] = {}
    for spec in services:
        if spec.endpoints is not None:
            endpoints.update(spec.endpoints())
    return Registration(service=config.name, instance=instance or instance_id(),
                        address=address, pid=os.getpid(), host=host,
                        version=geoplex.__version__, started=time.time(),
                        node=os.environ.get(f"GEOPLEX_{config.name.upper()}_ID", ""),
                        slot=os.environ.get("GEOPLEX_PROCESS_NAME", ""),
                        endpoints=endpoints)


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop a server runs on: uvloop (libuv; less per-callback overhead on the
    paths every RPC takes) or the standard library's."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(service: ServiceDeclaration, setup: Setup) -> None:
    """Entry point for ``python -m geoplex.servers.<name>``: config, logging, serve."""
    run_main(service.name, service.default_port, lambda config: serve(config, setup))


def run_main(name: str, default_port: int,
             main: Callable[[RuntimeConfig], Coroutine[Any, Any, None]]) -> None:
    """Read the runtime config, set up logging and run ``main(config)`` on the configured
    event loop; a configuration or start-up error is one line on stderr and exit code 2."""
    try:
        config = RuntimeConfig.from_env(name, default_port)
        configure_logging(config.log_level)
        with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
            runner.run(main(config))
    except (ConfigError, StartupError) as exc:
        print(f"geoplex-{name}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
