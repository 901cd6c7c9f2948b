"""Rule files read as promtool reads them: every problem named with its file, position,
group, rule index and name; a bad file does not keep the others' groups out; the
packaged default rules load."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from geoplex.servers.telemetry.otlp import metric_name
from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.rules import (DEFAULT_RULES, RuleFileError, RuleManager,
                                              check_rule_file, load_rules, parse_rule_file,
                                              resolve_rule_files)
from geoplex.servers.telemetry.tsdb import TSDB, TSDBOptions


def problems(text: str, file: str = "rules.yml") -> list[str]:
    groups, found = parse_rule_file(file, textwrap.dedent(text))
    assert groups == [] or not found
    return [str(p) for p in found]


def test_the_default_rules_load_without_a_problem() -> None:
    result = load_rules([DEFAULT_RULES])
    assert result.errors == []
    names = {rule.name for group in result.groups for rule in group.rules}
    assert {"ServiceDown", "ServiceHeartbeatMissing", "RpcErrorRatioHigh",
            "RpcLatencyOverBudget", "BrokerConsumerLagGrowing", "DiskWillFillIn4Hours",
            "TelemetryIngestDroppingSamples"} <= names
    # the RPC rules read the names our OTLP ingest gives OpenTelemetry's histograms
    queries = " ".join(rule.query for group in result.groups for rule in group.rules)
    for otel_name, unit in (("rpc.server.call.duration", "s"), ("rpc.server.duration", "ms")):
        assert metric_name(otel_name, unit, gauge=False, counter=False) + "_bucket" in queries
    assert "predict_linear(node_filesystem_avail_bytes" in queries
    assert "deriv(geoplex_broker_consumer_lag[10m]) > 0" in queries


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Prometheus's promtool is not "
                    "installed (Debian: prometheus)")
def test_promtool_accepts_the_default_rules_too() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(DEFAULT_RULES)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = len(re.findall(r"^\s+- (?:alert|record):", DEFAULT_RULES.read_text(), re.M))
    assert f"SUCCESS: {rules} rules found" in done.stdout


def test_no_configured_file_or_default_means_the_packaged_rules() -> None:
    assert resolve_rule_files(()) == (DEFAULT_RULES,)
    assert resolve_rule_files((Path("default"), Path("/etc/extra.yml"))) == (
        DEFAULT_RULES, Path("/etc/extra.yml"))


def test_an_expression_that_does_not_parse_names_file_group_rule_and_position() -> None:
    assert problems("""\
        groups:
          - name: mesh
            rules:
              - record: ok:up
                expr: up
              - alert: HighErrors
                expr: sum(rate(errors_total[5m]) > 1
        """) == ['rules.yml:7:15: group "mesh", rule 2, "HighErrors": could not parse '
                 "expression: 1:31: parse error: unclosed left parenthesis"]


@pytest.mark.parametrize(("rule", "problem"), [
    ("alert: A\n  record: a\n  expr: up", "only one of 'record' and 'alert' must be set"),
    ("expr: up", "one of 'record' or 'alert' must be set"),
    ("alert: A", "field 'expr' must be set in rule"),
    ("alert: A\n  expr: up\n  severity: page",
     'a rule: unknown field "severity" (expected one of alert, record, expr, for, '
     "keep_firing_for, labels, annotations)"),
    ("alert: A\n  expr: up\n  for: 5 minutes", 'for: not a valid duration string: "5 minutes"'),
    ("alert: A\n  expr: up\n  keep_firing_for: 1.5s",
     'keep_firing_for: not a valid duration string: "1.5s"'),
    ("record: a\n  expr: up\n  for: 5m", "invalid field 'for' in recording rule"),
    ("record: a\n  expr: up\n  keep_firing_for: 5m",
     "invalid field 'keep_firing_for' in recording rule"),
    ("record: a\n  expr: up\n  annotations: {summary: x}",
     "invalid field 'annotations' in recording rule"),
    ("record: job-errors\n  expr: up", "invalid recording rule name: job-errors"),
    ("alert: A\n  expr: up\n  labels: {team-name: core}",
     "invalid label name: team-name (names match [a-zA-Z_][a-zA-Z0-9_]*)"),
    ("alert: A\n  expr: up\n  labels: {__name__: x}",
     "invalid label name: __name__ (the metric name is not a label a rule may set)"),
    ("alert: A\n  expr: up\n  labels: {__team: x}",
     "invalid label name: __team (names starting with __ are reserved)"),
    ("alert: A\n  expr: up\n  annotations: {1st: x}",
     "invalid annotation name: 1st (names match [a-zA-Z_][a-zA-Z0-9_]*)"),
    ("alert: A\n  expr: up\n  annotations: {summary: '{{ $labels.job | nope }}'}",
     'annotation "summary": template: 1:18: function "nope" not defined'),
    ("alert: A\n  expr: up\n  labels: {severity: '{{ if $value }}page'}",
     'label "severity": template: 1:4: unexpected EOF: {{if}} has no {{end}}'),
    ("alert: A\n  expr: up\n  annotations: {summary: '{{ query \"up\" }}'}",
     'annotation "summary": template: 1:4: function "query" is not supported: queries from '
     "templates are not supported"),
])
def test_each_rule_problem_is_named_as_promtool_names_it(rule: str, problem: str) -> None:
    text = "groups:\n- name: g\n  rules:\n  - record: fine\n    expr: up\n  - " + \
        rule.replace("\n  ", "\n    ") + "\n"
    found = problems(text)
    assert len(found) == 1, found
    name = next((line.split(":", 1)[1].strip() for line in rule.splitlines()
                 if line.strip().startswith(("alert:", "record:"))), "")
    assert found[0].startswith("rules.yml:")
    assert found[0].split(": ", 1)[1] == f'group "g", rule 2, "{name}": {problem}'


def test_group_problems_are_named_with_the_group() -> None:
    found = problems("""\
        groups:
          - name: a
            interval: 30x
            limit: lots
            rules: []
          - name: a
          - rules: []
        unknown_top: 1
        """)
    assert found == [
        'rules.yml:3:15: group "a": interval: not a valid duration string: "30x"',
        "rules.yml:4:12: group \"a\": limit: cannot unmarshal 'lots' into an integer",
        'rules.yml:6:11: groupname: "a" is repeated in the same file',
        "rules.yml:7:5: Groupname must not be empty",
        'rules.yml:8:1: the file: unknown field "unknown_top" (expected one of groups)']


def test_yaml_that_does_not_parse_and_duplicate_keys_are_problems() -> None:
    assert problems("groups:\n  - name: x\n    rules: [\n") == [
        "rules.yml:4:1: yaml: while parsing a flow node did not find expected node content"]
    found = problems("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    expr: down\n")
    assert found == ['rules.yml:6:5: group "g", rule 1, "A": a rule: mapping key "expr" '
                     "already defined at line 5"]


def test_a_valid_file_gives_its_groups_with_defaults_and_group_labels() -> None:
    groups = check_rule_file("rules.yml", textwrap.dedent("""\
        groups:
          - name: fast
            interval: 200ms
            limit: 10
            query_offset: 1m
            labels: {team: core, tier: "1"}
            rules:
              - alert: Hot
                expr: temperature > 50
                for: 1m30s
                keep_firing_for: 0
                labels: {tier: "2"}
                annotations:
                  summary: "{{ $labels.room }} is {{ $value }}"
              - record: job:temperature:max
                expr: max by (job) (temperature)
          - name: slow
            rules:
        """))
    fast, slow = groups
    assert (fast.name, fast.interval_ms, fast.limit, fast.query_offset_ms) == (
        "fast", 200, 10, 60_000)
    hot, record = fast.rules
    assert (hot.kind, hot.name, hot.for_ms, hot.keep_firing_for_ms, hot.index) == (
        "alerting", "Hot", 90_000, 0, 1)
    assert dict(hot.labels) == {"team": "core", "tier": "2"}   # the rule's label wins
    assert hot.query == "temperature > 50"
    assert (record.kind, record.name, record.index) == ("recording", "job:temperature:max", 2)
    assert (slow.name, slow.interval_ms, slow.rules) == ("slow", None, ())


def test_a_bad_file_is_reported_and_the_other_files_still_load(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("groups:\n- name: g\n  rules:\n  - record: a:b\n    expr: up\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: b\n  rules:\n  - record: ok\n    expr: up\n"
                   "  - alert: A\n    expr: up ==\n")
    missing = tmp_path / "missing.yml"
    result = load_rules([bad, good, missing])
    assert [(g.file, g.name) for g in result.groups] == [(str(good), "g")]
    assert [str(p) for p in result.errors] == [
        f'{bad}:7:11: group "b", rule 2, "A": could not parse expression: 1:6: parse error: '
        "unexpected end of input",
        f"{missing}: cannot read the file: No such file or directory"]


async def test_set_group_validates_as_files_are_and_changes_nothing_when_bad(
        tmp_path: Path) -> None:
    with TSDB.open(tmp_path / "db", TSDBOptions()) as store:
        manager = RuleManager(store, Engine(store), rule_files=[tmp_path / "none.yml"])
        await manager.load()
        assert [str(p) for p in manager.load_errors] == [
            f"{tmp_path / 'none.yml'}: cannot read the file: No such file or directory"]
        assert await manager.set_group("api/team.yml", "groups:\n- name: t\n  rules:\n"
                                       "  - record: x:y\n    expr: up\n") == ["t"]
        with pytest.raises(RuleFileError) as caught:
            await manager.set_group("api/team.yml", "groups:\n- name: t\n  rules:\n"
                                    "  - record: x-y\n    expr: up\n")
        assert [str(p) for p in caught.value.problems] == [
            'api/team.yml:4:13: group "t", rule 1, "x-y": invalid recording rule name: x-y']
        assert caught.value.code == "INVALID_ARGUMENT"
        assert [(g.file, g.name, g.rules[0].name) for g in manager.groups()] == [
            ("api/team.yml", "t", "x:y")]
        assert manager.check("f.yml", "groups: [{name: '', rules: []}]") != []
        await manager.remove_file("api/team.yml")
        assert manager.groups() == []
        await manager.stop()
