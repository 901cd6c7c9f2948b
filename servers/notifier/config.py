"""NotifierConfig: read once from GEOPLEX_NOTIFIER_* variables at start, with the
routing tree, receivers and inhibition rules from an Alertmanager-format YAML file.

Variables:

- ``GEOPLEX_NOTIFIER_CONFIG``: the path of the YAML file (below). Unset: the embedded
  default, one route (``group_by: [alertname]``, 30s / 5m / 4h) to a receiver
  ``default`` whose channels come from ``GEOPLEX_NOTIFIER_SMTP_URL``
  (``smtp://[user:password@]host:port``: plain SMTP; ``smtps://...``: TLS, implicit on
  port 465, else STARTTLS required) with ``GEOPLEX_NOTIFIER_EMAIL_TO`` (comma-separated
  addresses) and ``GEOPLEX_NOTIFIER_EMAIL_FROM`` (default ``geoplex-notifier@localhost``),
  and ``GEOPLEX_NOTIFIER_WEBHOOK_URL`` (``http(s)://...``, Alertmanager's payload). Those
  three may not be set together with a file (the file names its receivers). The default
  route's timers: ``GEOPLEX_NOTIFIER_GROUP_WAIT`` (30s), ``..._GROUP_INTERVAL`` (5m),
  ``..._REPEAT_INTERVAL`` (4h); its email says when an alert resolves too.
- ``GEOPLEX_NOTIFIER_ID``: this node's id, 1..2^31-1 (``geoplex up`` gives node i the id
  i); it names the node (``notifier-<id>``) in the notification log.
- ``GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT``: an alert posted without ``ends_at`` resolves this
  long after its last post (default the file's ``global.resolve_timeout``, else 5m).
- ``GEOPLEX_NOTIFIER_EXTERNAL_URL``: where people reach the notifier (links in
  notifications); default none.
- ``GEOPLEX_ETCD_ENDPOINTS`` (required) and ``GEOPLEX_NOTIFIER_ETCD_PREFIX`` (default
  ``/geoplex/notifier``): the silences, claims and notification log the nodes share.
- ``GEOPLEX_NOTIFIER_LOG_LIMIT``: notification log records kept (default 1000).
- ``GEOPLEX_NOTIFIER_RETRY_ATTEMPTS`` (8), ``..._RETRY_BASE_SECONDS`` (0.5),
  ``..._RETRY_MAX_SECONDS`` (30), ``..._SEND_TIMEOUT_SECONDS`` (30): each delivery is
  tried at most that many times, backing off exponentially (jittered) between.
- ``GEOPLEX_NOTIFIER_SILENCE_RETENTION``: expired silences are deleted this long after
  they ended (default 120h, as Alertmanager's ``--data.retention``).

The file is a subset of Alertmanager's ``alertmanager.yml`` (unknown keys are errors)::

    global:
      resolve_timeout: 5m
    route:
      receiver: ops                   # required at the root
      group_by: [alertname, cluster]  # ['...']: every label
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ['severity="page"', 'service=~"api|maps"']
          receiver: pager
          continue: true
    receivers:
      - name: ops
        email_configs: [{to: ops@example.com, smarthost: 'mail:25', from: am@example.com}]
      - name: pager
        pagerduty_configs: [{routing_key: ...}]
        webhook_configs: [{url: 'https://hooks.example.com/alert'}]
    inhibit_rules:
      - source_matchers: ['severity="critical"']
        target_matchers: ['severity="warning"']
        equal: [alertname, cluster]

(``match`` / ``match_re`` and the ``source_match*`` / ``target_match*`` forms of older
Alertmanagers are read too.) A receiver's mapping is handed to the channels as written.
An error names the file, the path in it (``route.routes[1].matchers[0]``) and the problem.
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoplex.servers._runtime.config import ConfigError, Env

from .domain import (
    LABEL_NAME,
    InhibitRule,
    Matcher,
    MatcherError,
    MatchType,
    Route,
    child_key,
    parse_duration,
    parse_matchers,
)

PREFIX = "GEOPLEX_NOTIFIER_"
CONFIG_VAR = PREFIX + "CONFIG"
DEFAULT_SOURCE = "the default configuration"
DEFAULT_EMAIL_FROM = "geoplex-notifier@localhost"
DEFAULTS = {"group_wait": 30.0, "group_interval": 300.0, "repeat_interval": 4 * 3600.0}
MAX_INTERVAL_S = 365 * 86_400.0

_TOP_KEYS = ("global", "route", "receivers", "inhibit_rules")
_NOT_SUPPORTED_TOP = {"templates": "templates are not supported (channels render their own "
                      "messages)",
                      "time_intervals": "time intervals are not supported",
                      "mute_time_intervals": "time intervals are not supported"}
_GLOBAL_KEYS = ("resolve_timeout",)
_ROUTE_KEYS = ("receiver", "group_by", "continue", "matchers", "match", "match_re",
               "group_wait", "group_interval", "repeat_interval", "routes")
_NOT_SUPPORTED_ROUTE = ("mute_time_intervals", "active_time_intervals")
_RECEIVER_CHANNELS = ("email_configs", "pagerduty_configs", "webhook_configs")
_INHIBIT_KEYS = ("source_matchers", "target_matchers", "equal", "source_match",
                 "source_match_re", "target_match", "target_match_re")


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    config: Mapping[str, Any]  # the receiver's mapping as written: for build_channels


@dataclass(frozen=True, slots=True)
class Alerting:
    """The routing tree, the receivers and the inhibition rules, from ``source``."""

    route: Route
    receivers: tuple[Receiver, ...]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    resolve_timeout_s: float | None = None  # global.resolve_timeout
    source: str = DEFAULT_SOURCE

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


class _Reader:
    """Errors naming the source and the path in it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str) -> ConfigError:
        where = f"{path}: " if path else ""
        return ConfigError(f"{self.source}: {where}{problem}")

    def mapping(self, value: object, path: str, keys: Sequence[str],
                unsupported: Mapping[str, str] | None = None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if unsupported and key in unsupported:
                raise self.error(_join(path, str(key)), unsupported[key])
            if key not in keys:
                raise self.error(_join(path, str(key)), "unknown field (expected one of "
                                 f"{', '.join(keys)})")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"expected a non-empty string, got {_kind(value)}")
        return value.strip()

    def strings(self, value: object, path: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list of strings, got {_kind(value)}")
        return [self.string(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def duration(self, value: object, path: str, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(path, f"expected a duration such as 30s or 5m, got "
                             f"{_kind(value)}")
        try:
            seconds = parse_duration(str(value)) if isinstance(value, str) else float(value)
        except ValueError as exc:
            raise self.error(path, str(exc)) from None
        if (positive and seconds <= 0) or seconds > MAX_INTERVAL_S:
            raise self.error(path, f"{value!r}: expected a duration above 0 and at most "
                             "1 year")
        return seconds

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_kind(value)}")
        return value

    def matchers(self, node: Mapping[str, Any], path: str, key: str, equal_key: str,
                 regex_key: str) -> tuple[Matcher, ...]:
        """``key`` (a list of matcher strings) and the older ``equal_key`` / ``regex_key``
        maps of label -> value."""
        out: list[Matcher] = []
        if key in node:
            listed = node[key]
            if not isinstance(listed, list):
                raise self.error(_join(path, key), "expected a list of matchers such as "
                                 f"['severity=\"page\"'], got {_kind(listed)}")
            for i, text in enumerate(listed):
                where = f"{_join(path, key)}[{i}]"
                try:
                    out.extend(parse_matchers(self.string(text, where)))
                except MatcherError as exc:
                    raise self.error(where, str(exc)) from None
        for legacy, kind in ((equal_key, MatchType.EQUAL), (regex_key, MatchType.REGEX)):
            if legacy not in node:
                continue
            table = node[legacy]
            if not isinstance(table, Mapping):
                raise self.error(_join(path, legacy), f"expected a mapping of label to "
                                 f"value, got {_kind(table)}")
            for name, value in table.items():
                where = f"{_join(path, legacy)}.{name}"
                try:
                    out.append(Matcher(str(name), kind, self.string(value, where)))
                except MatcherError as exc:
                    raise self.error(where, str(exc)) from None
        return tuple(out)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_alerting(data: object, source: str = DEFAULT_SOURCE) -> Alerting:
    """The configuration from a loaded YAML document; ConfigError naming ``source``, the
    path and the problem."""
    r = _Reader(source)
    top = r.mapping(data, "", _TOP_KEYS, _NOT_SUPPORTED_TOP)
    resolve_timeout = None
    if top.get("global") is not None:
        glob = top["global"]
        if not isinstance(glob, Mapping):
            raise r.error("global", f"expected a mapping, got {_kind(glob)}")
        for key in glob:
            if key not in _GLOBAL_KEYS:
                raise r.error(f"global.{key}", "not supported here: set it in each "
                              "receiver's config (global has only resolve_timeout)")
        if "resolve_timeout" in glob:
            resolve_timeout = r.duration(glob["resolve_timeout"], "global.resolve_timeout")
    receivers = _receivers(r, top.get("receivers"))
    names = {rc.name for rc in receivers}
    if "route" not in top:
        raise r.error("route", "is required: the root of the routing tree")
    route = _route(r, top["route"], "route", None, 0, names)
    rules = _inhibit_rules(r, top.get("inhibit_rules"))
    return Alerting(route, receivers, rules, resolve_timeout, source)


def _receivers(r: _Reader, value: object) -> tuple[Receiver, ...]:
    if not isinstance(value, list) or not value:
        raise r.error("receivers", "expected a list of at least one receiver, got "
                      f"{_kind(value)}")
    out: list[Receiver] = []
    for i, item in enumerate(value):
        path = f"receivers[{i}]"
        if not isinstance(item, Mapping):
            raise r.error(path, f"expected a mapping, got {_kind(item)}")
        name = r.string(item.get("name"), f"{path}.name")
        if any(rc.name == name for rc in out):
            raise r.error(f"{path}.name", f"{name!r}: another receiver has this name")
        for key, entries in item.items():
            if key == "name":
                continue
            if not str(key).endswith("_configs"):
                raise r.error(_join(path, str(key)), "unknown field (expected name, "
                              f"{', '.join(_RECEIVER_CHANNELS)})")
            if str(key) not in _RECEIVER_CHANNELS:
                raise r.error(_join(path, str(key)), "not supported (the notifier has "
                              f"{', '.join(_RECEIVER_CHANNELS)})")
            if not isinstance(entries, list):
                raise r.error(_join(path, str(key)), f"expected a list, got {_kind(entries)}")
        out.append(Receiver(name, dict(item)))
    return tuple(out)


def _route(r: _Reader, value: object, path: str, parent: Route | None, index: int,
           receivers: set[str]) -> Route:
    node = r.mapping(value, path, _ROUTE_KEYS,
                     {k: "not supported (no time intervals)" for k in _NOT_SUPPORTED_ROUTE})
    root = parent is None
    if "receiver" in node:
        receiver = r.string(node["receiver"], f"{path}.receiver")
        if receiver not in receivers:
            raise r.error(f"{path}.receiver", f"{receiver!r} is not a receiver (the "
                          f"receivers: {', '.join(sorted(receivers))})")
    elif root:
        raise r.error(f"{path}.receiver", "is required at the root route")
    else:
        assert parent is not None
        receiver = parent.receiver
    matchers = r.matchers(node, path, "matchers", "match", "match_re")
    if root and matchers:
        raise r.error(f"{path}.matchers", "the root route must not have matchers (it "
                      "takes every alert)")
    continuing = r.boolean(node["continue"], f"{path}.continue") if "continue" in node \
        else False
    if root and continuing:
        raise r.error(f"{path}.continue", "the root route cannot continue")
    if "group_by" in node:
        group_by = r.strings(node["group_by"], f"{path}.group_by")
        group_all = "..." in group_by
        if group_all and len(group_by) > 1:
            raise r.error(f"{path}.group_by", "'...' (every label) must be alone")
        for i, name in enumerate(group_by):
            if name != "..." and not LABEL_NAME.fullmatch(name):
                raise r.error(f"{path}.group_by[{i}]", f"{name!r} is not a label name")
            if group_by.index(name) != i:
                raise r.error(f"{path}.group_by[{i}]", f"{name!r} is listed twice")
        by = () if group_all else tuple(group_by)
    else:
        by = parent.group_by if parent else ()
        group_all = parent.group_by_all if parent else False
    timers: dict[str, float] = {}
    for key in DEFAULTS:
        if key in node:
            timers[key] = r.duration(node[key], f"{path}.{key}")
        else:
            timers[key] = float(getattr(parent, key)) if parent else DEFAULTS[key]
    key = "{}" if parent is None else child_key(parent.key, index, matchers)
    this = Route(receiver, matchers, by, group_all, timers["group_wait"],
                 timers["group_interval"], timers["repeat_interval"], continuing, (), key)
    children = node.get("routes") or []
    if not isinstance(children, list):
        raise r.error(f"{path}.routes", f"expected a list of routes, got {_kind(children)}")
    built = tuple(_route(r, child, f"{path}.routes[{i}]", this, i, receivers)
                  for i, child in enumerate(children))
    return Route(receiver, matchers, by, group_all, this.group_wait, this.group_interval,
                 this.repeat_interval, continuing, built, key)


def _inhibit_rules(r: _Reader, value: object) -> tuple[InhibitRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.error("inhibit_rules", f"expected a list, got {_kind(value)}")
    out = []
    for i, item in enumerate(value):
        path = f"inhibit_rules[{i}]"
        node = r.mapping(item, path, _INHIBIT_KEYS)
        source = r.matchers(node, path, "source_matchers", "source_match", "source_match_re")
        target = r.matchers(node, path, "target_matchers", "target_match", "target_match_re")
        if not source:
            raise r.error(f"{path}.source_matchers", "is required: which alerts inhibit")
        if not target:
            raise r.error(f"{path}.target_matchers", "is required: which alerts are "
                          "inhibited")
        equal = r.strings(node["equal"], f"{path}.equal") if "equal" in node else []
        for j, name in enumerate(equal):
            if not LABEL_NAME.fullmatch(name):
                raise r.error(f"{path}.equal[{j}]", f"{name!r} is not a label name")
        out.append(InhibitRule(source, target, tuple(equal)))
    return tuple(out)


def load_alerting(path: Path, var: str = CONFIG_VAR) -> Alerting:
    """The file at ``path``; ConfigError naming the variable, the file and the problem."""
    source = f"{var}={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: is not UTF-8 text") from None
    return parse_alerting_text(text, source)


def parse_alerting_text(text: str, source: str = DEFAULT_SOURCE) -> Alerting:
    """The configuration in the YAML ``text``; ConfigError naming ``source``."""
    yaml = importlib.import_module("yaml")  # PyYAML (its type stubs are not installed)
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: is not YAML{where}: {problem}") from None
    return parse_alerting(data, source)


def default_alerting(env: Env) -> Alerting:
    """One route to the receiver ``default``, its channels from the environment."""
    receiver: dict[str, Any] = {"name": "default"}
    smtp = env.url(PREFIX + "SMTP_URL", ("smtp", "smtps"))
    to = env.str(PREFIX + "EMAIL_TO")
    if (smtp is None) != (not to):
        raise ConfigError(f"{PREFIX}SMTP_URL and {PREFIX}EMAIL_TO: set both (where to send "
                          "alert email, and to whom) or neither")
    if smtp is not None:
        # resolved notices too (Alertmanager's email default is not to): a person told an
        # alert fired is told when it is over
        receiver["email_configs"] = [{**email_config(smtp, to, env.str(
            PREFIX + "EMAIL_FROM", DEFAULT_EMAIL_FROM)), "send_resolved": True}]
    webhook = env.url(PREFIX + "WEBHOOK_URL", ("http", "https"))
    if webhook is not None:
        receiver["webhook_configs"] = [{"url": webhook, "send_resolved": True}]
    def timer(name: str) -> float:
        return _env_duration(env, f"{PREFIX}{name.upper()}", DEFAULTS[name])

    route = Route("default", group_by=("alertname",), group_wait=timer("group_wait"),
                  group_interval=timer("group_interval"),
                  repeat_interval=timer("repeat_interval"))
    return Alerting(route, (Receiver("default", receiver),), (), None, DEFAULT_SOURCE)


def email_config(url: str, to: str, sender: str) -> dict[str, Any]:
    """An Alertmanager ``email_configs`` entry for ``smtp[s]://[user:password@]host:port``."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if secure else 25)
    except ValueError:
        raise ConfigError(f"{PREFIX}SMTP_URL: the port is not a number") from None
    if not parts.hostname:
        raise ConfigError(f"{PREFIX}SMTP_URL: expected smtp://host:port (no host given)")
    config: dict[str, Any] = {"to": to, "from": sender,
                              "smarthost": f"{parts.hostname}:{port}",
                              "require_tls": secure}
    if parts.username:
        config["auth_username"] = urllib.parse.unquote(parts.username)
        config["auth_password"] = urllib.parse.unquote(parts.password or "")
    return config


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    node_id: int  # GEOPLEX_NOTIFIER_ID
    etcd_endpoints: tuple[str, ...]  # GEOPLEX_ETCD_ENDPOINTS
    etcd_prefix: str  # GEOPLEX_NOTIFIER_ETCD_PREFIX
    alerting: Alerting  # GEOPLEX_NOTIFIER_CONFIG, or the default
    resolve_timeout_s: float = 300.0  # GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT
    external_url: str = ""  # GEOPLEX_NOTIFIER_EXTERNAL_URL
    log_limit: int = 1000  # GEOPLEX_NOTIFIER_LOG_LIMIT
    retry_attempts: int = 8  # GEOPLEX_NOTIFIER_RETRY_ATTEMPTS
    retry_base_s: float = 0.5  # GEOPLEX_NOTIFIER_RETRY_BASE_SECONDS
    retry_max_s: float = 30.0  # GEOPLEX_NOTIFIER_RETRY_MAX_SECONDS
    send_timeout_s: float = 30.0  # GEOPLEX_NOTIFIER_SEND_TIMEOUT_SECONDS
    silence_retention_s: float = 120 * 3600.0  # GEOPLEX_NOTIFIER_SILENCE_RETENTION

    @property
    def node(self) -> str:
        """The node's name in the notification log."""
        return f"notifier-{self.node_id}"

    @classmethod
    def from_env(cls, env: Env | None = None) -> NotifierConfig:
        env = env or Env()
        endpoints = env.endpoints("GEOPLEX_ETCD_ENDPOINTS")
        if endpoints is None:
            raise ConfigError("GEOPLEX_ETCD_ENDPOINTS is not set: the notifier nodes share "
                              "silences and the notification log through etcd; run "
                              "`geoplex up`, or `geoplex infra up` and export what it prints")
        prefix = env.str(PREFIX + "ETCD_PREFIX", "/geoplex/notifier").rstrip("/")
        if not prefix.startswith("/") or not prefix.isprintable() or " " in prefix:
            raise ConfigError(f"{PREFIX}ETCD_PREFIX={prefix!r}: expected a key prefix "
                              "starting with / (no spaces or control characters)")
        path = env.raw(CONFIG_VAR)
        if path is not None:
            clashing = [PREFIX + name for name in ("SMTP_URL", "EMAIL_TO", "WEBHOOK_URL")
                        if env.raw(PREFIX + name) is not None]
            if clashing:
                raise ConfigError(f"{CONFIG_VAR} and {', '.join(clashing)}: with a "
                                  "configuration file its receivers say where alerts go; "
                                  "unset the variables or drop the file")
            alerting = load_alerting(Path(path).expanduser())
        else:
            alerting = default_alerting(env)
        resolve = _env_duration(env, PREFIX + "RESOLVE_TIMEOUT",
                                alerting.resolve_timeout_s or 300.0)
        external = env.url(PREFIX + "EXTERNAL_URL", ("http", "https")) or ""
        return cls(
            node_id=env.int(PREFIX + "ID", 1, lo=1, hi=(1 << 31) - 1),
            etcd_endpoints=endpoints,
            etcd_prefix=prefix,
            alerting=alerting,
            resolve_timeout_s=resolve,
            external_url=external.rstrip("/"),
            log_limit=env.int(PREFIX + "LOG_LIMIT", 1000, lo=10, hi=100_000),
            retry_attempts=env.int(PREFIX + "RETRY_ATTEMPTS", 8, lo=1, hi=100),
            retry_base_s=env.float(PREFIX + "RETRY_BASE_SECONDS", 0.5, lo=0.001, hi=600.0),
            retry_max_s=env.float(PREFIX + "RETRY_MAX_SECONDS", 30.0, lo=0.001, hi=3600.0),
            send_timeout_s=env.float(PREFIX + "SEND_TIMEOUT_SECONDS", 30.0, lo=0.1,
                                     hi=600.0),
            silence_retention_s=_env_duration(env, PREFIX + "SILENCE_RETENTION",
                                              120 * 3600.0),
        )


def _env_duration(env: Env, name: str, default: float) -> float:
    value = env.raw(name)
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError:
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a duration such as 5m, 90s or "
                              "1h30m") from None
    if not 0 < seconds <= MAX_INTERVAL_S:
        raise ConfigError(f"{name}={value!r}: expected a duration above 0 and at most 1 year")
    return seconds
