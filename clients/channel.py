"""One way to open a channel to any Geoplex server, and the base of every typed client.

Calls that are safe to repeat (reads) are retried by gRPC itself on UNAVAILABLE
(service-config retry policy with exponential backoff, for the methods the protos mark with
``idempotency_level``); every call has a
default deadline; ``AioRpcError`` becomes a typed :mod:`errors` exception.

While calls are open, the channel pings a quiet connection every 30 s (HTTP/2
keepalive) and drops it if no answer comes within 10 s, so a dead server is noticed
on a stream that receives nothing. Geoplex servers accept a client ping every 10 s
(``GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS``); pinging more often than the server
accepts makes it end the connection with GOAWAY too_many_pings.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.descriptor_pb2 import MethodOptions

import geoplex

from .context import outgoing
from .errors import from_rpc_error

T = TypeVar("T")

# Reads are safe to repeat, so gRPC retries them on UNAVAILABLE with backoff;
# writes are not (a create could run twice), so only gRPC's transparent retry
# (a request that never left the client) applies to them. Which is which is
# declared in the protos (``option idempotency_level``) and read here from the
# generated descriptors of every geoplex.<service>.v1 package.
_RETRYABLE_LEVELS = frozenset({MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT})


_HAND_WRITTEN = frozenset({"servers", "clients", "infra", "tools"})


def _generated_modules() -> list[str]:
    """``geoplex.<x>.v1.<y>_pb2`` for every generated package (never servers, tools...)."""
    found = []
    for top in pkgutil.iter_modules(geoplex.__path__):
        if not top.ispkg or top.name in _HAND_WRITTEN:
            continue
        package = importlib.import_module(f"geoplex.{top.name}")
        for info in pkgutil.walk_packages(package.__path__, f"geoplex.{top.name}."):
            if info.name.endswith("_pb2") and not info.ispkg:
                found.append(info.name)
    return sorted(found)


@functools.cache
def idempotent_methods() -> dict[str, tuple[str, ...]]:
    """gRPC service name -> its unary methods that the proto marks safe to repeat."""
    out: dict[str, tuple[str, ...]] = {}
    for name in _generated_modules():
        module = importlib.import_module(name)
        for service in module.DESCRIPTOR.services_by_name.values():
            methods = tuple(m.name for m in service.methods
                            if not (m.client_streaming or m.server_streaming)
                            and m.GetOptions().idempotency_level in _RETRYABLE_LEVELS)
            if methods:
                out[service.full_name] = methods
    return out


@functools.cache
def retry_service_config() -> str:
    """The channel's service config: retry idempotent methods on UNAVAILABLE with backoff."""
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": service, "method": method}
                     for service, methods in idempotent_methods().items() for method in methods],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """How to reach a server: TLS material (None = plaintext) and a bearer token.

    ``keepalive_time`` / ``keepalive_timeout``: seconds between pings on a quiet connection
    with calls open, and for the answer; no lower than the server's minimum (10 s).
    """

    root_certificates: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None
    timeout: float = 10.0
    retry: bool = True
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0


def keepalive_arguments(options: ChannelOptions) -> list[tuple[str, int]]:
    """The channel's HTTP/2 keepalive arguments."""
    return [
        ("grpc.keepalive_time_ms", round(options.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(options.keepalive_timeout * 1000)),
        # what the transport waits for a ping's answer (gRPC's default is a minute)
        ("grpc.http2.ping_timeout_ms", round(options.keepalive_timeout * 1000)),
        # no pings on a connection without calls: not every server accepts those
        ("grpc.keepalive_permit_without_calls", 0),
        # keep pinging while a stream receives nothing (gRPC stops after 2 by default)
        ("grpc.http2.max_pings_without_data", 0),
    ]


def open_channel(target: str, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    options = options or ChannelOptions()
    channel_args: list[tuple[str, Any]] = [("grpc.enable_retries", 1 if options.retry else 0),
                                           *keepalive_arguments(options)]
    if options.retry:
        channel_args.append(("grpc.service_config", retry_service_config()))
    if options.root_certificates is None and options.client_cert is None:
        return grpc.aio.insecure_channel(target, options=channel_args,
                                         interceptors=list(interceptors) or None)
    creds = grpc.ssl_channel_credentials(
        root_certificates=options.root_certificates.read_bytes()
        if options.root_certificates else None,
        private_key=options.client_key.read_bytes() if options.client_key else None,
        certificate_chain=options.client_cert.read_bytes() if options.client_cert else None)
    return grpc.aio.secure_channel(target, creds, options=channel_args,
                                   interceptors=list(interceptors) or None)


class BaseClient:
    """Owns (or borrows) a channel; adds deadline, token, request id and typed errors."""

    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        self.options = options or ChannelOptions()
        if isinstance(target, str):
            self.channel = open_channel(target, self.options, interceptors)
            self._owns_channel = True
        else:
            self.channel = target
            self._owns_channel = False
        self.last_request_id = ""

    def metadata(self, extra: Sequence[tuple[str, str]] = (),
                 token: str | None = None) -> list[tuple[str, str]]:
        # the current call's request id and trace context when made inside a handler
        self.last_request_id, carried = outgoing()
        md = [*carried, *extra]
        bearer = token if token is not None else self.options.token
        if bearer:
            md.append(("authorization", f"Bearer {bearer}"))
        return md

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, *,
                   timeout: float | None = None, token: str | None = None,
                   metadata: Sequence[tuple[str, str]] = ()) -> T:
        """One unary call: ``timeout`` seconds (None: ``options.timeout``), typed errors."""
        try:
            return await method(request,
                                timeout=self.options.timeout if timeout is None else timeout,
                                metadata=self.metadata(metadata, token))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def aclose(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
