"""RuntimeConfig.from_env: defaults, and a bad value names its variable and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.servers._runtime.config import ConfigError, Env, RuntimeConfig, TlsConfig


def _config(**env: str) -> RuntimeConfig:
    return RuntimeConfig.from_env("test", 50051, Env(env))


def test_empty_environment_gives_local_plaintext_defaults() -> None:
    config = _config()

    assert config == RuntimeConfig(name="test", host="127.0.0.1", port=50051, reuse_port=False,
                                   tls=None, tracing="off", log_level="info",
                                   shutdown_grace=10.0, max_concurrent_rpcs=None,
                                   event_loop="uvloop")


def test_service_variables_override_the_shared_ones() -> None:
    config = _config(GEOPLEX_HOST="0.0.0.0", GEOPLEX_TEST_HOST="::1", GEOPLEX_TEST_PORT="0",
                     GEOPLEX_TEST_REUSE_PORT="yes", GEOPLEX_TRACING="Console",
                     GEOPLEX_LOG_LEVEL="DEBUG", GEOPLEX_SHUTDOWN_GRACE_SECONDS="2.5",
                     GEOPLEX_TEST_MAX_CONCURRENT_RPCS="64")

    assert (config.host, config.port, config.reuse_port) == ("::1", 0, True)
    assert (config.tracing, config.log_level) == ("console", "debug")
    assert (config.shutdown_grace, config.max_concurrent_rpcs) == (2.5, 64)


def test_shared_host_applies_when_the_service_sets_none() -> None:
    assert _config(GEOPLEX_HOST="0.0.0.0").host == "0.0.0.0"


def test_empty_value_counts_as_unset() -> None:
    assert _config(GEOPLEX_TEST_PORT="").port == 50051


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "65536"])
def test_bad_port_names_the_variable_and_the_range(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(GEOPLEX_TEST_PORT=value)

    message = str(info.value)
    assert message.startswith("GEOPLEX_TEST_PORT=")
    assert repr(value) in message
    assert "0..65535" in message


def test_unknown_tracing_mode_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        _config(GEOPLEX_TRACING="bogus")

    message = str(info.value)
    assert "GEOPLEX_TRACING" in message and "'bogus'" in message
    assert "off, console, otlp" in message


def test_unknown_log_level_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_LOG_LEVEL.*debug, info, warning, error"):
        _config(GEOPLEX_LOG_LEVEL="loud")


def test_event_loop_is_uvloop_or_asyncio() -> None:
    assert _config(GEOPLEX_EVENT_LOOP="asyncio").event_loop == "asyncio"
    with pytest.raises(ConfigError, match="GEOPLEX_EVENT_LOOP.*uvloop, asyncio"):
        _config(GEOPLEX_EVENT_LOOP="trio")


@pytest.mark.parametrize("value", ["soon", "nan", "-1", "601"])
def test_bad_shutdown_grace_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_SHUTDOWN_GRACE_SECONDS"):
        _config(GEOPLEX_SHUTDOWN_GRACE_SECONDS=value)


def test_bad_boolean_lists_the_accepted_spellings() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_TEST_REUSE_PORT.*true, false"):
        _config(GEOPLEX_TEST_REUSE_PORT="maybe")


def test_negative_max_concurrent_rpcs_is_rejected() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_TEST_MAX_CONCURRENT_RPCS"):
        _config(GEOPLEX_TEST_MAX_CONCURRENT_RPCS="-5")


@pytest.fixture
def pem_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    for path in (cert, key, ca):
        path.write_text("not checked until the server starts\n")
    return cert, key, ca


def test_tls_cert_without_key_fails_naming_both_variables(
        pem_files: tuple[Path, Path, Path]) -> None:
    cert, _, _ = pem_files

    with pytest.raises(ConfigError, match="GEOPLEX_TLS_CERT and GEOPLEX_TLS_KEY: set both"):
        _config(GEOPLEX_TLS_CERT=str(cert))


def test_tls_key_without_cert_fails(pem_files: tuple[Path, Path, Path]) -> None:
    _, key, _ = pem_files

    with pytest.raises(ConfigError, match="GEOPLEX_TLS_CERT and GEOPLEX_TLS_KEY"):
        _config(GEOPLEX_TLS_KEY=str(key))


def test_tls_file_that_does_not_exist_is_named(tmp_path: Path,
                                               pem_files: tuple[Path, Path, Path]) -> None:
    _, key, _ = pem_files

    with pytest.raises(ConfigError, match="GEOPLEX_TLS_CERT=.*no such file"):
        _config(GEOPLEX_TLS_CERT=str(tmp_path / "absent.pem"), GEOPLEX_TLS_KEY=str(key))


def test_client_ca_needs_a_server_certificate(pem_files: tuple[Path, Path, Path]) -> None:
    _, _, ca = pem_files

    with pytest.raises(ConfigError, match="GEOPLEX_TLS_CLIENT_CA needs GEOPLEX_TLS_CERT"):
        _config(GEOPLEX_TLS_CLIENT_CA=str(ca))


def test_cert_key_and_client_ca_make_a_mutual_tls_config(
        pem_files: tuple[Path, Path, Path]) -> None:
    cert, key, ca = pem_files

    config = _config(GEOPLEX_TLS_CERT=str(cert), GEOPLEX_TLS_KEY=str(key),
                     GEOPLEX_TLS_CLIENT_CA=str(ca))

    assert config.tls == TlsConfig(cert, key, ca)


def test_bad_url_scheme_is_named_without_revealing_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        Env({"GEOPLEX_REDIS_URL": "http://app:s3cret-pw@cache:6379/0"}).url(
            "GEOPLEX_REDIS_URL", ("redis", "rediss"))

    message = str(info.value)
    assert "GEOPLEX_REDIS_URL" in message and "redis://" in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize("value", ["localhost", "host:port", "h:0", "h:70000", "a:1,,b:2"])
def test_bad_endpoint_list_is_named(value: str) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_ETCD_ENDPOINTS=.*host:port"):
        Env({"GEOPLEX_ETCD_ENDPOINTS": value}).endpoints("GEOPLEX_ETCD_ENDPOINTS")


def test_endpoint_list_drops_http_prefixes() -> None:
    endpoints = Env({"GEOPLEX_ETCD_ENDPOINTS": "http://a:2379, https://b:2379"}).endpoints(
        "GEOPLEX_ETCD_ENDPOINTS")

    assert endpoints == ("a:2379", "b:2379")
