"""Configuration from ``GEOPLEX_*`` environment variables.

Each service reads one frozen dataclass once at start and passes it down.
A bad value raises :class:`ConfigError`, whose message names the variable
and what was expected; ``serve()`` prints it as one line and exits 2.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A ``GEOPLEX_*`` variable is malformed or a required one is missing."""


class Env:
    """Typed reads of one environment mapping, each failing with the variable's name.

    The methods are named after the types they read and hide those names for the rest of
    the class body, so the annotations below ``def str`` spell it ``builtins.str``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value if value not in (None, "") else None

    def str(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None else value.strip()

    def int(self, name: builtins.str, default: int, *, lo: int | None = None,
            hi: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected an integer{_bounds(lo, hi)}") from None
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ConfigError(f"{name}={value!r}: expected an integer{_bounds(lo, hi)}")
        return number

    def float(self, name: builtins.str, default: float, *, lo: float | None = None,
              hi: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a number{_bounds(lo, hi)}") from None
        if number != number or (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ConfigError(f"{name}={value!r}: expected a number{_bounds(lo, hi)}")
        return number

    def bool(self, name: builtins.str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}={value!r}: expected one of true, false, 1, 0, yes, no, on, off")

    def choice(self, name: builtins.str, default: builtins.str,
               allowed: Sequence[builtins.str]) -> builtins.str:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered not in allowed:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        return lowered

    def path(self, name: builtins.str, default: Path) -> Path:
        value = self.raw(name)
        return default if value is None else Path(value).expanduser()

    def existing_file(self, name: builtins.str) -> Path | None:
        value = self.raw(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"{name}={value!r}: no such file")
        return path

    def url(self, name: builtins.str, schemes: Sequence[builtins.str]) -> builtins.str | None:
        value = self.raw(name)
        if value is None:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in schemes:
            raise ConfigError(
                f"{name}={_redact(value)!r}: expected a URL starting with "
                + " or ".join(f"{s}://" for s in schemes))
        return value.strip()

    def endpoints(self, name: builtins.str) -> tuple[builtins.str, ...] | None:
        """Comma-separated ``host:port`` list (``http://`` prefixes allowed)."""
        value = self.raw(name)
        if value is None:
            return None
        items = []
        for part in value.split(","):
            item = part.strip().removeprefix("http://").removeprefix("https://")
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{name}={value!r}: expected host:port[,host:port...]")
            items.append(item)
        return tuple(items)


BACKEND_SCHEMES = {"GEOPLEX_REDIS_URL": ("redis", "rediss", "unix"),
                   "GEOPLEX_MONGO_URI": ("mongodb", "mongodb+srv")}


def backend_url(env: Env, name: str) -> str | None:
    """GEOPLEX_REDIS_URL / GEOPLEX_MONGO_URI, checked for its scheme, or None if unset."""
    return env.url(name, BACKEND_SCHEMES[name])


def required_backend_url(env: Env, name: str) -> str:
    value = backend_url(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set: run `geoplex up`, or `geoplex infra up` and "
                          "export what it prints")
    return value


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches a message."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def default_state_dir(env: Env) -> Path:
    return env.path("GEOPLEX_STATE_DIR", Path(".geoplex")).resolve()


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None  # when set, clients must present a certificate it signed


@dataclass(frozen=True, slots=True)
class KeepaliveConfig:
    """HTTP/2 keepalive, so a dead or frozen peer's streams end within about a minute.

    The server pings a connection ``time`` seconds after it last heard from it and
    closes it (ending its calls with CANCELLED) if no answer comes within ``timeout``;
    it accepts client pings at most every ``min_ping_interval`` seconds (more often is a
    strike, and a client that keeps at it gets GOAWAY too_many_pings). The SDK's channel
    pings every 30 s: keep ``min_ping_interval`` at or below that.
    """

    time: float = 20.0  # GEOPLEX_KEEPALIVE_TIME_SECONDS
    timeout: float = 10.0  # GEOPLEX_KEEPALIVE_TIMEOUT_SECONDS
    min_ping_interval: float = 10.0  # GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS

    @classmethod
    def from_env(cls, env: Env) -> KeepaliveConfig:
        default = cls()
        return cls(
            time=env.float("GEOPLEX_KEEPALIVE_TIME_SECONDS", default.time, lo=1, hi=7200),
            timeout=env.float("GEOPLEX_KEEPALIVE_TIMEOUT_SECONDS", default.timeout,
                              lo=1, hi=600),
            min_ping_interval=env.float("GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS",
                                        default.min_ping_interval, lo=1, hi=7200),
        )


METRICS_MODES = ("off", "otlp", "broker")
DEFAULT_METRICS_TOPIC = "telemetry-metrics"
# The telemetry service's declared port (servers/telemetry/service.py) on loopback: the
# runtime cannot import a service, so it is written here too and a unit test
# (tests/unit/runtime_metrics) checks that the two agree.
DEFAULT_METRICS_ENDPOINT = "127.0.0.1:50056"


def metrics_topic(env: Env) -> str:
    """``GEOPLEX_METRICS_TOPIC``: the topic the services' metrics go to with
    GEOPLEX_METRICS=broker, and the one telemetry consumes."""
    topic = env.str("GEOPLEX_METRICS_TOPIC", DEFAULT_METRICS_TOPIC)
    if not topic or not all(c.isalnum() or c in "._-" for c in topic):
        raise ConfigError(f"GEOPLEX_METRICS_TOPIC={topic!r}: expected a topic name "
                          "(letters, digits, '.', '_', '-')")
    return topic


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The mesh's registry in etcd (``registry.py``): where this process registers.

    On whenever etcd's endpoints are known (``GEOPLEX_REGISTRY_ENDPOINTS``, else
    ``GEOPLEX_ETCD_ENDPOINTS``, which `geoplex up` gives every service) unless
    ``GEOPLEX_REGISTRY=off``.
    """

    endpoints: tuple[str, ...] = ()
    prefix: str = "/geoplex/registry"   # GEOPLEX_REGISTRY_PREFIX
    ttl_s: int = 10                     # GEOPLEX_REGISTRY_TTL_SECONDS: a dead process's
    #                                     entry lasts at most this long

    @property
    def enabled(self) -> bool:
        return bool(self.endpoints)

    @classmethod
    def from_env(cls, env: Env) -> RegistryConfig:
        default = cls()
        mode = env.choice("GEOPLEX_REGISTRY", "auto", ("auto", "off"))
        endpoints = (env.endpoints("GEOPLEX_REGISTRY_ENDPOINTS")
                     or env.endpoints("GEOPLEX_ETCD_ENDPOINTS") or ())
        prefix = env.str("GEOPLEX_REGISTRY_PREFIX", default.prefix).rstrip("/")
        if not prefix.startswith("/"):
            raise ConfigError(f"GEOPLEX_REGISTRY_PREFIX={prefix!r}: expected a key prefix "
                              "starting with /, e.g. /geoplex/registry")
        return cls(endpoints=() if mode == "off" else endpoints, prefix=prefix,
                   ttl_s=env.int("GEOPLEX_REGISTRY_TTL_SECONDS", default.ttl_s, lo=2, hi=300))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The process's own metrics (``metrics.py``): pushed over OTLP/gRPC to telemetry
    (``otlp``), or produced as OTLP requests to a broker topic that telemetry consumes
    (``broker``, ``metrics_broker.py``).

    ``endpoint`` is ``host:port`` (or ``http://host:port``) for plaintext, as the mesh
    runs on loopback, or ``https://host:port`` for TLS with the system's roots.
    ``brokers`` are the broker's bootstrap addresses (``GEOPLEX_METRICS_BROKERS``, else
    ``GEOPLEX_BROKER_TARGET``).
    """

    mode: str = "off"  # GEOPLEX_METRICS: off | otlp | broker
    endpoint: str = DEFAULT_METRICS_ENDPOINT  # GEOPLEX_METRICS_ENDPOINT
    interval_s: float = 10.0  # GEOPLEX_METRICS_INTERVAL_SECONDS: how often they are pushed
    brokers: tuple[str, ...] = ()
    topic: str = DEFAULT_METRICS_TOPIC  # GEOPLEX_METRICS_TOPIC

    @property
    def destination(self) -> str:
        """Where the exports go, for a log line."""
        if self.mode == "broker":
            return f"broker topic {self.topic} ({','.join(self.brokers)})"
        return f"OTLP {self.endpoint}"

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def target(self) -> str:
        """``host:port`` without the scheme."""
        return self.endpoint.removeprefix("https://").removeprefix("http://")

    @classmethod
    def from_env(cls, env: Env) -> MetricsConfig:
        default = cls()
        name = "GEOPLEX_METRICS_ENDPOINT"
        endpoint = env.str(name, default.endpoint)
        host, sep, port = cls(endpoint=endpoint).target.rpartition(":")
        if (not sep or not host or "/" in host or not port.isdigit()
                or not 0 < int(port) < 65536):
            raise ConfigError(f"{name}={endpoint!r}: expected host:port (or http://host:port, "
                              "https://host:port) of the telemetry service")
        mode = env.choice("GEOPLEX_METRICS", default.mode, METRICS_MODES)
        brokers = (env.endpoints("GEOPLEX_METRICS_BROKERS")
                   or env.endpoints("GEOPLEX_BROKER_TARGET") or ())
        if mode == "broker" and not brokers:
            raise ConfigError(f"GEOPLEX_METRICS={mode!r}: needs the broker's addresses: "
                              "GEOPLEX_METRICS_BROKERS (or GEOPLEX_BROKER_TARGET) = "
                              "host:port[,host:port...]")
        topic = metrics_topic(env)
        return cls(
            mode=mode,
            endpoint=endpoint,
            interval_s=env.float("GEOPLEX_METRICS_INTERVAL_SECONDS", default.interval_s,
                                 lo=0.1, hi=3600),
            brokers=brokers,
            topic=topic,
        )


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """What every server shares: where to listen, TLS, tracing, metrics, shutdown,
    keepalive."""

    name: str
    host: str
    port: int
    reuse_port: bool
    tls: TlsConfig | None
    tracing: str  # off | console | otlp
    log_level: str
    shutdown_grace: float
    max_concurrent_rpcs: int | None
    event_loop: str = "uvloop"  # uvloop | asyncio
    keepalive: KeepaliveConfig = KeepaliveConfig()
    metrics: MetricsConfig = MetricsConfig()
    registry: RegistryConfig = RegistryConfig()

    @classmethod
    def from_env(cls, name: str, default_port: int, env: Env | None = None) -> RuntimeConfig:
        env = env or Env()
        prefix = f"GEOPLEX_{name.upper()}_"
        cert = env.existing_file("GEOPLEX_TLS_CERT")
        key = env.existing_file("GEOPLEX_TLS_KEY")
        if (cert is None) != (key is None):
            raise ConfigError("GEOPLEX_TLS_CERT and GEOPLEX_TLS_KEY: set both or neither")
        tls = None
        if cert and key:
            tls = TlsConfig(cert, key, env.existing_file("GEOPLEX_TLS_CLIENT_CA"))
        elif env.raw("GEOPLEX_TLS_CLIENT_CA"):
            raise ConfigError("GEOPLEX_TLS_CLIENT_CA needs GEOPLEX_TLS_CERT and GEOPLEX_TLS_KEY")
        max_rpcs = env.int(prefix + "MAX_CONCURRENT_RPCS", 0, lo=0)
        return cls(
            name=name,
            host=env.str(prefix + "HOST", env.str("GEOPLEX_HOST", "127.0.0.1")),
            port=env.int(prefix + "PORT", default_port, lo=0, hi=65535),
            reuse_port=env.bool(prefix + "REUSE_PORT", False),
            tls=tls,
            tracing=env.choice("GEOPLEX_TRACING", "off", ("off", "console", "otlp")),
            log_level=env.choice("GEOPLEX_LOG_LEVEL", "info",
                                 ("debug", "info", "warning", "error")),
            shutdown_grace=env.float("GEOPLEX_SHUTDOWN_GRACE_SECONDS", 10.0, lo=0, hi=600),
            max_concurrent_rpcs=max_rpcs or None,
            event_loop=env.choice("GEOPLEX_EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
            keepalive=KeepaliveConfig.from_env(env),
            metrics=MetricsConfig.from_env(env),
            registry=RegistryConfig.from_env(env),
        )
