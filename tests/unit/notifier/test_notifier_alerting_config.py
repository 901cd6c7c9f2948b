"""The notifier's configuration: the Alertmanager-format file, the embedded default and
the GEOPLEX_NOTIFIER_* variables; every error names the file, the path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers.notifier.config import NotifierConfig, load_alerting

from notifier_trees import alerting

ETCD = {"GEOPLEX_ETCD_ENDPOINTS": "127.0.0.1:2379"}
RECEIVERS = "receivers: [{name: ops}, {name: pager}]\n"


@pytest.mark.parametrize(("text", "message"), [
    ("route: {receiver: ops, gruop_by: [a]}\n" + RECEIVERS,
     "test.yml: route.gruop_by: unknown field"),
    ("route: {receiver: nobody}\n" + RECEIVERS,
     "route.receiver: 'nobody' is not a receiver (the receivers: ops, pager)"),
    ("route: {receiver: ops, routes: [{receiver: pager}, {matchers: ['a=~\"(\"']}]}\n"
     + RECEIVERS, "route.routes[1].matchers[0]: '(' is not a regular expression"),
    ("route: {receiver: ops, matchers: ['a=\"1\"']}\n" + RECEIVERS,
     "route.matchers: the root route must not have matchers"),
    ("route: {receiver: ops, group_by: ['...', a]}\n" + RECEIVERS,
     "route.group_by: '...' (every label) must be alone"),
    ("route: {receiver: ops, group_wait: 5 minutes}\n" + RECEIVERS,
     "route.group_wait: '5 minutes' is not a duration"),
    ("route: {receiver: ops, repeat_interval: 0s}\n" + RECEIVERS,
     "route.repeat_interval: '0s': expected a duration above 0"),
    ("route: {receiver: ops}\nreceivers: [{name: ops}, {name: ops}]\n",
     "receivers[1].name: 'ops': another receiver has this name"),
    ("route: {receiver: ops}\nreceivers: [{name: ops, slack_configs: []}]\n",
     "receivers[0].slack_configs: not supported"),
    ("receivers: [{name: ops}]\n", "route: is required"),
    ("route: {receiver: ops}\nreceivers: [{name: ops}]\ntemplates: [a.tmpl]\n",
     "templates: templates are not supported"),
    ("route: {receiver: ops}\nreceivers: [{name: ops}]\nglobal: {smtp_from: a@b}\n",
     "global.smtp_from: not supported here"),
    ("route: {receiver: ops}\n" + RECEIVERS + "inhibit_rules: [{target_matchers: ['a=b']}]\n",
     "inhibit_rules[0].source_matchers: is required"),
    ("route: {receiver: ops, continue: true}\n" + RECEIVERS,
     "route.continue: the root route cannot continue"),
])
def test_a_bad_configuration_names_the_file_the_path_and_the_problem(text: str,
                                                                     message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        alerting(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("test.yml: ")


def test_a_full_configuration_is_read(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text("""
global: {resolve_timeout: 10m}
route:
  receiver: ops
  group_by: [alertname, cluster]
  routes:
    - {matchers: ['severity="page"'], receiver: pager, repeat_interval: 1h}
receivers:
  - {name: ops, webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]}
  - {name: pager}
inhibit_rules:
  - source_match: {severity: critical}
    target_match_re: {severity: 'warning|info'}
    equal: [cluster]
""")
    config = load_alerting(path)
    assert config.resolve_timeout_s == 600
    assert config.route.routes[0].repeat_interval == 3600
    assert config.receiver("ops").config["webhook_configs"] == [{"url": "http://127.0.0.1:9/hook"}]
    (rule,) = config.inhibit_rules
    assert [str(m) for m in rule.target_matchers] == ['severity=~"warning|info"']
    assert config.source == f"GEOPLEX_NOTIFIER_CONFIG={str(path)!r}"


def test_a_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("route:\n  receiver: ops\n  routes: [\n")
    with pytest.raises(ConfigError, match=r"bad.yml'?: is not YAML at line \d+"):
        load_alerting(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_alerting(tmp_path / "missing.yml")


def test_the_default_configuration_takes_its_channels_from_the_environment() -> None:
    config = NotifierConfig.from_env(Env({
        **ETCD, "GEOPLEX_NOTIFIER_SMTP_URL": "smtp://me:s%40cret@mail.local:2525",
        "GEOPLEX_NOTIFIER_EMAIL_TO": "ops@example.com, dev@example.com",
        "GEOPLEX_NOTIFIER_WEBHOOK_URL": "https://hooks.example.com/x"}))
    receiver = config.alerting.receiver("default").config
    assert receiver["email_configs"] == [{
        "to": "ops@example.com, dev@example.com", "from": "geoplex-notifier@localhost",
        "smarthost": "mail.local:2525", "require_tls": False, "auth_username": "me",
        "auth_password": "s@cret", "send_resolved": True}]
    assert receiver["webhook_configs"] == [{"url": "https://hooks.example.com/x",
                                            "send_resolved": True}]
    assert config.alerting.route.group_by == ("alertname",)
    assert (config.node, config.resolve_timeout_s) == ("notifier-1", 300.0)
    route = config.alerting.route
    assert (route.group_wait, route.group_interval, route.repeat_interval) == (
        30.0, 300.0, 4 * 3600.0)


def test_the_default_route_takes_its_timers_from_the_environment() -> None:
    config = NotifierConfig.from_env(Env({
        **ETCD, "GEOPLEX_NOTIFIER_GROUP_WAIT": "1s", "GEOPLEX_NOTIFIER_GROUP_INTERVAL": "2s",
        "GEOPLEX_NOTIFIER_REPEAT_INTERVAL": "1h"}))
    route = config.alerting.route
    assert (route.group_wait, route.group_interval, route.repeat_interval) == (1.0, 2.0, 3600.0)
    with pytest.raises(ConfigError, match="GEOPLEX_NOTIFIER_GROUP_WAIT"):
        NotifierConfig.from_env(Env({**ETCD, "GEOPLEX_NOTIFIER_GROUP_WAIT": "soon"}))


@pytest.mark.parametrize(("env", "message"), [
    ({}, "GEOPLEX_ETCD_ENDPOINTS is not set"),
    ({**ETCD, "GEOPLEX_NOTIFIER_SMTP_URL": "smtp://mail:25"},
     "GEOPLEX_NOTIFIER_SMTP_URL and GEOPLEX_NOTIFIER_EMAIL_TO: set both"),
    ({**ETCD, "GEOPLEX_NOTIFIER_WEBHOOK_URL": "ftp://x"}, "expected a URL starting with http"),
    ({**ETCD, "GEOPLEX_NOTIFIER_CONFIG": "/x.yml", "GEOPLEX_NOTIFIER_WEBHOOK_URL": "http://x"},
     "GEOPLEX_NOTIFIER_CONFIG and GEOPLEX_NOTIFIER_WEBHOOK_URL"),
    ({**ETCD, "GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT": "soon"}, "GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT="),
    ({**ETCD, "GEOPLEX_NOTIFIER_ID": "0"}, "GEOPLEX_NOTIFIER_ID="),
])
def test_bad_variables_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NotifierConfig.from_env(Env(env))


def test_the_node_id_and_resolve_timeout_are_read() -> None:
    config = NotifierConfig.from_env(Env({**ETCD, "GEOPLEX_NOTIFIER_ID": "2",
                                          "GEOPLEX_NOTIFIER_RESOLVE_TIMEOUT": "90s",
                                          "GEOPLEX_NOTIFIER_EXTERNAL_URL": "http://nf:9/"}))
    assert (config.node, config.resolve_timeout_s, config.external_url) == (
        "notifier-2", 90.0, "http://nf:9")
