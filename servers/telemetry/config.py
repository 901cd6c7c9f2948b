"""TelemetryConfig: read once from GEOPLEX_TELEMETRY_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.config import (DEFAULT_METRICS_TOPIC, ConfigError, Env,
                                             default_state_dir, metrics_topic)

PREFIX = "GEOPLEX_TELEMETRY_"
FSYNC_MODES = ("always", "interval")
BACKENDS = ("local", "victoriametrics")
TIERS = ("raw", "1m", "1h")
DEFAULT_RETENTION = {"raw": "7d", "1m": "30d", "1h": "365d"}


@dataclass(frozen=True, slots=True)
class RetentionRuleConfig:
    """``<selector>:<tier>=<duration>[,<tier>=<duration>...]``, e.g.
    ``{__name__=~"debug_.*"}:raw=1d,1m=7d``: the series the selector picks are kept that
    long in those tiers (a per-metric override of the store's retention)."""

    selector: str
    keep_ms: dict[str, int]


def _duration_ms(name: str, text: str) -> int:
    from .promql.parser import parse_duration  # the PromQL duration syntax: 1d, 12h, 90m

    try:
        ms = parse_duration(text.strip())
    except ValueError as error:
        raise ConfigError(f"{name}: {text!r} is not a duration such as 36h, 7d or 1y"
                          ) from error
    if ms <= 0:
        raise ConfigError(f"{name}: must be > 0")
    return ms


def parse_retention_rules(name: str, text: str) -> tuple[RetentionRuleConfig, ...]:
    """Rules separated by ``;``; the selector is checked when the store starts."""
    rules = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        selector, colon, spec = part.rpartition(":")
        if not colon or not selector.strip() or not spec.strip():
            raise ConfigError(f"{name}: {part!r}: expected <selector>:<tier>=<duration>"
                              f"[,...], tiers {', '.join(TIERS)}")
        keep: dict[str, int] = {}
        for item in spec.split(","):
            tier, equals, duration = item.partition("=")
            if not equals or tier.strip() not in TIERS:
                raise ConfigError(f"{name}: {item!r}: expected <tier>=<duration> with a tier "
                                  f"of {', '.join(TIERS)}")
            keep[tier.strip()] = _duration_ms(name, duration)
        rules.append(RetentionRuleConfig(selector.strip(), keep))
    return tuple(rules)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    data_dir: Path            # the store: WAL, head checkpoints, blocks
    fsync: str                # always | interval
    fsync_interval_ms: int
    block_hours: float        # the head is cut into a block every this many hours
    ooo_window_s: float       # how far behind the newest sample a sample may arrive
    max_future_s: float       # how far ahead of the server's clock a sample may be
    max_series: int | None    # active series in the head (None: no limit)
    write_max_series: int     # series per Write
    write_max_samples: int    # samples per Write
    http_port: int | None     # the Prometheus HTTP API (None: off)
    max_samples_per_s: float  # per tenant (0: no limit)
    backend: str = "local"    # local | victoriametrics
    victoriametrics_url: str | None = None
    retention_ms: tuple[tuple[str, int], ...] = ()    # per tier
    retention_rules: tuple[RetentionRuleConfig, ...] = ()
    downsample: bool = True
    rollup_window_hours: int = 6
    maintenance_interval_s: float = 10.0
    # alerting (issue 14): rule files (Prometheus's format), how often groups are
    # evaluated by default, and the notifier nodes alerts are posted to (each gets all)
    chunk_cache_samples: int = 4_000_000   # decoded chunks kept for queries (~16 B each)
    rule_files: tuple[Path, ...] = ()
    rule_interval_s: float = 15.0
    notifiers: tuple[str, ...] = ()
    # the mesh watched through the registry (discovery.py): health-check every registered
    # process this often (0: not at all); on whenever the registry is
    mesh_probe_interval_s: float = 15.0
    # the mesh's metrics through the broker (metrics_consumer.py): consumed from this topic
    # whenever the broker's addresses are known (GEOPLEX_TELEMETRY_METRICS_BROKERS, else
    # GEOPLEX_BROKER_TARGET); the topic is the one the services produce to
    metrics_brokers: tuple[str, ...] = ()
    metrics_topic: str = DEFAULT_METRICS_TOPIC

    @classmethod
    def from_env(cls, env: Env | None = None) -> TelemetryConfig:
        env = env or Env()
        fsync = env.str(PREFIX + "FSYNC", "always")
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"{PREFIX}FSYNC: expected one of {', '.join(FSYNC_MODES)}")
        max_series = env.int(PREFIX + "MAX_SERIES", 0, lo=0, hi=1 << 40)
        backend = env.str(PREFIX + "BACKEND", "local")
        if backend not in BACKENDS:
            raise ConfigError(f"{PREFIX}BACKEND: expected one of {', '.join(BACKENDS)}")
        vm_url = env.url(PREFIX + "VICTORIAMETRICS_URL", ("http", "https"))
        if backend == "victoriametrics" and not vm_url:
            raise ConfigError(f"{PREFIX}VICTORIAMETRICS_URL: required with "
                              f"{PREFIX}BACKEND=victoriametrics (e.g. http://127.0.0.1:8428)")
        retention = tuple(
            (tier, _duration_ms(f"{PREFIX}RETENTION_{tier.upper()}",
                                env.str(f"{PREFIX}RETENTION_{tier.upper()}", default)))
            for tier, default in DEFAULT_RETENTION.items())
        return cls(
            data_dir=env.path(PREFIX + "DATA_DIR", default_state_dir(env) / "telemetry"
                              ).resolve(),
            fsync=fsync,
            fsync_interval_ms=env.int(PREFIX + "FSYNC_INTERVAL_MS", 10, lo=1, hi=10_000),
            block_hours=env.float(PREFIX + "BLOCK_HOURS", 2.0, lo=0.01, hi=168.0),
            ooo_window_s=env.float(PREFIX + "OOO_WINDOW_SECONDS", 600.0, lo=0.0,
                                   hi=86_400.0),
            max_future_s=env.float(PREFIX + "MAX_FUTURE_SECONDS", 600.0, lo=0.0,
                                   hi=86_400.0),
            max_series=max_series or None,
            write_max_series=env.int(PREFIX + "WRITE_MAX_SERIES", 10_000, lo=1, hi=1_000_000),
            write_max_samples=env.int(PREFIX + "WRITE_MAX_SAMPLES", 100_000, lo=1,
                                      hi=10_000_000),
            http_port=(None if env.str(PREFIX + "HTTP_PORT", "").lower() == "off"
                       else env.int(PREFIX + "HTTP_PORT", 8056, lo=0, hi=65_535)),
            max_samples_per_s=env.float(PREFIX + "MAX_SAMPLES_PER_SECOND", 0.0, lo=0.0,
                                        hi=1e9),
            backend=backend,
            victoriametrics_url=vm_url,
            retention_ms=retention,
            retention_rules=parse_retention_rules(
                PREFIX + "RETENTION_RULES", env.str(PREFIX + "RETENTION_RULES", "")),
            downsample=env.bool(PREFIX + "DOWNSAMPLE", True),
            rollup_window_hours=env.int(PREFIX + "ROLLUP_WINDOW_HOURS", 6, lo=1, hi=24 * 31),
            maintenance_interval_s=env.float(PREFIX + "MAINTENANCE_INTERVAL_SECONDS", 10.0,
                                             lo=0.05, hi=86_400.0),
            chunk_cache_samples=env.int(PREFIX + "CHUNK_CACHE_SAMPLES", 4_000_000, lo=0,
                                        hi=1 << 34),
            rule_files=tuple(Path(p).expanduser() for p in
                             env.str(PREFIX + "RULE_FILES", "").split(",") if p.strip()),
            rule_interval_s=env.float(PREFIX + "RULE_INTERVAL_SECONDS", 15.0, lo=0.05,
                                      hi=86_400.0),
            notifiers=env.endpoints(PREFIX + "NOTIFIERS") or (),
            mesh_probe_interval_s=env.float(PREFIX + "MESH_PROBE_SECONDS", 15.0, lo=0.0,
                                            hi=3600.0),
            metrics_brokers=(env.endpoints(PREFIX + "METRICS_BROKERS")
                             or env.endpoints("GEOPLEX_BROKER_TARGET") or ()),
            metrics_topic=metrics_topic(env),  # the services' side reads the same
        )
