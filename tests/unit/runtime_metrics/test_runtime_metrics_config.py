"""GEOPLEX_METRICS*: off by default, telemetry's declared port as the default endpoint, and
a bad value names its variable and what was expected."""

from __future__ import annotations

import pytest

from geoplex.servers._runtime.config import (
    DEFAULT_METRICS_ENDPOINT,
    ConfigError,
    Env,
    MetricsConfig,
    RuntimeConfig,
)
from geoplex.servers.catalog import service


def _metrics(**env: str) -> MetricsConfig:
    return RuntimeConfig.from_env("test", 50051, Env(env)).metrics


def test_metrics_are_off_by_default_and_point_at_local_telemetry() -> None:
    config = _metrics()

    assert config == MetricsConfig(mode="off", endpoint="127.0.0.1:50056", interval_s=10.0)
    assert not config.enabled


def test_the_default_endpoint_is_the_telemetry_declarations_port() -> None:
    """The runtime cannot import a service, so the port is written twice: they agree."""
    host, _, port = DEFAULT_METRICS_ENDPOINT.rpartition(":")

    assert (host, int(port)) == ("127.0.0.1", service("telemetry").default_port)


def test_otlp_endpoint_and_interval_are_read() -> None:
    config = _metrics(GEOPLEX_METRICS="OTLP", GEOPLEX_METRICS_ENDPOINT="10.0.0.7:4317",
                      GEOPLEX_METRICS_INTERVAL_SECONDS="0.5")

    assert (config.mode, config.target, config.interval_s) == ("otlp", "10.0.0.7:4317", 0.5)
    assert config.enabled and not config.secure


def test_broker_mode_takes_the_brokers_from_their_own_variable_or_the_mesh_target() -> None:
    own = _metrics(GEOPLEX_METRICS="broker", GEOPLEX_METRICS_BROKERS="10.0.0.1:50057",
                   GEOPLEX_BROKER_TARGET="10.0.0.2:50057")
    mesh = _metrics(GEOPLEX_METRICS="broker",
                    GEOPLEX_BROKER_TARGET="10.0.0.2:50057,10.0.0.3:50057")

    assert (own.brokers, own.topic) == (("10.0.0.1:50057",), "telemetry-metrics")
    assert mesh.brokers == ("10.0.0.2:50057", "10.0.0.3:50057")
    assert mesh.enabled and "broker topic telemetry-metrics" in mesh.destination


@pytest.mark.parametrize(("endpoint", "secure"), [("http://telemetry:50056", False),
                                                  ("https://telemetry:50056", True)])
def test_a_scheme_says_plaintext_or_tls(endpoint: str, secure: bool) -> None:
    config = _metrics(GEOPLEX_METRICS_ENDPOINT=endpoint)

    assert (config.target, config.secure) == ("telemetry:50056", secure)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("GEOPLEX_METRICS", "prometheus", "off, otlp, broker"),
    ("GEOPLEX_METRICS", "broker", "GEOPLEX_METRICS_BROKERS"),
    ("GEOPLEX_METRICS_TOPIC", "a topic", "a topic name"),
    ("GEOPLEX_METRICS_ENDPOINT", "telemetry", "host:port"),
    ("GEOPLEX_METRICS_ENDPOINT", "127.0.0.1:0", "host:port"),
    ("GEOPLEX_METRICS_ENDPOINT", "http://127.0.0.1:50056/v1", "host:port"),
    ("GEOPLEX_METRICS_INTERVAL_SECONDS", "0", "0.1..3600"),
    ("GEOPLEX_METRICS_INTERVAL_SECONDS", "soon", "a number"),
])
def test_a_bad_value_names_the_variable_and_what_was_expected(name: str, value: str,
                                                             expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _metrics(**{name: value})

    message = str(info.value)
    assert message.startswith(f"{name}={value!r}") and expected in message
