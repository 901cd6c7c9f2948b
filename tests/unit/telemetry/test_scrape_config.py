"""The scrape targets from GEOPLEX_TELEMETRY_SCRAPE_* variables and the JSON config file:
Prometheus's defaults, and every bad value refused naming its variable or field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers.telemetry.scrape_config import ScrapeConfig, ScrapeTarget

TARGETS = "GEOPLEX_TELEMETRY_SCRAPE_TARGETS"
CONFIG = "GEOPLEX_TELEMETRY_SCRAPE_CONFIG"


def from_env(**env: str) -> ScrapeConfig:
    return ScrapeConfig.from_env(Env(env))


def from_file(tmp_path: Path, document: Any, **env: str) -> ScrapeConfig:
    path = tmp_path / "scrape.json"
    path.write_text(json.dumps(document))
    return from_env(GEOPLEX_TELEMETRY_SCRAPE_CONFIG=str(path), **env)


def test_nothing_configured_scrapes_nothing() -> None:
    assert from_env().targets == ()


def test_a_targets_list_is_one_job_of_host_ports_and_urls() -> None:
    config = from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS=(
        "127.0.0.1:9100, https://node.example:8443/stats?x=1,http://[::1]:9090"))
    urls = [t.url for t in config.targets]
    assert urls == ["http://127.0.0.1:9100/metrics", "https://node.example:8443/stats?x=1",
                    "http://[::1]:9090/metrics"]
    assert [t.instance for t in config.targets] == ["127.0.0.1:9100", "node.example:8443",
                                                    "[::1]:9090"]
    assert {t.job for t in config.targets} == {"scrape"}
    first = config.targets[0]
    assert (first.interval_s, first.timeout_s) == (15.0, 10.0)
    assert (first.honor_labels, first.honor_timestamps) == (False, True)


def test_the_job_interval_and_timeout_come_from_their_variables() -> None:
    config = from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1",
                      GEOPLEX_TELEMETRY_SCRAPE_JOB="node",
                      GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS="30",
                      GEOPLEX_TELEMETRY_SCRAPE_TIMEOUT_SECONDS="5")
    assert config.targets == (ScrapeTarget("http://a:1/metrics",
                                           (("instance", "a:1"), ("job", "node")), 30.0, 5.0),)


def test_an_unset_timeout_is_cut_to_a_shorter_interval_and_a_set_one_is_refused() -> None:
    short = from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1",
                     GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS="0.2")
    assert short.targets[0].timeout_s == 0.2
    with pytest.raises(ConfigError, match="GEOPLEX_TELEMETRY_SCRAPE_TIMEOUT_SECONDS"):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1",
                 GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS="5",
                 GEOPLEX_TELEMETRY_SCRAPE_TIMEOUT_SECONDS="6")


@pytest.mark.parametrize("listed", ["a", "a:0", "a:99999", "a:b", "a:1,,b:2", "ftp://a:1",
                                    "http://a:x/", "a/b:1", "::1:9090"])
def test_a_bad_target_is_refused_naming_the_variable(listed: str) -> None:
    with pytest.raises(ConfigError, match=TARGETS):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS=listed)


@pytest.mark.parametrize(("name", "value"), [
    ("GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS", "0"),
    ("GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS", "often"),
    ("GEOPLEX_TELEMETRY_SCRAPE_TIMEOUT_SECONDS", "-1"),
])
def test_a_bad_interval_or_timeout_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1", **{name: value})


def test_a_file_and_a_list_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{CONFIG} and {TARGETS}"):
        from_file(tmp_path, {}, GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1")


def test_the_same_series_from_two_targets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same labels"):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="http://a:1/x,http://a:1/y")
    with pytest.raises(ConfigError, match="same labels"):  # one instance label for two
        from_file(tmp_path, {"scrape_configs": [{"job_name": "j", "static_configs": [
            {"targets": ["a:1", "b:1"], "labels": {"instance": "x"}}]}]})
    assert len(from_env(GEOPLEX_TELEMETRY_SCRAPE_TARGETS="a:1,a:1").targets) == 1


def test_a_file_is_prometheus_scrape_configs(tmp_path: Path) -> None:
    config = from_file(tmp_path, {
        "global": {"scrape_interval": "1m", "scrape_timeout": "20s"},
        "scrape_configs": [
            {"job_name": "node", "scrape_interval": "5s", "metrics_path": "/m",
             "scheme": "https", "honor_labels": True, "honor_timestamps": False,
             "static_configs": [{"targets": ["n1:9100"],
                                 "labels": {"env": "dev", "instance": "first"}},
                                {"targets": ["n2:9100"], "labels": {"env": ""}}]},
            {"job_name": "api", "static_configs": [{"targets": ["api:80"]}]},
            {"job_name": "fast", "scrape_interval": 0.5, "scrape_timeout": "250ms",
             "static_configs": [{"targets": ["f:1"], "labels": {"job": "renamed"}}]}]})
    node, second, api, fast = config.targets
    assert node == ScrapeTarget("https://n1:9100/m", (("env", "dev"), ("instance", "first"),
                                                      ("job", "node")),
                                5.0, 5.0, honor_labels=True, honor_timestamps=False)
    assert second.labels == (("instance", "n2:9100"), ("job", "node"))  # "" is no label
    assert api == ScrapeTarget("http://api:80/metrics", (("instance", "api:80"),
                                                         ("job", "api")), 60.0, 20.0)
    assert (fast.job, fast.interval_s, fast.timeout_s) == ("renamed", 0.5, 0.25)


def test_a_file_without_global_takes_the_variables_as_defaults(tmp_path: Path) -> None:
    config = from_file(tmp_path, {"scrape_configs": [
        {"job_name": "j", "static_configs": [{"targets": ["a:1"]}]}]},
        GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS="3")
    assert (config.targets[0].interval_s, config.targets[0].timeout_s) == (3.0, 3.0)


@pytest.mark.parametrize(("document", "field"), [
    ({"scrape_configs": [{"static_configs": []}]}, "scrape_configs[0].job_name"),
    ({"scrape_configs": [{"job_name": "a"}, {"job_name": "a"}]}, "scrape_configs[1].job_name"),
    ({"scrape_configs": [{"job_name": "a", "scrape_interval": "soon"}]},
     "scrape_configs[0].scrape_interval"),
    ({"scrape_configs": [{"job_name": "a", "scrape_interval": "5s",
                          "scrape_timeout": "10s"}]}, "scrape_configs[0].scrape_timeout"),
    ({"scrape_configs": [{"job_name": "a", "scheme": "ftp"}]}, "scrape_configs[0].scheme"),
    ({"scrape_configs": [{"job_name": "a", "metrics_path": "metrics"}]},
     "scrape_configs[0].metrics_path"),
    ({"scrape_configs": [{"job_name": "a", "honor_labels": "yes"}]},
     "scrape_configs[0].honor_labels"),
    ({"scrape_configs": [{"job_name": "a", "relabel_configs": []}]},
     "scrape_configs[0].relabel_configs"),
    ({"scrape_configs": [{"job_name": "a", "static_configs": [{"targets": ["a"]}]}]},
     "scrape_configs[0].static_configs[0].targets[0]"),
    ({"scrape_configs": [{"job_name": "a", "static_configs": [{"targets": "a:1"}]}]},
     "scrape_configs[0].static_configs[0].targets"),
    ({"scrape_configs": [{"job_name": "a", "static_configs": [
        {"targets": ["a:1"], "labels": {"bad-name": "x"}}]}]},
     "scrape_configs[0].static_configs[0].labels.bad-name"),
    ({"scrape_configs": [{"job_name": "a", "static_configs": [
        {"targets": ["a:1"], "labels": {"__address__": "x"}}]}]},
     "scrape_configs[0].static_configs[0].labels.__address__"),
    ({"scrape_configs": [{"job_name": "a", "static_configs": [
        {"targets": ["a:1"], "labels": {"env": 1}}]}]},
     "scrape_configs[0].static_configs[0].labels.env"),
    ({"global": {"evaluation_interval": "1m"}}, "global.evaluation_interval"),
    ({"rule_files": []}, "rule_files"),
    ({"scrape_configs": {}}, "scrape_configs"),
    ([], "the document"),
])
def test_a_bad_file_names_the_variable_and_the_field(tmp_path: Path, document: Any,
                                                     field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_file(tmp_path, document)
    message = str(caught.value)
    assert message.startswith(f"{CONFIG}=")
    assert f": {field}:" in message


def test_a_missing_or_malformed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_CONFIG=str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("scrape_configs: []\n")  # YAML, not JSON
    with pytest.raises(ConfigError, match=f"{CONFIG}=.*not JSON"):
        from_env(GEOPLEX_TELEMETRY_SCRAPE_CONFIG=str(bad))
