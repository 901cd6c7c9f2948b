"""The ``data`` of Prometheus's ``GET /api/v1/rules`` and ``GET /api/v1/alerts``, from a
:class:`~.manager.RuleManager`.

``/api/v1/rules`` takes Prometheus's filters: ``type=alert|record``, ``rule_name[]``,
``rule_group[]``, ``file[]``, ``exclude_alerts=true`` and ``match[]`` (selectors the
rule's labels must satisfy). Times are RFC 3339, durations seconds, alert values Go's
``%e`` text (``"1e+00"``), as Prometheus writes them. Rule files that did not load are
listed as the answer's ``warnings``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from multidict import MultiMapping

from geoplex.servers._runtime.errors import InvalidArgument

from ..tsdb.labels import Matcher, matches_all
from .evaluator import Alert, AlertingRule, Group, Rule, go_time
from .gofmt import format_e
from .manager import RuleManager

SelectorParser = Callable[[str], list[Matcher]]


def alert_json(alert: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": dict(alert.labels), "annotations": dict(alert.annotations),
                           "state": alert.state.value, "activeAt": go_time(alert.active_at_ms),
                           "value": format_e(alert.value)}
    if alert.keep_firing_since_ms is not None:
        out["keepFiringSince"] = go_time(alert.keep_firing_since_ms)
    return out


def rule_json(rule: Rule, exclude_alerts: bool) -> dict[str, Any]:
    spec = rule.spec
    common = {"name": spec.name, "query": spec.query, "labels": dict(spec.labels),
              "health": rule.health.value, "lastError": rule.last_error,
              "evaluationTime": rule.evaluation_s,
              "lastEvaluation": go_time(rule.last_evaluation_ms)}
    if not isinstance(rule, AlertingRule):
        return {**common, "type": "recording"}
    out: dict[str, Any] = {"state": rule.state.value, **common,
                           "duration": spec.for_ms / 1000,
                           "keepFiringFor": spec.keep_firing_for_ms / 1000,
                           "annotations": dict(spec.annotations), "type": "alerting"}
    if not exclude_alerts:
        out["alerts"] = [alert_json(a) for a in sorted(rule.alerts(),
                                                       key=lambda a: a.labels)]
    return out


def _group_json(group: Group, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": group.name, "file": group.file, "rules": rules,
            "interval": group.interval_ms / 1000, "limit": group.spec.limit,
            "evaluationTime": group.metrics.last_duration_s,
            "lastEvaluation": go_time(group.last_evaluation_ms)}


def rules_data(manager: RuleManager | None, params: MultiMapping[str],
               parse_selector: SelectorParser | None = None) -> tuple[dict[str, Any], list[str]]:
    """``/api/v1/rules``: the ``data`` and the warnings (rule files that did not load)."""
    kind = params.get("type", "")
    if kind not in ("", "alert", "record"):
        raise InvalidArgument("type", f"unsupported type {kind!r}: expected alert or record")
    names = set(params.getall("rule_name[]", []))
    groups = set(params.getall("rule_group[]", []))
    files = set(params.getall("file[]", []))
    exclude = params.get("exclude_alerts", "false").lower() == "true"
    selectors: list[list[Matcher]] = []
    raw_selectors: Sequence[str] = params.getall("match[]", [])
    if raw_selectors:
        if parse_selector is None:
            raise InvalidArgument("match[]", "selectors are not supported here")
        selectors = [parse_selector(s) for s in raw_selectors]
    out = []
    for group in manager.groups() if manager is not None else []:
        if (groups and group.name not in groups) or (files and group.file not in files):
            continue
        shown = []
        for rule in group.rules:
            alerting = isinstance(rule, AlertingRule)
            if (kind == "alert" and not alerting) or (kind == "record" and alerting):
                continue
            if names and rule.name not in names:
                continue
            if selectors and not any(matches_all(dict(rule.spec.labels), m) for m in selectors):
                continue
            shown.append(rule_json(rule, exclude))
        if shown or not (kind or names or selectors):
            out.append(_group_json(group, shown))
    warnings = [str(p) for p in manager.load_errors] if manager is not None else []
    return {"groups": out}, warnings


def alerts_data(manager: RuleManager | None) -> dict[str, Any]:
    """``/api/v1/alerts``: every pending and firing alert."""
    alerts: list[dict[str, Any]] = []
    for rule in manager.rules() if manager is not None else []:
        if isinstance(rule, AlertingRule):
            alerts.extend(alert_json(a) for a in sorted(rule.alerts(), key=lambda a: a.labels))
    return {"alerts": alerts}
