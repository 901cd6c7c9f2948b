"""MapsConfig.from_env: defaults matching `geoplex data fetch`, and the variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.infra.data import default_cache_dir, fetch
from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers.maps.config import Extract, MapsConfig


def _config(tmp_path: Path, **values: str) -> MapsConfig:
    return MapsConfig.from_env(Env({"GEOPLEX_DATA_DIR": str(tmp_path / "data"), **values}))


def test_defaults_are_the_fetched_extracts_and_places(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = tmp_path / "data"
    assert config.extracts == (Extract("Helsinki", data / "helsinki" / "Helsinki.osm.pbf"),
                               Extract("Monaco", data / "monaco" / "monaco.osm.pbf"))
    assert config.places == data / "geonames" / "cities500.json"


def test_the_defaults_are_where_the_data_fetch_puts_the_files() -> None:
    fetched = fetch(["helsinki", "monaco", "geonames"], progress=lambda _m: None)
    config = MapsConfig.from_env(Env({"GEOPLEX_DATA_DIR": str(default_cache_dir())}))
    assert [e.path for e in config.extracts] == [fetched["helsinki"]["pbf"],
                                                 fetched["monaco"]["pbf"]]
    assert config.places == fetched["geonames"]["cities"]
    assert config.reverse_max_m == 100.0


def test_values_are_read_from_their_variables(tmp_path: Path) -> None:
    config = _config(tmp_path, GEOPLEX_MAPS_EXTRACTS=f"Turku={tmp_path / 'a.pbf'}",
                     GEOPLEX_MAPS_PLACES="none", GEOPLEX_MAPS_REVERSE_MAX_METERS="50")
    assert config.extracts == (Extract("Turku", tmp_path / "a.pbf"),)
    assert config.places is None
    assert config.reverse_max_m == 50.0


@pytest.mark.parametrize("value", ["Turku", "=x.pbf", "Turku=", "a=b,,"])
def test_a_malformed_extract_list_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_MAPS_EXTRACTS"):
        _config(tmp_path, GEOPLEX_MAPS_EXTRACTS=value)


def test_tile_and_http_defaults_are_the_fetched_regions_and_port_8055(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = tmp_path / "data"
    assert config.http_port == 8055
    assert [name for name, _ in config.tile_sources] == ["helsinki", "monaco", "gothenburg"]
    assert config.tile_sources[2][1] == data / "gothenburg" / "large-network.json"
    assert config.web_vendor_dir == data / "leaflet"
    assert config.tile_redis_url is None


def test_tiles_and_http_can_be_turned_off_or_pointed_elsewhere(tmp_path: Path) -> None:
    config = _config(tmp_path, GEOPLEX_MAPS_HTTP_PORT="off", GEOPLEX_MAPS_TILE_SOURCES="off",
                     GEOPLEX_REDIS_URL="redis://127.0.0.1:1/0")
    assert config.http_port is None and config.tile_sources == ()
    assert config.tile_redis_url == "redis://127.0.0.1:1/0"
    config = _config(tmp_path, GEOPLEX_MAPS_TILE_SOURCES=f"turku={tmp_path / 't.pbf'}",
                     GEOPLEX_MAPS_TILE_REDIS_URL="redis://127.0.0.1:2/0",
                     GEOPLEX_REDIS_URL="redis://127.0.0.1:1/0")
    assert config.tile_sources == (("turku", tmp_path / "t.pbf"),)
    assert config.tile_redis_url == "redis://127.0.0.1:2/0"


@pytest.mark.parametrize(("name", "value", "named"), [
    ("GEOPLEX_MAPS_TILE_SOURCES", "turku", "GEOPLEX_MAPS_TILE_SOURCES"),
    ("GEOPLEX_MAPS_HTTP_PORT", "70000", "GEOPLEX_MAPS_HTTP_PORT"),
    ("GEOPLEX_BROKER_TARGET", " , ", "GEOPLEX_BROKER_TARGET"),
    ("GEOPLEX_MAPS_TRAFFIC_ADMIN", "a\tb", "GEOPLEX_MAPS_TRAFFIC_ADMIN"),
])
def test_bad_tile_http_broker_and_admin_values_name_their_variable(
        tmp_path: Path, name: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _config(tmp_path, **{name: value})
