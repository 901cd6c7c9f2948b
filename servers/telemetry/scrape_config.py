"""What the telemetry service scrapes: the targets, read once at start.

Either ``GEOPLEX_TELEMETRY_SCRAPE_TARGETS``, a comma-separated list of ``host:port``
(``http://host:port/metrics``) or URLs, all of one job (``GEOPLEX_TELEMETRY_SCRAPE_JOB``,
default ``scrape``); or ``GEOPLEX_TELEMETRY_SCRAPE_CONFIG``, the path of a JSON file
shaped as a subset of Prometheus's configuration (JSON is YAML too, so the file is a valid
``prometheus.yml`` for these fields; PyYAML is not a dependency)::

    {"global": {"scrape_interval": "15s", "scrape_timeout": "10s"},
     "scrape_configs": [
       {"job_name": "node", "scrape_interval": "5s", "scrape_timeout": "2s",
        "metrics_path": "/metrics", "scheme": "http",
        "honor_labels": false, "honor_timestamps": true,
        "static_configs": [{"targets": ["127.0.0.1:9100"], "labels": {"env": "dev"}}]}]}

Durations are Prometheus's (``1m30s``, ``500ms``) or a number of seconds.
``GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS`` (15) and ``..._SCRAPE_TIMEOUT_SECONDS`` (10)
are the interval and timeout of the targets list and the file's defaults under its own
``global``. As in Prometheus, a timeout left unset is cut to the interval, one set longer
than the interval is an error, and unknown fields are errors.

A target's labels are ``job`` (the job's name), ``instance`` (its ``host:port``) and its
static labels, which may set ``job`` and ``instance`` themselves. Two targets with the
same labels would write the same series, so that is an error too.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.config import ConfigError, Env

from .promql.parser import parse_duration
from .tsdb.labels import InvalidLabels, validate_label_name

PREFIX = "GEOPLEX_TELEMETRY_"
CONFIG_VAR = PREFIX + "SCRAPE_CONFIG"
TARGETS_VAR = PREFIX + "SCRAPE_TARGETS"
JOB_VAR = PREFIX + "SCRAPE_JOB"
INTERVAL_VAR = PREFIX + "SCRAPE_INTERVAL_SECONDS"
TIMEOUT_VAR = PREFIX + "SCRAPE_TIMEOUT_SECONDS"

DEFAULT_JOB = "scrape"
DEFAULT_INTERVAL_S = 15.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_METRICS_PATH = "/metrics"
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 86_400.0
SCHEMES = ("http", "https")

_TOP_FIELDS = ("global", "scrape_configs")
_GLOBAL_FIELDS = ("scrape_interval", "scrape_timeout")
_JOB_FIELDS = ("job_name", "scrape_interval", "scrape_timeout", "metrics_path", "scheme",
               "static_configs", "honor_labels", "honor_timestamps")
_STATIC_FIELDS = ("targets", "labels")


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One endpoint to scrape and the labels its series get."""

    url: str
    labels: tuple[tuple[str, str], ...]  # job, instance and the static labels, sorted
    interval_s: float
    timeout_s: float
    honor_labels: bool = False
    honor_timestamps: bool = True

    @property
    def job(self) -> str:
        return dict(self.labels).get("job", "")

    @property
    def instance(self) -> str:
        return dict(self.labels).get("instance", "")


@dataclass(frozen=True, slots=True)
class ScrapeConfig:
    targets: tuple[ScrapeTarget, ...] = ()

    @classmethod
    def from_env(cls, env: Env | None = None) -> ScrapeConfig:
        env = env or Env()
        interval = env.float(INTERVAL_VAR, DEFAULT_INTERVAL_S, lo=MIN_INTERVAL_S,
                             hi=MAX_INTERVAL_S)
        timeout_set = env.raw(TIMEOUT_VAR) is not None
        timeout = env.float(TIMEOUT_VAR, DEFAULT_TIMEOUT_S, lo=MIN_INTERVAL_S,
                            hi=MAX_INTERVAL_S)
        path = env.raw(CONFIG_VAR)
        listed = env.raw(TARGETS_VAR)
        if path is not None and listed is not None:
            raise ConfigError(f"{CONFIG_VAR} and {TARGETS_VAR}: set one or neither")
        if path is not None:
            return cls.load(Path(path).expanduser(), interval, timeout)
        if listed is None:
            return cls()
        if timeout > interval:
            if timeout_set:
                raise ConfigError(f"{TIMEOUT_VAR}={timeout:g}: expected at most "
                                  f"{INTERVAL_VAR} ({interval:g})")
            timeout = interval
        return cls.from_targets(listed, env.str(JOB_VAR, DEFAULT_JOB), interval, timeout)

    @classmethod
    def from_targets(cls, listed: str, job: str = DEFAULT_JOB,
                     interval_s: float = DEFAULT_INTERVAL_S,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> ScrapeConfig:
        """``GEOPLEX_TELEMETRY_SCRAPE_TARGETS``: ``host:port`` or URLs, comma-separated."""
        if not job:
            raise ConfigError(f"{JOB_VAR}: expected a job name")
        targets = []
        for item in (part.strip() for part in listed.split(",")):
            if not item:
                raise ConfigError(f"{TARGETS_VAR}={listed!r}: expected host:port or URLs, "
                                  "comma-separated (an item is empty)")
            try:
                url, instance = _target_url(item)
            except ValueError as error:
                raise ConfigError(f"{TARGETS_VAR}: {item!r}: {error}") from None
            targets.append(ScrapeTarget(url, _target_labels(job, instance, {}), interval_s,
                                        timeout_s))
        return cls(_unique(targets, TARGETS_VAR))

    @classmethod
    def load(cls, path: Path, interval_s: float = DEFAULT_INTERVAL_S,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> ScrapeConfig:
        """The JSON file at ``path`` (``GEOPLEX_TELEMETRY_SCRAPE_CONFIG``)."""
        where = f"{CONFIG_VAR}={str(path)!r}"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{where}: cannot read it: {error.strerror or error}") from None
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"{where}: not JSON: {error}") from None
        return cls.parse(document, where, interval_s, timeout_s)

    @classmethod
    def parse(cls, document: object, where: str = CONFIG_VAR,
              interval_s: float = DEFAULT_INTERVAL_S,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> ScrapeConfig:
        """A decoded configuration document; ConfigError naming ``where`` and the field."""
        top = _object(document, where, "the document", _TOP_FIELDS)
        defaults = _object(top.get("global", {}), where, "global", _GLOBAL_FIELDS)
        interval = _duration(defaults, "scrape_interval", where, "global", interval_s)
        timeout = _duration(defaults, "scrape_timeout", where, "global", timeout_s)
        jobs = _list(top.get("scrape_configs", []), where, "scrape_configs")
        targets: list[ScrapeTarget] = []
        names: set[str] = set()
        for index, raw_job in enumerate(jobs):
            field = f"scrape_configs[{index}]"
            job = _object(raw_job, where, field, _JOB_FIELDS)
            name = _string(job, "job_name", where, field, None)
            if not name:
                raise ConfigError(f"{where}: {field}.job_name: expected a non-empty string")
            if name in names:
                raise ConfigError(f"{where}: {field}.job_name: {name!r} appears twice")
            names.add(name)
            targets.extend(_job_targets(job, name, where, field, interval, timeout))
        return cls(_unique(targets, where))


def _job_targets(job: Mapping[str, object], name: str, where: str, field: str,
                 global_interval: float, global_timeout: float) -> list[ScrapeTarget]:
    interval = _duration(job, "scrape_interval", where, field, global_interval)
    if "scrape_timeout" in job:
        timeout = _duration(job, "scrape_timeout", where, field, global_timeout)
        if timeout > interval:
            raise ConfigError(f"{where}: {field}.scrape_timeout: {timeout:g} s is longer "
                              f"than the scrape_interval ({interval:g} s)")
    else:
        timeout = min(global_timeout, interval)
    path = _string(job, "metrics_path", where, field, DEFAULT_METRICS_PATH)
    if not path.startswith("/"):
        raise ConfigError(f"{where}: {field}.metrics_path: expected a path starting '/', "
                          f"got {path!r}")
    scheme = _string(job, "scheme", where, field, "http")
    if scheme not in SCHEMES:
        raise ConfigError(f"{where}: {field}.scheme: expected one of {', '.join(SCHEMES)}, "
                          f"got {scheme!r}")
    honor_labels = _bool(job, "honor_labels", where, field, False)
    honor_timestamps = _bool(job, "honor_timestamps", where, field, True)
    out = []
    for group_index, raw_group in enumerate(_list(job.get("static_configs", []), where,
                                                  f"{field}.static_configs")):
        group_field = f"{field}.static_configs[{group_index}]"
        group = _object(raw_group, where, group_field, _STATIC_FIELDS)
        static = _labels(group.get("labels", {}), where, f"{group_field}.labels")
        for target_index, address in enumerate(_list(group.get("targets", []), where,
                                                     f"{group_field}.targets")):
            target_field = f"{group_field}.targets[{target_index}]"
            if not isinstance(address, str):
                raise ConfigError(f"{where}: {target_field}: expected a host:port string")
            try:
                host_port = _address(address)
            except ValueError as error:
                raise ConfigError(f"{where}: {target_field}: {error}") from None
            url = urllib.parse.urlunsplit((scheme, host_port, path, "", ""))
            out.append(ScrapeTarget(url, _target_labels(name, host_port, static), interval,
                                    timeout, honor_labels, honor_timestamps))
    return out


def _target_labels(job: str, instance: str,
                   static: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Prometheus's order: the static labels, then ``job`` and ``instance`` where unset."""
    labels = {"job": job, "instance": instance}
    labels.update((name, value) for name, value in static.items() if value)
    return tuple(sorted(labels.items()))


def _unique(targets: Sequence[ScrapeTarget], where: str) -> tuple[ScrapeTarget, ...]:
    """Exact repeats dropped (as Prometheus does); two targets writing one label set refused."""
    seen: dict[tuple[tuple[str, str], ...], ScrapeTarget] = {}
    for target in targets:
        other = seen.get(target.labels)
        if other is None:
            seen[target.labels] = target
        elif other != target:
            shown = ", ".join(f"{n}={v!r}" for n, v in target.labels)
            raise ConfigError(f"{where}: two targets have the same labels {{{shown}}}: "
                              "their series would collide (give one another instance label)")
    return tuple(seen.values())


def _target_url(item: str) -> tuple[str, str]:
    """``host:port`` or a URL -> (the URL to get, the instance label)."""
    if "://" not in item:
        return (urllib.parse.urlunsplit(("http", _address(item), DEFAULT_METRICS_PATH, "",
                                         "")), _address(item))
    parts = urllib.parse.urlsplit(item)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"expected an http:// or https:// URL, got scheme {scheme!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the URL's port is not a number in 1..65535") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    instance = host if port is None else f"{host}:{port}"
    path = parts.path or DEFAULT_METRICS_PATH
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, "")), instance


def _address(text: str) -> str:
    """A ``host:port`` (``[v6]:port``) checked; ValueError saying what was expected."""
    host, sep, port = text.strip().rpartition(":")
    if (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536
            or any(c in host for c in "/?#@ ")):
        raise ValueError(f"expected host:port, got {text!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"expected host:port (an IPv6 host in brackets), got {text!r}")
    return f"{host}:{int(port)}"


# ---- typed reads of the decoded JSON, each naming its field --------------------------


def _object(value: object, where: str, field: str,
            allowed: Sequence[str]) -> Mapping[str, object]:
    if value is None:  # an empty YAML section
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {field}: expected an object")
    for key in value:
        if key not in allowed:
            name = key if field == "the document" else f"{field}.{key}"
            raise ConfigError(f"{where}: {name}: unknown field (expected one of "
                              f"{', '.join(allowed)})")
    return value


def _list(value: object, where: str, field: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {field}: expected a list")
    return value


def _string(source: Mapping[str, object], key: str, where: str, field: str,
            default: str | None) -> str:
    value = source.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {field}.{key}: expected a string")
    return value


def _bool(source: Mapping[str, object], key: str, where: str, field: str,
          default: bool) -> bool:
    value = source.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {field}.{key}: expected true or false")
    return value


def _duration(source: Mapping[str, object], key: str, where: str, field: str,
              default: float) -> float:
    """A Prometheus duration string or a number of seconds, in seconds."""
    value = source.get(key)
    if value is None:
        return default
    seconds: float | None = None
    if isinstance(value, str):
        try:
            seconds = parse_duration(value.strip()) / 1000
        except ValueError:
            seconds = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    if seconds is None or not math.isfinite(seconds) or not (
            MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S):
        raise ConfigError(f"{where}: {field}.{key}: expected a duration ('15s', '1m30s', "
                          f"'500ms') or seconds in {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g}, "
                          f"got {value!r}")
    return seconds


def _labels(value: object, where: str, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {field}: expected an object of label names to values")
    out: dict[str, str] = {}
    for name, label_value in value.items():
        if not isinstance(label_value, str):
            raise ConfigError(f"{where}: {field}.{name}: expected a string value")
        try:
            validate_label_name(name)
        except InvalidLabels as error:
            raise ConfigError(f"{where}: {field}.{name}: {error.description}") from None
        if name == "__name__":
            raise ConfigError(f"{where}: {field}.{name}: a target cannot set the metric name")
        out[name] = label_value
    return out
