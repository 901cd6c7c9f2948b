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
