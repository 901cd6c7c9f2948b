"""GEOPLEX_TELEMETRY_* read once at start: retention per tier, per-metric retention rules,
the backend; each mistake names its variable."""

from __future__ import annotations

import pytest

from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers.telemetry.__main__ import options_from
from geoplex.servers.telemetry.config import TelemetryConfig
from geoplex.servers.telemetry.tsdb.labels import MatchOp

DAY = 86_400_000


def config(**env: str) -> TelemetryConfig:
    return TelemetryConfig.from_env(Env({f"GEOPLEX_TELEMETRY_{k}": v for k, v in env.items()}))


def test_the_design_tiers_by_default() -> None:
    options = options_from(config())
    assert options.retention_ms == {"raw": 7 * DAY, "1m": 30 * DAY, "1h": 365 * DAY}
    assert options.downsample and options.rollup_window_ms == DAY // 4
    assert options.retention_rules == ()


def test_retention_per_tier_and_rules_per_metric() -> None:
    options = options_from(config(
        RETENTION_RAW="36h", RETENTION_1H="2y",
        RETENTION_RULES='{__name__=~"debug_.*"}:raw=1d,1m=7d; {job="batch"}:1h=90d'))
    assert options.retention_ms == {"raw": 36 * 3_600_000, "1m": 30 * DAY, "1h": 730 * DAY}
    debug, batch = options.retention_rules
    assert debug.keep_ms == {"raw": DAY, "1m": 7 * DAY}
    assert [(m.name, m.op, m.value) for m in debug.matchers] == [
        ("__name__", MatchOp.RE, "debug_.*")]
    assert batch.keep_ms == {"1h": 90 * DAY} and batch.text == '{job="batch"}'


@pytest.mark.parametrize(("env", "message"), [
    ({"RETENTION_RAW": "a week"}, "GEOPLEX_TELEMETRY_RETENTION_RAW: 'a week' is not a duration"),
    ({"RETENTION_RULES": "{job='x'}"}, "expected <selector>:<tier>=<duration>"),
    ({"RETENTION_RULES": "{job='x'}:5m=1d"}, "a tier of raw, 1m, 1h"),
    ({"RETENTION_RULES": "{job='x'}:raw=soon"}, "is not a duration"),
    ({"BACKEND": "influx"}, "GEOPLEX_TELEMETRY_BACKEND: expected one of local, victoriametrics"),
    ({"BACKEND": "victoriametrics"}, "GEOPLEX_TELEMETRY_VICTORIAMETRICS_URL: required"),
])
def test_mistakes_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{")):
        config(**env)


def test_a_rule_selector_that_does_not_parse_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_TELEMETRY_RETENTION_RULES: 'up{{'"):
        options_from(config(RETENTION_RULES="up{{:raw=1d"))
