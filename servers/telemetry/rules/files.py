"""Rule files in Prometheus's format, read and validated as ``promtool check rules`` does:

.. code-block:: yaml

    groups:
      - name: mesh                 # required, unique in the file
        interval: 30s              # default: GEOPLEX_TELEMETRY_RULE_INTERVAL_SECONDS
        limit: 0                   # most alerts / series a rule may produce (0: no limit)
        query_offset: 0s           # evaluate this far in the past
        labels: {team: core}       # added to every rule's labels (Prometheus 3)
        rules:
          - record: job:rpc_requests:rate5m
            expr: sum by (job) (rate(rpc_server_call_duration_seconds_count[5m]))
          - alert: HighErrorRatio
            expr: job:rpc_errors:rate5m / job:rpc_requests:rate5m > 0.05
            for: 5m
            keep_firing_for: 1m
            labels: {severity: page}
            annotations:
              summary: "{{ $labels.job }}: {{ $value | humanizePercentage }} errors"

Every problem is reported, each naming the file, where in it (line:column), the group,
the rule's position (1-based) and name, as Prometheus words them::

    rules.yml:12:11: group "mesh", rule 2, "HighErrorRatio": could not parse expression:
    1:8: parse error: unexpected <by>

A file with any problem contributes no group (its other groups are not half-loaded);
the other files' groups load. Durations are Prometheus's (``1h30m``, ``500ms``, ``0``);
label names ``[a-zA-Z_][a-zA-Z0-9_]*`` (``__`` reserved); recording rule names metric
names ``[a-zA-Z_:][a-zA-Z0-9_:]*``; templates are checked by parsing them
(:mod:`.templates`).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from geoplex.servers._runtime.errors import InvalidArgument

from ..promql.ast import Expr
from ..promql.parser import PromQLError, parse, parse_duration
from .gofmt import quote
from .templates import Template, TemplateError

logger = logging.getLogger(__name__)

DEFAULT_RULES: Final = Path(__file__).with_name("default_rules.yml")
DEFAULT_NAME: Final = "default"
GROUP_KEYS: Final = ("name", "interval", "query_offset", "limit", "labels", "rules")
RULE_KEYS: Final = ("alert", "record", "expr", "for", "keep_firing_for", "labels",
                    "annotations")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NULL = "tag:yaml.org,2002:null"
_INT = "tag:yaml.org,2002:int"
# PyYAML (its type stubs are not installed): composed into nodes, which keep positions
yaml: Any = importlib.import_module("yaml")
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Mark(Protocol):
    line: int
    column: int


class Node(Protocol):
    """A composed YAML node (PyYAML's ``ScalarNode``, ``MappingNode``, ``SequenceNode``)."""

    tag: str
    value: Any
    start_mark: _Mark

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong in a rule file, printed as promtool prints it."""

    file: str
    message: str
    line: int = 0
    column: int = 0
    group: str | None = None
    rule: int | None = None      # 1-based
    rule_name: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: " if not self.line else f"{self.file}:{self.line}:{self.column}: "
        if self.group is None:
            return where + self.message
        if self.rule is None:
            return f"{where}group {quote(self.group)}: {self.message}"
        return (f"{where}group {quote(self.group)}, rule {self.rule}, "
                f"{quote(self.rule_name)}: {self.message}")


class RuleFileError(InvalidArgument):
    """Rules that do not load; ``problems`` lists every one (nothing of them was used)."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__("rules", shown + more, reason="INVALID_RULES")


@dataclass(frozen=True)
class RuleSpec:
    """A validated rule: ``kind`` is ``alerting`` or ``recording``; ``name`` the alert's
    or the recorded metric's name; templates parsed (alerting rules only)."""

    kind: str
    name: str
    expr: Expr
    index: int                     # 1-based, in its group
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: Pairs = ()
    annotations: Pairs = ()
    label_templates: tuple[tuple[str, Template], ...] = field(default=(), compare=False)
    annotation_templates: tuple[tuple[str, Template], ...] = field(default=(),
                                                                   compare=False)

    @property
    def query(self) -> str:
        return str(self.expr)

    @property
    def identity(self) -> tuple[str, str, Pairs]:
        """What a reload matches an old rule by (its state is carried over), as
        Prometheus's ``CopyState``: the kind, the name and the labels."""
        return self.kind, self.name, self.labels


@dataclass(frozen=True)
class GroupSpec:
    file: str
    name: str
    rules: tuple[RuleSpec, ...]
    interval_ms: int | None = None  # None: the manager's default
    limit: int = 0
    query_offset_ms: int = 0
    labels: Pairs = ()


@dataclass
class LoadResult:
    groups: list[GroupSpec] = field(default_factory=list)
    errors: list[RuleProblem] = field(default_factory=list)


def resolve_rule_files(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The files to load: the packaged :data:`DEFAULT_RULES` when none are configured,
    and in place of an entry that says ``default``."""
    chosen = tuple(DEFAULT_RULES if str(p) == DEFAULT_NAME else p for p in paths)
    return chosen or (DEFAULT_RULES,)


def load_rules(paths: Iterable[Path]) -> LoadResult:
    """Every file's groups; a file that cannot be read or has a problem adds its
    problems to ``errors`` (each logged) and no group."""
    result = LoadResult()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems = [RuleProblem(str(path), f"cannot read the file: "
                                               f"{getattr(error, 'strerror', None) or error}")]
            groups: list[GroupSpec] = []
        else:
            groups, problems = parse_rule_file(str(path), text)
        for problem in problems:
            logger.error("telemetry: rule file: %s", problem)
        result.groups.extend(groups)
        result.errors.extend(problems)
    return result


def parse_rule_file(file: str, text: str) -> tuple[list[GroupSpec], list[RuleProblem]]:
    """The groups of one file's text and its problems; no groups when it has any."""
    reader = _Reader(file)
    groups = reader.read(text)
    found = sorted(reader.problems, key=lambda p: (p.line, p.column))  # in file order
    return ([], found) if found else (groups, [])


def check_rule_file(file: str, text: str) -> list[GroupSpec]:
    """The groups of one file's text, or :class:`RuleFileError` with every problem."""
    groups, problems = parse_rule_file(file, text)
    if problems:
        raise RuleFileError(problems)
    return groups


def _position(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _kind(node: Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a value"


@dataclass
class _Context:
    group: str | None = None
    rule: int | None = None
    rule_name: str = ""


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[RuleProblem] = []

    def problem(self, node: Node | None, message: str, context: _Context | None = None
                ) -> None:
        line, column = _position(node) if node is not None else (0, 0)
        context = context or _Context()
        self.problems.append(RuleProblem(self.file, message, line, column, context.group,
                                         context.rule, context.rule_name))

    # -- YAML shapes ---------------------------------------------------------------------

    def mapping(self, node: Node, what: str, known: Sequence[str] | None,
                context: _Context) -> dict[str, tuple[Node, Node]] | None:
        """A mapping's entries by key (value node, key node); None (a problem) when it
        is not a mapping. Duplicate and (with ``known``) unknown keys are problems."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping, not {_kind(node)}", context)
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, f"{what}: a key must be a string, not "
                                       f"{_kind(key_node)}", context)
                continue
            key = str(key_node.value)
            if key in entries:
                line, _ = _position(entries[key][1])
                self.problem(key_node, f"{what}: mapping key {quote(key)} already defined at "
                                       f"line {line}", context)
                continue
            if known is not None and key not in known:
                self.problem(key_node, f"{what}: unknown field {quote(key)} (expected one of "
                                       f"{', '.join(known)})", context)
                continue
            entries[key] = (value_node, key_node)
        return entries

    def text(self, node: Node, what: str, context: _Context) -> str | None:
        """A scalar's text ('' for null); None (a problem) when it is not a scalar."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be a string, not {_kind(node)}", context)
            return None
        return "" if node.tag == _NULL else str(node.value)

    def duration(self, node: Node, what: str, context: _Context) -> int:
        text = self.text(node, what, context)
        if not text:
            return 0
        try:
            return parse_duration(text)
        except ValueError as error:
            self.problem(node, f"{what}: {error}", context)
            return 0

    def pairs(self, node: Node, what: str, context: _Context, *,
              name_problem: str) -> Pairs:
        entries = self.mapping(node, what, None, context)
        if entries is None:
            return ()
        out: list[tuple[str, str]] = []
        for key, (value_node, key_node) in entries.items():
            reason = _label_name_problem(key, label=what == "labels")
            if reason:
                self.problem(key_node, f"{name_problem}: {key}{reason}", context)
                continue
            value = self.text(value_node, f"{what} {quote(key)}", context)
            if value is not None:
                out.append((key, value))
        return tuple(out)

    # -- the file ------------------------------------------------------------------------

    def read(self, text: str) -> list[GroupSpec]:
        try:
            documents = list(yaml.compose_all(text, Loader=_Loader))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            detail = " ".join(str(p) for p in (error.context, error.problem) if p)
            self.problems.append(RuleProblem(self.file, f"yaml: {detail}", line, column))
            return []
        except yaml.YAMLError as error:
            self.problems.append(RuleProblem(self.file, f"yaml: {error}"))
            return []
        groups: list[GroupSpec] = []
        seen: set[str] = set()
        for document in documents:
            if document is None:
                continue
            top = self.mapping(document, "the file", ("groups",), _Context())
            if top is None or "groups" not in top:
                continue
            listed = top["groups"][0]
            if isinstance(listed, yaml.ScalarNode) and listed.tag == _NULL:
                continue
            if not isinstance(listed, yaml.SequenceNode):
                self.problem(listed, f"groups must be a list, not {_kind(listed)}")
                continue
            for group_node in listed.value:
                group = self.group(group_node, seen)
                if group is not None:
                    groups.append(group)
        return groups

    def group(self, node: Node, seen: set[str]) -> GroupSpec | None:
        entries = self.mapping(node, "a group", GROUP_KEYS, _Context())
        if entries is None:
            return None
        name = self.text(entries["name"][0], "name", _Context()) if "name" in entries else ""
        context = _Context(group=name or "")
        if not name:
            self.problem(entries["name"][0] if "name" in entries else node,
                         "Groupname must not be empty")
        elif name in seen:
            self.problem(entries["name"][0], f"groupname: {quote(name)} is repeated in the "
                                             "same file")
        seen.add(name or "")
        interval: int | None = None
        if "interval" in entries:
            interval = self.duration(entries["interval"][0], "interval", context) or None
        offset = (self.duration(entries["query_offset"][0], "query_offset", context)
                  if "query_offset" in entries else 0)
        limit = 0
        if "limit" in entries:
            limit_node = entries["limit"][0]
            if (isinstance(limit_node, yaml.ScalarNode) and limit_node.tag == _INT
                    and re.fullmatch(r"[+-]?\d+", str(limit_node.value))):
                limit = int(limit_node.value)
            elif not (isinstance(limit_node, yaml.ScalarNode) and limit_node.tag == _NULL):
                self.problem(limit_node, f"limit: cannot unmarshal "
                                         f"{getattr(limit_node, 'value', '')!r} into an integer",
                             context)
        labels = (self.pairs(entries["labels"][0], "labels", context,
                             name_problem="invalid label name")
                  if "labels" in entries else ())
        rules: list[RuleSpec] = []
        if "rules" in entries:
            listed = entries["rules"][0]
            if isinstance(listed, yaml.SequenceNode):
                for index, rule_node in enumerate(listed.value, 1):
                    rule = self.rule(rule_node, name or "", index, labels)
                    if rule is not None:
                        rules.append(rule)
            elif not (isinstance(listed, yaml.ScalarNode) and listed.tag == _NULL):
                self.problem(listed, f"rules must be a list, not {_kind(listed)}", context)
        return GroupSpec(self.file, name or "", tuple(rules), interval, limit, offset, labels)

    def rule(self, node: Node, group: str, index: int,
             group_labels: Pairs = ()) -> RuleSpec | None:
        context = _Context(group, index, "")
        if isinstance(node, yaml.MappingNode):  # the name first, for every message
            for key_node, value_node in node.value:
                if (isinstance(key_node, yaml.ScalarNode) and key_node.value in ("alert", "record")
                        and isinstance(value_node, yaml.ScalarNode)
                        and value_node.tag != _NULL and not context.rule_name):
                    context.rule_name = str(value_node.value)
        entries = self.mapping(node, "a rule", RULE_KEYS, context)
        if entries is None:
            return None
        before = len(self.problems)
        fields = {key: self.text(value, key, context) for key, (value, _) in entries.items()
                  if key in ("alert", "record", "expr")}
        alert, record = fields.get("alert") or "", fields.get("record") or ""
        if alert and record:
            self.problem(node, "only one of 'record' and 'alert' must be set", context)
        elif not alert and not record:
            self.problem(node, "one of 'record' or 'alert' must be set", context)
        expr: Expr | None = None
        expr_text = fields.get("expr") or ""
        if not expr_text.strip():
            self.problem(entries["expr"][0] if "expr" in entries else node,
                         "field 'expr' must be set in rule", context)
        else:
            try:
                expr = parse(expr_text)
            except PromQLError as error:
                self.problem(entries["expr"][0], f"could not parse expression: {error}",
                             context)
        for_ms = self.duration(entries["for"][0], "for", context) if "for" in entries else 0
        keep_ms = (self.duration(entries["keep_firing_for"][0], "keep_firing_for", context)
                   if "keep_firing_for" in entries else 0)
        labels = (self.pairs(entries["labels"][0], "labels", context,
                             name_problem="invalid label name")
                  if "labels" in entries else ())
        annotations = (self.pairs(entries["annotations"][0], "annotations", context,
                                  name_problem="invalid annotation name")
                       if "annotations" in entries else ())
        if record:
            if annotations:
                self.problem(entries["annotations"][1], "invalid field 'annotations' in "
                                                        "recording rule", context)
            if for_ms:
                self.problem(entries["for"][1], "invalid field 'for' in recording rule",
                             context)
            if keep_ms:
                self.problem(entries["keep_firing_for"][1], "invalid field 'keep_firing_for' "
                                                            "in recording rule", context)
            if not _METRIC_NAME.fullmatch(record):
                self.problem(entries["record"][0], f"invalid recording rule name: {record}",
                             context)
        label_templates: list[tuple[str, Template]] = []
        annotation_templates: list[tuple[str, Template]] = []
        if group_labels:  # Prometheus 3: the group's labels, under the rule's own
            labels = tuple(sorted({**dict(group_labels), **dict(labels)}.items()))
        if alert:
            for kind, pairs, out in (("label", labels, label_templates),
                                     ("annotation", annotations, annotation_templates)):
                where = entries["labels" if kind == "label" else "annotations"][0] \
                    if pairs else node
                for key, value in pairs:
                    try:
                        out.append((key, Template(value)))
                    except TemplateError as error:
                        self.problem(_value_node(where, key), f"{kind} {quote(key)}: {error}",
                                     context)
        if len(self.problems) > before or expr is None:
            return None
        return RuleSpec("alerting" if alert else "recording", alert or record, expr, index,
                        for_ms, keep_ms, labels, annotations, tuple(label_templates),
                        tuple(annotation_templates))


def _value_node(mapping: Node, key: str) -> Node:
    if isinstance(mapping, yaml.MappingNode):
        for key_node, value_node in mapping.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                found: Node = value_node
                return found
    return mapping


def _label_name_problem(name: str, *, label: bool = True) -> str:
    """Why ``name`` cannot be a rule's label name (``label``) or annotation name ('' when
    it can)."""
    if not _LABEL_NAME.fullmatch(name):
        return " (names match [a-zA-Z_][a-zA-Z0-9_]*)"
    if not label:
        return ""
    if name == "__name__":
        return " (the metric name is not a label a rule may set)"
    if name.startswith("__"):
        return " (names starting with __ are reserved)"
    return ""
