"""HTTP/2 keepalive: GEOPLEX_KEEPALIVE_* read and checked once; server and SDK agree.

A frozen or vanished peer's stream must end within about a minute (server pings, the
peer does not answer), and the SDK's client pings must be ones the server accepts
(else it sends GOAWAY too_many_pings and the client's streams end with UNAVAILABLE).
"""

from __future__ import annotations

import pytest

from geoplex.clients.channel import ChannelOptions, keepalive_arguments
from geoplex.servers._runtime.config import ConfigError, Env, KeepaliveConfig, RuntimeConfig
from geoplex.servers._runtime.server import keepalive_options


def _config(**env: str) -> RuntimeConfig:
    return RuntimeConfig.from_env("test", 50051, Env(env))


def test_default_keepalive_ends_a_dead_peers_stream_within_a_minute() -> None:
    keepalive = _config().keepalive

    assert keepalive == KeepaliveConfig(time=20.0, timeout=10.0, min_ping_interval=10.0)
    assert keepalive.time + keepalive.timeout <= 60


def test_keepalive_variables_set_the_server_options() -> None:
    config = _config(GEOPLEX_KEEPALIVE_TIME_SECONDS="2", GEOPLEX_KEEPALIVE_TIMEOUT_SECONDS="1.5",
                     GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS="5")

    assert config.keepalive == KeepaliveConfig(time=2.0, timeout=1.5, min_ping_interval=5.0)
    assert dict(keepalive_options(config.keepalive)) == {
        "grpc.keepalive_time_ms": 2000,
        "grpc.keepalive_timeout_ms": 1500,
        # gRPC waits this long for a ping's answer (a minute by default), whatever the above
        "grpc.http2.ping_timeout_ms": 1500,
        # the server pings idle connections too, and accepts client pings on them
        "grpc.keepalive_permit_without_calls": 1,
        # keep pinging a stream that sends nothing (a quiet presence stream)
        "grpc.http2.max_pings_without_data": 0,
        "grpc.http2.min_ping_interval_without_data_ms": 5000,
        "grpc.http2.max_ping_strikes": 2,
    }


@pytest.mark.parametrize("variable", ["GEOPLEX_KEEPALIVE_TIME_SECONDS",
                                      "GEOPLEX_KEEPALIVE_TIMEOUT_SECONDS",
                                      "GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS"])
@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "100000"])
def test_bad_keepalive_value_names_the_variable_and_the_range(variable: str,
                                                              value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(**{variable: value})

    message = str(info.value)
    assert message.startswith(f"{variable}={value!r}: expected a number in ")
    assert "\n" not in message


def test_sdk_pings_no_more_often_than_a_default_server_accepts() -> None:
    server = _config().keepalive
    client = dict(keepalive_arguments(ChannelOptions()))

    assert client["grpc.keepalive_time_ms"] >= server.min_ping_interval * 1000
    assert client["grpc.keepalive_timeout_ms"] > 0
    assert client["grpc.http2.ping_timeout_ms"] == client["grpc.keepalive_timeout_ms"]
    # no pings on a connection without calls: a default server would accept them, others not
    assert client["grpc.keepalive_permit_without_calls"] == 0
    # keep pinging a quiet stream, so a dead server is noticed there too
    assert client["grpc.http2.max_pings_without_data"] == 0
    assert client["grpc.keepalive_time_ms"] + client["grpc.keepalive_timeout_ms"] <= 60_000


def test_sdk_keepalive_follows_the_channel_options() -> None:
    client = dict(keepalive_arguments(ChannelOptions(keepalive_time=45, keepalive_timeout=5)))

    assert (client["grpc.keepalive_time_ms"], client["grpc.keepalive_timeout_ms"],
            client["grpc.http2.ping_timeout_ms"]) == (45_000, 5_000, 5_000)
