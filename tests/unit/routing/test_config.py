"""RoutingConfig.from_env: defaults, regions, modes, and the defaults matching infra's data."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.infra.data import DATASETS, dataset_path
from geoplex.servers._runtime.config import ConfigError, Env
from geoplex.servers.routing.config import (
    DEFAULT_REGIONS,
    MODES,
    RegionSource,
    RoutingConfig,
    regions_from,
)

SECRET = "s" * 40


def _config(tmp_path: Path, **values: str) -> RoutingConfig:
    env = {"GEOPLEX_STATE_DIR": str(tmp_path / "state"), "GEOPLEX_DATA_DIR": str(tmp_path / "data"),
           "GEOPLEX_AUTH_SECRET": SECRET, **values}
    return RoutingConfig.from_env(Env(env))


def test_defaults(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.modes == ("car", "bicycle", "foot") == MODES
    assert config.cache_dir == (tmp_path / "state" / "routing").resolve()
    assert config.max_snap_m == 500.0
    assert config.matrix_max == 100
    assert (config.traffic_valid_s, config.traffic_fade_s, config.traffic_refresh_s) == (
        600.0, 600.0, 5.0)
    assert config.admins == frozenset({"admin"})
    assert config.auth_secret == SECRET


def test_default_regions_are_the_three_fetched_extracts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = tmp_path / "data"
    assert config.regions == (
        RegionSource("monaco", data / "monaco" / "monaco.osm.pbf"),
        RegionSource("helsinki", data / "helsinki" / "Helsinki.osm.pbf"),
        RegionSource("gothenburg", data / "gothenburg" / "large-network.json"),
    )


def test_values_are_read_from_their_variables(tmp_path: Path) -> None:
    config = _config(tmp_path, GEOPLEX_ROUTING_CACHE_DIR=str(tmp_path / "cache"),
                     GEOPLEX_ROUTING_MAX_SNAP_METERS="250",
                     GEOPLEX_ROUTING_MATRIX_MAX="25",
                     GEOPLEX_ROUTING_TRAFFIC_VALID_SECONDS="60",
                     GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS="0",
                     GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS="0.5",
                     GEOPLEX_ROUTING_ADMINS=" ops , root ,")
    assert config.cache_dir == (tmp_path / "cache").resolve()
    assert (config.max_snap_m, config.matrix_max) == (250.0, 25)
    assert (config.traffic_valid_s, config.traffic_fade_s, config.traffic_refresh_s) == (
        60.0, 0.0, 0.5)
    assert config.admins == frozenset({"ops", "root"})


@pytest.mark.parametrize(("name", "value"), [
    ("GEOPLEX_ROUTING_MAX_SNAP_METERS", "0"), ("GEOPLEX_ROUTING_MAX_SNAP_METERS", "far"),
    ("GEOPLEX_ROUTING_MATRIX_MAX", "1001"), ("GEOPLEX_ROUTING_MATRIX_MAX", "1.5"),
    ("GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS", "0"),
])
def test_an_out_of_range_number_names_its_variable(tmp_path: Path, name: str,
                                                   value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _config(tmp_path, **{name: value})


def test_regions_are_read_as_name_equals_path(tmp_path: Path) -> None:
    config = _config(tmp_path, GEOPLEX_ROUTING_REGIONS=" city = /data/city.osm.pbf ,"
                     "roads=/data/roads.json")
    assert config.regions == (RegionSource("city", Path("/data/city.osm.pbf")),
                              RegionSource("roads", Path("/data/roads.json")))


def test_a_region_path_may_start_at_home() -> None:
    regions = regions_from(Env({"GEOPLEX_ROUTING_REGIONS": "home=~/maps/home.osm.pbf"}))
    assert regions == (RegionSource("home", Path.home() / "maps" / "home.osm.pbf"),)


@pytest.mark.parametrize("value", ["helsinki", "=/data/x.pbf", "helsinki=", " = ",
                                   "a=/x.pbf,,b=/y.pbf", "a=/x.pbf,b"])
def test_a_malformed_region_list_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_ROUTING_REGIONS: expected name=path"):
        regions_from(Env({"GEOPLEX_ROUTING_REGIONS": value}))


def test_a_region_named_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_ROUTING_REGIONS.*twice"):
        regions_from(Env({"GEOPLEX_ROUTING_REGIONS": "a=/x.pbf, a = /y.pbf"}))


@pytest.mark.parametrize(("value", "modes"), [
    ("car", ("car",)), (" foot , bicycle ", ("foot", "bicycle")), ("car,,foot", ("car", "foot")),
])
def test_modes_are_a_comma_separated_list(tmp_path: Path, value: str,
                                          modes: tuple[str, ...]) -> None:
    assert _config(tmp_path, GEOPLEX_ROUTING_MODES=value).modes == modes


@pytest.mark.parametrize("value", ["plane", "car,boat", ",", " , "])
def test_an_unknown_or_empty_mode_list_names_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_ROUTING_MODES: expected .*car, bicycle, foot"):
        _config(tmp_path, GEOPLEX_ROUTING_MODES=value)


def test_a_short_auth_secret_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GEOPLEX_AUTH_SECRET"):
        _config(tmp_path, GEOPLEX_AUTH_SECRET="short")


# -- the defaults and infra/data.py -----------------------------------------------------------

LOGICAL = {"monaco": "pbf", "helsinki": "pbf", "gothenburg": "network"}


def test_default_region_files_are_the_files_geoplex_data_fetches() -> None:
    assert [name for name, _ in DEFAULT_REGIONS] == list(LOGICAL)
    for name, relative in DEFAULT_REGIONS:
        dataset = DATASETS[name]
        assert relative == f"{dataset.name}/{dataset.file_name(LOGICAL[name])}"


def test_default_region_paths_are_where_infra_looks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, relative in DEFAULT_REGIONS:
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_bytes(b"")
    regions = regions_from(Env({"GEOPLEX_DATA_DIR": str(data)}))
    for region in regions:
        assert region.path == dataset_path(region.name, LOGICAL[region.name], data)
